"""Area resampling of uint8 images, equivalent to OpenCV's ``cv2.resize(..., interpolation=INTER_AREA)``.

LiteMedSAM's reference inference resizes each uint8 slice (and each previous-slice mask) so its longest
side is 256 with OpenCV's area filter. This module computes the same result with numpy as two separable
weight matrices, following OpenCV's rules:

- shrinking by an integer factor: block means, rounded half up for a factor of 2 (OpenCV's fixed-point
  path), half to even otherwise;
- shrinking by another factor: exact pixel-area weights (OpenCV's ``computeResizeAreaTab``), rounded
  half to even;
- enlarging: OpenCV's "area" variant of linear interpolation (nearest-like, linear across cell borders),
  in 11-bit fixed point.

Tests compare it with OpenCV itself on real slices.

>>> import numpy as np
>>> resize_area(np.array([[0, 2], [4, 6]], dtype=np.uint8), (1, 1))
array([[3]], dtype=uint8)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["longest_side_shape", "resize_area"]


def longest_side_shape(shape: tuple[int, int], target: int = 256) -> tuple[int, int]:
    """``(rows, cols)`` after scaling the longest side to ``target`` (each side ``int(side * s + 0.5)``)."""
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"image shape must be positive, got {shape}.")
    s = target * 1.0 / max(h, w)
    return int(h * s + 0.5), int(w * s + 0.5)


def _shrink_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` pixel-area weights (OpenCV's computeResizeAreaTab), rows summing to 1."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s2 = min(math.floor(f2), n_in - 1)
        s1 = min(math.ceil(f1), s2)
        if s1 - f1 > 1e-3:
            w[d, s1 - 1] = np.float32((s1 - f1) / cell)
        for s in range(s1, s2):
            w[d, s] = np.float32(1.0 / cell)
        if f2 - s2 > 1e-3:
            w[d, s2] = np.float32(min(min(f2 - s2, 1.0), cell) / cell)
    return w


def _enlarge_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` integer weights (sum 2048) of OpenCV's area-mode linear interpolation."""
    scale = n_in / n_out
    inv = n_out / n_in
    w = np.zeros((n_out, n_in), dtype=np.int64)
    for d in range(n_out):
        s = math.floor(d * scale)
        f = np.float32((d + 1) - (s + 1) * inv)
        f = np.float32(0.0) if f <= 0 else np.float32(f - math.floor(f))
        if s < 0:
            s, f = 0, np.float32(0.0)
        if s >= n_in - 1:
            s, f = n_in - 1, np.float32(0.0)
        a1 = int(np.rint(np.float32(f) * 2048))
        a0 = int(np.rint(np.float32(1.0 - f) * 2048))
        w[d, s] += a0
        if a1:
            w[d, min(s + 1, n_in - 1)] += a1
    return w


def _along_cols(x: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """``(h, w, c)`` x ``(ow, w)`` weights → ``(h, ow, c)``."""
    return np.matmul(wx, x)  # broadcasts over rows: (ow, w) @ (h, w, c)


def _separable(x: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    h, w, c = x.shape
    t = (wy @ x.reshape(h, w * c)).reshape(wy.shape[0], w, c)
    return _along_cols(t, wx)


def resize_area(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 ``(H, W)`` or ``(H, W, C)`` image to ``shape = (rows, cols)`` like cv2's INTER_AREA.

    Raises:
        TypeError: ``image`` is not uint8.
        ValueError: bad dimensions or target shape.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"resize_area takes uint8 images, got {a.dtype}.")
    if a.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {a.shape}.")
    h, w = a.shape[:2]
    oh, ow = int(shape[0]), int(shape[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"target shape must be positive, got {shape}.")
    if (oh, ow) == (h, w):
        return a.copy()
    sy, sx = h / oh, w / ow
    x = a.reshape(h, w, -1).astype(np.float64)
    c = x.shape[2]
    if sy >= 1 and sx >= 1:
        iy, ix = int(round(sy)), int(round(sx))
        if abs(sy - iy) < 1e-12 and abs(sx - ix) < 1e-12:  # integer factors: block sums
            blocks = x[: oh * iy, : ow * ix].reshape(oh, iy, ow, ix, c).sum(axis=(1, 3))
            area = iy * ix
            if (iy, ix) == (2, 2):
                out = np.floor((blocks + 2) / 4)
            else:
                out = np.rint((blocks * np.float32(1.0 / area)).astype(np.float32))
        else:
            out = np.rint(_separable(x, _shrink_weights(h, oh), _shrink_weights(w, ow)))
    else:
        # exact integers in float64: horizontal taps (x2048), then the vertical SIMD rounding of OpenCV
        wy, wx = _enlarge_weights(h, oh), _enlarge_weights(w, ow)
        rows = np.floor(_along_cols(x, wx.astype(np.float64)) / 16)  # (h, ow, c), S >> 4
        out = np.zeros((oh, ow, c))
        for d in range(oh):
            (taps,) = np.nonzero(wy[d])
            acc = np.zeros((ow, c))
            for t in taps:
                acc += np.floor(rows[t] * float(wy[d, t]) / 65536)
            out[d] = np.floor((acc + 2) / 4)
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out.reshape((oh, ow) + a.shape[2:])
