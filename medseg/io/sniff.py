"""Recognise what a file really holds from its first bytes, for dispatch and for error messages.

Only cheap, bounded reads: at most :data:`SNIFF_BYTES` bytes of the file, and for a gzip file at
most :data:`SNIFF_BYTES` decompressed bytes.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from os import PathLike
from pathlib import Path

__all__ = ["SNIFF_BYTES", "read_head", "read_gzip_head", "kind_of", "describe", "describe_file"]

SNIFF_BYTES = 1024

# (magic, offset, kind, description)
_MAGICS: list[tuple[bytes, int, str, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "png", "a PNG image"),
    (b"\xff\xd8\xff", 0, "jpeg", "a JPEG image"),
    (b"GIF8", 0, "gif", "a GIF image"),
    (b"II*\x00", 0, "tiff", "a TIFF image"),
    (b"MM\x00*", 0, "tiff", "a TIFF image"),
    (b"BM", 0, "bmp", None),  # too short to trust alone; checked below
    (b"%PDF", 0, "pdf", "a PDF document"),
    (b"PK\x03\x04", 0, "zip", "a zip archive"),
    (b"PK\x05\x06", 0, "zip", "an empty zip archive"),
    (b"\x1f\x8b", 0, "gzip", "gzip-compressed data"),
    (b"BZh", 0, "bzip2", "bzip2-compressed data"),
    (b"\x28\xb5\x2f\xfd", 0, "zstd", "zstd-compressed data"),
    (b"\xfd7zXZ\x00", 0, "xz", "xz-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", 0, "7z", "a 7-Zip archive"),
    (b"\x89HDF\r\n\x1a\n", 0, "hdf5", "an HDF5 file"),
    (b"NRRD000", 0, "nrrd", "a NRRD image"),
    (b"DICM", 128, "dicom", "a DICOM file"),
    (b"\x93NUMPY", 0, "npy", "a NumPy .npy array"),
]


def read_head(path: str | PathLike[str], n: int = SNIFF_BYTES) -> bytes:
    """First ``n`` bytes of a file (fewer if it is shorter)."""
    with open(path, "rb") as fh:
        return fh.read(n)


def read_gzip_head(path: str | PathLike[str], n: int = SNIFF_BYTES) -> bytes | None:
    """First ``n`` decompressed bytes of a gzip file, or ``None`` if it does not decompress."""
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError, zlib.error):
        return None


def _nifti_kind(head: bytes) -> str | None:
    if len(head) < 348:
        return None
    for endian in "<>":
        (size,) = struct.unpack(f"{endian}i", head[:4])
        if size == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
            return "nifti1"
        if size == 540 and len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return "nifti2"
        if size == 348:
            return "analyze"
    return None


_METAIMAGE_KEYS = (b"objecttype", b"ndims", b"dimsize", b"elementtype", b"elementdatafile")


def kind_of(head: bytes) -> str:
    """Short machine name of what ``head`` (a file's first bytes) looks like.

    One of ``empty``, ``nifti1``, ``nifti2``, ``analyze``, ``dicom``, ``nrrd``, ``metaimage``,
    ``png``, ``jpeg``, ``gzip``, ``zip``, ... ``text`` or ``binary``.
    """
    if not head:
        return "empty"
    nifti = _nifti_kind(head)
    if nifti:
        return nifti
    for magic, offset, kind, _ in _MAGICS:
        if head[offset : offset + len(magic)] == magic:
            if kind == "bmp" and not (len(head) >= 26 and head[14] in (12, 40, 52, 56, 64, 108, 124)):
                continue
            return kind
    lower = head[:400].lower()
    if sum(key in lower for key in _METAIMAGE_KEYS) >= 2:
        return "metaimage"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of `head` is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "binary"
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text"
    return "binary"


def describe(head: bytes) -> str:
    """Human description of ``head``, e.g. ``"a PNG image"`` or ``"text: 'hello world'"``."""
    kind = kind_of(head)
    names = {
        "empty": "an empty file",
        "nifti1": "a NIfTI-1 header",
        "nifti2": "a NIfTI-2 header",
        "analyze": "an Analyze 7.5 header",
        "metaimage": "a MetaImage (.mha/.mhd) header",
        "binary": "unrecognised binary data",
        "bmp": "a BMP image",
    }
    if kind in names:
        return names[kind]
    if kind == "text":
        snippet = head[:40].decode("utf-8", errors="replace").splitlines()[0] if head.strip() else ""
        return f"plain text ({snippet!r}...)" if snippet else "blank text"
    for _, _, k, desc in _MAGICS:
        if k == kind and desc:
            return desc
    return kind  # pragma: no cover


def describe_file(path: str | PathLike[str]) -> str:
    """:func:`describe` for a file, looking inside gzip compression (``"gzip-compressed PNG image"``)."""
    p = Path(path)
    try:
        head = read_head(p)
    except OSError as err:
        return f"an unreadable file ({err.strerror or err})"
    if kind_of(head) != "gzip":
        return describe(head)
    inner = read_gzip_head(p)
    if inner is None:
        return "gzip data that does not decompress (corrupt or truncated)"
    if not inner:
        return "gzip-compressed empty data"
    return f"gzip-compressed {describe(inner).removeprefix('a ').removeprefix('an ')}"
