"""Seeded mutations of bytes, text headers, NIfTI headers and DICOM datasets.

Every function takes a ``random.Random`` so a case is reproduced from its seed alone.
"""

from __future__ import annotations

import gzip
import math
import random
import re
import struct

__all__ = [
    "INTERESTING_INTS",
    "INTERESTING_NUMBERS",
    "mutate_bytes",
    "mutate_text_header",
    "mutate_nifti_header",
    "gzip_bytes",
]

INTERESTING_INTS = [0, 1, -1, 2, 3, 4, 7, 8, 255, 256, 32767, -32768, 65535, 2**31 - 1, -(2**31), 2**32 - 1, 99999999]
INTERESTING_NUMBERS = [
    "0", "-1", "1", "-0", "2", "4", "5", "7", "99999999", "2147483648", "4294967296", "18446744073709551617",
    "1e308", "-1e308", "1e-320", "nan", "NaN", "inf", "-inf", "0.0", "1.5", "abc", "", "1 2", "0x10", "65535",
]


def mutate_bytes(data: bytes, rng: random.Random, focus: int | None = None) -> bytes:
    """One to four random byte-level edits (bit flips, interesting integers, chunk delete/duplicate,
    truncation); ``focus`` biases edits to the first ``focus`` bytes (where headers live)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            continue
        span = min(len(buf), focus) if focus and rng.random() < 0.8 else len(buf)
        pos = rng.randrange(span)
        op = rng.random()
        if op < 0.35:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            width = rng.choice((1, 2, 4, 8))
            val = rng.choice(INTERESTING_INTS)
            fmt = {1: "b", 2: "h", 4: "i", 8: "q"}[width]
            try:
                packed = struct.pack(rng.choice("<>") + fmt, val)
            except struct.error:
                packed = struct.pack(rng.choice("<>") + fmt.upper(), val & ((1 << (8 * width)) - 1))
            buf[pos : pos + width] = packed
        elif op < 0.75:
            n = rng.randint(1, max(1, min(256, len(buf) - pos)))
            del buf[pos : pos + n]
        elif op < 0.88:
            n = rng.randint(1, max(1, min(256, len(buf) - pos)))
            buf[pos:pos] = buf[pos : pos + n]
        else:
            del buf[rng.randrange(len(buf) + 1) :]
    return bytes(buf)


_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def mutate_text_header(header: str, rng: random.Random, extra_lines: list[str] | None = None) -> str:
    """Edit a ``key: value`` / ``Key = Value`` text header: replace numbers or whole values with
    hostile ones, drop, duplicate or reorder lines, or add one of ``extra_lines``."""
    lines = header.split("\n")
    for _ in range(rng.randint(1, 3)):
        editable = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#")]
        if not editable:
            break
        i = rng.choice(editable)
        line = lines[i]
        op = rng.random()
        sep = ":=" if ":=" in line else (":" if ":" in line else "=")
        key, _, value = line.partition(sep)
        if op < 0.45 and _NUM.search(value):
            nums = list(_NUM.finditer(value))
            m = rng.choice(nums)
            value = value[: m.start()] + rng.choice(INTERESTING_NUMBERS) + value[m.end() :]
            lines[i] = f"{key}{sep}{value}"
        elif op < 0.6:
            lines[i] = f"{key}{sep} {rng.choice(INTERESTING_NUMBERS + ['LIST', 'LOCAL', 'true', 'false', 'raw', 'gzip', 'bzip2', 'MET_UCHAR', 'MET_STRING', 'block', 'double', '???'])}"
        elif op < 0.7:
            del lines[i]
        elif op < 0.78:
            lines.insert(i, line)
        elif op < 0.86 and extra_lines:
            lines.insert(rng.randrange(len(lines) + 1) if rng.random() < 0.3 else i, rng.choice(extra_lines))
        elif op < 0.93:
            j = rng.choice(editable)
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines[i] = line + " " + rng.choice(INTERESTING_NUMBERS)
    return "\n".join(lines)


# (offset, struct format) of the NIfTI-1 header fields worth aiming at
_NIFTI1_FIELDS = [
    (0, "i"),  # sizeof_hdr
    *[(40 + 2 * k, "h") for k in range(8)],  # dim
    (70, "h"),  # datatype
    (72, "h"),  # bitpix
    *[(76 + 4 * k, "f") for k in range(8)],  # pixdim
    (108, "f"),  # vox_offset
    (112, "f"),  # scl_slope
    (116, "f"),  # scl_inter
    (123, "b"),  # xyzt_units
    (252, "h"),  # qform_code
    (254, "h"),  # sform_code
    *[(256 + 4 * k, "f") for k in range(6)],  # quatern_b..qoffset_z
    *[(280 + 4 * k, "f") for k in range(12)],  # srow_x/y/z
]
_NIFTI2_FIELDS = [
    (0, "i"),
    (12, "h"),  # datatype
    (14, "h"),  # bitpix
    *[(16 + 8 * k, "q") for k in range(8)],  # dim
    *[(104 + 8 * k, "d") for k in range(8)],  # pixdim
    (168, "q"),  # vox_offset
    (176, "d"),  # scl_slope
    (184, "d"),  # scl_inter
    (344, "i"),  # qform_code
    (348, "i"),  # sform_code
    *[(352 + 8 * k, "d") for k in range(6)],
    *[(400 + 8 * k, "d") for k in range(12)],
]
_FLOATS = [0.0, -0.0, -1.0, 1.0, 1e-30, 1e30, 3.4e38, math.nan, math.inf, -math.inf, 352.0, 348.0, 1e9]


def mutate_nifti_header(data: bytes, rng: random.Random) -> bytes:
    """Set one to three NIfTI-1/-2 header fields (dims, datatype, pixdim, vox_offset, scaling, codes,
    quaternion, sform) to hostile values, in the file's byte order."""
    buf = bytearray(data)
    if len(buf) < 348:
        return bytes(buf)
    endian = "<" if struct.unpack("<i", bytes(buf[:4]))[0] in (348, 540) else ">"
    fields = _NIFTI2_FIELDS if struct.unpack(endian + "i", bytes(buf[:4]))[0] == 540 else _NIFTI1_FIELDS
    for _ in range(rng.randint(1, 3)):
        off, fmt = rng.choice(fields)
        if fmt in "fd":
            val: float | int = rng.choice(_FLOATS)
        else:
            val = rng.choice(INTERESTING_INTS)
            bits = {"b": 8, "h": 16, "i": 32, "q": 64}[fmt]
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            val = max(lo, min(hi, val)) if rng.random() < 0.7 else (val & ((1 << bits) - 1)) - (
                (1 << bits) if (val & ((1 << bits) - 1)) > hi else 0
            )
        size = struct.calcsize(fmt)
        if off + size <= len(buf):
            buf[off : off + size] = struct.pack(endian + fmt, val)
    return bytes(buf)


def gzip_bytes(data: bytes) -> bytes:
    """``data`` gzip-compressed (level 1, no timestamp: reproducible)."""
    return gzip.compress(data, compresslevel=1, mtime=0)
