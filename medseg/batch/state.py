"""Resume state of a batch: which cases are finished, with which model and settings.

A case counts as done only when **both** hold:

1. its output was written atomically (temporary file, fsync, rename: a file under the final name is
   always complete), and
2. a completion record ``OUTPUT_DIR/.medseg-batch/records/<hash>.json`` (itself written atomically,
   *after* the output) names the same case, the same output, the same run fingerprint (model fingerprint
   + settings), and the output's size and SHA-256 — so a file replaced or damaged later is redone.

Before a case's output is written, a *pending* record is written: after a crash between the output's
rename and its completion record, the re-run knows the file is its own and may replace it. An output
with no record at all belongs to someone else and is only replaced with ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.naming import short_hash
from medseg.errors import MedsegError, WriteError
from medseg.models.cache import sha256_file

__all__ = ["STATE_DIRNAME", "Record", "RecordStatus", "BatchState", "run_fingerprint", "write_bytes_atomic"]

#: folder inside OUTPUT_DIR holding completion records (sanitised output names never start with a dot)
STATE_DIRNAME = ".medseg-batch"


class RecordStatus:
    PENDING = "pending"
    DONE = "done"


@dataclass(frozen=True)
class Record:
    """What the state folder knows about one case."""

    key: str
    output: str  # relative to OUTPUT_DIR, POSIX separators
    fingerprint: str
    status: str  # RecordStatus
    size: int | None = None
    sha256: str | None = None
    seconds: float | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)
    finished_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(
            key=str(data["key"]),
            output=str(data["output"]),
            fingerprint=str(data["fingerprint"]),
            status=str(data["status"]),
            size=None if data.get("size") is None else int(data["size"]),
            sha256=data.get("sha256"),
            seconds=None if data.get("seconds") is None else float(data["seconds"]),
            volumes_ml={str(k): float(v) for k, v in (data.get("volumes_ml") or {}).items()},
            finished_at=data.get("finished_at"),
        )


def run_fingerprint(model_fingerprint: str, settings: dict[str, Any]) -> str:
    """Fingerprint of a run: the model's (spec + weights + predictor settings) plus batch settings.

    ``settings`` must hold only JSON-serialisable values that change the outputs.
    """
    if not isinstance(model_fingerprint, str) or not model_fingerprint:
        raise ValueError(f"model_fingerprint must be a non-empty str, got {model_fingerprint!r}.")
    blob = json.dumps({"model": model_fingerprint, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, rename, directory fsync)."""
    from medseg.io.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_bytes(data)


def _atomic_write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


class BatchState:
    """Completion records of one OUTPUT_DIR for one run fingerprint.

    Args:
        output_dir: OUTPUT_DIR (created if missing).
        fingerprint: :func:`run_fingerprint` of this run.
    """

    def __init__(self, output_dir: Path, fingerprint: str) -> None:
        self.output_dir = Path(output_dir).resolve()
        self.fingerprint = fingerprint
        self.records_dir = self.output_dir / STATE_DIRNAME / "records"
        try:
            self.records_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(f"cannot create the batch state folder: {err.strerror or err}", self.records_dir) from err

    def _record_path(self, key: str) -> Path:
        return self.records_dir / f"{short_hash(key, 24)}.json"

    def _rel(self, output: Path) -> str:
        return Path(output).resolve().relative_to(self.output_dir).as_posix()

    def load(self, key: str) -> Record | None:
        """The record of ``key``, or None (missing, unreadable or naming another key)."""
        path = self._record_path(key)
        try:
            rec = Record.from_json(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return rec if rec.key == key else None

    def done(self, key: str, output: Path) -> Record | None:
        """The completion record when ``key`` is finished for this run (see module doc), else None."""
        rec = self.load(key)
        if rec is None or rec.status != RecordStatus.DONE or rec.fingerprint != self.fingerprint:
            return None
        if rec.output != self._rel(output):
            return None
        try:
            if Path(output).stat().st_size != rec.size or sha256_file(Path(output)) != rec.sha256:
                return None
        except OSError:
            return None
        return rec

    def stale(self, key: str, output: Path) -> Record | None:
        """A record of ``key`` made with another fingerprint whose output file still exists."""
        rec = self.load(key)
        if rec is None or rec.fingerprint == self.fingerprint or not Path(output).exists():
            return None
        return rec

    def owns(self, key: str, output: Path) -> bool:
        """True when a *pending* record of this run says ``output`` is this batch's own unfinished write
        (the process died between the output's rename and its completion record): safe to replace.

        A finished output that changed after it was written (edited by hand, say) is not "owned": it is
        only replaced with ``overwrite``.
        """
        rec = self.load(key)
        return (
            rec is not None
            and rec.status == RecordStatus.PENDING
            and rec.fingerprint == self.fingerprint
            and rec.output == self._rel(output)
        )

    def mark_pending(self, key: str, output: Path) -> None:
        """Record that ``output`` is about to be written for ``key`` (before the write starts)."""
        rec = Record(key=key, output=self._rel(output), fingerprint=self.fingerprint, status=RecordStatus.PENDING)
        _atomic_write_text(self._record_path(key), json.dumps(asdict(rec), indent=1))

    def mark_done(self, key: str, output: Path, seconds: float, volumes_ml: dict[str, float]) -> Record:
        """Record ``key`` as finished; call only after ``output`` (and its sidecars) were written atomically."""
        output = Path(output)
        rec = Record(
            key=key,
            output=self._rel(output),
            fingerprint=self.fingerprint,
            status=RecordStatus.DONE,
            size=output.stat().st_size,
            sha256=sha256_file(output),
            seconds=round(float(seconds), 3),
            volumes_ml={k: float(v) for k, v in volumes_ml.items()},
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        _atomic_write_text(self._record_path(key), json.dumps(asdict(rec), indent=1))
        return rec

    def lock(self) -> None:
        """Take this OUTPUT_DIR's run lock (released by :meth:`unlock` or when the process dies).

        Raises:
            MedsegError: another ``medseg batch`` is running on the same output folder.
        """
        import fcntl

        path = self.records_dir.parent / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            raise MedsegError(
                "another medseg batch is running on this output folder; wait for it or use another folder",
                self.output_dir,
            ) from err
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def forget(self, key: str) -> None:
        """Drop the record of ``key`` (before redoing it with --overwrite)."""
        try:
            os.unlink(self._record_path(key))
        except FileNotFoundError:
            pass
