"""Validate NRRD and MetaImage headers in Python *before* SimpleITK/ITK sees the file.

ITK's MetaIO and NrrdIO trust their headers: ``NDims = -1`` hangs or crashes MetaIO (ITK issue
#6853), a ``%s`` in a file pattern goes to ``sprintf``, a detached header can name any file on the
machine, and declared sizes are allocated as declared. :func:`validate_itk_header` parses the header
text (at most :data:`MAX_HEADER_BYTES`) and refuses, with a one-line :class:`~medseg.errors.ReadError`:

* a dimension count outside 2..4 (medseg reads 3D/4D; 2D gets its own message), sizes that are not
  positive integers, unknown element types, absurd channel counts;
* spacings/directions/origins that are not finite, zero or negative spacing, singular direction
  matrices;
* data files (``data file:`` / ``ElementDataFile``, single, ``LIST`` and pattern forms) that are
  absolute, contain ``..``, resolve outside the header's folder (symlinks included), are missing, or
  whose pattern is not a single ``%d`` integer conversion;
* voxel sizes over :func:`~medseg.io.limits.max_voxel_bytes`, uncompressed data shorter than the
  header says, and compressed data that would have to inflate beyond
  :func:`~medseg.io.limits.max_inflate_ratio`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import ReadError
from medseg.io.limits import check_inflate, check_voxel_bytes, human_bytes

__all__ = ["MAX_HEADER_BYTES", "MAX_DATA_FILES", "ItkHeader", "validate_itk_header"]

#: a header longer than this is refused (real ones are < 2 KiB)
MAX_HEADER_BYTES = 64 << 10
#: most data files a detached header may list or generate
MAX_DATA_FILES = 65536
_MAX_DIM_SIZE = (1 << 31) - 1
_DEFLATE_MAX_RATIO = 1032

_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t",
        "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
        "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}
_NRRD_ITEMSIZE = {name: size for size, names in _NRRD_TYPES.items() for name in names}
_NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2",
                   "ascii": "text", "text": "text", "txt": "text", "hex": "hex"}
_MET_ITEMSIZE = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
_PATTERN = re.compile(r"%(0?\d{0,3})d")
#: MetaImage fields MetaIO parses into fixed-size values that are not validated here
_MET_UNVALIDATED = {"color", "elementmin", "elementmax", "sequenceid", "id", "parentid", "transformtype",
                    "objectsubtype"}
#: longest value of a field MetaIO keeps as free text (ITK metadata such as ITK_InputFilterName)
_MET_TEXT_MAX = 200


@dataclass
class ItkHeader:
    """What a validated header says: ``sizes`` (fastest axis first), item size, data files, encoding."""

    format: str  # "nrrd" or "metaimage"
    sizes: tuple[int, ...]
    itemsize: int
    components: int
    encoding: str  # raw, gzip, bzip2, text, hex
    header_bytes: int  # length of the header (offset of attached data)
    data_files: list[Path] = field(default_factory=list)  # empty: the data is attached
    warnings: list[str] = field(default_factory=list)  # limits exceeded, when not enforced
    unchecked: list[str] = field(default_factory=list)  # fields ITK interprets that were not validated here

    @property
    def nbytes(self) -> int:
        return math.prod(self.sizes) * self.itemsize * self.components


def _read_header_text(path: Path, fmt: str) -> tuple[str, int, bool]:
    """(header text, header length in bytes, ends-with-attached-data) of at most MAX_HEADER_BYTES."""
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
    if fmt == "nrrd":
        m = re.search(rb"\r?\n\r?\n", head)
        if m:
            return head[: m.start()].decode("latin-1"), m.end(), True
        if len(head) > MAX_HEADER_BYTES:
            raise ReadError(f"NRRD header longer than {MAX_HEADER_BYTES} bytes (no blank line ends it)", path)
        return head.decode("latin-1"), len(head), False
    m = re.search(rb"(?im)^[ \t]*ElementDataFile[ \t]*=[^\n]*(\n|$)", head)
    if not m:
        raise ReadError(
            "MetaImage header has no ElementDataFile line"
            + (f" in its first {MAX_HEADER_BYTES} bytes" if len(head) > MAX_HEADER_BYTES else ""),
            path,
        )
    end = m.end()
    text = head[:end].decode("latin-1")
    local = re.search(r"=\s*LOCAL\s*$", text.rstrip("\r\n").splitlines()[-1], re.I) is not None
    if not local:
        # LIST form: the file names follow the ElementDataFile line
        tail = head[end:]
        if len(head) > MAX_HEADER_BYTES:
            raise ReadError(f"MetaImage header longer than {MAX_HEADER_BYTES} bytes", path)
        text += tail.decode("latin-1")
        end = len(head)
    return text, end, local


def _ints(value: str, n: int | None, what: str, path: Path, lo: int = 1, hi: int = _MAX_DIM_SIZE) -> tuple[int, ...]:
    parts = value.split()
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise ReadError(f"invalid {what} {value.strip()!r}: expected integers", path) from None
    if n is not None and len(vals) != n:
        raise ReadError(f"invalid {what} {value.strip()!r}: expected {n} values", path)
    bad = [v for v in vals if not lo <= v <= hi]
    if bad:
        raise ReadError(f"invalid {what} {value.strip()!r}: {bad[0]} is outside {lo}..{hi}", path)
    return vals


def _floats(value: str, n: int, what: str, path: Path, positive: bool = False) -> tuple[float, ...]:
    parts = value.replace(",", " ").split()
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise ReadError(f"invalid {what} {value.strip()!r}: expected numbers", path) from None
    if len(vals) != n:
        raise ReadError(f"invalid {what} {value.strip()!r}: expected {n} values", path)
    if not all(math.isfinite(v) for v in vals):
        raise ReadError(f"invalid {what} {value.strip()!r}: values must be finite", path)
    if positive and not all(v > 0 for v in vals):
        raise ReadError(f"impossible {what} {value.strip()!r}: voxel sizes must be > 0", path)
    return vals


def _int1(value: str, what: str, path: Path, lo: int, hi: int) -> int:
    return _ints(value, 1, what, path, lo, hi)[0]


def _check_dims(ndim: int, path: Path, fmt: str) -> None:
    if ndim == 2:
        return  # reported as "a 2D image" once the sizes are known
    if not 3 <= ndim <= 4:
        raise ReadError(f"invalid {fmt} header: {ndim} dimensions (medseg reads 3D and 4D volumes)", path)


def _nonsingular(rows: list[tuple[float, ...]], what: str, path: Path) -> None:
    import numpy as np

    m = np.asarray(rows, dtype=np.float64)
    if m.shape[0] >= m.shape[1] and np.linalg.matrix_rank(m, tol=1e-9 * max(1.0, float(np.abs(m).max()))) < m.shape[1]:
        raise ReadError(f"impossible {what}: the direction vectors are zero or parallel (singular matrix)", path)


# ------------------------------------------------------------------------------------------- data files


def _inside(folder: Path, name: str, path: Path, key: str) -> Path:
    """``folder/name`` when it names an existing file inside ``folder`` (no absolute path, no ``..``,
    no symlink leaving the folder)."""
    name = name.strip()
    if not name:
        raise ReadError(f"empty {key}", path)
    if "\x00" in name:
        raise ReadError(f"{key} {name!r} contains a NUL byte", path)
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or norm.startswith("~"):
        raise ReadError(f"{key} {name!r} is an absolute path: a header may only name files in its own folder", path)
    if any(part == ".." for part in norm.split("/")):
        raise ReadError(f"{key} {name!r} leaves the header's folder ('..'): refused", path)
    target = folder / norm
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(target)
    if os.path.commonpath([real_folder, real]) != real_folder:
        raise ReadError(f"{key} {name!r} resolves outside the header's folder (a symbolic link): refused", path)
    if not os.path.isfile(real):
        raise ReadError(f"{key} {name!r} not found next to the header", path)
    return target


def _pattern_files(folder: Path, spec: list[str], path: Path, key: str) -> list[Path]:
    """Files of ``<format> <min> <max> <step>`` with a single ``%d`` conversion in ``format``."""
    fmt = spec[0]
    convs = fmt.count("%") - 2 * fmt.count("%%")
    m = _PATTERN.search(fmt)
    if convs != 1 or m is None:
        raise ReadError(f"{key} pattern {fmt!r} must hold exactly one integer conversion such as %03d", path)
    try:
        lo, hi, step = (int(v) for v in spec[1:4])
    except ValueError:
        raise ReadError(f"{key} pattern {' '.join(spec)!r}: min, max and step must be integers", path) from None
    if step == 0 or (hi - lo) * step < 0:
        raise ReadError(f"{key} pattern {' '.join(spec)!r}: step {step} never reaches {hi} from {lo}", path)
    count = abs(hi - lo) // abs(step) + 1
    if count > MAX_DATA_FILES:
        raise ReadError(f"{key} pattern names {count} files (limit {MAX_DATA_FILES})", path)
    return [_inside(folder, fmt % v, path, key) for v in range(lo, hi + (1 if step > 0 else -1), step)]


def _data_files(value: str, list_lines: list[str], folder: Path, path: Path, key: str) -> list[Path]:
    parts = value.split()
    if not parts:
        raise ReadError(f"empty {key}", path)
    if parts[0].upper() == "LIST":
        names = [ln.strip() for ln in list_lines if ln.strip()]
        if not names:
            raise ReadError(f"{key} LIST names no files", path)
        if len(names) > MAX_DATA_FILES:
            raise ReadError(f"{key} LIST names {len(names)} files (limit {MAX_DATA_FILES})", path)
        return [_inside(folder, n, path, key) for n in names]
    if len(parts) >= 4 and "%" in parts[0]:
        return _pattern_files(folder, parts, path, key)
    if "%" in value:
        raise ReadError(f"{key} {value.strip()!r}: a file pattern needs <format> <min> <max> <step>", path)
    return [_inside(folder, value, path, key)]


def _check_data(h: ItkHeader, path: Path, byte_skip: int = 0, limits: bool = True) -> None:
    dims = "x".join(map(str, h.sizes)) + (f"x{h.components}" if h.components > 1 else "")
    what = f"a {dims} volume of {h.itemsize}-byte values"
    nbytes = h.nbytes
    problem = check_voxel_bytes(nbytes, what)
    if problem and limits:
        raise ReadError(problem, path)
    if problem:
        h.warnings.append(f"cannot be read as is: {problem}")
    if h.data_files:
        present = sum(f.stat().st_size for f in h.data_files)
        where = h.data_files[0] if len(h.data_files) == 1 else path
    else:
        present = max(path.stat().st_size - h.header_bytes, 0)
        where = path
    if h.encoding == "raw":
        need = nbytes + max(byte_skip, 0)
        if present < need:
            raise ReadError(
                f"truncated {h.format} data: {human_bytes(present)} present but the header describes "
                f"{human_bytes(need)} ({dims})",
                where,
            )
    elif h.encoding in ("gzip", "bzip2", "zlib"):
        most = present * _DEFLATE_MAX_RATIO + 4096 if h.encoding != "bzip2" else present * 1_500_000 + 4096
        if nbytes > most:
            raise ReadError(
                f"header describes {human_bytes(nbytes)} ({dims}) but {human_bytes(present)} of {h.encoding} data "
                f"can hold at most {human_bytes(most)}: truncated data or a corrupt header",
                where,
            )
        ratio_problem = check_inflate(nbytes, present, what)
        if ratio_problem and limits:
            raise ReadError(ratio_problem, where)
        if ratio_problem and ratio_problem != problem:
            h.warnings.append(f"cannot be read as is: {ratio_problem}")
    else:  # text / hex: at least one character per value (hex: two per byte)
        need = math.prod(h.sizes) * h.components * (2 * h.itemsize if h.encoding == "hex" else 1)
        if present < need:
            raise ReadError(
                f"truncated {h.format} {h.encoding} data: {present} characters for {math.prod(h.sizes)} values", where
            )


# ------------------------------------------------------------------------------------------------- NRRD


def _validate_nrrd(path: Path, limits: bool) -> ItkHeader:
    text, header_bytes, attached = _read_header_text(path, "nrrd")
    lines = text.splitlines()
    if not lines or not re.fullmatch(r"NRRD000[1-5]", lines[0].strip()):
        raise ReadError("not a NRRD file: the first line must be NRRD0001..NRRD0005", path)
    fields: dict[str, str] = {}
    list_lines: list[str] = []
    in_list = False
    for ln in lines[1:]:
        if in_list:
            list_lines.append(ln)
            continue
        if not ln.strip() or ln.startswith("#"):
            continue
        if ":=" in ln:
            continue  # key/value pairs: free text, never interpreted
        key, sep, value = ln.partition(": ")
        if not sep:
            raise ReadError(f"invalid NRRD header line {ln[:80]!r} (expected 'field: value')", path)
        key = key.strip().lower()
        if key == "datafile":
            key = "data file"
        if key in fields and fields[key].strip() != value.strip():
            raise ReadError(f"NRRD field {key!r} appears twice with different values", path)
        fields[key] = value
        if key == "data file" and value.split()[:1] and value.split()[0].upper() == "LIST":
            in_list = True
    for req in ("type", "dimension", "sizes", "encoding"):
        if req not in fields:
            raise ReadError(f"NRRD header has no {req!r} field", path)
    tname = " ".join(fields["type"].split()).lower()
    if tname == "block":
        raise ReadError("NRRD type 'block' is not supported", path)
    if tname not in _NRRD_ITEMSIZE:
        raise ReadError(f"unknown NRRD type {fields['type'].strip()!r}", path)
    itemsize = _NRRD_ITEMSIZE[tname]
    ndim = _int1(fields["dimension"], "NRRD dimension", path, 1, 16)
    sizes = _ints(fields["sizes"], ndim, "NRRD sizes", path)
    enc = fields["encoding"].strip().lower()
    if enc not in _NRRD_ENCODINGS:
        raise ReadError(f"unknown NRRD encoding {fields['encoding'].strip()!r}", path)
    encoding = _NRRD_ENCODINGS[enc]
    if itemsize > 1 and encoding in ("raw", "gzip", "bzip2") and "endian" not in fields:
        raise ReadError("NRRD header has no 'endian' field", path)
    if "endian" in fields and fields["endian"].strip().lower() not in ("little", "big"):
        raise ReadError(f"invalid NRRD endian {fields['endian'].strip()!r}", path)
    kinds = fields.get("kinds", "").split()
    comp_axes = [i for i, k in enumerate(kinds) if k.lower() not in ("domain", "space", "time", "none", "???")]
    space_axes = ndim - len(comp_axes)
    _check_dims(space_axes, path, "NRRD")
    if kinds and len(kinds) != ndim:
        raise ReadError(f"invalid NRRD kinds {fields['kinds'].strip()!r}: expected {ndim} values", path)
    if "space dimension" in fields:
        _int1(fields["space dimension"], "NRRD space dimension", path, 1, 4)
    if "space directions" in fields:
        raw = fields["space directions"].strip()
        tokens = re.findall(r"\([^)]*\)|none", raw, flags=re.I)
        if len(tokens) != ndim or re.sub(r"\([^)]*\)|none|\s", "", raw, flags=re.I):
            raise ReadError(f"invalid NRRD space directions {raw[:120]!r}: expected {ndim} '(x,y,z)' or 'none' entries", path)
        rows = []
        for tok in tokens:
            if tok.lower() == "none":
                continue
            parts = tok[1:-1].split(",")
            rows.append(_floats(" ".join(parts), len(parts), "NRRD space direction", path))
        if rows:
            dim = len(rows[0])
            if any(len(r) != dim for r in rows):
                raise ReadError("invalid NRRD space directions: vectors of different lengths", path)
            _nonsingular(rows, "NRRD space directions", path)
    if "spacings" in fields:
        for v in fields["spacings"].split():
            try:
                f = float(v)
            except ValueError:
                raise ReadError(f"invalid NRRD spacings {fields['spacings'].strip()!r}", path) from None
            if math.isfinite(f) and f <= 0:
                raise ReadError(f"impossible NRRD spacings {fields['spacings'].strip()!r}: must be > 0", path)
            if math.isinf(f):
                raise ReadError(f"invalid NRRD spacings {fields['spacings'].strip()!r}", path)
    if "space origin" in fields:
        inner = fields["space origin"].strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise ReadError(f"invalid NRRD space origin {inner!r}", path)
        parts = inner[1:-1].split(",")
        _floats(" ".join(parts), len(parts), "NRRD space origin", path)
    byte_skip = 0
    if "byte skip" in fields:
        byte_skip = _int1(fields["byte skip"], "NRRD byte skip", path, -1, 1 << 40)
        if byte_skip == -1 and encoding != "raw":
            raise ReadError("NRRD 'byte skip: -1' is only valid with raw encoding", path)
    if "line skip" in fields:
        _int1(fields["line skip"], "NRRD line skip", path, 0, 1 << 20)
    components = 1
    h = ItkHeader("nrrd", sizes, itemsize, components, encoding, header_bytes)
    # NrrdIO (teem) itself refuses unknown field identifiers and parses the rest strictly: no field
    # is left for an isolated read
    if "data file" in fields:
        h.data_files = _data_files(fields["data file"], list_lines, path.parent, path, "NRRD data file")
    elif not attached:
        raise ReadError("NRRD header has no data: no blank line before attached data and no 'data file'", path)
    if space_axes == 2:
        raise ReadError(f"is a 2D image ({'x'.join(map(str, sizes))}); medseg needs a 3D or 4D volume", path)
    _check_data(h, path, byte_skip, limits)
    return h


# ------------------------------------------------------------------------------------------- MetaImage


def _bool(value: str, key: str, path: Path) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ReadError(f"invalid MetaImage {key} {value.strip()!r}: expected True or False", path)


def _validate_metaimage(path: Path, limits: bool) -> ItkHeader:
    text, header_bytes, local = _read_header_text(path, "metaimage")
    lines = text.splitlines()
    fields: dict[str, str] = {}
    list_lines: list[str] = []
    seen_data = False
    for ln in lines:
        if seen_data:
            list_lines.append(ln)
            continue
        if not ln.strip():
            continue
        key, sep, value = ln.partition("=")
        if not sep:
            raise ReadError(f"invalid MetaImage header line {ln[:80]!r} (expected 'Key = Value')", path)
        key = key.strip().lower()
        if len(value) > 4096:
            raise ReadError(f"MetaImage field {key!r} is longer than 4096 characters", path)
        if key in fields and fields[key] != value.strip():
            raise ReadError(f"MetaImage field {key!r} appears twice with different values", path)
        fields[key] = value.strip()
        if key == "elementdatafile":
            seen_data = True
    obj = fields.get("objecttype", "Image")
    if obj.lower() != "image":
        raise ReadError(f"MetaImage ObjectType {obj!r} is not an image", path)
    if "ndims" not in fields:
        raise ReadError("MetaImage header has no NDims", path)
    ndim = _int1(fields["ndims"], "MetaImage NDims", path, 1, 16)
    _check_dims(ndim, path, "MetaImage")
    if "dimsize" not in fields:
        raise ReadError("MetaImage header has no DimSize", path)
    sizes = _ints(fields["dimsize"], ndim, "MetaImage DimSize", path)
    etype = fields.get("elementtype", "").upper()
    if etype not in _MET_ITEMSIZE:
        raise ReadError(f"unsupported MetaImage ElementType {fields.get('elementtype', '(missing)')!r}", path)
    components = 1
    if "elementnumberofchannels" in fields:
        components = _int1(fields["elementnumberofchannels"], "MetaImage ElementNumberOfChannels", path, 1, 64)
    for key in ("elementspacing", "elementsize"):
        if key in fields:
            _floats(fields[key], ndim, f"MetaImage {key}", path, positive=True)
    for key in ("offset", "position", "origin", "centerofrotation"):
        if key in fields:
            _floats(fields[key], ndim, f"MetaImage {key}", path)
    for key in ("transformmatrix", "rotation", "orientation"):
        if key in fields:
            vals = _floats(fields[key], ndim * ndim, f"MetaImage {key}", path)
            _nonsingular([vals[i * ndim : (i + 1) * ndim] for i in range(ndim)], f"MetaImage {key}", path)
    for key in ("binarydata", "binarydatabyteordermsb", "elementbyteordermsb", "compresseddata"):
        if key in fields:
            _bool(fields[key], key, path)
    compressed = _bool(fields["compresseddata"], "CompressedData", path) if "compresseddata" in fields else False
    binary = _bool(fields["binarydata"], "BinaryData", path) if "binarydata" in fields else True
    header_size = 0
    if "headersizeperslice" in fields:
        _int1(fields["headersizeperslice"], "MetaImage HeaderSizePerSlice", path, 0, 1 << 30)
    if "headersize" in fields:
        header_size = _int1(fields["headersize"], "MetaImage HeaderSize", path, -1, 1 << 40)
        if header_size == -1 and compressed:
            raise ReadError("MetaImage 'HeaderSize = -1' cannot be used with compressed data", path)
    h = ItkHeader("metaimage", sizes, _MET_ITEMSIZE[etype], components,
                  "zlib" if compressed else ("raw" if binary else "text"), header_bytes)
    h.unchecked = sorted(k for k, v in fields.items() if k in _MET_UNVALIDATED or len(v) > _MET_TEXT_MAX)
    orient = fields.get("anatomicalorientation")
    if orient is not None and not re.fullmatch(r"[RLAPSI?]{%d}" % ndim, orient.upper()):
        h.unchecked.append("anatomicalorientation")
    if not local:
        h.data_files = _data_files(fields["elementdatafile"], list_lines, path.parent, path, "MetaImage ElementDataFile")
    if "compresseddatasize" in fields:
        csize = _int1(fields["compresseddatasize"], "MetaImage CompressedDataSize", path, 0, 1 << 50)
        present = (sum(f.stat().st_size for f in h.data_files) if h.data_files
                   else path.stat().st_size - header_bytes)
        if csize > present:
            raise ReadError(
                f"MetaImage CompressedDataSize {csize} is larger than the {present} bytes of data present", path
            )
    if ndim == 2:
        raise ReadError(f"is a 2D image ({'x'.join(map(str, sizes))}); medseg needs a 3D or 4D volume", path)
    _check_data(h, path, max(header_size, 0), limits)
    return h


def validate_itk_header(path: str | os.PathLike[str], fmt: str, limits: bool = True) -> ItkHeader:
    """Parse and check the header of a NRRD (``fmt="nrrd"``) or MetaImage (``"metaimage"``) file.

    With ``limits=False`` (``medseg info``: headers only) the voxel-size and inflate-ratio limits are
    recorded in ``warnings`` instead of raised; everything else is still refused.

    Raises:
        ReadError: anything ITK should not be trusted with (see the module doc), naming the file.
    """
    p = Path(path)
    if fmt == "nrrd":
        return _validate_nrrd(p, limits)
    if fmt == "metaimage":
        return _validate_metaimage(p, limits)
    raise ValueError(f"fmt must be 'nrrd' or 'metaimage', got {fmt!r}.")
