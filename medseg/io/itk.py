"""NRRD (``.nrrd``/``.nhdr``) and MetaImage (``.mha``/``.mhd``) ↔ :class:`Volume` through SimpleITK.

ITK works in LPS+ with arrays ordered ``(k, j, i[, component])``; :func:`medseg.geometry.sitk_affine`
and :func:`medseg.geometry.sitk_array_to_ijk` turn that into medseg's RAS+ affine and ``(i, j, k)``
array (a transposed view: no copy beyond SimpleITK's own). Vector images (several components per
voxel) become 4D ``(i, j, k, c)``; a 4D scalar ITK image becomes ``(i, j, k, t)``.

Before ITK sees a file its header is parsed and checked in Python (:mod:`medseg.io.itk_headers`:
dimensions, sizes, element type, geometry, data files confined to the header's folder, declared
size against the voxel limit and against the bytes present), then ITK reads the header
(``ReadImageInformation``) and only then the voxels. SimpleITK's exceptions become :class:`~medseg.errors.ReadError` naming the file.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ReadError, WriteError
from medseg.geometry import affine_to_sitk, ijk_array_to_sitk, orientation_code, sitk_affine, sitk_array_to_ijk
from medseg.io.atomic import atomic_output, full_suffix
from medseg.io.base import SeriesInfo
from medseg.io.itk_headers import validate_itk_header
from medseg.io.sniff import describe, kind_of, read_head
from medseg.types import Geometry, SourceInfo, Volume

__all__ = ["ITK_SUFFIXES", "ITK_WRITE_SUFFIXES", "read_itk", "scan_itk", "write_itk"]

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: single-file formats we write (a detached header + data pair cannot be renamed atomically)
ITK_WRITE_SUFFIXES = (".nrrd", ".mha")
_FORMAT = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}


def _itk_message(err: Exception) -> str:
    """The useful line of a (long, multi-line) ITK exception message."""
    text = str(err)
    m = re.search(r"Description:\s*(.+)", text)
    if m:
        text = m.group(1)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # drop ITK's "sitk::ERROR:" / source locations, keep the most specific line
    useful = [re.sub(r"^(sitk::ERROR|ITK ERROR):\s*", "", ln) for ln in lines if not ln.startswith("/")]
    msg = useful[-1] if useful else text.strip()
    msg = re.sub(r"\w+ImageIO\(0x[0-9a-f]+\):\s*", "", msg)
    return msg[:300]


def _check_content(path: Path, limits: bool = True) -> tuple[str, list[str], list[str]]:
    """Refuse files whose content is not what the ``.nrrd``/``.mha`` suffix says, then validate the
    header (:func:`validate_itk_header`); return the format and the header's warnings."""
    suffix = full_suffix(path)
    fmt = _FORMAT.get(suffix)
    if fmt is None:
        raise ReadError(f"not a NRRD or MetaImage file name (suffix {suffix or 'none'!r})", path)
    if not path.exists():
        raise ReadError("no such file", path)
    if path.is_dir():
        raise ReadError(f"is a directory, expected a {fmt} file", path)
    head = read_head(path)
    kind = kind_of(head)
    expected = "nrrd" if fmt == "nrrd" else "metaimage"
    if kind != expected:
        raise ReadError(f"not a {'NRRD' if fmt == 'nrrd' else 'MetaImage'} file: it looks like {describe(head)}", path)
    header = validate_itk_header(path, fmt, limits)  # before ITK parses anything (MetaIO/NrrdIO trust headers)
    return fmt, header.warnings, header.unchecked


def _reader(path: Path) -> Any:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ReadError(f"cannot read header: {_itk_message(err)}", path) from err
    return reader


def _dtype_of(reader: Any) -> np.dtype:
    import SimpleITK as sitk

    pixel_id = reader.GetPixelID()
    # sitk.GetArrayFromImage maps pixel ids to numpy types; build a 1-voxel image to ask it
    probe = sitk.Image([1] * reader.GetDimension(), pixel_id) if reader.GetNumberOfComponents() == 1 else None
    if probe is not None:
        return sitk.GetArrayViewFromImage(probe).dtype
    scalar = {
        sitk.sitkVectorUInt8: np.uint8, sitk.sitkVectorInt8: np.int8, sitk.sitkVectorUInt16: np.uint16,
        sitk.sitkVectorInt16: np.int16, sitk.sitkVectorUInt32: np.uint32, sitk.sitkVectorInt32: np.int32,
        sitk.sitkVectorUInt64: np.uint64, sitk.sitkVectorInt64: np.int64,
        sitk.sitkVectorFloat32: np.float32, sitk.sitkVectorFloat64: np.float64,
    }
    return np.dtype(scalar.get(pixel_id, np.float64))


def _geometry_from(reader: Any, path: Path) -> tuple[np.ndarray, tuple[int, ...], list[str]]:
    """(RAS affine, (i, j, k[, t|c]) shape, warnings) from an ``ImageFileReader`` after
    ``ReadImageInformation``."""
    dim = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    ncomp = int(reader.GetNumberOfComponents())
    warnings: list[str] = []
    origin = reader.GetOrigin()
    spacing = reader.GetSpacing()
    direction = reader.GetDirection()
    if dim == 2:
        raise ReadError(f"is a 2D image ({size[0]}x{size[1]}); medseg needs a 3D or 4D volume", path)
    if dim == 4:
        if ncomp > 1:
            raise ReadError("4D images with several components per voxel are not supported", path)
        d4 = np.asarray(direction, dtype=np.float64).reshape(4, 4)
        if np.abs(d4[:3, 3]).max() > 1e-6 or np.abs(d4[3, :3]).max() > 1e-6:
            raise ReadError("4D image whose 4th axis is mixed with space is not supported", path)
        origin, spacing, direction = origin[:3], spacing[:3], tuple(d4[:3, :3].ravel())
        shape = size
    elif dim == 3:
        shape = size + ((ncomp,) if ncomp > 1 else ())
    else:
        raise ReadError(f"is a {dim}D image; medseg reads 3D and 4D volumes only", path)
    affine = sitk_affine(origin, spacing, direction)
    return affine, shape, warnings


def _orientation(affine: np.ndarray) -> str | None:
    try:
        return orientation_code(affine)
    except (TypeError, ValueError):  # a degenerate axis has no code
        return None


def scan_itk(path: str | PathLike[str]) -> SeriesInfo:
    """Describe a NRRD/MetaImage file from its header only (no voxel data is read)."""
    p = Path(path)
    fmt, notes, _ = _check_content(p, limits=False)
    reader = _reader(p)
    affine, shape, warnings = _geometry_from(reader, p)
    warnings = notes + warnings
    return SeriesInfo(
        path=str(p),
        format=fmt,
        shape=shape,
        spacing=tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)),
        orientation=_orientation(affine),
        warnings=tuple(warnings),
        extra={"dtype": _dtype_of(reader).name, "components": int(reader.GetNumberOfComponents())},
    )


def _metadata(image: Any) -> dict[str, str]:
    """At most 64 of the image's metadata entries, 200 characters each (undecodable ones skipped)."""
    meta: dict[str, str] = {}
    try:
        keys = list(image.GetMetaDataKeys())[:64]
    except (TypeError, UnicodeDecodeError, RuntimeError):
        return meta
    for k in keys:
        try:
            meta[k] = image.GetMetaData(k)[:200]
        except (TypeError, UnicodeDecodeError, RuntimeError):
            continue
    return meta


def read_itk(path: str | PathLike[str], isolate: bool | None = None) -> Volume:
    """Read a NRRD or MetaImage file into a :class:`Volume` (RAS affine, ``(i, j, k[, c|t])`` array).

    Args:
        path: ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.
        isolate: read in a child process with a time limit (:mod:`medseg.io.isolate`); ``None``
            (default) isolates when the header holds fields medseg does not validate, or when
            ``MEDSEG_ISOLATE_READS=1``.

    Raises:
        ReadError: not what the suffix says, unreadable, truncated, implausible size, 2D or 5D+.

    >>> vol = read_itk("brain1_image.nrrd")  # doctest: +SKIP
    >>> vol.geometry.orientation  # doctest: +SKIP
    'LAS'
    """
    import SimpleITK as sitk

    p = Path(path)
    fmt, _, unchecked = _check_content(p)
    if isolate is None:
        from medseg.io.isolate import isolate_always

        isolate = bool(unchecked) or isolate_always()
    if isolate:
        from medseg.io.isolate import read_itk_isolated

        why = f"header fields not validated by medseg: {', '.join(unchecked)}" if unchecked else "MEDSEG_ISOLATE_READS"
        return read_itk_isolated(p, why)
    reader = _reader(p)
    affine, shape, warnings = _geometry_from(reader, p)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ReadError(f"cannot read voxel data: {_itk_message(err)}", p) from err
    meta = _metadata(image)
    arr = sitk.GetArrayFromImage(image)  # one copy, then the ITK buffer is freed with `image`
    del image
    if arr.ndim == 4 and len(shape) == 4 and reader.GetDimension() == 4:
        arr = arr.transpose(3, 2, 1, 0)  # (t, k, j, i) -> (i, j, k, t)
    else:
        arr = sitk_array_to_ijk(arr)
    try:
        geometry = Geometry(affine, arr.shape[:3])
    except ValueError as err:
        raise ReadError(f"invalid geometry: {err}", p) from err
    source = SourceInfo(path=str(p), format=fmt, warnings=tuple(warnings), extra={"metadata": meta})
    return Volume(arr, geometry, source=source)


def write_itk(volume: Volume, path: str | PathLike[str], overwrite: bool = False) -> Path:
    """Write ``volume`` as ``.nrrd`` or ``.mha`` (compressed) via a temporary file and an atomic rename.

    Label maps are stored as the smallest unsigned integer type holding their largest label; a 4D
    volume is stored as a vector image (its last axis as components).

    Raises:
        WriteError: unsupported suffix (``.nhdr``/``.mhd`` split header+data cannot be written
            atomically), output exists, missing directory, invalid labels, write failure.
    """
    import SimpleITK as sitk

    from medseg.io.nifti import prepare_array

    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a medseg Volume, got {type(volume).__name__}.")
    out = Path(path)
    suffix = full_suffix(out)
    if suffix not in ITK_WRITE_SUFFIXES:
        raise WriteError(f"cannot write {suffix or 'files without a suffix'!r} with SimpleITK; use .nrrd or .mha", out)
    arr, _ = prepare_array(volume.replace(source=SourceInfo()), out)  # no re-quantisation: ITK has no slope
    if arr.dtype.kind == "c":
        raise WriteError("complex data cannot be written as NRRD/MetaImage", out)
    is_vector = arr.ndim == 4
    image = sitk.GetImageFromArray(np.ascontiguousarray(ijk_array_to_sitk(arr)), isVector=is_vector)
    origin, spacing, direction = affine_to_sitk(volume.affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    try:
        image.SetDirection(direction)
    except RuntimeError as err:
        raise WriteError(f"this affine cannot be stored as an ITK direction: {_itk_message(err)}", out) from err
    with atomic_output(out, overwrite=overwrite) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), True)
        except RuntimeError as err:
            raise WriteError(f"SimpleITK could not write the file: {_itk_message(err)}", out) from err
    return out
