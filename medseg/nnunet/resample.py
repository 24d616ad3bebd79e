"""nnU-Net's default resampling (``resample_data_or_seg_to_shape``), written with scipy only.

Semantics reproduced exactly (same scipy calls, same float64 maths, same clipping):

* isotropic-enough data: every channel goes through ``scipy.ndimage.zoom(x, out/in, order, mode="nearest",
  grid_mode=True)`` in float64 and is clipped to the channel's input range — what ``skimage.transform.resize``
  with ``mode="edge", anti_aliasing=False`` does;
* anisotropic data (max/min spacing > 3 in the current or the target spacing, one low-resolution axis):
  each slice across that axis is resized in 2D with ``order``, then the axis itself is resampled with
  ``order_z`` (nearest for 0) at pixel-centre-aligned coordinates ``scale * (i + 0.5) - 0.5``.

Shapes are ``(C, X, Y, Z)`` in nnU-Net's transposed axis order; spacings in mm, same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from medseg.nnunet.plans import Resampling

__all__ = ["ANISO_THRESHOLD", "compute_new_shape", "resample_to_shape", "separate_z_axis"]

#: nnU-Net's ``ANISO_THRESHOLD``: spacing ratio above which the low-resolution axis is resampled separately.
ANISO_THRESHOLD = 3.0


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Shape after resampling ``shape`` from ``spacing`` to ``new_spacing`` (``round(s * sp / new_sp)``)."""
    if not (len(shape) == len(spacing) == len(new_spacing)):
        raise ValueError(f"shape {shape}, spacing {spacing} and new_spacing {new_spacing} differ in length.")
    return tuple(int(round(sp / nsp * s)) for s, sp, nsp in zip(shape, spacing, new_spacing))


def _lowres_axis(spacing: Sequence[float]) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64)
    return np.where(max(sp) / sp == 1)[0]


def separate_z_axis(current_spacing: Sequence[float], new_spacing: Sequence[float],
                    force_separate_z: bool | None = None, threshold: float = ANISO_THRESHOLD) -> int | None:
    """The axis to resample separately (nnU-Net's ``determine_do_sep_z_and_axis``), or ``None``."""
    if force_separate_z is not None:
        if not force_separate_z:
            return None
        axis = _lowres_axis(current_spacing)
    elif max(current_spacing) / min(current_spacing) > threshold:
        axis = _lowres_axis(current_spacing)
    elif max(new_spacing) / min(new_spacing) > threshold:
        axis = _lowres_axis(new_spacing)
    else:
        return None
    return int(axis[0]) if len(axis) == 1 else None


def _zoom_clipped(x: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """``skimage.transform.resize(x, new_shape, order, mode="edge", anti_aliasing=False)`` for float64 ``x``."""
    factors = [n / o for n, o in zip(new_shape, x.shape)]
    out = ndi.zoom(x, factors, order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, x.min(), x.max(), out=out)
    return out


def resample_to_shape(data: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                      new_spacing: Sequence[float], how: Resampling, out_dtype: np.dtype | type | None = None
                      ) -> np.ndarray:
    """Resample ``(C, X, Y, Z)`` ``data`` to ``(C, *new_shape)`` with nnU-Net's semantics (see module doc).

    Args:
        data: float array, channels first.
        new_shape: target spatial shape.
        current_spacing, new_spacing: mm, used only to decide on separate-z resampling.
        how: spline orders and the separate-z override.
        out_dtype: output dtype (default: ``data.dtype``).

    Returns:
        The resampled array; ``data`` itself when the shape already matches.
    """
    if data.ndim != 4:
        raise ValueError(f"data must be (C, X, Y, Z), got shape {data.shape}.")
    new_shape = tuple(int(s) for s in new_shape)
    if len(new_shape) != 3 or min(new_shape) < 1:
        raise ValueError(f"new_shape must be three positive ints, got {new_shape}.")
    shape = tuple(data.shape[1:])
    if shape == new_shape:
        return data
    out = np.zeros((data.shape[0], *new_shape), dtype=out_dtype or data.dtype)
    axis = separate_z_axis(current_spacing, new_spacing, how.force_separate_z)
    for c in range(data.shape[0]):
        x = data[c].astype(np.float64)
        if axis is None:
            out[c] = _zoom_clipped(x, new_shape, how.order)
            continue
        inplane = tuple(s for i, s in enumerate(new_shape) if i != axis)
        tmp_shape = list(new_shape)
        tmp_shape[axis] = shape[axis]
        tmp = np.zeros(tmp_shape)
        for s in range(shape[axis]):
            idx = [slice(None)] * 3
            idx[axis] = s
            tmp[tuple(idx)] = _zoom_clipped(x[tuple(idx)], inplane, how.order)
        if shape[axis] == new_shape[axis]:
            out[c] = tmp
            continue
        scale = shape[axis] / new_shape[axis]
        coords = scale * (np.arange(new_shape[axis]) + 0.5) - 0.5
        if how.order_z == 0:
            # nearest along the axis: which source slice map_coordinates(order=0, mode="nearest") picks
            src = ndi.map_coordinates(np.arange(shape[axis], dtype=np.float64), coords[None], order=0, mode="nearest")
            out[c] = np.take(tmp, src.astype(np.intp), axis=axis)
        else:
            grid = np.mgrid[tuple(slice(0, n) for n in new_shape)].astype(np.float64)
            grid[axis] = coords.reshape([-1 if i == axis else 1 for i in range(3)]) * np.ones(new_shape)
            # in-plane coordinates are the identity: tmp already has the in-plane target size
            out[c] = ndi.map_coordinates(tmp, grid, order=how.order_z, mode="nearest")
    return out
