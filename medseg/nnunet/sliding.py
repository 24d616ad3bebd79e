"""nnU-Net's sliding-window inference: tile positions, Gaussian importance map, mirroring TTA.

medseg's generic sliding window places tiles like MONAI (fixed interval, last tile flush with the end);
nnU-Net models were validated with nnU-Net's own tiling, which spreads the tiles evenly
(``compute_steps_for_sliding_window``) and blends them with a Gaussian of sigma = patch/8 scaled to a
peak of 10. This module reproduces that tiling exactly, so medseg's labels match nnU-Net's.

Tensors are ``(C, X, Y, Z)`` in nnU-Net's transposed axis order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from medseg.engine.runtime import autocast

__all__ = ["auto_mirror_batch", "gaussian_importance", "mirror_combinations", "predict_sliding_window",
           "stream_sliding_window",
           "tile_starts"]


def tile_starts(image_size: Sequence[int], tile_size: Sequence[int], step_size: float) -> list[list[int]]:
    """Start index of every tile along each axis; tiles are spread evenly, first at 0, last at the end.

    Args:
        image_size: spatial size, each >= the tile size.
        tile_size: patch size.
        step_size: target step as a fraction of the tile (nnU-Net default 0.5), in ``(0, 1]``.
    """
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}.")
    if any(i < t for i, t in zip(image_size, tile_size)):
        raise ValueError(f"image size {tuple(image_size)} is smaller than the tile {tuple(tile_size)}; pad first.")
    steps = []
    for i, t in zip(image_size, tile_size):
        n = int(np.ceil((i - t) / (t * step_size))) + 1
        actual = (i - t) / (n - 1) if n > 1 else 0.0
        steps.append([int(np.round(actual * k)) for k in range(n)])
    return steps


@lru_cache(maxsize=4)
def _gaussian_np(tile_size: tuple[int, ...]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros(tile_size)
    tmp[tuple(s // 2 for s in tile_size)] = 1
    g = gaussian_filter(tmp, [s / 8 for s in tile_size], 0, mode="constant", cval=0)
    g /= np.max(g) / 10
    # nnU-Net keeps the map in float16, converted by torch (float64 -> float16); medseg uses the same values
    g16 = torch.from_numpy(g).to(torch.float16)
    zero = g16 == 0
    g16[zero] = torch.min(g16[~zero])
    return g16.numpy()


def gaussian_importance(tile_size: Sequence[int], dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian weight map of the tile (sigma = tile/8, peak 10, no zeros), as nnU-Net's ``compute_gaussian``."""
    return torch.from_numpy(_gaussian_np(tuple(int(s) for s in tile_size)).copy()).to(device=device, dtype=dtype)


def mirror_combinations(axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Every non-empty combination of the spatial mirroring axes, as tensor dims of a ``(1, C, X, Y, Z)`` batch."""
    if not axes:
        return []
    dims = [int(a) + 2 for a in axes]
    return [c for n in range(1, len(dims) + 1) for c in itertools.combinations(dims, n)]


def _pad_to_tile(x: torch.Tensor, tile: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad ``(C, X, Y, Z)`` with zeros to at least ``tile`` (centred, extra voxel above); return the crop back."""
    pads, crop = [], [slice(None)]
    for size, t in zip(x.shape[1:], tile):
        diff = max(t - size, 0)
        lo, hi = diff // 2, diff // 2 + diff % 2
        pads.append((lo, hi))
        crop.append(slice(lo, lo + size))
    if any(lo or hi for lo, hi in pads):
        flat = [v for lo_hi in reversed(pads) for v in lo_hi]
        x = torch.nn.functional.pad(x, flat, mode="constant", value=0.0)
    return x, tuple(crop)


def _weighted_tile(network, x: torch.Tensor, flips: list[tuple[int, ...]], mirror_batch: int, ac: Any,
                   g: torch.Tensor | None) -> torch.Tensor:
    """One tile's mirror-averaged prediction, float32 on the CPU, times the Gaussian ``g`` (when blending)."""
    with ac:
        pred = _mirrored_prediction(network, x, flips, mirror_batch)
    pred = pred[0].to("cpu", torch.float32)
    if g is not None:
        pred *= g
    return pred


def _mirrored_prediction(network, x: torch.Tensor, flips: list[tuple[int, ...]], batch: int) -> torch.Tensor:
    """Mean of ``network`` over ``x`` and its mirrored copies, summed in nnU-Net's order."""
    if batch <= 1 or not flips:
        pred = network(x)
        for dims in flips:
            pred += torch.flip(network(torch.flip(x, dims)), dims)
    else:
        views = [x] + [torch.flip(x, dims) for dims in flips]
        outs = [network(torch.cat(views[i:i + batch])) for i in range(0, len(views), batch)]
        y = torch.cat(outs) if len(outs) > 1 else outs[0]
        pred = y[0:1].clone()
        for i, dims in enumerate(flips, start=1):
            pred += torch.flip(y[i:i + 1], dims)
    if flips:
        pred /= len(flips) + 1
    return pred


def auto_mirror_batch(tile_size: Sequence[int], n_views: int, budget_voxels: int = 128 ** 3) -> int:
    """Mirrored copies per call so that one call holds at most ``budget_voxels`` input voxels (>= 1)."""
    return max(1, min(n_views, budget_voxels // int(np.prod(tile_size))))


@torch.inference_mode()
def predict_sliding_window(
    network: torch.nn.Module,
    image: torch.Tensor,
    num_heads: int,
    tile_size: Sequence[int],
    *,
    step_size: float = 0.5,
    gaussian: bool = True,
    mirror_axes: Sequence[int] | None = (0, 1, 2),
    device: torch.device | str = "cpu",
    logits_dtype: torch.dtype = torch.float32,
    autocast_dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
    progress: Callable[[], None] | None = None,
    mirror_batch: int = 1,
) -> torch.Tensor:
    """Blend the network's logits over evenly spread tiles of ``image``.

    Args:
        network: in eval mode, on ``device``; maps ``(1, C, *tile)`` → ``(1, num_heads, *tile)``.
        image: ``(C, X, Y, Z)`` float32 on the CPU (the stitch device).
        num_heads: output channels.
        tile_size: patch size ``(X, Y, Z)``.
        step_size: tile step as a fraction of the tile (nnU-Net default 0.5).
        gaussian: Gaussian blending (nnU-Net default) instead of a flat average.
        mirror_axes: spatial axes for mirroring TTA (all combinations are averaged); ``None``/empty = off.
        device: where the network runs; tiles are stitched on the CPU.
        logits_dtype: accumulator dtype: float32 (medseg default) or float16 (nnU-Net's, bit-compatible).
        autocast_dtype: run the network under ``torch.autocast`` with this dtype (e.g. bfloat16), or ``None``.
        out: optional ``(num_heads, X, Y, Z)`` tensor to add the result to (fold ensembling); returned.
        progress: called once per tile.
        mirror_batch: mirrored copies of a tile per network call. 1 = nnU-Net's order (bit-identical logits);
            larger batches are faster on CPUs (4x for small patches) but round differently (~1e-6).

    Returns:
        ``(num_heads, X, Y, Z)`` blended logits (``out + logits`` if ``out`` was given).
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got shape {tuple(image.shape)}.")
    padded, crop = _pad_to_tile(image, tile_size)
    starts = tile_starts(padded.shape[1:], tile_size, step_size)
    logits = torch.zeros((num_heads, *padded.shape[1:]), dtype=logits_dtype)
    weights = torch.zeros(padded.shape[1:], dtype=logits_dtype)
    g = gaussian_importance(tile_size, dtype=logits_dtype) if gaussian else None
    w = g if g is not None else 1  # each tile's weight
    flips = mirror_combinations(mirror_axes)
    dev = torch.device(device)
    ac = autocast(dev, autocast_dtype)
    for sx, sy, sz in itertools.product(*starts):
        sl = (slice(sx, sx + tile_size[0]), slice(sy, sy + tile_size[1]), slice(sz, sz + tile_size[2]))
        x = padded[(slice(None), *sl)][None].contiguous().to(dev)
        logits[(slice(None), *sl)] += _weighted_tile(network, x, flips, mirror_batch, ac, g)
        weights[sl] += w
        if progress is not None:
            progress()
    torch.div(logits, weights, out=logits)
    if torch.isinf(logits).any():
        raise FloatingPointError("infinite logits after blending; use logits_dtype=torch.float32")
    logits = logits[(slice(None), *crop[1:])]
    if out is None:
        return logits
    out += logits
    return out


@torch.inference_mode()
def stream_sliding_window(
    network_for: Callable[[int], Callable[[torch.Tensor], torch.Tensor]],
    n_folds: int,
    image: torch.Tensor,
    num_heads: int,
    tile_size: Sequence[int],
    consumer: Callable[[torch.Tensor], None],
    *,
    step_size: float = 0.5,
    gaussian: bool = True,
    mirror_axes: Sequence[int] | None = (0, 1, 2),
    device: torch.device | str = "cpu",
    logits_dtype: torch.dtype = torch.float32,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[], None] | None = None,
    mirror_batch: int = 1,
) -> None:
    """:func:`predict_sliding_window` over every fold, averaged, handed on in slabs of rows along axis 0.

    Tiles run in the same order (axis 0 slowest), so once the tiles of one start along axis 0 are done, the
    rows before the next start are final: they are divided by their weights, summed over the folds, averaged
    and passed to ``consumer``, then freed. Every voxel sees the same floating-point operations in the same
    order as :func:`predict_sliding_window` fold after fold (``out +=``, ``/= n_folds``), so the blocks are
    bitwise the full path's logits. Held at once: ``n_folds`` accumulators of one tile's extent along axis 0
    ``(num_heads, tile[0], Y, Z)`` instead of the whole ``(num_heads, X, Y, Z)``.

    Args:
        network_for: the network of fold ``i`` (called once per fold per row of tiles; a torch predictor may
            swap weights there).
        n_folds: folds to average.
        image: ``(C, X, Y, Z)`` float32 on the CPU.
        num_heads: output channels.
        tile_size: patch size ``(X, Y, Z)``.
        consumer: called with each finished ``(num_heads, rows, Y, Z)`` block (logits dtype), in row order; the
            blocks tile the unpadded image along axis 0 exactly once.
        step_size, gaussian, mirror_axes, device, logits_dtype, autocast_dtype, mirror_batch: as
            :func:`predict_sliding_window`.
        progress: called once per tile and fold.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got shape {tuple(image.shape)}.")
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}.")
    padded, crop = _pad_to_tile(image, tile_size)
    starts = tile_starts(padded.shape[1:], tile_size, step_size)
    t0 = int(tile_size[0])
    size = tuple(int(s) for s in padded.shape[1:])
    acc = [torch.zeros((num_heads, t0, *size[1:]), dtype=logits_dtype) for _ in range(n_folds)]
    weights = torch.zeros((t0, *size[1:]), dtype=logits_dtype)
    g = gaussian_importance(tile_size, dtype=logits_dtype) if gaussian else None
    w = g if g is not None else 1  # each tile's weight
    flips = mirror_combinations(mirror_axes)
    dev = torch.device(device)
    ac = autocast(dev, autocast_dtype)
    xs = starts[0]
    keep = crop[1]  # rows of the unpadded image, in padded coordinates
    for k, sx in enumerate(xs):
        for f in range(n_folds):
            network = network_for(f)
            for sy, sz in itertools.product(starts[1], starts[2]):
                sl = (slice(sy, sy + tile_size[1]), slice(sz, sz + tile_size[2]))
                x = padded[:, sx:sx + t0][(slice(None), slice(None), *sl)][None].contiguous().to(dev)
                acc[f][(slice(None), slice(None), *sl)] += _weighted_tile(network, x, flips, mirror_batch, ac, g)
                if f == 0:
                    weights[(slice(None), *sl)] += w
                if progress is not None:
                    progress()
        end = xs[k + 1] if k + 1 < len(xs) else sx + t0
        n = end - sx
        out = None
        for f in range(n_folds):
            logits = acc[f][:, :n]
            torch.div(logits, weights[:n], out=logits)
            if torch.isinf(logits).any():
                raise FloatingPointError("infinite logits after blending; use logits_dtype=torch.float32")
            lo, hi = max(sx, keep.start), min(end, keep.stop)
            part = logits[:, lo - sx:hi - sx][(slice(None), slice(None), *crop[2:])] if hi > lo else None
            if part is None:
                continue
            if out is None:
                out = part
            else:
                out += part
        if out is not None:
            if n_folds > 1:
                out /= n_folds
            consumer(out)
        del out
        for f in range(n_folds):  # carry the unfinished rows to the front
            acc[f][:, :t0 - n] = acc[f][:, n:].clone()
            acc[f][:, t0 - n:] = 0
        weights[:t0 - n] = weights[n:].clone()
        weights[t0 - n:] = 0
