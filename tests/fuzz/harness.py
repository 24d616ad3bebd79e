"""Fuzz harness for medseg's readers: seeded mutations of real and built files, run in bounded children.

Public API (reusable for other parsers):

* :func:`make_inputs` ``(kind, n, seed, workdir) -> list[Path]``: ``n`` mutated inputs of one reader
  kind (see :data:`KINDS`), reproducible from ``seed``;
* :func:`run_cases` / :func:`summarize` (from :mod:`tests.fuzz.runner`): run any ``"module:function"``
  on those paths in child processes with a time limit and a memory bound, and count the outcomes.

A new parser plugs in with a ``make_<kind>`` generator added to :data:`GENERATORS` and its own
target function for :func:`run_cases`.

Seeds: small real files from ``../shared/data`` (used when present) and files built here (NIfTI,
NRRD attached/detached, MetaImage attached/detached, a synthetic DICOM series), plus a few
deterministic "bombs" (headers claiming huge volumes over tiny or highly compressed payloads).
"""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.fuzz.mutate import gzip_bytes, mutate_bytes, mutate_nifti_header, mutate_text_header
from tests.fuzz.runner import FAILURE_KINDS, Outcome, run_cases, summarize

__all__ = ["KINDS", "GENERATORS", "SHARED_DATA", "make_inputs", "run_cases", "summarize", "Outcome", "FAILURE_KINDS"]

REPO = Path(__file__).resolve().parents[2]
# the same real data the tests use (MEDSEG_TEST_DATA, else ../shared/data; see tests/conftest.py)
SHARED_DATA = Path(os.environ.get("MEDSEG_TEST_DATA") or (REPO / ".." / "shared" / "data")).resolve()


def _shared(*rel: str) -> list[Path]:
    return [SHARED_DATA / r for r in rel if (SHARED_DATA / r).is_file()]


# ------------------------------------------------------------------------------------------ built seeds


def _nifti_bytes(version: int = 1, gz: bool = False, shape=(6, 5, 4), dtype=np.int16) -> bytes:
    import nibabel as nib

    arr = (np.arange(np.prod(shape)) % 97).reshape(shape).astype(dtype)
    aff = np.diag([0.8, 0.9, 2.5, 1.0])
    aff[:3, 3] = [-10, 20, 30]
    img = (nib.Nifti1Image if version == 1 else nib.Nifti2Image)(arr, aff)
    img.header.set_slope_inter(1.0, 0.0)
    raw = img.to_bytes()
    return gzip_bytes(raw) if gz else raw


def _nrrd_header(shape=(6, 5, 4), encoding: str = "raw", data_file: str | None = None) -> str:
    lines = [
        "NRRD0004",
        "type: short",
        "dimension: 3",
        "space: left-posterior-superior",
        f"sizes: {' '.join(map(str, shape))}",
        "space directions: (0.8,0,0) (0,0.9,0) (0,0,2.5)",
        "kinds: domain domain domain",
        "endian: little",
        f"encoding: {encoding}",
        "space origin: (-10,20,30)",
    ]
    if data_file:
        lines.append(f"data file: {data_file}")
    return "\n".join(lines) + "\n"


def _voxels(shape=(6, 5, 4)) -> bytes:
    return (np.arange(np.prod(shape)) % 97).astype("<i2").tobytes()


def _mha_header(shape=(6, 5, 4), data_file: str = "LOCAL", compressed: bool = False, size: int | None = None) -> str:
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {'True' if compressed else 'False'}",
    ]
    if compressed and size is not None:
        lines.append(f"CompressedDataSize = {size}")
    lines += [
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "Offset = -10 20 30",
        "CenterOfRotation = 0 0 0",
        "AnatomicalOrientation = RAI",
        "ElementSpacing = 0.8 0.9 2.5",
        f"DimSize = {' '.join(map(str, shape))}",
        "ElementType = MET_SHORT",
        f"ElementDataFile = {data_file}",
    ]
    return "\n".join(lines) + "\n"


_NRRD_EXTRA = [
    "data file: ../outside.raw",
    "data file: /etc/passwd",
    "data file: LIST",
    "data file: slice%03d.raw 0 999999999 1",
    "data file: slice%03d.raw 0 3 1 2",
    "data file: %s%s%s%n 0 3 1",
    "byte skip: -1",
    "byte skip: 99999999",
    "line skip: 99999999",
    "sizes: 2147483647 2147483647 2147483647",
    "dimension: 17",
    "encoding: bzip2",
    "type: block",
    "block size: 99999999",
    "space directions: (0,0,0) (0,0,0) (0,0,0)",
    "space directions: (nan,0,0) (0,1,0) (0,0,1)",
    "space dimension: 9",
    "kinds: RGB-color domain domain",
]
_MHA_EXTRA = [
    "ElementDataFile = ../outside.raw",
    "ElementDataFile = /etc/passwd",
    "ElementDataFile = LIST",
    "ElementDataFile = slice%03d.raw 0 999999999 1",
    "ElementDataFile = slice%03d.raw 1 3 1",
    "NDims = -1",
    "NDims = 0",
    "NDims = 99",
    "DimSize = 2147483647 2147483647 2147483647",
    "DimSize = -1 5 4",
    "ElementNumberOfChannels = 99999999",
    "ElementNumberOfChannels = -1",
    "HeaderSize = -1",
    "HeaderSize = 99999999",
    "ElementType = MET_STRING",
    "ElementType = MET_OTHER",
    "CompressedData = True",
    "CompressedDataSize = 99999999999",
    "ElementSpacing = 0 0 0",
    "ElementSpacing = -1 nan inf",
    "TransformMatrix = 0 0 0 0 0 0 0 0 0",
    "ElementSize = -1 -1 -1",
]


def _split_text_header(data: bytes) -> tuple[str, bytes, str]:
    """(header text, payload, separator) of an attached NRRD (blank line) or MetaImage (``= LOCAL``)."""
    if data.startswith(b"NRRD"):
        head, sep, payload = data.partition(b"\n\n")
        return head.decode("latin-1"), payload, "\n\n" if sep else ""
    idx = data.find(b"ElementDataFile")
    end = data.find(b"\n", idx)
    if idx < 0 or end < 0:
        return data.decode("latin-1"), b"", ""
    return data[:end].decode("latin-1"), data[end + 1 :], "\n"


# ------------------------------------------------------------------------------------------ generators


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _nifti_seeds(version: int) -> list[tuple[str, bytes]]:
    if version == 1:
        real = _shared("MONAI/tests/testing_data/anatomical_label.nii.gz", "nibabel/nibabel/tests/data/standard.nii.gz",
                       "MONAI/tests/testing_data/reoriented_anat_moved.nii")
        built = [("built1.nii", _nifti_bytes(1)), ("built1.nii.gz", _nifti_bytes(1, gz=True))]
    else:
        real = _shared("nibabel/nibabel/tests/data/example_nifti2.nii.gz")
        built = [("built2.nii", _nifti_bytes(2)), ("built2.nii.gz", _nifti_bytes(2, gz=True))]
    return built + [(p.name, p.read_bytes()) for p in real]


def _nifti_bomb(version: int, rng: random.Random) -> tuple[str, bytes]:
    """A valid header claiming a huge volume over a tiny or highly compressed payload."""
    raw = bytearray(_nifti_bytes(version))
    if version == 1:
        dims = rng.choice([(4096, 4096, 4096), (2048, 2048, 1024), (32767, 32767, 32767), (1024, 1024, 512)])
        struct.pack_into("<hhhh", raw, 40, 3, *dims)
    else:
        dims = rng.choice([(4096, 4096, 4096), (1 << 20, 1 << 20, 1 << 20), (1024, 1024, 512)])
        struct.pack_into("<qqqq", raw, 16, 3, *dims)
    if rng.random() < 0.5:  # zeros that compress 1000:1
        zeros = gzip.compress(bytes(raw[: 352 if version == 1 else 544]) + bytes(64 << 20), compresslevel=9, mtime=0)
        return "bomb.nii.gz", zeros
    return "bomb.nii", bytes(raw)


def make_nifti(version: int, n: int, rng: random.Random, out: Path) -> list[Path]:
    seeds = _nifti_seeds(version)
    paths = []
    for i in range(n):
        if rng.random() < 0.04:
            name, data = _nifti_bomb(version, rng)
        else:
            name, data = rng.choice(seeds)
            gz = data[:2] == b"\x1f\x8b"
            raw = gzip.decompress(data) if gz else data
            r = rng.random()
            if gz and r < 0.2:
                data = mutate_bytes(data, rng)  # corrupt the compressed stream itself
            else:
                raw = mutate_nifti_header(raw, rng) if r < 0.7 else mutate_bytes(raw, rng, focus=560)
                data = gzip_bytes(raw) if gz else raw
        paths.append(_write(out / f"{i:05d}" / name, data))
    return paths


def _nrrd_seeds() -> list[tuple[str, bytes]]:
    real = _shared("pyradiomics/data/breast1_label.nrrd", "pyradiomics/data/prostate_phantom_subvolume-label.nrrd",
                   "pyradiomics/data/brain1_label.nrrd")
    built_raw = (_nrrd_header() + "\n").encode() + _voxels()
    built_gz = (_nrrd_header(encoding="gzip") + "\n").encode() + gzip_bytes(_voxels())
    return [("built_raw.nrrd", built_raw), ("built_gz.nrrd", built_gz)] + [(p.name, p.read_bytes()) for p in real]


def make_nrrd(n: int, rng: random.Random, out: Path) -> list[Path]:
    seeds = _nrrd_seeds()
    paths = []
    for i in range(n):
        if rng.random() < 0.04:  # gzip bomb: valid header claiming 8 GB over 64 MiB of zeros
            head = _nrrd_header(shape=rng.choice([(2048, 2048, 1024), (1024, 1024, 512)]), encoding="gzip")
            data = (head + "\n").encode() + gzip.compress(bytes(64 << 20), 9, mtime=0)
            paths.append(_write(out / f"{i:05d}" / "bomb.nrrd", data))
            continue
        name, data = rng.choice(seeds)
        if rng.random() < 0.7:
            head, payload, sep = _split_text_header(data)
            data = mutate_text_header(head, rng, _NRRD_EXTRA).encode("latin-1") + sep.encode() + payload
            if rng.random() < 0.15:
                data = mutate_bytes(data, rng)
        else:
            data = mutate_bytes(data, rng, focus=400)
        paths.append(_write(out / f"{i:05d}" / name, data))
    return paths


def _detached_folder(folder: Path, rng: random.Random) -> None:
    """Files a mutated detached header might point at: its data file, slices, and one outside file."""
    (folder / "data.raw").write_bytes(_voxels())
    (folder / "data.raw.gz").write_bytes(gzip_bytes(_voxels()))
    for k in range(4):
        (folder / f"slice{k:03d}.raw").write_bytes(_voxels((6, 5, 1)))
    (folder.parent / "outside.raw").write_bytes(_voxels())


def make_nhdr(n: int, rng: random.Random, out: Path) -> list[Path]:
    variants = [
        _nrrd_header(data_file="data.raw"),
        _nrrd_header(encoding="gzip", data_file="data.raw.gz"),
        _nrrd_header(data_file="slice%03d.raw 0 3 1 2"),
        _nrrd_header(data_file="LIST 2") + "slice000.raw\nslice001.raw\nslice002.raw\nslice003.raw\n",
    ]
    paths = []
    for i in range(n):
        folder = out / f"{i:05d}" / "case"
        folder.mkdir(parents=True)
        _detached_folder(folder, rng)
        head = rng.choice(variants)
        text = mutate_text_header(head, rng, _NRRD_EXTRA)
        data = text.encode("latin-1")
        if rng.random() < 0.1:
            data = mutate_bytes(data, rng)
        paths.append(_write(folder / "image.nhdr", data))
    return paths


def _mha_seeds() -> list[tuple[str, bytes]]:
    raw = _voxels()
    comp = zlib.compress(raw)
    return [
        ("built_raw.mha", _mha_header().encode() + raw),
        ("built_zlib.mha", _mha_header(compressed=True, size=len(comp)).encode() + comp),
    ] + _real_mha()


def _real_mha() -> list[tuple[str, bytes]]:
    """A real NRRD label converted to MetaImage by SimpleITK (ITK's own writer)."""
    src = _shared("pyradiomics/data/breast1_label.nrrd")
    if not src:
        return []
    import tempfile

    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "breast1_label.mha"
        sitk.WriteImage(sitk.ReadImage(str(src[0])), str(out), True)
        return [(out.name, out.read_bytes())]


def make_mha(n: int, rng: random.Random, out: Path) -> list[Path]:
    seeds = _mha_seeds()
    paths = []
    for i in range(n):
        if rng.random() < 0.04:
            zeros = zlib.compress(bytes(64 << 20), 9)
            head = _mha_header(shape=(2048, 2048, 1024), compressed=True, size=len(zeros))
            paths.append(_write(out / f"{i:05d}" / "bomb.mha", head.encode() + zeros))
            continue
        name, data = rng.choice(seeds)
        if rng.random() < 0.75:
            head, payload, sep = _split_text_header(data)
            data = mutate_text_header(head, rng, _MHA_EXTRA).encode("latin-1") + sep.encode() + payload
        else:
            data = mutate_bytes(data, rng, focus=400)
        paths.append(_write(out / f"{i:05d}" / name, data))
    return paths


def make_mhd(n: int, rng: random.Random, out: Path) -> list[Path]:
    variants = [
        _mha_header(data_file="data.raw"),
        _mha_header(data_file="slice%03d.raw 0 3 1"),
        _mha_header(data_file="LIST 2D") + "slice000.raw\nslice001.raw\nslice002.raw\nslice003.raw\n",
    ]
    paths = []
    for i in range(n):
        folder = out / f"{i:05d}" / "case"
        folder.mkdir(parents=True)
        _detached_folder(folder, rng)
        text = mutate_text_header(rng.choice(variants), rng, _MHA_EXTRA)
        data = text.encode("latin-1")
        if rng.random() < 0.1:
            data = mutate_bytes(data, rng)
        paths.append(_write(folder / "image.mhd", data))
    return paths


# DICOM ------------------------------------------------------------------------------------------------

_DICOM_HOSTILE = {
    "NumberOfFrames": ["99999999", "0", "-1", "abc", "2", "65536"],
    "Rows": [0, 1, 65535, 4096],
    "Columns": [0, 1, 65535, 4096],
    "BitsAllocated": [0, 1, 7, 12, 32, 64, 65535],
    "BitsStored": [0, 1, 17, 64],
    "HighBit": [0, 63],
    "PixelRepresentation": [1, 2],
    "SamplesPerPixel": [0, 3, 4, 255],
    "PhotometricInterpretation": ["RGB", "PALETTE COLOR", "YBR_FULL", "", "MONOCHROME1"],
    "PixelSpacing": [["-1", "1"], ["0", "0"], ["nan", "1"], ["1e308", "1e308"], ["1"]],
    "ImageOrientationPatient": [
        ["2", "0", "0", "0", "2", "0"],
        ["1", "0", "0", "1", "0", "0"],
        ["0", "0", "0", "0", "0", "0"],
        ["nan", "0", "0", "0", "1", "0"],
        ["1", "0", "0", "0.1", "1", "0"],
        ["1.0001", "0", "0", "0", "1", "0"],
    ],
    "ImagePositionPatient": [["nan", "0", "0"], ["1e308", "-1e308", "0"], ["0", "0"]],
    "RescaleSlope": ["nan", "inf", "0", "-inf", "1e308", "abc"],
    "RescaleIntercept": ["nan", "inf", "-1e308"],
    "ImageType": [["ORIGINAL", "PRIMARY", "MOSAIC"]],
    "SliceThickness": ["0", "-1", "nan"],
    "SpacingBetweenSlices": ["0", "-5", "1e308"],
}


def _dicom_seeds(tmp: Path) -> list[Path]:
    real = _shared(
        "MONAI/tests/testing_data/CT_DICOM/7106",
        "nitest-dicom/siemens_ct_header_csa.dcm",
        "dcm_qa_ts/In/4.dcm",
        "dcm_qa_ts/In/7.dcm",
    )
    from tests.io._dicom_synth import write_series

    write_series(tmp / "synth", [0.0, 2.5, 5.0, 7.5], size=16)
    return sorted((tmp / "synth").iterdir()) + real


def _mutate_dicom(data: bytes, rng: random.Random) -> bytes:
    import warnings

    import pydicom

    if rng.random() < 0.35:
        return mutate_bytes(data, rng, focus=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            for _ in range(rng.randint(1, 3)):
                key = rng.choice(sorted(_DICOM_HOSTILE))
                setattr(ds, key, rng.choice(_DICOM_HOSTILE[key]))
            if rng.random() < 0.15 and "PixelData" in ds:
                ds.PixelData = ds.PixelData[: rng.randrange(max(1, len(ds.PixelData)))]
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=False)
            return buf.getvalue()
        except Exception:  # noqa: BLE001 - a value pydicom refuses to write: fall back to bytes
            return mutate_bytes(data, rng, focus=2048)


def make_dicom_file(n: int, rng: random.Random, out: Path) -> list[Path]:
    seeds = _dicom_seeds(out / "_seeds")
    paths = []
    for i in range(n):
        src = rng.choice(seeds)
        paths.append(_write(out / f"{i:05d}" / (src.name if src.suffix else "image.dcm"), _mutate_dicom(src.read_bytes(), rng)))
    return paths


def make_dicom_folder(n: int, rng: random.Random, out: Path) -> list[Path]:
    from tests.io._dicom_synth import write_series

    synth = out / "_seeds" / "synth"
    write_series(synth, [0.0, 2.5, 5.0, 7.5], size=16)
    files = sorted(synth.iterdir())
    paths = []
    for i in range(n):
        folder = out / f"{i:05d}" / "series"
        folder.mkdir(parents=True)
        victims = set(rng.sample(range(len(files)), rng.randint(1, 2)))
        for k, f in enumerate(files):
            data = f.read_bytes()
            (folder / f.name).write_bytes(_mutate_dicom(data, rng) if k in victims else data)
        paths.append(folder)
    return paths


def make_dicom_zip(n: int, rng: random.Random, out: Path) -> list[Path]:
    from tests.io._dicom_synth import write_series

    synth = out / "_seeds" / "synth"
    write_series(synth, [0.0, 2.5, 5.0, 7.5], size=16)
    files = sorted(synth.iterdir())
    paths = []
    for i in range(n):
        buf = io.BytesIO()
        r = rng.random()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            if r < 0.05:  # zip bomb: one member inflating to 1 GiB of zeros
                with zf.open("bomb.dcm", "w", force_zip64=True) as fh:
                    chunk = bytes(1 << 24)
                    for _ in range(64):
                        fh.write(chunk)
            victim = rng.randrange(len(files))
            for k, f in enumerate(files):
                data = f.read_bytes()
                zf.writestr(f.name, _mutate_dicom(data, rng) if (k == victim and r >= 0.05) else data)
        data = buf.getvalue()
        if 0.05 <= r < 0.4:
            data = mutate_bytes(data, rng)
        paths.append(_write(out / f"{i:05d}" / "series.zip", data))
    return paths


GENERATORS: dict[str, Callable[[int, random.Random, Path], list[Path]]] = {
    "nifti1": lambda n, rng, out: make_nifti(1, n, rng, out),
    "nifti2": lambda n, rng, out: make_nifti(2, n, rng, out),
    "nrrd": make_nrrd,
    "nhdr": make_nhdr,
    "mha": make_mha,
    "mhd": make_mhd,
    "dicom_file": make_dicom_file,
    "dicom_folder": make_dicom_folder,
    "dicom_zip": make_dicom_zip,
}
#: every reader input kind the harness covers
KINDS = tuple(GENERATORS)


def make_inputs(kind: str, n: int, seed: int, workdir: str | Path) -> list[Path]:
    """``n`` mutated inputs of reader ``kind`` under ``workdir/kind``, reproducible from ``seed``."""
    if kind not in GENERATORS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    out = Path(workdir) / kind
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return GENERATORS[kind](n, random.Random(f"{kind}:{seed}"), out)
