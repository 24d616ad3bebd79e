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

__all__ = ["ANISO_THRESHOLD", "RowResampler", "compute_new_shape", "resample_to_shape", "separate_z_axis"]

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


class RowResampler:
    """:func:`resample_to_shape` of data arriving in blocks of rows along axis 0, one channel at a time.

    Output rows are produced as soon as every input row they interpolate from has arrived, so neither the
    whole input nor the whole output is ever held (the bounded nnU-Net export). Bitwise equal to
    :func:`resample_to_shape` channel by channel (:meth:`supports` says when): equal shapes; linear
    (``order == 1``) resampling without a separate axis (each output point is interpolated by
    ``scipy.ndimage.map_coordinates`` at exactly the coordinate ``scipy.ndimage.zoom`` computes,
    ``(o + 0.5) * in / out - 0.5``, minus an integer row offset, which is exact); or a separate axis 0 (in-plane
    slices are independent; along the axis nearest or linear). Clipping uses the range of the rows in hand
    instead of the channel's: values outside the input range come only from rounding of convex combinations
    and are within a few float64 ulps of a neighbour, so after the cast to ``out_dtype`` both are equal.

    Args:
        shape: ``(X, Y, Z)`` of the whole input.
        new_shape: ``(X', Y', Z')`` of the whole output.
        current_spacing, new_spacing: mm, as :func:`resample_to_shape` (they decide on a separate axis).
        how: spline orders and the separate-z override.
        out_dtype: dtype of the output channels (the input's in :func:`resample_to_shape`).
    """

    def __init__(self, shape: Sequence[int], new_shape: Sequence[int], current_spacing: Sequence[float],
                 new_spacing: Sequence[float], how: Resampling, out_dtype: np.dtype | type) -> None:
        if not self.supports(shape, new_shape, current_spacing, new_spacing, how):
            raise ValueError(f"resampling {tuple(shape)} -> {tuple(new_shape)} with {how} cannot stream along axis 0.")
        self.shape = tuple(int(s) for s in shape)
        self.new_shape = tuple(int(s) for s in new_shape)
        self.how = how
        self.out_dtype = np.dtype(out_dtype)
        self.axis = None if self.shape == self.new_shape else separate_z_axis(current_spacing, new_spacing,
                                                                               how.force_separate_z)
        n_in, n_out = self.shape[0], self.new_shape[0]
        #: interpolation coordinate of every output row along axis 0 (None: rows map one to one)
        self.coords: np.ndarray | None = None
        self.src: np.ndarray | None = None  # nearest source row (separate axis 0, order_z 0)
        rows = np.arange(n_out)
        if self.shape == self.new_shape or (self.axis == 0 and n_in == n_out):
            lo = hi = rows
        elif self.axis is None:
            self.coords = (rows + 0.5) * (np.float64(n_in) / np.float64(n_out)) - 0.5  # scipy's zoom, grid_mode
            lo, hi = np.floor(self.coords).astype(np.int64), np.floor(self.coords).astype(np.int64) + 1
        else:  # separate axis 0: resample_to_shape's coordinates along it
            scale = n_in / n_out
            coords = scale * (rows + 0.5) - 0.5
            if how.order_z == 0:
                self.src = ndi.map_coordinates(np.arange(n_in, dtype=np.float64), coords[None], order=0,
                                               mode="nearest").astype(np.intp)
                lo = hi = self.src
            else:
                self.coords = coords
                lo, hi = np.floor(coords).astype(np.int64), np.floor(coords).astype(np.int64) + 1
        self.lo = np.clip(lo, 0, n_in - 1)
        self.hi = np.clip(hi, 0, n_in - 1)
        self._buf: np.ndarray | None = None  # (C, rows, Y, Z): input rows buf0 .. received - 1
        self._buf0 = 0
        self.received = 0
        self.emitted = 0

    @staticmethod
    def supports(shape: Sequence[int], new_shape: Sequence[int], current_spacing: Sequence[float],
                 new_spacing: Sequence[float], how: Resampling) -> bool:
        """Whether this resampling streams along axis 0 with results bitwise equal to :func:`resample_to_shape`."""
        if tuple(shape) == tuple(new_shape):
            return True
        if how.order != 1:  # cubic splines prefilter the whole axis; nearest in-plane is not wired
            return False
        axis = separate_z_axis(current_spacing, new_spacing, how.force_separate_z)
        return axis is None or (axis == 0 and how.order_z in (0, 1))

    def push(self, block: np.ndarray):
        """Add the next input rows ``block`` ``(C, r, Y, Z)``; yield ``(o0, o1, channels)`` for every output row
        range now complete, ``channels`` a generator of ``(c, (o1 - o0, Y', Z') array)`` (consume it before
        resuming: the rows it reads are released afterwards)."""
        if block.ndim != 4 or tuple(block.shape[2:]) != self.shape[1:]:
            raise ValueError(f"block must be (C, rows, {self.shape[1]}, {self.shape[2]}), got {block.shape}.")
        self._buf = np.array(block, copy=True) if self._buf is None else np.concatenate([self._buf, block], axis=1)
        self.received += int(block.shape[1])
        if self.received > self.shape[0]:
            raise ValueError(f"received {self.received} rows, the input has {self.shape[0]}.")
        o1 = int(np.searchsorted(self.hi, self.received, side="left"))  # hi is non-decreasing
        if o1 > self.emitted:
            o0, self.emitted = self.emitted, o1
            yield o0, o1, self._channels(o0, o1)
        if self.emitted < self.new_shape[0]:  # release the rows no later output row reads
            keep = min(int(self.lo[self.emitted]), self.received)  # rows not received yet are not in the buffer
            if keep > self._buf0:
                self._buf = self._buf[:, keep - self._buf0:].copy()
                self._buf0 = keep
        else:
            self._buf = None

    def _rows(self, c: int, a: int, b: int) -> np.ndarray:
        """Input rows ``a..b-1`` of channel ``c`` from the buffer, as float64 (resample_to_shape's maths)."""
        return self._buf[c, a - self._buf0:b - self._buf0].astype(np.float64)

    def _channels(self, o0: int, o1: int):
        a, b = int(self.lo[o0]), int(self.hi[o1 - 1]) + 1
        n_ch = self._buf.shape[0]
        inplane = self.new_shape[1:]
        if self.shape == self.new_shape:
            for c in range(n_ch):
                yield c, self._buf[c, o0 - self._buf0:o1 - self._buf0]
            return
        if self.axis is None:  # zoom's coordinates on every axis; rows shifted by an integer (exact)
            other = [(np.arange(n) + 0.5) * (np.float64(s) / np.float64(n)) - 0.5
                     for s, n in zip(self.shape[1:], inplane)]
            grid = np.stack(np.meshgrid(self.coords[o0:o1] - a, *other, indexing="ij"))
            for c in range(n_ch):
                x = self._rows(c, a, b)
                out = ndi.map_coordinates(x, grid, order=1, mode="nearest")
                np.clip(out, x.min(), x.max(), out=out)
                yield c, out.astype(self.out_dtype)
            return
        grid = None
        if self.coords is not None:  # linear along axis 0, in-plane identity (as resample_to_shape)
            grid = np.mgrid[(slice(0, o1 - o0), *(slice(0, n) for n in inplane))].astype(np.float64)
            grid[0] = (self.coords[o0:o1] - a).reshape(-1, 1, 1) * np.ones((1, *inplane))
        for c in range(n_ch):
            x = self._rows(c, a, b)
            tmp = np.zeros((b - a, *inplane))
            for s in range(b - a):
                tmp[s] = _zoom_clipped(x[s], inplane, self.how.order)
            if self.src is not None:
                out = np.take(tmp, self.src[o0:o1] - a, axis=0)
            elif grid is not None:
                out = ndi.map_coordinates(tmp, grid, order=self.how.order_z, mode="nearest")
            else:
                out = tmp
            yield c, out.astype(self.out_dtype)
