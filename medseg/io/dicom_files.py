"""Finding DICOM files: a single file, a folder (recursive) or a zip archive (read in memory).

Nothing here writes to disk. Zip members are never extracted: their bytes are read into memory, and
member names that would escape an extraction root (``../x``, ``/abs``, ``C:\\x``) are skipped with a
warning. A member whose declared size exceeds the voxel limit or whose compression ratio exceeds the
inflate-ratio limit (:mod:`medseg.io.limits`) makes the archive a ``ReadError`` (a zip bomb); headers
are parsed while streaming a member (:meth:`SourceOpener.open_header`), never inflating it whole. Files
on disk are read for pixels through a wrapper whose ``read(n)`` never asks for more than the file holds. Folder walks follow symbolic links but remember every real directory already visited and never
climb into a parent of the searched folder, so a symlink loop cannot make them hang, and a file reached
twice (through a link) is read once.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from typing import Any, BinaryIO

from medseg.errors import ReadError
from medseg.io.limits import check_inflate

__all__ = ["DicomSource", "ListedSources", "list_sources", "open_sources", "looks_like_dicom", "MAX_MEMBER_BYTES"]

#: Largest zip member (uncompressed bytes, as its header declares) that is read into memory.
MAX_MEMBER_BYTES = 2 * 1024**3

_HEAD_BYTES = 132


@dataclass(frozen=True)
class DicomSource:
    """One candidate DICOM file: a file on disk, or a member of a zip archive.

    Args:
        path: file on disk (the zip archive itself for a member).
        member: name of the member inside the zip, or ``None`` for a plain file.
        size: size in bytes (uncompressed size for a member).
    """

    path: str
    member: str | None = None
    size: int = 0

    @property
    def name(self) -> str:
        """Display name used in messages: ``/dir/file.dcm`` or ``/dir/a.zip!member``."""
        return self.path if self.member is None else f"{self.path}!{self.member}"


@dataclass(frozen=True)
class ListedSources:
    """Files found under a path, plus warnings about anything skipped for safety."""

    sources: tuple[DicomSource, ...]
    warnings: tuple[str, ...] = ()
    is_archive: bool = False


def looks_like_dicom(head: bytes) -> bool:
    """Cheap test on a file's first bytes: ``DICM`` at offset 128, or a plausible first data element.

    The second form (no preamble, as in some old or "raw" files) accepts a group 0x0002 or 0x0008
    first tag in either byte order; such files must still parse as DICOM to be used.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def _unsafe_member(name: str) -> bool:
    """A zip member name that would land outside an extraction root (absolute, drive, ``..``)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) >= 2 and norm[1] == ":"):
        return True
    return any(part == ".." for part in norm.split("/"))


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ReadError("symbolic link loop (the link points back to itself)", path) from err
        if not os.path.lexists(path):
            raise ReadError("no such file or directory", path) from err
        raise ReadError(f"cannot access: {err.strerror or err}", path) from err


def _walk(root: str) -> tuple[list[DicomSource], list[str]]:
    """Every regular file under ``root``; symlinked folders are followed once (loop-safe)."""
    found: list[DicomSource] = []
    warnings: list[str] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    root_real = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs or (real != root_real and root_real.startswith(real.rstrip(os.sep) + os.sep)):
            # a symlink loop (a link back to this folder or one of its parents) or a second link to the
            # same folder: do not descend
            if os.path.islink(dirpath):
                warnings.append(f"skipped {dirpath}: symbolic link loop (it leads back to a folder already searched)")
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for fname in sorted(filenames):
            full = os.path.join(dirpath, fname)
            try:
                st = os.stat(full)
            except OSError as err:
                reason = "symbolic link loop" if err.errno == errno.ELOOP else (err.strerror or str(err))
                warnings.append(f"skipped {full}: {reason}")
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            real_file = os.path.realpath(full)
            if real_file in seen_files:
                continue
            seen_files.add(real_file)
            found.append(DicomSource(full, None, st.st_size))
    return found, warnings


def _zip_members(path: str) -> tuple[list[DicomSource], list[str]]:
    found: list[DicomSource] = []
    warnings: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if _unsafe_member(info.filename):
                    warnings.append(
                        f"skipped zip member {info.filename!r}: unsafe name (absolute or '..' path traversal)"
                    )
                    continue
                if info.flag_bits & 0x1:
                    warnings.append(f"skipped zip member {info.filename!r}: encrypted")
                    continue
                problem = check_inflate(info.file_size, info.compress_size, f"zip member {info.filename!r}")
                if problem:
                    raise ReadError(problem, path)
                found.append(DicomSource(path, info.filename, info.file_size))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ReadError(f"not a readable zip archive ({err})", path) from err
    found.sort(key=lambda s: s.member or "")
    return found, warnings


def list_sources(path: str | PathLike[str]) -> ListedSources:
    """Candidate files under ``path`` (file, folder searched recursively, or ``.zip``).

    Raises:
        ReadError: the path does not exist, is a symlink loop, or is an unreadable zip.
    """
    p = os.fspath(path)
    st = _stat(p)
    if stat.S_ISDIR(st.st_mode):
        found, warnings = _walk(p)
        return ListedSources(tuple(found), tuple(warnings))
    if not stat.S_ISREG(st.st_mode):
        raise ReadError("not a regular file or folder", p)
    if zipfile.is_zipfile(p):
        found, warnings = _zip_members(p)
        return ListedSources(tuple(found), tuple(warnings), is_archive=True)
    return ListedSources((DicomSource(p, None, st.st_size),))


class _Bounded(io.RawIOBase):
    """A file whose ``read(n)`` never asks for more than what is left in the file, so a length field
    claiming gigabytes allocates only what is there."""

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__()
        self._fh = fh
        self.name = getattr(fh, "name", None)
        self._size = os.fstat(fh.fileno()).st_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and 0 <= n <= 1 << 20:  # small reads cannot over-allocate: no bookkeeping
            return self._fh.read(n)
        left = max(self._size - self._fh.tell(), 0)
        return self._fh.read(left if n is None or n < 0 else min(n, left))

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()
        super().close()


class SourceOpener:
    """Opens :class:`DicomSource` s, keeping each zip archive open while in use."""

    def __init__(self) -> None:
        self._zips: dict[str, zipfile.ZipFile] = {}

    def read_head(self, source: DicomSource, n: int = _HEAD_BYTES) -> bytes:
        """First ``n`` bytes (a zip member is only partly decompressed)."""
        if source.member is None:
            with open(source.path, "rb") as fh:
                return fh.read(n)
        with self._zip(source.path).open(source.member) as fh:
            return fh.read(n)

    def _zip(self, path: str) -> zipfile.ZipFile:
        zf = self._zips.get(path)
        if zf is None:
            zf = zipfile.ZipFile(path)
            self._zips[path] = zf
        return zf

    def open_header(self, source: DicomSource) -> BinaryIO:
        """A file object for reading the header only: a zip member is decompressed as it is read
        (never whole, so listing a zip's series does not inflate its pixel data)."""
        if source.member is None:  # the header parser skips elements longer than the file (defer_size)
            return open(source.path, "rb")  # noqa: SIM115 - closed by the caller's `with`
        return self._zip(source.path).open(source.member)  # type: ignore[return-value]

    def open(self, source: DicomSource) -> BinaryIO:
        """A binary file object positioned at the start of the file (zip members: in memory)."""
        if source.member is None:
            return _Bounded(open(source.path, "rb"))  # noqa: SIM115 - closed by the caller's `with`
        with self._zip(source.path).open(source.member) as fh:
            data = fh.read(MAX_MEMBER_BYTES + 1)  # zipfile checks the CRC and the declared size
        return io.BytesIO(data)

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()


@contextmanager
def open_sources() -> Iterator[SourceOpener]:
    """Context manager yielding a :class:`SourceOpener`; closes any archive it opened."""
    opener = SourceOpener()
    try:
        yield opener
    finally:
        opener.close()
