"""Zygote of :mod:`tests.fuzz.runner`: import the target once, fork one bounded child per case.

Protocol: argv = target, allowed, timeout, mem_bytes, extra args; prints ``ready``, then for each
JSON path read on stdin prints one JSON :class:`~tests.fuzz.runner.Outcome`.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import select
import signal
import sys
import time
import traceback


def _load(spec: str):
    module, _, name = spec.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _child(func, allowed, path: str, extra: list[str], mem_bytes: int, wfd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        with open("/proc/self/statm") as fh:
            vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vm + mem_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError):
        pass
    report: dict
    try:
        func(path, *extra)
        report = {"kind": "ok", "detail": ""}
    except BaseException as err:  # noqa: BLE001 - classifying everything is the point
        memory = any(isinstance(e, MemoryError) or "bad_alloc" in str(e) for e in _chain(err))
        if memory:
            kind = "memory"
        elif isinstance(err, allowed):
            kind = "clean_error"
        else:
            kind = "traceback"
        detail = f"{type(err).__name__}: {err}"
        if kind == "traceback":
            detail += "\n" + "".join(traceback.format_exception(err)[-6:])
        report = {"kind": kind, "detail": detail[:4000]}
    os.write(wfd, json.dumps(report).encode())
    os._exit(0)


def _run_one(func, allowed, path: str, extra: list[str], timeout: float, mem_bytes: int) -> dict:
    rfd, wfd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child, in its own process group so that a timeout kills whatever it started
        os.setpgid(0, 0)
        os.close(rfd)
        try:
            _child(func, allowed, path, extra, mem_bytes, wfd)
        finally:
            os._exit(3)
    os.close(wfd)
    chunks: list[bytes] = []
    timed_out = False
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        r, _, _ = select.select([rfd], [], [], left)
        if not r:
            continue
        data = os.read(rfd, 65536)
        if not data:
            break
        chunks.append(data)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    try:
        os.killpg(pid, signal.SIGKILL)  # grandchildren (e.g. an isolated reader) do not outlive the case
    except (ProcessLookupError, PermissionError):
        pass
    os.close(rfd)
    seconds = time.monotonic() - t0
    peak = int(usage.ru_maxrss) * 1024
    if timed_out:
        rep = {"kind": "timeout", "detail": f"still running after {timeout:g} s"}
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        rep = {"kind": "crash", "detail": f"killed by signal {signal.Signals(sig).name}"}
    else:
        try:
            rep = json.loads(b"".join(chunks).decode() or "null")
        except ValueError:
            rep = None
        if not isinstance(rep, dict):
            rep = {"kind": "crash", "detail": f"exited with status {os.WEXITSTATUS(status)} without a report"}
    if rep["kind"] in ("ok", "clean_error") and peak > mem_bytes:
        rep = {"kind": "memory", "detail": f"peak RSS {peak >> 20} MiB > {mem_bytes >> 20} MiB; {rep['detail']}"}
    return {**rep, "seconds": round(seconds, 3), "peak_rss": peak}


def main(argv: list[str]) -> int:
    target, allowed_spec, timeout, mem_bytes, *extra = argv
    func = _load(target)
    allowed = _load(allowed_spec)
    # warm up lazy imports the target does on first use, so children do not each pay for them
    for mod in ("numpy", "nibabel", "pydicom", "SimpleITK", "medseg.io.nifti", "medseg.io.itk", "medseg.io.dicom"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    print("ready", flush=True)
    for line in sys.stdin:
        path = json.loads(line)
        rep = _run_one(func, allowed, path, extra, float(timeout), int(mem_bytes))
        print(json.dumps({"path": path, "target": target, **rep}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
