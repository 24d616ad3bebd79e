"""Running the network over a preprocessed image: whole volume or MONAI sliding window.

:func:`sliding_window_predict` is the single place where windows are stitched (a later bounded-memory
implementation can replace it without touching the predictor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["count_windows", "sliding_window_predict", "whole_predict", "choose_stitch_device"]


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits over ``image_size`` (after padding to ``roi_size``)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = [max(i, r) for i, r in zip(image_size, roi_size)]
    scan = _get_scan_interval(size, roi_size, len(size), (overlap,) * len(size))
    return len(dense_patch_slices(size, roi_size, scan))


def choose_stitch_device(
    out_channels: int, image_size: Sequence[int], sw_device: torch.device, fraction: float = 0.5
) -> torch.device:
    """Where the stitched output lives: ``sw_device``, or the CPU when it would take more than ``fraction``
    of the free memory of a CUDA ``sw_device`` (float32 output plus the weight map)."""
    import math

    import torch

    if sw_device.type != "cuda":
        return sw_device
    need = 4 * (out_channels + 1) * math.prod(image_size)
    free, _ = torch.cuda.mem_get_info(sw_device)
    return sw_device if need < fraction * free else torch.device("cpu")


def _counting(network: Callable, progress: Callable[[int], None] | None, autocast_ctx: Callable) -> Callable:
    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast_ctx():
            y = network(x)
        if progress is not None:
            progress(int(x.shape[0]))
        return y.float()

    return run


def sliding_window_predict(
    x: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    *,
    roi_size: Sequence[int],
    overlap: float,
    sw_batch_size: int = 1,
    blend: str = "constant",
    padding_mode: str = "constant",
    sw_device: torch.device | None = None,
    device: torch.device | None = None,
    autocast_ctx: Callable | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Sliding-window inference with MONAI's ``sliding_window_inference``.

    Args:
        x: ``(1, C, X, Y, Z)`` float32 input (on any device).
        network: maps ``(B, C, *roi_size)`` to ``(B, C_out, *roi_size)``.
        roi_size: window size in voxels.
        overlap: fraction in ``[0, 1)``.
        sw_batch_size: windows per network call.
        blend: ``constant`` or ``gaussian``.
        padding_mode: how the image is padded up to ``roi_size``.
        sw_device: where windows run; ``device``: where the stitched float32 output lives.
        autocast_ctx: zero-argument callable returning the autocast context for each network call.
        progress: called with the number of windows just processed.

    Returns:
        ``(1, C_out, X, Y, Z)`` float32 on ``device``.
    """
    import contextlib

    from monai.inferers import sliding_window_inference

    run = _counting(network, progress, autocast_ctx or contextlib.nullcontext)
    return sliding_window_inference(
        x,
        roi_size=tuple(roi_size),
        sw_batch_size=sw_batch_size,
        predictor=run,
        overlap=overlap,
        mode=blend,
        padding_mode=padding_mode,
        sw_device=sw_device,
        device=device,
    )


def whole_predict(
    x: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    *,
    device: torch.device | None = None,
    autocast_ctx: Callable | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The whole ``(1, C, X, Y, Z)`` volume in one network call; float32 output on ``device``."""
    import contextlib

    y = _counting(network, progress, autocast_ctx or contextlib.nullcontext)(x)
    return y if device is None else y.to(device)
