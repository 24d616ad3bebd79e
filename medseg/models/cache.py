"""Where pulled model files live, and the one sha256 helper (standard library only).

Cache layout (``$MEDSEG_CACHE`` or ``~/.cache/medseg``)::

    url/<sha256(url)[:24]>/<base name>              a downloaded file, keyed by its whole URL
    member/<sha256(url#member)[:24]>/<base name>    an archive member extracted from a download
    wheels/<name>-<version>/...                     wheels and their members (:mod:`medseg.models.wheels`)
    sam/...                                         SAM checkpoints (:mod:`medseg.sam.registry`)

Nothing in the cache vouches for itself: the digests of pulled files are recorded outside it
(:mod:`medseg.models.trust`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_dir", "file_digests", "read_hashed", "member_cache_path", "sha256_file", "url_cache_name", "url_cache_path"]


def cache_dir() -> Path:
    """Download cache: ``$MEDSEG_CACHE`` or ``~/.cache/medseg``."""
    env = os.environ.get("MEDSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medseg"


def file_digests(path: str | os.PathLike[str], algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file's bytes, read once (e.g. ``("sha256", "sha1")`` for a MONAI zoo archive).

    sha1 is only ever compared with a publisher's listed digest, never used alone to vouch for code.
    """
    hashes = {a: hashlib.new(a, usedforsecurity=a != "sha1") for a in algorithms}
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes: the one file-hash helper of medseg.

    >>> import tempfile; f = tempfile.NamedTemporaryFile(delete=False); _ = f.write(b"abc"); f.close()
    >>> sha256_file(f.name)[:16]
    'ba7816bf8f01cfea'
    """
    return file_digests(path)["sha256"]


def read_hashed(path: str | os.PathLike[str]) -> tuple[bytes, str]:
    """A file's bytes, read once, and their sha256: check the digest, then load *these* bytes (never the
    path again), so the file that is loaded is the file that was checked."""
    with open(path, "rb") as f:
        data = f.read()
    return data, hashlib.sha256(data).hexdigest()


def url_cache_name(url: str) -> str:
    """Base name of a URL's last path component (what the cached file is called inside its folder)."""
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name if name not in ("", ".", "..") else "download"


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def url_cache_path(url: str) -> Path:
    """Cached file of a URL: ``<cache>/url/<sha256(url)[:24]>/<base name>``.

    Keyed by the whole URL, so two sources whose names both end in ``model.pt`` never share a file.
    """
    return cache_dir() / "url" / _key(url) / url_cache_name(url)


def member_cache_path(url: str, member: str) -> Path:
    """Extracted archive member: ``<cache>/member/<sha256(url#member)[:24]>/<member base name>``."""
    base = member.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "member"
    return cache_dir() / "member" / _key(f"{url}#{member}") / base
