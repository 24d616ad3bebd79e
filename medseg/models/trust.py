"""What medseg trusts about model files: recorded digests of downloads, and which files may run code.

Pure standard library (no torch). Two different questions are answered here:

* **Integrity** (every weight file): the sha256 of the exact bytes that are loaded must match a digest
  pinned in the spec (``weights.sha256``) or recorded when the file was pulled (``medseg models pull``).
* **Code** (TorchScript, and any pickle beyond ``weights_only``): loading such a file runs code it carries
  (``torch.jit.load`` calls each module's ``__setstate__``). It is loaded only when its sha256 matches a
  hash pinned in the spec (medseg's own registry, or the user's spec), or a record made by a pull that
  verified the archive against its publisher's digest, or a record made by ``medseg models pull NAME
  --trust-model-code``; otherwise only with the explicit opt-in ``--trust-model-code``.

Records live in one JSON file **outside the download cache** (a shared or writable cache must not be
able to vouch for itself): ``$MEDSEG_TRUST_FILE``, else ``$XDG_CONFIG_HOME/medseg/trusted_models.json``
(``~/.config/medseg/trusted_models.json``). A ``<file>.sha256`` next to a download is never read.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from medseg.errors import ModelError

__all__ = [
    "TRUST_FLAG",
    "TRUSTED_BY_USER",
    "DigestRecord",
    "CodeNotTrustedError",
    "trust_file",
    "record_key",
    "get_record",
    "put_record",
    "put_records",
    "member_records",
    "code_trust_reason",
]

#: the CLI opt-in that lets unpinned model code run
TRUST_FLAG = "--trust-model-code"
#: ``how`` of a record the user vouched for (``medseg models pull NAME --trust-model-code``)
TRUSTED_BY_USER = "pinned by the user (models pull --trust-model-code)"
_MAX_BYTES = 4 << 20  # the record file is small; a huge one is refused rather than parsed


class CodeNotTrustedError(ModelError):
    """A model file would run code (TorchScript, full pickle) and nothing vouches for it."""


@dataclass(frozen=True)
class DigestRecord:
    """What a pull recorded about one downloaded file (or archive member).

    Args:
        source: the URL.
        member: the archive member (``""`` for the downloaded file itself).
        sha256: hex digest of the file as extracted/downloaded.
        verified: the download matched a digest its publisher gives (spec sha256 or archive sha1).
        code_trusted: the file may run code (verified publisher digest, or the user's --trust-model-code).
        how: one line on where the trust comes from, for messages.
        time: when it was recorded (UTC, ISO 8601).
    """

    source: str
    member: str
    sha256: str
    verified: bool
    code_trusted: bool
    how: str
    time: str = ""


def trust_file() -> Path:
    """The record file (see the module docstring)."""
    env = os.environ.get("MEDSEG_TRUST_FILE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "medseg" / "trusted_models.json"


def record_key(source: str, member: str | None = None) -> str:
    """Key of a record: the source URL, plus ``#member`` for an archive member."""
    return f"{source}#{member}" if member else source


def _load() -> dict[str, dict]:
    path = trust_file()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ModelError(f"cannot read the trust records: {err.strerror or err}", path) from None
    if size > _MAX_BYTES:
        raise ModelError(f"trust record file is {size} bytes (limit {_MAX_BYTES}); delete it and pull again", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"trust record file is unreadable ({err}); delete it and pull again", path) from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ModelError("trust record file has no 'entries' mapping; delete it and pull again", path)
    return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, dict)}


def get_record(source: str, member: str | None = None) -> DigestRecord | None:
    """The record of a pulled URL (or archive member), or ``None``."""
    raw = _load().get(record_key(source, member))
    if raw is None:
        return None
    try:
        rec = DigestRecord(
            source=str(raw["source"]), member=str(raw.get("member", "")), sha256=str(raw["sha256"]).lower(),
            verified=raw.get("verified") is True, code_trusted=raw.get("code_trusted") is True,
            how=str(raw.get("how", "")), time=str(raw.get("time", "")),
        )
    except (KeyError, TypeError):
        return None
    return rec if len(rec.sha256) == 64 else None


def member_records(source: str, prefix: str) -> dict[str, str]:
    """``{member: sha256}`` of every record of ``source`` whose member starts with ``prefix``."""
    out = {}
    for raw in _load().values():
        member = str(raw.get("member", ""))
        if raw.get("source") == source and member.startswith(prefix) and isinstance(raw.get("sha256"), str):
            out[member[len(prefix):]] = raw["sha256"].lower()
    return out


def put_record(rec: DigestRecord) -> None:
    """Store ``rec`` (replacing the record of the same source/member), atomically."""
    put_records([rec])


def put_records(recs: list[DigestRecord]) -> None:
    """Store several records in one atomic write (each replaces the record of the same source/member)."""
    if not recs:
        return
    path = trust_file()
    entries = _load()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for r in recs:
        stamped = DigestRecord(**{**asdict(r), "time": now})
        entries[record_key(r.source, r.member or None)] = asdict(stamped)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "entries": entries}, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise ModelError(f"cannot write the trust records: {err.strerror or err}", path) from None


def code_trust_reason(
    digest: str,
    *,
    pinned_sha256: str | None,
    source: str | None,
    member: str | None,
    trust_model_code: bool,
) -> str:
    """Why a file that runs code may be loaded, or raise :class:`CodeNotTrustedError`.

    Args:
        digest: sha256 of the exact bytes about to be loaded.
        pinned_sha256: ``weights.sha256`` of the spec (medseg's registry or the user's own spec).
        source / member: the spec's weights source and archive member (for pulled records).
        trust_model_code: the user's explicit opt-in.
    """
    if pinned_sha256 is not None and digest == pinned_sha256.lower():
        return "sha256 pinned in the model spec"
    if source is not None and source.startswith(("http://", "https://", "file://")):
        rec = get_record(source, member)
        if rec is not None and rec.code_trusted and rec.sha256 == digest:
            return rec.how or "recorded at a verified pull"
    if trust_model_code:
        return f"{TRUST_FLAG} given"
    raise CodeNotTrustedError(
        f"refusing to load: this model file carries executable code (TorchScript runs its own __setstate__ "
        f"on load) and its sha256 {digest} is not pinned by medseg or by you. If you trust its author, pin "
        f"it (weights.sha256: {digest} in your spec, or `medseg models pull NAME {TRUST_FLAG}`), or pass "
        f"{TRUST_FLAG}"
    )
