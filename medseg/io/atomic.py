"""Write outputs safely: a temporary file in the target directory, then one atomic rename.

A reader never sees a half-written output, a failed write leaves nothing behind, and an existing
output is never replaced unless the caller asks for it. Any writer can reuse this:

>>> with atomic_output("seg.nii.gz") as tmp:      # doctest: +SKIP
...     write_something(tmp)                       # tmp ends with ".nii.gz" too
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

from medseg.errors import WriteError

__all__ = ["check_output", "atomic_output", "full_suffix"]

#: Double suffixes kept whole, so that tools choosing a format by suffix (nibabel, SimpleITK) still can.
_DOUBLE_SUFFIXES = (".nii.gz", ".hdr.gz", ".img.gz", ".tar.gz")


def full_suffix(path: str | PathLike[str]) -> str:
    """``'.nii.gz'`` for ``x.nii.gz``, ``'.nrrd'`` for ``x.nrrd``, ``''`` without a suffix (lower case)."""
    name = Path(path).name.lower()
    for double in _DOUBLE_SUFFIXES:
        if name.endswith(double) and len(name) > len(double):
            return double
    return Path(name).suffix


def check_output(path: str | PathLike[str], overwrite: bool = False) -> Path:
    """Fail early (before any expensive work) if ``path`` cannot be written.

    Raises:
        WriteError: the directory does not exist or is not a directory, the output exists and
            ``overwrite`` is false, or the output is a directory.
    """
    out = Path(path).expanduser()
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise WriteError(f"output directory {str(parent)!r} does not exist", out)
    if not parent.is_dir():
        raise WriteError(f"{str(parent)!r} is not a directory", out)
    if out.is_dir():
        raise WriteError("output path is a directory, expected a file name", out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise WriteError("output already exists (pass --overwrite to replace it)", out)
    return out


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read once. Linux reports it in /proc (no side effect); elsewhere it can only
    be read by setting it, which is done once, under the lru_cache, and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | PathLike[str], overwrite: bool = False, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it to ``path`` atomically.

    The temporary file lives in the same directory (so the final ``os.replace`` is atomic), is
    hidden (leading dot) and ends with ``suffix`` (default: the full suffix of ``path``, e.g.
    ``.nii.gz``) so format-by-suffix writers work. On success the data is fsynced, given the usual
    permissions (``0o666 & ~umask``) and renamed; on any exception the temporary file is deleted
    and the exception propagates; ``path`` is then untouched.

    Args:
        path: final output file.
        overwrite: replace an existing ``path``; if false an existing output raises ``WriteError``
            (checked before and again, atomically, at the rename).
        suffix: suffix of the temporary file.

    Raises:
        WriteError: see :func:`check_output`; also when the directory is not writable or the
            final rename fails.
    """
    out = check_output(path, overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    suffix = full_suffix(out) if suffix is None else suffix
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{suffix}", dir=parent)
    except OSError as err:
        raise WriteError(f"cannot create a file in {str(parent)!r}: {err.strerror or err}", out) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise WriteError("the writer did not produce a file", out)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, out)
        else:
            # A hard link fails atomically if `out` appeared meanwhile; fall back to a checked rename
            # on filesystems without hard links.
            try:
                os.link(tmp, out)
            except FileExistsError as err:
                raise WriteError("output already exists (pass --overwrite to replace it)", out) from err
            except OSError:
                if out.exists():
                    raise WriteError("output already exists (pass --overwrite to replace it)", out)
                os.replace(tmp, out)
            else:
                tmp.unlink()
        _fsync_dir(parent)
    except OSError as err:
        raise WriteError(f"writing failed: {err.strerror or err}", out) from err
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:  # pragma: no cover - nothing more we can do; the name is hidden
                pass
