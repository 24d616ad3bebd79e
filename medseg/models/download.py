"""Download a file into a cache with a progress bar, digest check and atomic rename.

Standard library only (plus tqdm for the bar). Used by ``medseg models pull`` and for SAM checkpoints.

The body is streamed to a uniquely named hidden ``.<name>.<random>.part`` file next to its final place.
Only a complete file whose digest matches is renamed to its final name; anything else (network error,
truncated body, digest mismatch, Ctrl-C) deletes the partial file, and partial files a killed process
left behind are deleted before the next download: a partial file is never resumed nor trusted.

The digest of every download is recorded with :func:`medseg.models.trust.put_record` (outside the cache). A
cached file whose digest no longer matches (the spec's pin, the publisher's digest or the record) is
deleted and fetched again: a changed file is never re-blessed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from medseg.errors import ModelError
from medseg.models.cache import file_digests

__all__ = ["download", "DownloadError", "extract_member"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 16


class DownloadError(ModelError):
    """A download failed (network error, truncated body, checksum mismatch)."""


def _digests(path: Path) -> tuple[str, str]:
    d = file_digests(path, ("sha256", "sha1"))
    return d["sha256"], d["sha1"]


def _remove_partials(dest: Path, name: str) -> None:
    """Delete partial files of ``name`` left by an interrupted or killed earlier download."""
    for p in (dest / f"{name}.part", *dest.glob(f".{name}.*.part")):
        try:
            p.unlink()
        except OSError:
            pass


def download(
    url: str,
    sha256: str | None,
    dest_dir: str | os.PathLike[str],
    progress: bool = True,
    *,
    filename: str | None = None,
    allow_unverified: bool = False,
    timeout: float = 60.0,
    sha1: str | None = None,
    mirrors: tuple[str, ...] = (),
) -> Path:
    """Download ``url`` into ``dest_dir`` (unless already there and verified); return the file's path.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        sha256: expected hex digest (pinned by the spec).
        dest_dir: cache directory (created if missing).
        progress: show a tqdm progress bar on stderr.
        filename: name in the cache (default: last URL path component).
        allow_unverified: accept a download without a known digest (its sha256 is recorded, so later
            loads check it; it is never trusted to run code).
        timeout: socket timeout in seconds.
        sha1: expected hex sha1 as the publisher lists it (MONAI model zoo), when no sha256 is known.
        mirrors: other addresses of the same file, tried in order when ``url`` cannot be fetched (network
            or HTTP error; MONAI's order: monaihosting, then the zoo's release). A body from any address is
            checked against the same digest; a mismatch is an error, never a reason to try the next one.
            The file is cached and recorded under ``url``.

    Raises:
        DownloadError: network error, truncated body, or digest mismatch (nothing is left behind), or an
            unverified download whose content differs from the one recorded earlier.
    """
    from medseg.models.trust import DigestRecord, get_record, put_record

    if sha256 is None and sha1 is None and not allow_unverified:
        raise DownloadError(f"no sha256 is known for {url}; re-run with --allow-unverified to accept it unchecked")
    sha256 = sha256.lower() if sha256 else None
    sha1 = sha1.lower() if sha1 else None
    verified = sha256 is not None or sha1 is not None
    how = "sha256 pinned in the model spec" if sha256 else "archive sha1 verified against the publisher's registry"
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    name = filename or url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise DownloadError(f"cannot derive a file name from {url}")
    final = dest / name
    previous = get_record(url)

    def matches(d256: str, d1: str) -> bool:
        if sha256 is not None:
            return d256 == sha256
        if sha1 is not None:
            return d1 == sha1
        return previous is not None and previous.sha256 == d256

    _remove_partials(dest, name)
    if final.is_file():
        d256, d1 = _digests(final)
        if matches(d256, d1):
            if previous is None or previous.sha256 != d256 or (verified and not previous.verified):
                put_record(DigestRecord(url, "", d256, verified, verified, how if verified else "unverified download"))
            return final
        log.warning("%s: cached file changed since it was recorded (sha256 %s); fetching it again", final, d256)
        final.unlink()

    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            d256, d1 = _fetch_first((url, *mirrors), f, name, progress, timeout)
        if sha256 is not None and d256 != sha256:
            raise DownloadError(f"sha256 mismatch: expected {sha256}, got {d256}; the download was deleted", url)
        if sha256 is None and sha1 is not None and d1 != sha1:
            raise DownloadError(
                f"sha1 mismatch: the publisher lists {sha1}, got {d1}; the download was deleted", url
            )
        if not verified and previous is not None and previous.sha256 != d256:
            raise DownloadError(
                f"the server now sends a different file (sha256 {d256}) than the one recorded on "
                f"{previous.time or 'an earlier pull'} ({previous.sha256}); not accepting it unverified. If the "
                f"change is expected, remove its entry from the trust records and pull again",
                url,
            )
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    put_record(DigestRecord(url, "", d256, verified, verified, how if verified else "unverified download"))
    return final


def _fetch_first(urls: tuple[str, ...], f, name: str, progress: bool, timeout: float) -> tuple[str, str]:  # noqa: ANN001
    """:func:`_fetch` from the first of ``urls`` that answers; the first error if none does."""
    errors: list[DownloadError] = []
    for u in urls:
        f.seek(0)
        f.truncate()
        try:
            return _fetch(u, f, name, progress, timeout)
        except DownloadError as err:
            errors.append(err)
            if len(errors) < len(urls):
                log.warning("%s; trying %s", err, urls[len(errors)])
    if len(errors) == 1:
        raise errors[0]
    raise DownloadError(f"{errors[0].message} (and {len(errors) - 1} mirror(s) failed too: {errors[-1].message})",
                        urls[0])


def _fetch(url: str, f, name: str, progress: bool, timeout: float) -> tuple[str, str]:  # noqa: ANN001
    """Stream ``url`` into the open file ``f``; return ``(sha256, sha1)`` of the body."""
    req = urllib.request.Request(url, headers={"User-Agent": "medseg"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"download failed: HTTP {err.code} {err.reason}", url) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(f"download failed: {getattr(err, 'reason', err)}", url) from None
    h256, h1 = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
    with resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name)
        received = 0
        try:
            while True:
                try:
                    block = resp.read(_CHUNK)
                except (OSError, ValueError) as err:  # connection reset / IncompleteRead
                    raise DownloadError(
                        f"download interrupted after {received} bytes ({err}); nothing was kept, run again", url
                    ) from None
                if not block:
                    break
                f.write(block)
                h256.update(block)
                h1.update(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and received != total:
            raise DownloadError(
                f"download interrupted: got {received} of {total} bytes; nothing was kept, run again", url
            )
    return h256.hexdigest(), h1.hexdigest()


def extract_member(archive: Path, member: str, target: Path) -> tuple[Path, str]:
    """Extract one file of a ``.zip`` to ``target`` (atomically); return ``(target, sha256)``.

    The sha256 is computed on the bytes written, i.e. on the extracted file as it will be loaded. A
    member larger than it declares, a broken archive or a missing member raises and leaves nothing.

    Raises:
        DownloadError: not a zip, no such member, corrupt member.
    """
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as dst:
            try:
                with zipfile.ZipFile(archive) as z:
                    try:
                        info = z.getinfo(member)
                    except KeyError:
                        names = [n for n in z.namelist() if n.endswith((".pt", ".ts", ".pth"))][:10]
                        raise DownloadError(
                            f"archive has no {member!r} (model files: {', '.join(names) or 'none'})", archive
                        ) from None
                    written = 0
                    with z.open(info) as src:
                        while block := src.read(1 << 20):
                            written += len(block)
                            if written > info.file_size:
                                raise DownloadError(f"archive member {member!r} inflates beyond its declared size",
                                                    archive)
                            dst.write(block)
                            h.update(block)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as err:
                raise DownloadError(f"cannot extract {member!r}: {err}", archive) from None
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target, h.hexdigest()
