"""Read and write medical volumes: ``read(path) -> Volume``, ``write(volume, path)``, ``scan(path)``.

Dispatch looks at both the path and the content:

==========================================  ======================================================
path                                        reader
==========================================  ======================================================
a directory, or ``*.zip``                   DICOM (:mod:`medseg.io.dicom`, searched recursively)
``*.nii``, ``*.nii.gz``, ``*.hdr``, ``*.img``  NIfTI (:mod:`medseg.io.nifti`)
``*.nrrd``, ``*.nhdr``, ``*.mha``, ``*.mhd``  SimpleITK (:mod:`medseg.io.itk`)
``*.dcm``, no suffix, any other suffix      by content: DICOM, NIfTI, else a ReadError saying what
                                            the file looks like
==========================================  ======================================================

A file whose content does not match its suffix (a PNG renamed ``.nii.gz``, text renamed ``.nrrd``)
is a :class:`~medseg.errors.ReadError` naming the file and what it looks like. Errors from nibabel,
pydicom and SimpleITK never escape: they become ``ReadError``/``WriteError`` with the file name.

>>> vol = read("ct.nii.gz")                       # doctest: +SKIP
>>> write(vol.replace(is_label=True), "seg.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import struct
import zlib
from os import PathLike
from pathlib import Path

from medseg.errors import MedsegError, ReadError, WriteError
from medseg.io.atomic import atomic_output, check_output, full_suffix
from medseg.io.base import Irregular, SeriesInfo
from medseg.types import Volume

__all__ = [
    "read",
    "write",
    "scan",
    "detect_format",
    "check_writable",
    "check_output",
    "atomic_output",
    "WRITE_SUFFIXES",
    "Irregular",
    "SeriesInfo",
]

_NIFTI = (".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz")
_ITK = (".nrrd", ".nhdr", ".mha", ".mhd")
_WRITE_NIFTI = (".nii", ".nii.gz")
_WRITE_ITK = (".nrrd", ".mha")
#: output suffixes :func:`write` supports
WRITE_SUFFIXES = _WRITE_NIFTI + _WRITE_ITK


def _library_errors() -> tuple[type[BaseException], ...]:
    """Exception types the readers' libraries raise for bad files (translated to ReadError)."""
    errors: list[type[BaseException]] = [OSError, EOFError, ValueError, RuntimeError, zlib.error, struct.error, KeyError, IndexError]
    try:
        from nibabel.filebasedimages import ImageFileError
        from nibabel.spatialimages import HeaderDataError

        errors += [ImageFileError, HeaderDataError]
    except ImportError:  # pragma: no cover
        pass
    try:
        from pydicom.errors import InvalidDicomError

        errors.append(InvalidDicomError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def detect_format(path: str | PathLike[str]) -> str:
    """``'dicom'``, ``'nifti'`` or ``'itk'`` for ``path``, from its suffix and content.

    Raises:
        ReadError: the path does not exist, is an empty folder, or is a file that is none of these
            (the message says what it looks like).
    """
    from medseg.io.sniff import describe_file, kind_of, read_gzip_head, read_head

    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            raise ReadError("broken symbolic link (its target is missing, or the links form a loop)", p)
        raise ReadError("no such file or directory", p)
    if p.is_dir():
        try:
            with os.scandir(p) as it:
                empty = next(it, None) is None
        except OSError as err:
            raise ReadError(f"cannot list folder: {err.strerror or err}", p) from err
        if empty:
            raise ReadError("empty folder: no DICOM files (or anything else) in it", p)
        return "dicom"
    suffix = full_suffix(p)
    if suffix in _NIFTI:
        return "nifti"
    if suffix in _ITK:
        return "itk"
    try:
        head = read_head(p)
    except OSError as err:
        raise ReadError(f"cannot open: {err.strerror or err}", p) from err
    kind = kind_of(head)
    if suffix == ".zip":
        if kind != "zip":
            raise ReadError(f"not a zip archive: it looks like {describe_file(p)}", p)
        return "dicom"
    if kind in ("nifti1", "nifti2"):
        return "nifti"
    if kind == "gzip":
        inner = read_gzip_head(p)
        if inner is not None and kind_of(inner) in ("nifti1", "nifti2"):
            return "nifti"
    if kind == "dicom" or _is_dicom(p):
        return "dicom"
    if kind == "zip":
        return "dicom"  # a zip of DICOM files under another name
    what = describe_file(p)
    if kind in ("nrrd", "metaimage"):
        raise ReadError(f"looks like {what} but is not named .nrrd/.mha/.mhd; rename it", p)
    if suffix == ".dcm":
        raise ReadError(f"not a DICOM file: it looks like {what}", p)
    raise ReadError(
        f"not a medical image medseg can read (DICOM, NIfTI, NRRD, MetaImage): it looks like {what}", p
    )


def _is_dicom(path: Path) -> bool:
    from medseg.io.dicom import is_dicom_file

    return bool(is_dicom_file(path))


def read(path: str | PathLike[str], series: str | None = None, irregular: str | Irregular = "error") -> Volume:
    """Read a volume from a NIfTI/NRRD/MetaImage file, a DICOM file, folder or zip.

    Args:
        path: file, folder (DICOM, searched recursively) or ``.zip`` of DICOM files.
        series: SeriesInstanceUID to pick when a DICOM folder holds several series (ignored, and
            must be ``None``, for single-volume formats).
        irregular: ``"error"`` or ``"resample"``: what to do with DICOM slices that do not form a
            regular grid (see :class:`~medseg.io.base.Irregular`).

    Returns:
        ``Volume`` with an ``(I, J, K[, T])`` array and a RAS+ affine in mm.

    Raises:
        ReadError: (or a subclass: ``SeriesSelectionError``, ``GeometryError``) naming the file and
            the problem.
    """
    try:
        irregular = Irregular(irregular)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in Irregular)
        raise ValueError(f"irregular must be one of {choices}, got {irregular!r}.") from None
    p = Path(path).expanduser()
    fmt = detect_format(p)
    if fmt != "dicom" and series is not None:
        raise ReadError(f"--series applies to DICOM only; this is a {fmt} file with one volume", p)
    try:
        if fmt == "nifti":
            from medseg.io.nifti import read_nifti

            return read_nifti(p)
        if fmt == "itk":
            from medseg.io.itk import read_itk

            return read_itk(p)
        from medseg.io.dicom import read_dicom

        return read_dicom(p, series=series, irregular=irregular.value)
    except MedsegError:
        raise
    except MemoryError as err:
        raise ReadError("not enough memory to load this volume", p) from err
    except _library_errors() as err:
        raise ReadError(f"cannot read {fmt} data: {type(err).__name__}: {err}", p) from err


def scan(path: str | PathLike[str]) -> list[SeriesInfo]:
    """List the series in ``path`` from headers only (no voxel data read), for ``medseg info``.

    NIfTI/NRRD/MetaImage files give one :class:`SeriesInfo`; a DICOM folder/zip/file one per series.
    """
    p = Path(path).expanduser()
    fmt = detect_format(p)
    try:
        if fmt == "nifti":
            from medseg.io.nifti import scan_nifti

            return [scan_nifti(p)]
        if fmt == "itk":
            from medseg.io.itk import scan_itk

            return [scan_itk(p)]
        from medseg.io.dicom import scan_dicom

        return list(scan_dicom(p))
    except MedsegError:
        raise
    except _library_errors() as err:
        raise ReadError(f"cannot read {fmt} header: {type(err).__name__}: {err}", p) from err


def check_writable(path: str | PathLike[str], overwrite: bool = False) -> Path:
    """Check, before any expensive work, that :func:`write` could write ``path``.

    Raises:
        WriteError: unsupported suffix, missing directory, or an existing output without ``overwrite``.
    """
    out = Path(path).expanduser()
    if full_suffix(out) not in WRITE_SUFFIXES:
        raise WriteError(_suffix_message(out), out)
    return check_output(out, overwrite)


def _suffix_message(out: Path) -> str:
    suffix = full_suffix(out)
    return f"cannot write {suffix or 'a file without a suffix'!r}: use .nii.gz, .nii, .nrrd or .mha"


def write(volume: Volume, path: str | PathLike[str], overwrite: bool = False) -> Path:
    """Write ``volume`` to ``path`` (``.nii``/``.nii.gz``; ``.nrrd``/``.mha`` through SimpleITK).

    Written via a temporary file in the same directory and an atomic rename: never a partial file.
    NIfTI gets qform and sform (code 1, scanner, unless the source had another code) holding the
    affine; label maps (``volume.is_label``) are stored as uint8/uint16/uint32.

    Args:
        volume: the image or label map.
        path: output file; its directory must exist.
        overwrite: replace an existing file (otherwise an existing output is a ``WriteError``).

    Returns:
        The output path.

    Raises:
        WriteError: output exists, directory missing, unsupported suffix, invalid labels, I/O error.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a medseg Volume, got {type(volume).__name__}.")
    out = Path(path).expanduser()
    suffix = full_suffix(out)
    if suffix in _WRITE_NIFTI:
        from medseg.io.nifti import write_nifti

        return write_nifti(volume, out, overwrite=overwrite)
    if suffix in _WRITE_ITK:
        from medseg.io.itk import write_itk

        return write_itk(volume, out, overwrite=overwrite)
    raise WriteError(_suffix_message(out), out)
