"""``pymirc.image_operations.zoom3d`` in numpy: the resampling pyliverlesionseg uses (no numba needed).

pymirc resamples one axis at a time: upsampling by linear interpolation between voxel centres with the
grids' centres aligned (outside: ``cval`` = 0), downsampling by area-weighted binning (each small voxel
adds its overlap with each big voxel). Each axis is a fixed ``(n_out, n_in)`` weight matrix here, applied
with ``tensordot``; the weights are computed with the same floating-point expressions as pymirc.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["zoom3d", "zoom_matrix"]


def zoom_matrix(n_in: int, zoom: float) -> np.ndarray:
    """``(n_out, n_in)`` weights of pymirc's 1D up- (``zoom > 1``) or downsampling (``zoom < 1``)."""
    if not zoom > 0:
        raise ValueError(f"zoom must be > 0, got {zoom}.")
    delta = 1.0 / zoom
    if zoom > 1:
        nb, ns = n_in, math.ceil(n_in / delta)
        w = np.zeros((ns, nb))
        for i in range(ns):
            ib_c = delta * (i - 0.5 * ns + 0.5) + 0.5 * nb - 0.5
            fl_l = math.floor(ib_c)
            fl_r = fl_l + 1
            if fl_l >= 0:
                w[i, fl_l] += fl_r - ib_c
            if fl_r < nb:
                w[i, fl_r] += ib_c - fl_l
        return w
    if zoom < 1:
        ns, nb = n_in, math.ceil(n_in / delta)
        w = np.zeros((nb, ns))
        for i in range(ns):
            ib_l = (1.0 / delta) * (i - 0.5 * ns) + 0.5 * nb
            ib_r = (1.0 / delta) * (i + 1 - 0.5 * ns) + 0.5 * nb
            left, right = math.floor(ib_l), math.ceil(ib_r) - 1
            if left == right:
                w[left, i] += 1.0 / delta
            else:
                c = math.ceil(ib_l)
                w[left, i] += c - ib_l
                w[right, i] += ib_r - c
        return w
    return np.eye(n_in)


def zoom3d(vol: np.ndarray, zoom: float | Sequence[float]) -> np.ndarray:
    """Zoom a 3D array along each axis (pymirc's ``zoom3d`` with ``cval=0``); float32 result.

    Args:
        vol: ``(X, Y, Z)`` array.
        zoom: factor per axis (``> 1`` upsamples: the shape becomes ``ceil(n * zoom)``).
    """
    if np.ndim(zoom) == 0:
        zoom = [float(zoom)] * 3  # type: ignore[list-item]
    out = np.asarray(vol, dtype=np.float32)
    for axis, z in enumerate(zoom):  # type: ignore[arg-type]
        if z == 1:
            continue
        w = zoom_matrix(out.shape[axis], float(z)).astype(np.float32)
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out)
