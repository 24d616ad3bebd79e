"""Run batch cases in a supervised child process, so one case can never take the batch down with it.

A :class:`CaseWorker` is a child process (``spawn``) that loads the model **once** and then reads,
segments and writes one case at a time on request. The parent (which never imports torch) waits for each
case with a time limit:

* the reading stage has its own limit (``read_timeout``; a hostile header can make a reader hang),
  the whole case another (``case_timeout``);
* a worker that runs over a limit is killed; a worker that dies (segmentation fault, out-of-memory
  killer, ``abort()``) is noticed at once. Either way the case becomes a ``failed`` row naming the cause,
  and a fresh worker (model loaded again) takes the next case.

The child ignores Ctrl-C (the parent stops it) and dies with its parent (``PR_SET_PDEATHSIG`` on Linux,
plus a watchdog thread elsewhere), so a killed batch leaves no orphan running inference.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError, ModelError

__all__ = ["CaseFailed", "CaseWorker", "Limits", "DEFAULT_READ_TIMEOUT", "DEFAULT_CASE_TIMEOUT"]

log = logging.getLogger("medseg.batch")

#: seconds allowed to read one case (env ``MEDSEG_READ_TIMEOUT``, option ``--read-timeout``)
DEFAULT_READ_TIMEOUT = 60.0
#: seconds allowed for one whole case: read + segment + write (env ``MEDSEG_CASE_TIMEOUT``, ``--case-timeout``)
DEFAULT_CASE_TIMEOUT = 1800.0
#: seconds allowed for a worker to start and load the model (env ``MEDSEG_LOAD_TIMEOUT``)
DEFAULT_LOAD_TIMEOUT = 900.0


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise MedsegError(f"environment variable {name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise MedsegError(f"environment variable {name} must be > 0 seconds, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """Per-case time limits in seconds (``None`` fields take the environment variable or the default)."""

    read_timeout: float | None = None
    case_timeout: float | None = None
    load_timeout: float | None = None

    def resolved(self) -> Limits:
        return Limits(
            read_timeout=self.read_timeout or _env_seconds("MEDSEG_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
            case_timeout=self.case_timeout or _env_seconds("MEDSEG_CASE_TIMEOUT", DEFAULT_CASE_TIMEOUT),
            load_timeout=self.load_timeout or _env_seconds("MEDSEG_LOAD_TIMEOUT", DEFAULT_LOAD_TIMEOUT),
        )


class CaseFailed(Exception):
    """One case failed; ``str(err)`` is the one-line reason for the summary."""


# -------------------------------------------------------------------------------------------------
# child side


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="medseg-parent-watch", daemon=True).start()


def _warm_up() -> None:  # pragma: no cover - child
    """Import what the first case needs, so its time limit measures the case, not module imports."""
    import importlib

    for name in ("medseg.io", "medseg.postprocess", "medseg.io.sidecar", "monai.data", "monai.transforms",
                 "monai.inferers"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _worker_main(conn: Any, model: str, predictor_kwargs: dict[str, Any]) -> None:  # pragma: no cover - child
    """Child process: load the model, then serve ``(case, output, overwrite, settings)`` requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    from medseg.batch.worker import format_error, read_case, segment_case
    from medseg.pipeline import predictor_info

    try:
        from medseg.predictor import load_predictor

        predictor = load_predictor(model, **predictor_kwargs)
        _warm_up()
        conn.send(("ready", predictor_info(predictor)))
    except BaseException as err:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("load_error", format_error(err), isinstance(err, MedsegError)))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        case, output, overwrite, settings = msg
        t0 = time.perf_counter()
        try:
            volume = read_case(case, settings)
            conn.send(("read", time.perf_counter() - t0))
            vols = segment_case(predictor, case, volume, Path(output), overwrite, settings)
            del volume
            conn.send(("done", vols, time.perf_counter() - t0))
        except Exception as err:  # noqa: BLE001 - per-case error capture (incl. out of memory)
            conn.send(("failed", format_error(err), time.perf_counter() - t0))


# -------------------------------------------------------------------------------------------------
# parent side


def _signal_name(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class CaseWorker:
    """A child process holding one loaded model (see the module docstring).

    Args:
        model: registry name, spec YAML, bundle or nnU-Net folder.
        predictor_kwargs: :func:`medseg.predictor.load_predictor` keyword arguments.
        limits: time limits (resolved against the environment).

    Raises:
        ModelError: the model could not be loaded (the child's one-line reason).
    """

    def __init__(self, model: str, predictor_kwargs: dict[str, Any], limits: Limits) -> None:
        self.model = model
        self.predictor_kwargs = dict(predictor_kwargs)
        self.limits = limits.resolved()
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self.info: dict[str, Any] = {}
        self.restarts = 0

    # lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the child and wait until its model is loaded; returns the predictor's info."""
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child_conn, self.model, self.predictor_kwargs), name="medseg-batch-worker",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        msg = self._wait(self.limits.load_timeout, "loading the model")  # type: ignore[arg-type]
        if msg[0] == "load_error":
            self.stop()
            if msg[2]:
                raise ModelError(msg[1])
            raise ModelError(f"cannot load the model {self.model}: {msg[1]}")
        if msg[0] != "ready":  # pragma: no cover - protocol error
            self.stop()
            raise ModelError(f"batch worker sent {msg[0]!r} while loading the model")
        info = msg[1]
        if self.info and info.get("fingerprint") != self.info.get("fingerprint"):
            self.stop()
            raise ModelError("the model changed on disk during the batch (its fingerprint differs); stopping")
        self.info = info
        return info

    def stop(self) -> None:
        """Stop the child (politely, then by force)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        try:
            if proc.is_alive() and conn is not None:
                try:
                    conn.send(None)
                except (OSError, EOFError, BrokenPipeError):
                    pass
                proc.join(timeout=5)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
            if conn is not None:
                conn.close()

    def _kill(self) -> int | None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
        if proc is not None:
            proc.join(timeout=10)
        code = proc.exitcode if proc is not None else None
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        return code

    # messages ------------------------------------------------------------------------------------------
    def _wait(self, timeout: float, doing: str, limit: float | None = None) -> tuple:
        """Next message from the child within ``timeout`` s, or :class:`CaseFailed` (child killed/dead)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                hint = {"reading the input": " (limit: --read-timeout or MEDSEG_READ_TIMEOUT)",
                        "segmenting": " (limit: --case-timeout or MEDSEG_CASE_TIMEOUT)",
                        "loading the model": " (limit: MEDSEG_LOAD_TIMEOUT)"}.get(doing, "")
                raise CaseFailed(f"timed out after {limit or timeout:g} s while {doing}{hint}; the worker was stopped")
            try:
                if self._conn.poll(min(left, 0.5)):
                    return self._conn.recv()
            except (EOFError, OSError):
                pass
            else:
                if self._proc.is_alive():
                    continue
                try:
                    if self._conn.poll(0):
                        return self._conn.recv()
                except (EOFError, OSError):
                    pass
            code = self._kill()
            raise CaseFailed(f"the worker process died while {doing} ({_signal_name(code)})")

    def run_case(self, case: Any, output: Path, overwrite: bool, settings: Any) -> tuple[dict[str, float], float]:
        """Read, segment and write one case in the child (:mod:`medseg.batch.worker`, with ``settings``, a
        :class:`~medseg.batch.settings.BatchSettings`); returns ``(volumes_ml, seconds)``.

        Raises:
            CaseFailed: the case's one-line reason (a read/model/write error, a time limit, a crash).
                After a time limit or a crash the worker is restarted before this returns.
        """
        self.ensure_started()
        t0 = time.monotonic()
        read_limit = min(self.limits.read_timeout, self.limits.case_timeout)  # type: ignore[type-var]
        try:
            self._conn.send((case, str(output), overwrite, settings))
            msg = self._wait(read_limit, "reading the input")
            if msg[0] == "read":
                left = self.limits.case_timeout - (time.monotonic() - t0)  # type: ignore[operator]
                msg = self._wait(max(left, 0.001), "segmenting", self.limits.case_timeout)
        except CaseFailed:
            self._restart_quietly()
            raise
        except (OSError, EOFError, BrokenPipeError) as err:
            self._kill()
            self._restart_quietly()
            raise CaseFailed(f"lost the worker process: {err}") from None
        if msg[0] == "done":
            return msg[1], msg[2]
        if msg[0] == "failed":
            raise CaseFailed(msg[1])
        raise CaseFailed(f"batch worker sent an unexpected message {msg[0]!r}")  # pragma: no cover

    def ensure_started(self) -> None:
        """Start a fresh worker (model loaded again) if the last one was stopped after a crash or time-out.

        Raises:
            MedsegError: the new worker cannot load the model.
        """
        if self._proc is None:
            self.restarts += 1
            try:
                self.start()
            except CaseFailed as err:
                raise MedsegError(f"cannot restart the batch worker: {err}") from None

    def _restart_quietly(self) -> None:
        """Mark the worker for a lazy restart (the next case starts a fresh child)."""
        self._kill()
