"""Run untrusted inputs through a target function in child processes with time and memory limits.

A *zygote* process imports the target's modules once, then forks one child per case: the child sets
``RLIMIT_AS`` (address space = what the zygote already maps + ``mem_bytes``), calls the target with
the case's path and reports back through a pipe; the zygote kills it after ``timeout`` seconds and
reads its peak RSS (``wait4``). Forking from a zygote keeps a case at a few milliseconds of overhead
instead of a fresh interpreter's import time, and keeps the caller (pytest) free of forks.

Outcome kinds:

* ``ok``: the target returned;
* ``clean_error``: it raised one of the allowed error types (medseg's own);
* ``traceback``: it raised anything else;
* ``timeout``: it ran past ``timeout`` seconds;
* ``memory``: a ``MemoryError`` anywhere in the exception chain, or a peak RSS above ``mem_bytes``;
* ``crash``: the child died of a signal (segfault, abort) or exited without a report.

>>> outcomes = run_cases("medseg.io:read", ["a.nii.gz", "b.nrrd"], timeout=20, mem_bytes=1536 << 20)  # doctest: +SKIP
>>> [o.kind for o in outcomes]  # doctest: +SKIP
['ok', 'clean_error']
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Outcome", "FAILURE_KINDS", "run_cases", "summarize"]

FAILURE_KINDS = ("traceback", "timeout", "memory", "crash")
_REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    """What one case did: ``kind`` (see module doc), a short ``detail``, wall ``seconds`` and peak RSS."""

    path: str
    target: str
    kind: str
    detail: str = ""
    seconds: float = 0.0
    peak_rss: int = 0  # bytes

    @property
    def failed(self) -> bool:
        return self.kind in FAILURE_KINDS


def run_cases(
    target: str,
    paths: Iterable[str | os.PathLike[str]],
    timeout: float = 20.0,
    mem_bytes: int = 1536 << 20,
    allowed: str = "medseg.errors:MedsegError",
    extra_args: Sequence[str] = (),
) -> list[Outcome]:
    """Call ``target`` (``"module:function"``) on each path in a bounded child process.

    Args:
        target: the function to call as ``function(path, *extra_args)``.
        paths: inputs, one case each.
        timeout: wall seconds per case before the child is killed.
        mem_bytes: peak resident memory allowed per case (also the ``RLIMIT_AS`` headroom).
        allowed: ``"module:ExceptionType"`` counted as a clean error (subclasses included).
        extra_args: extra string arguments passed after the path.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}.")
    if mem_bytes <= 0:
        raise ValueError(f"mem_bytes must be > 0, got {mem_bytes!r}.")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fuzz._zygote", target, allowed, str(timeout), str(mem_bytes), *extra_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(_REPO),
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None  # noqa: S101 - Popen with PIPE
    out: list[Outcome] = []
    try:
        ready = proc.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"fuzz zygote failed to start (target {target!r}): {ready!r}")
        for path in paths:
            proc.stdin.write(json.dumps(str(path)) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("fuzz zygote died")
            out.append(Outcome(**json.loads(line)))
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def summarize(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """``{"inputs": n, "ok": .., "clean_error": .., "traceback": .., ...}`` (every kind present)."""
    counts = Counter(o.kind for o in outcomes)
    return {"inputs": len(outcomes), **{k: counts.get(k, 0) for k in ("ok", "clean_error", *FAILURE_KINDS)}}


def as_dict(outcome: Outcome) -> dict:
    """JSON-ready form of an outcome."""
    return asdict(outcome)
