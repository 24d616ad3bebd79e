"""Deliberately misbehaving targets, to check that the runner classifies each failure kind."""

from __future__ import annotations

import os
import signal
import time

from medseg.errors import ReadError


def behave(path: str) -> None:
    """Act as the file's name says: ``ok``, ``clean``, ``traceback``, ``hang``, ``hog``, ``segv``, ``exit``."""
    name = os.path.basename(path)
    if name == "clean":
        raise ReadError("a clean error", path)
    if name == "traceback":
        raise TypeError("not one of medseg's errors")
    if name == "hang":
        time.sleep(600)
    if name == "hog":
        bytearray(8 << 30)  # beyond the child's address-space limit: MemoryError at once
    if name == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if name == "exit":
        os._exit(7)
