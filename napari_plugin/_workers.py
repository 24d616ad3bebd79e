"""Background jobs for the widgets: a medseg call in a napari thread worker, with progress and cancel.

The job body is plain Python (no Qt): it receives a :class:`ProgressTracker`, passes it to medseg as the
``progress(done, total)`` callback, and the tracker raises :class:`Cancelled` at the next callback once the
user pressed Cancel. The GUI thread polls the tracker (a :class:`~qtpy.QtCore.QTimer`) and re-emits what
changed as Qt signals, so no Qt object is touched from the worker thread.

>>> job = Job(lambda progress: predictor.predict(volume, progress))      # doctest: +SKIP
>>> job.progress.connect(bar_update); job.finished.connect(on_result); job.start()  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

__all__ = ["Cancelled", "ProgressTracker", "Job", "avoid_llvm_clash", "docked"]


def docked(widget: Any) -> bool:
    """``True`` while a dock widget is in the window and not hidden: napari's close button takes the widget
    out of its dock (``setParent(None)``) without deleting it, so its viewer key bindings and mouse callbacks
    must check this before acting."""
    dock = widget.parentWidget()
    return dock is not None and not dock.isHidden() and not widget.isHidden()


def avoid_llvm_clash() -> bool:
    """Keep ``triton`` from loading into a process whose OpenGL is Mesa's llvmpipe (software rendering).

    Importing triton (which MONAI, torchvision and segment-anything pull in through ``torch._dynamo``) after
    Mesa has loaded its ``libLLVM`` crashes the process (two LLVMs clash), e.g. napari under Xvfb, in VMs or
    over remote desktops. medseg never uses triton (no ``torch.compile``), so when ``libLLVM`` is already
    mapped and triton is not yet imported, it is marked unavailable and torch runs without it.

    Returns:
        ``True`` if triton was blocked by this call.
    """
    if "triton" in sys.modules:
        return False
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: no Mesa/LLVM clash known
        return False
    if "libLLVM" not in maps:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` now raises ImportError
    return True


class Cancelled(Exception):
    """Raised inside a job's progress callback after :meth:`Job.cancel`."""


class ProgressTracker:
    """Thread-safe ``progress(done, total)`` callback with a cancel flag and a stage text.

    Args:
        done/total: steps finished / total steps (any positive ints; ``total <= 0`` means unknown).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._state: tuple[int, int, str] = (0, 0, "")
        self._version = 0

    def __call__(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")
        with self._lock:
            self._state = (int(done), int(total), self._state[2])
            self._version += 1

    def stage(self, text: str) -> None:
        """Set a short stage text (``"loading model"``, ``"predicting"``); also a cancel point."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")
        with self._lock:
            self._state = (self._state[0], self._state[1], text)
            self._version += 1

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """The cancel flag as a :class:`threading.Event`, for library calls that take ``cancel=``."""
        return self._cancel

    def snapshot(self) -> tuple[int, tuple[int, int, str]]:
        with self._lock:
            return self._version, self._state


class Job(QObject):
    """Run ``fn(tracker)`` in napari's thread pool.

    Signals (all emitted in the GUI thread):
        progress(done, total, stage): at most every ``poll_ms`` while running.
        finished(result): ``fn`` returned.
        failed(message): ``fn`` raised (message is ``"Type: text"``; the traceback goes to ``self.traceback``).
        cancelled(): ``fn`` stopped because :meth:`cancel` was called.
        done(): after any of the three above.
    """

    progress = Signal(int, int, str)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[[ProgressTracker], Any], poll_ms: int = 100, parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self.tracker = ProgressTracker()
        self.traceback = ""
        self.elapsed_s = 0.0
        self.running = False
        self._seen = -1
        self._timer = QTimer(self)
        self._timer.setInterval(int(poll_ms))
        self._timer.timeout.connect(self._poll)
        self._worker = None
        self._t0 = 0.0

    def _body(self) -> tuple[str, Any]:
        # Exceptions are returned, not raised: napari 0.9's create_worker connects a handler to `errored`
        # that itself fails (TypeError in napari/_qt/qthreading.py) whenever a viewer exists.
        try:
            return "ok", self._fn(self.tracker)
        except Exception as exc:  # reported through failed/cancelled, with its traceback
            return "error", exc

    def start(self) -> Job:
        """Start the worker; returns ``self``."""
        from napari.qt.threading import create_worker

        if self.running:
            raise RuntimeError("job already running")
        avoid_llvm_clash()  # before the worker imports torch's optional stack
        self.running = True
        self._t0 = time.perf_counter()
        # errors are ours to report (failed/cancelled signals), not re-raised in the GUI thread
        worker = create_worker(
            self._body,
            _start_thread=False,
            _ignore_errors=True,
            _connect={"returned": self._on_returned, "errored": self._on_errored},
        )
        self._worker = worker
        self._timer.start()
        worker.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop at its next progress callback."""
        self.tracker.cancel()

    def _poll(self) -> None:
        version, (done, total, stage) = self.tracker.snapshot()
        if version != self._seen:
            self._seen = version
            self.progress.emit(done, total, stage)

    def _end(self) -> None:
        self._timer.stop()
        self._poll()
        self.elapsed_s = time.perf_counter() - self._t0
        self.running = False

    def _on_returned(self, outcome: tuple[str, Any]) -> None:
        kind, result = outcome
        if kind == "error":
            self._on_errored(result)
            return
        self._end()
        if self.tracker.cancelled:
            self.cancelled.emit()
        else:
            self.finished.emit(result)
        self.done.emit()

    def _on_errored(self, exc: BaseException) -> None:
        self._end()
        if isinstance(exc, Cancelled) or self.tracker.cancelled:
            self.cancelled.emit()
        else:
            self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        self.done.emit()
