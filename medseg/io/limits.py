"""Size limits shared by the readers: refuse implausible headers before allocating anything.

Two limits, each raised by an environment variable that the error messages name:

* ``MEDSEG_MAX_VOXEL_BYTES`` (default 1 GiB, at most a quarter of this machine's memory): the largest
  voxel buffer, decompressed stream or zip member a reader allocates. A CT of 512x512x1000 int16 is
  500 MiB; raise it for legitimately larger volumes.
* ``MEDSEG_MAX_INFLATE_RATIO`` (default 500): the largest decompression ratio (decompressed /
  compressed bytes) of a gzip/zlib stream, zip member or compressed DICOM pixel data whose
  decompressed size exceeds :data:`RATIO_FLOOR_BYTES`. Real scans compress 2-10:1 and mostly
  empty label maps up to a few hundred to one; a stream of zeros (a "bomb") about 1000:1.
"""

from __future__ import annotations

import os

__all__ = [
    "VOXEL_ENV",
    "RATIO_ENV",
    "RATIO_FLOOR_BYTES",
    "max_voxel_bytes",
    "max_inflate_ratio",
    "check_voxel_bytes",
    "check_inflate",
    "human_bytes",
]

VOXEL_ENV = "MEDSEG_MAX_VOXEL_BYTES"
RATIO_ENV = "MEDSEG_MAX_INFLATE_RATIO"
#: decompressed sizes up to this are never refused for their ratio (small blank images compress a lot)
RATIO_FLOOR_BYTES = 64 << 20
_DEFAULT_VOXEL_BYTES = 1 << 30
_DEFAULT_RATIO = 500.0


def _env_number(name: str) -> float | None:
    env = os.environ.get(name, "").strip()
    if not env:
        return None
    try:
        value = float(env)
    except ValueError as err:
        raise ValueError(f"{name} must be a number, got {env!r}.") from err
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {env!r}.")
    return value


def max_voxel_bytes() -> int:
    """Largest voxel buffer (or decompressed stream) a reader may allocate, in bytes.

    ``MEDSEG_MAX_VOXEL_BYTES`` if set, else 1 GiB or a quarter of the physical memory, whichever is less.
    """
    env = _env_number(VOXEL_ENV)
    if env is not None:
        return int(env)
    try:
        phys = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        phys = 16 << 30
    return min(_DEFAULT_VOXEL_BYTES, phys // 4)


def max_inflate_ratio() -> float:
    """Largest decompression ratio accepted above :data:`RATIO_FLOOR_BYTES` (``MEDSEG_MAX_INFLATE_RATIO``)."""
    env = _env_number(RATIO_ENV)
    return _DEFAULT_RATIO if env is None else env


def check_voxel_bytes(nbytes: int, what: str) -> str | None:
    """``None`` if ``nbytes`` is within :func:`max_voxel_bytes`, else the one-line reason naming the limit.

    Args:
        nbytes: bytes the header implies.
        what: what they are, e.g. ``"a 512x512x4000 int16 volume"``.
    """
    cap = max_voxel_bytes()
    if nbytes <= cap:
        return None
    return (
        f"header claims {what} ({human_bytes(nbytes)}), more than the {human_bytes(cap)} limit on one volume: "
        f"the header is corrupt, or set {VOXEL_ENV} (bytes) to read a volume this large"
    )


def check_inflate(inflated: int, compressed: int, what: str) -> str | None:
    """``None`` if ``compressed`` bytes may plausibly inflate to ``inflated`` bytes, else the reason.

    Checks :func:`max_voxel_bytes` and, above :data:`RATIO_FLOOR_BYTES`, :func:`max_inflate_ratio`.
    """
    problem = check_voxel_bytes(inflated, what)
    if problem:
        return problem
    ratio = max_inflate_ratio()
    if inflated > RATIO_FLOOR_BYTES and inflated > ratio * max(compressed, 1):
        return (
            f"{what} would inflate {human_bytes(compressed)} of compressed data to {human_bytes(inflated)} "
            f"(ratio {inflated / max(compressed, 1):.0f}:1, limit {ratio:g}:1): a decompression bomb or a corrupt "
            f"header; set {RATIO_ENV} to accept it"
        )
    return None


def human_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover
