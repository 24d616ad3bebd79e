"""Size limits shared by the readers: refuse implausible headers before allocating anything."""

from __future__ import annotations

import os

__all__ = ["max_voxel_bytes", "human_bytes"]


def max_voxel_bytes() -> int:
    """Largest voxel buffer a reader may allocate, in bytes.

    The ``MEDSEG_MAX_VOXEL_BYTES`` environment variable if set, else this machine's physical memory.
    """
    env = os.environ.get("MEDSEG_MAX_VOXEL_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError as err:
            raise ValueError(f"MEDSEG_MAX_VOXEL_BYTES must be a number of bytes, got {env!r}.") from err
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 << 30


def human_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover
