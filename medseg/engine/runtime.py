"""The engine's runtime: device, precision, CPU threads and autocast, in one place.

``resolve_device("auto")`` picks CUDA, then MPS, then CPU; an explicit device that is not available raises
:class:`~medseg.errors.ModelError` (never a silent fallback). :func:`resolve_precision` turns
``auto|float32|bfloat16|float16`` into the autocast dtype (``None`` = plain float32), :func:`autocast` returns
the matching context manager and :func:`torch_settings` sets the CPU threads for one call (always restored).
Names are validated once, by :class:`medseg.engine.options.RunOptions`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING

from medseg.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "Precision", "parse_precision", "resolve_device", "resolve_precision", "precision_name", "autocast", "torch_settings",
    "cpu_supports_bf16",
]


class Precision(str, Enum):
    """Autocast precision names (``auto``: float16 on CUDA, float32 elsewhere)."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` → CUDA, then MPS, then CPU; ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'`` as given.

    Raises:
        ModelError: the requested device is not available (no silent fallback to the CPU).
    """
    import torch

    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ModelError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ModelError(f"device {device!r} requested but MPS is not available (use --device cpu)")
    elif dev.type != "cpu":
        raise ModelError(f"unsupported device {device!r} (use auto, cpu, cuda, cuda:N or mps)")
    return dev


def cpu_supports_bf16() -> bool:
    """The CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), so bfloat16 autocast is fast.

    Without it oneDNN falls back to slow paths: on this project's AVX2 machines a MONAI 3D UNet window took
    58 s under bfloat16 autocast vs 2.9 s in float32.
    """
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return bool(native or amx)


def parse_precision(precision: str | Precision) -> Precision:
    """``"auto"|"float32"|"bfloat16"|"float16"`` (any case) → :class:`Precision`; ``ValueError`` names the value."""
    try:
        return Precision(str(getattr(precision, "value", precision)).lower())
    except ValueError:
        raise ValueError(
            f"precision must be one of {', '.join(p.value for p in Precision)}, got {precision!r}."
        ) from None


def precision_name(dtype: torch.dtype | None) -> str:
    """The precision a resolved autocast dtype stands for: ``float32`` (no autocast), ``float16``, ``bfloat16``."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def resolve_precision(precision: str | Precision, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device``; ``None`` means float32 without autocast.

    ``auto``: float16 on CUDA, float32 elsewhere. bfloat16 is opt-in: its 8-bit mantissa changed labels
    beyond Dice 0.999 on 8 of 13 structures of a trained SegResNet (``benchmarks/bench_precision.py``; float16:
    all 13 above 0.999), and without native bfloat16 (AVX512-BF16/AMX, see :func:`cpu_supports_bf16`) it is
    ~50-200x slower than float32. An explicit ``bfloat16`` is honoured on any CPU with oneDNN.
    """
    import torch

    p = parse_precision(precision)
    if p is Precision.FLOAT32:
        return None
    if p is Precision.AUTO:
        if device.type == "cuda":
            return torch.float16
        return None
    dtype = torch.bfloat16 if p is Precision.BFLOAT16 else torch.float16
    if device.type == "cpu" and dtype is torch.float16:
        raise ModelError("float16 is not supported on the CPU; use bfloat16 or float32")
    if device.type == "cpu":
        if not torch.backends.mkldnn.is_available():
            raise ModelError("bfloat16 on the CPU needs oneDNN (mkldnn), which this torch build lacks; use float32")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``device``/``dtype``, or a no-op when ``dtype`` is ``None``."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def torch_settings(device: torch.device, threads: int | None = None) -> Iterator[None]:
    """Temporarily set the CPU thread count (``None``: leave it) and ``cudnn.benchmark`` (on CUDA); always
    restored. ``threads`` comes validated from :class:`medseg.engine.options.RunOptions`."""
    import torch

    old_threads = torch.get_num_threads()
    old_bench = torch.backends.cudnn.benchmark
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.benchmark = old_bench
