"""Performance helpers: what the hardware can do and how close a network gets to it.

- :func:`conv3d_ceiling` measures the GFLOP/s of a large 3D convolution (the practical ceiling for 3D
  segmentation networks on this device and precision).
- :func:`count_flops` counts a network's FLOPs on one patch (``torch.utils.flop_counter``).
- :func:`time_call` takes the best of a few timed runs.
- :func:`thread_report` says which thread settings are in force (``OMP_NUM_THREADS``, torch threads).
- :func:`prepare_network` applies an optional memory format (``channels_last_3d``) to a network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["conv3d_ceiling", "count_flops", "time_call", "thread_report", "prepare_network", "dice_per_label"]


def time_call(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time (s) of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}.")
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def conv3d_ceiling(
    channels: int = 64,
    size: int = 48,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    repeat: int = 3,
) -> float:
    """GFLOP/s of a ``channels -> channels`` 3x3x3 convolution on a ``channels x size^3`` input.

    Args:
        dtype: autocast dtype (``torch.bfloat16``/``torch.float16``) or ``None`` for float32.
        channels_last: use the ``channels_last_3d`` memory format.

    Returns:
        Achieved GFLOP/s (multiply and add counted as 2 FLOPs), best of ``repeat``.
    """
    import torch

    dev = torch.device(device)
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1, bias=False).to(dev).eval()
    x = torch.randn(1, channels, size, size, size, device=dev)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    flops = 2 * 27 * channels * channels * size**3
    ctx = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype is not None else nullcontext

    def run() -> None:
        with torch.inference_mode(), ctx():
            conv(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    return flops / time_call(run, repeat=repeat) / 1e9


def count_flops(network: Callable[[torch.Tensor], Any], example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``network`` on ``example`` (convolutions and matmuls; 2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network(example)
    return int(counter.get_total_flops())


def thread_report() -> dict[str, Any]:
    """``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, torch intra-/inter-op threads and the CPU count."""
    import torch

    return {
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
    }


def prepare_network(network: torch.nn.Module, channels_last: bool = False) -> torch.nn.Module:
    """Eval mode, and the ``channels_last_3d`` memory format when asked (measure: it is not always faster)."""
    import torch

    network = network.eval()
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    return network


def dice_per_label(a: Any, b: Any, labels: Any = None) -> dict[int, float]:
    """Dice of label maps ``a`` and ``b`` (same shape) for each label id present in either (default: all > 0).

    A label absent from both gives 1.0.
    """
    import numpy as np

    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}.")
    if labels is None:
        labels = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
    ca = np.bincount(a.ravel().astype(np.int64), minlength=max(labels, default=0) + 1)
    cb = np.bincount(b.ravel().astype(np.int64), minlength=max(labels, default=0) + 1)
    same = a == b
    ci = np.bincount(a[same].ravel().astype(np.int64), minlength=max(labels, default=0) + 1)
    out = {}
    for lab in labels:
        den = int(ca[lab]) + int(cb[lab])
        out[int(lab)] = 1.0 if den == 0 else 2.0 * int(ci[lab]) / den
    return out


def autocast_context(dtype: torch.dtype | None, device: str = "cpu") -> Callable[[], AbstractContextManager]:
    """Zero-argument factory of the autocast context for ``dtype`` (``None``: float32, no autocast)."""
    import torch

    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(device, dtype=dtype)
