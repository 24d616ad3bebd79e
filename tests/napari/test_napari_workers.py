"""Background jobs: progress reaches the GUI thread as signals, results return, cancel stops the body."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("napari")

from medseg_napari._workers import Cancelled, Job  # noqa: E402


def test_job_reports_progress_and_returns(qtbot):
    gui_thread = threading.current_thread()
    seen: list[tuple[int, int, str]] = []
    threads: list[threading.Thread] = []

    def body(progress):
        threads.append(threading.current_thread())
        progress.stage("counting")
        for i in range(1, 6):
            progress(i, 5)
            time.sleep(0.03)
        return "result"

    job = Job(body, poll_ms=10)
    job.progress.connect(lambda d, t, s: seen.append((d, t, s)))
    with qtbot.waitSignal(job.finished, timeout=10_000) as blocker:
        job.start()
    assert blocker.args == ["result"]
    assert threads and threads[0] is not gui_thread  # the body ran off the GUI thread
    assert seen[-1] == (5, 5, "counting")  # the final state is always delivered
    assert not job.running


def test_job_cancel_stops_at_next_progress_call(qtbot):
    started = threading.Event()
    steps: list[int] = []

    def body(progress):
        for i in range(1000):
            progress(i, 1000)
            steps.append(i)
            started.set()
            time.sleep(0.01)
        return "finished anyway"

    job = Job(body, poll_ms=10)
    finished: list = []
    job.finished.connect(finished.append)
    with qtbot.waitSignal(job.cancelled, timeout=10_000):
        job.start()
        assert started.wait(5)
        job.cancel()
    assert not finished and len(steps) < 1000


def test_job_failure_is_reported_with_message(qtbot):
    def body(progress):
        raise ValueError("bad overlap 2.0")

    job = Job(body, poll_ms=10)
    with qtbot.waitSignal(job.failed, timeout=10_000) as blocker:
        job.start()
    assert blocker.args == ["ValueError: bad overlap 2.0"]
    assert "bad overlap" in job.traceback


def test_cancelled_tracker_raises():
    from medseg_napari._workers import ProgressTracker

    tracker = ProgressTracker()
    tracker(1, 2)
    tracker.cancel()
    with pytest.raises(Cancelled):
        tracker(2, 2)
