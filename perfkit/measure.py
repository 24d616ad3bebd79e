"""Measurement helpers for tests and benchmarks: what the hardware can do, how close a network gets to it,
and how close two label maps are.

- :func:`dice` (foreground vs foreground) and :func:`dice_per_label`: the one Dice of the tests and
  benchmarks.

- :func:`conv3d_ceiling` measures the GFLOP/s of a large 3D convolution (the practical ceiling for 3D
  segmentation networks on this device and precision).
- :func:`count_flops` counts a network's FLOPs on one patch (``torch.utils.flop_counter``).
- :func:`time_call` takes the best of a few timed runs.
- :func:`thread_report` says which thread settings are in force (``OMP_NUM_THREADS``, torch threads).
- :func:`prepare_network` applies an optional memory format (``channels_last_3d``) to a network.
- :func:`use_onednn_conv3d` sends every float32 CPU ``Conv3d`` to oneDNN. PyTorch's dispatcher keeps
  batch-1 convolutions with few voxels (``N*C*D*H <= 20480``, i.e. the deep, low-resolution levels of a
  U-Net/SegResNet) and single-threaded 1x1x1 convolutions on its generic ``slow_conv3d`` path, measured
  2-5x slower than oneDNN on this project's AVX2 CPUs. Values change in the last bits only.
- :func:`onednn_bf16_supported`: whether bfloat16 convolutions have a oneDNN kernel here. Without one
  (AVX2 CPUs lack ``avx_ne_convert``/AVX-512), bfloat16 ``Conv3d`` falls back to ``slow_conv3d`` and
  was measured ~200x slower than float32: never pick bfloat16 autocast on such CPUs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "conv3d_ceiling",
    "count_flops",
    "time_call",
    "thread_report",
    "prepare_network",
    "dice",
    "dice_per_label",
    "autocast_context",
    "use_onednn_conv3d",
    "onednn_bf16_supported",
]


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


def dice(a: Any, b: Any) -> float:
    """Dice of the foregrounds (``!= 0``) of two same-shape masks or label maps; 1.0 when both are empty."""
    import numpy as np

    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}.")
    den = int(a.sum()) + int(b.sum())
    return 1.0 if den == 0 else float(2 * int((a & b).sum()) / den)


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


def onednn_bf16_supported() -> bool:
    """oneDNN has bfloat16 convolution kernels on this CPU (PyTorch's own check)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - old/odd builds
        return False


def _onednn_conv3d_forward(self, x):  # bound as the forward of OneDNN-routed Conv3d modules
    import torch

    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and self.weight.dtype == torch.float32
        and not isinstance(self.padding, str)
        and self.padding_mode == "zeros"
        and not torch.is_autocast_enabled("cpu")
    ):
        return torch.mkldnn_convolution(
            x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups
        )
    return torch.nn.Conv3d.forward(self, x)


def use_onednn_conv3d(network: torch.nn.Module) -> int:
    """Route every ``torch.nn.Conv3d`` of ``network`` (in place) through oneDNN for float32 CPU inputs.

    Other inputs (CUDA, autocast, other dtypes, non-zero padding modes) keep PyTorch's own dispatch.
    TorchScript modules are left alone. Returns the number of convolutions routed.
    """
    import torch

    if not torch.backends.mkldnn.is_available() or isinstance(network, torch.jit.ScriptModule):
        return 0
    n = 0
    for m in network.modules():
        if type(m) is torch.nn.Conv3d:
            m.forward = _onednn_conv3d_forward.__get__(m, type(m))
            n += 1
    return n
