"""Download a file into a cache with a progress bar, sha256 check, resume and atomic rename.

Standard library only (plus tqdm for the bar). Used by ``medseg models pull`` and for SAM checkpoints.

The body is streamed to ``<dest>/<name>.part``; an interrupted download keeps the ``.part`` file and the next
call resumes it with an HTTP ``Range`` request (or restarts when the server ignores ranges). Only a complete
file whose sha256 matches is renamed to its final name; a mismatch deletes the partial data and raises.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from medseg.errors import ModelError

__all__ = ["download", "DownloadError"]

_CHUNK = 1 << 16


class DownloadError(ModelError):
    """A download failed (network error, truncated body, checksum mismatch)."""


def _sha256_of(path: Path) -> hashlib._Hash:  # type: ignore[name-defined]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h


def download(
    url: str,
    sha256: str | None,
    dest_dir: str | os.PathLike[str],
    progress: bool = True,
    *,
    filename: str | None = None,
    allow_unverified: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into ``dest_dir`` (unless already there and verified); return the file's path.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        sha256: expected hex digest; ``None`` only with ``allow_unverified=True`` (the digest is then
            recorded in ``<file>.sha256`` so later loads can check it).
        dest_dir: cache directory (created if missing).
        progress: show a tqdm progress bar on stderr.
        filename: name in the cache (default: last URL path component).
        allow_unverified: accept a download without a known checksum.
        timeout: socket timeout in seconds.

    Raises:
        DownloadError: network error, truncated body, or checksum mismatch (no file is left behind
            under the final name; a truncated body leaves ``.part`` for resuming).
    """
    if sha256 is None and not allow_unverified:
        raise DownloadError(f"no sha256 is known for {url}; re-run with --allow-unverified to accept it unchecked")
    if sha256 is not None:
        sha256 = sha256.lower()
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    name = filename or url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not name or name in (".", ".."):
        raise DownloadError(f"cannot derive a file name from {url}")
    final = dest / name
    part = dest / (name + ".part")
    if final.is_file():
        digest = _sha256_of(final).hexdigest()
        if sha256 is None or digest == sha256:
            _record(final, digest)
            return final
        final.unlink()  # stale or corrupt cache entry: fetch again

    offset = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "medseg"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the .part may already be complete
            resp = None
        else:
            raise DownloadError(f"download failed: HTTP {err.code} {err.reason}", url) from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"download failed: {getattr(err, 'reason', err)}", url) from None

    h = hashlib.sha256()
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            if offset and status != 206:  # server ignored the range: restart from scratch
                offset = 0
            if offset:
                h = _sha256_of(part)
            length = resp.headers.get("Content-Length")
            total = int(length) + offset if length is not None and length.isdigit() else None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
            received = 0
            try:
                with open(part, "ab" if offset else "wb") as f:
                    while True:
                        try:
                            block = resp.read(_CHUNK)
                        except (OSError, ValueError) as err:  # connection reset / IncompleteRead
                            raise DownloadError(
                                f"download interrupted after {offset + received} bytes ({err}); run again to resume",
                                url,
                            ) from None
                        if not block:
                            break
                        f.write(block)
                        h.update(block)
                        received += len(block)
                        if bar is not None:
                            bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
            if length is not None and length.isdigit() and received != int(length):
                raise DownloadError(
                    f"download interrupted: got {offset + received} of {int(length) + offset} bytes; "
                    "run again to resume",
                    url,
                )
    else:
        h = _sha256_of(part)

    digest = h.hexdigest()
    if sha256 is not None and digest != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"sha256 mismatch: expected {sha256}, got {digest}; the download was deleted", url)
    os.replace(part, final)
    _record(final, digest)
    return final


def _record(path: Path, digest: str) -> None:
    """Write ``<file>.sha256`` next to a verified/accepted download."""
    side = path.with_name(path.name + ".sha256")
    if not side.is_file() or side.read_text().strip() != digest:
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(digest + "\n")
        os.replace(tmp, side)


def extract_member(archive: Path, member: str, dest_dir: Path) -> Path:
    """Extract one file of a ``.zip`` into ``dest_dir/member`` (atomically, without path traversal)."""
    import shutil
    import zipfile

    target = (dest_dir / member).resolve()
    if not str(target).startswith(str(dest_dir.resolve()) + os.sep):
        raise DownloadError(f"archive member {member!r} escapes the cache directory", archive)
    try:
        with zipfile.ZipFile(archive) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                names = [n for n in z.namelist() if n.endswith((".pt", ".ts", ".pth"))]
                raise DownloadError(f"archive has no {member!r} (model files: {', '.join(names) or 'none'})", archive) from None
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            with z.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, target)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"not a zip archive: {err}", archive) from None
    return target
