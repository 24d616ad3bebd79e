"""Slices of a :class:`~medseg.types.Volume` as SAM model images, and exact coordinate maps both ways.

A slice normal to ``axis`` is indexed ``(row, col)`` (see :func:`medseg.geometry.in_plane_axes`). It is
windowed to [0, 1], resampled so one model pixel has the same size in mm along rows and columns (the
longer physical side fills the model's ``image_size``), and placed in the top-left corner of the square
model frame (SAM's "resize longest side, pad bottom/right"). Points in the model frame are ``(x, y)`` =
``(col, row)`` in model pixel-index units, as SAM's prompt encoder expects.

Pixel centres map exactly: slice pixel ``p`` (centre at ``p``, covering ``[p-0.5, p+0.5]``) maps to
model coordinate ``(p + 0.5) * s - 0.5`` with ``s`` the model pixels per slice pixel along that axis;
the resampling (``torch.nn.functional.interpolate(..., align_corners=False)``) uses the same convention.

>>> from medseg.types import Geometry
>>> g = Geometry(np.diag([0.5, 2.0, 3.0, 1.0]), (40, 10, 6))
>>> f = frame_for(g, axis=2, image_size=256)
>>> f.content_shape          # 40*0.5 = 20 mm rows, 10*2 = 20 mm cols: square in mm
(256, 256)
>>> np.allclose(f.model_to_slice(f.slice_to_model([[3.0, 4.0]])), [[3.0, 4.0]])
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from medseg.geometry import in_plane_axes, slice_voxels, take_slice, voxels_to_slice
from medseg.modality import DEFAULT_CT_WINDOW, DEFAULT_PERCENTILES, default_window
from medseg.types import Geometry, Volume

__all__ = [
    "WindowPreset",
    "Window",
    "resolve_axis",
    "window_for",
    "apply_window",
    "SliceFrame",
    "frame_for",
    "slice_image",
    "to_model_frame",
    "from_model_frame",
]

_AXIS_NAMES = {"i": 0, "j": 1, "k": 2}


def resolve_axis(axis: int | str) -> int:
    """``0``/``1``/``2`` or ``"i"``/``"j"``/``"k"`` → ``0``/``1``/``2``."""
    if isinstance(axis, str):
        if axis.lower() in _AXIS_NAMES:
            return _AXIS_NAMES[axis.lower()]
        raise ValueError(f"axis must be one of i, j, k (or 0, 1, 2), got {axis!r}.")
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and int(axis) in (0, 1, 2):
        return int(axis)
    raise ValueError(f"axis must be one of i, j, k (or 0, 1, 2), got {axis!r}.")


class WindowPreset(str, Enum):
    """Intensity windows. CT presets are (width, level) in HU; ``mr`` uses volume percentiles."""

    AUTO = "auto"  # CT soft tissue for CT volumes, MR percentiles otherwise
    CT_SOFT_TISSUE = "ct_soft_tissue"  # W 400, L 40
    CT_LUNG = "ct_lung"  # W 1500, L -600
    CT_BONE = "ct_bone"  # W 1800, L 400
    CT_BRAIN = "ct_brain"  # W 80, L 40
    MR = "mr"  # 0.5th..99.5th percentile of the volume's nonzero voxels


_CT_WL = {
    WindowPreset.CT_SOFT_TISSUE: DEFAULT_CT_WINDOW,
    WindowPreset.CT_LUNG: (1500.0, -600.0),
    WindowPreset.CT_BONE: (1800.0, 400.0),
    WindowPreset.CT_BRAIN: (80.0, 40.0),
}


@dataclass(frozen=True)
class Window:
    """Intensity window: values ``<= low`` map to 0, ``>= high`` to 1, linear in between."""

    low: float
    high: float
    name: str = "custom"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(f"window needs finite low < high, got low={self.low}, high={self.high}.")

    @classmethod
    def from_width_level(cls, width: float, level: float, name: str = "custom") -> Window:
        return cls(level - width / 2.0, level + width / 2.0, name)

    @property
    def key(self) -> tuple[float, float]:
        """Rounded ``(low, high)`` used in cache keys."""
        return (round(float(self.low), 4), round(float(self.high), 4))


def _look_up(value: str | WindowPreset) -> WindowPreset:
    if isinstance(value, WindowPreset):
        return value
    try:
        return WindowPreset(str(value).lower())
    except ValueError:
        choices = ", ".join(p.value for p in WindowPreset)
        raise ValueError(f"unknown window preset {value!r}; choices: {choices}.") from None


def window_for(
    volume: Volume,
    preset: str | WindowPreset | Window | tuple[float, float] = WindowPreset.AUTO,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> Window:
    """The intensity window for a volume: a preset, explicit ``(low, high)``, or a :class:`Window`.

    ``auto`` and ``mr`` are :func:`medseg.modality.default_window` (the contrast napari shows): MR
    percentiles are taken over the whole volume's non-zero voxels, so every slice of a volume gets the same
    window, which keeps embeddings and propagation consistent.
    """
    if isinstance(preset, Window):
        return preset
    if isinstance(preset, tuple):
        return Window(float(preset[0]), float(preset[1]))
    p = _look_up(preset)
    if p in _CT_WL:
        w, lv = _CT_WL[p]
        return Window.from_width_level(w, lv, p.value)
    # auto / mr: the one default window napari shows the volume with (medseg.modality.default_window)
    dw = default_window(volume, "auto" if p is WindowPreset.AUTO else "mr", percentiles)
    if dw.kind == "window":
        return Window(dw.low, dw.high, WindowPreset.CT_SOFT_TISSUE.value)
    return Window(dw.low, dw.high if dw.high > dw.low else dw.low + 1.0, WindowPreset.MR.value)


def apply_window(image: np.ndarray, window: Window) -> np.ndarray:
    """Window ``image`` to float32 in [0, 1]."""
    out = (np.asarray(image, dtype=np.float32) - np.float32(window.low)) / np.float32(window.high - window.low)
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True)
class SliceFrame:
    """How slices normal to ``axis`` of one grid sit in the model's square input frame.

    Args:
        axis: voxel axis normal to the slices (0, 1, 2 = i, j, k).
        slice_shape: ``(rows, cols)`` of a slice.
        pixel_spacing: ``(row, col)`` pixel size in mm.
        image_size: side of the square model frame (pixels).
        content_shape: ``(h, w)`` model pixels holding the resampled slice (top-left corner).
    """

    axis: int
    slice_shape: tuple[int, int]
    pixel_spacing: tuple[float, float]
    image_size: int
    content_shape: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Model pixels per slice pixel along ``(rows, cols)``."""
        return (self.content_shape[0] / self.slice_shape[0], self.content_shape[1] / self.slice_shape[1])

    @property
    def model_pixel_mm(self) -> tuple[float, float]:
        """Size of one model pixel in mm along ``(rows, cols)`` (equal up to rounding of ``content_shape``)."""
        s = self.scale
        return (self.pixel_spacing[0] / s[0], self.pixel_spacing[1] / s[1])

    def slice_to_model(self, rows_cols: np.ndarray | Sequence) -> np.ndarray:
        """Slice ``(row, col)`` ``(N, 2)`` → model ``(x, y)`` ``(N, 2)``."""
        rc = np.asarray(rows_cols, dtype=np.float64).reshape(-1, 2)
        sr, sc = self.scale
        return np.stack([(rc[:, 1] + 0.5) * sc - 0.5, (rc[:, 0] + 0.5) * sr - 0.5], axis=1)

    def model_to_slice(self, xy: np.ndarray | Sequence) -> np.ndarray:
        """Model ``(x, y)`` ``(N, 2)`` → slice ``(row, col)`` ``(N, 2)``."""
        p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        sr, sc = self.scale
        return np.stack([(p[:, 1] + 0.5) / sr - 0.5, (p[:, 0] + 0.5) / sc - 0.5], axis=1)

    def voxel_to_model(self, ijk: np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Voxel ``(i, j, k)`` ``(N, 3)`` → (model ``(x, y)`` ``(N, 2)``, slice index along ``axis`` ``(N,)``)."""
        rc, idx = voxels_to_slice(self.axis, np.asarray(ijk, dtype=np.float64).reshape(-1, 3))
        return self.slice_to_model(rc), idx

    def model_to_voxel(self, xy: np.ndarray | Sequence, index: float) -> np.ndarray:
        """Model ``(x, y)`` ``(N, 2)`` on slice ``index`` → voxel ``(i, j, k)`` ``(N, 3)``."""
        return slice_voxels(self.axis, index, self.model_to_slice(xy))

    def box_to_model(self, box: Sequence[float]) -> np.ndarray:
        """Slice box ``(row0, col0, row1, col1)`` (corner pixel centres) → model ``(x0, y0, x1, y1)``."""
        b = np.asarray(box, dtype=np.float64).reshape(4)
        r0, r1 = sorted((b[0], b[2]))
        c0, c1 = sorted((b[1], b[3]))
        p = self.slice_to_model([[r0, c0], [r1, c1]])
        return p.reshape(4)


def frame_for(geometry: Geometry, axis: int | str, image_size: int) -> SliceFrame:
    """The :class:`SliceFrame` of slices normal to ``axis`` for a model with a square ``image_size`` input."""
    ax = resolve_axis(axis)
    if int(image_size) < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}.")
    r_ax, c_ax = in_plane_axes(ax)
    rows, cols = geometry.shape[r_ax], geometry.shape[c_ax]
    sp = geometry.spacing
    ext_r, ext_c = rows * sp[r_ax], cols * sp[c_ax]
    longest = max(ext_r, ext_c)
    h = max(1, min(image_size, int(round(ext_r / longest * image_size))))
    w = max(1, min(image_size, int(round(ext_c / longest * image_size))))
    return SliceFrame(ax, (rows, cols), (sp[r_ax], sp[c_ax]), int(image_size), (h, w))


def _resize(image: np.ndarray, shape: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize a 2D or ``(C, H, W)`` float array with pixel-centre alignment (``align_corners=False``)."""
    import torch
    import torch.nn.functional as F

    arr = np.asarray(image, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[None, None] if t.ndim == 2 else t[None]
    if tuple(t.shape[-2:]) == tuple(shape):
        out = t
    elif mode == "nearest":
        out = F.interpolate(t, size=shape, mode="nearest-exact")
    else:
        down = shape[0] < t.shape[-2] or shape[1] < t.shape[-1]
        out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=down)
    out = out[0, 0] if arr.ndim == 2 else out[0]
    return out.numpy()


def slice_image(volume: Volume, axis: int | str, index: int, window: Window, frame: SliceFrame) -> np.ndarray:
    """Windowed slice resampled to the model frame's content: float32 ``(h, w)`` in [0, 1]."""
    ax = resolve_axis(axis)
    if frame.axis != ax:
        raise ValueError(f"frame is for axis {frame.axis}, not {ax}.")
    data = volume.array if volume.array.ndim == 3 else volume.array[..., 0]
    sl = take_slice(data, ax, index)
    if tuple(sl.shape) != frame.slice_shape:
        raise ValueError(f"slice shape {sl.shape} does not match the frame's {frame.slice_shape}.")
    return np.clip(_resize(apply_window(sl, window), frame.content_shape), 0.0, 1.0)


def to_model_frame(array2d: np.ndarray, frame: SliceFrame, pad_value: float = 0.0) -> np.ndarray:
    """A slice-shaped float array (e.g. a mask) → the full ``(image_size, image_size)`` model frame."""
    a = np.asarray(array2d, dtype=np.float32)
    if a.shape != frame.slice_shape:
        raise ValueError(f"array shape {a.shape} does not match the slice shape {frame.slice_shape}.")
    out = np.full((frame.image_size, frame.image_size), pad_value, dtype=np.float32)
    h, w = frame.content_shape
    out[:h, :w] = _resize(a, (h, w))
    return out


def from_model_frame(array: np.ndarray, frame: SliceFrame) -> np.ndarray:
    """Model-frame values ``(..., L, L)`` at any square resolution (SAM's low-res ``256²`` logits, or the
    full ``image_size²`` frame) → slice ``(..., rows, cols)``, bilinear in one step.

    Slice pixel ``(r, c)`` samples the model frame at ``((c + 0.5) * sc - 0.5, (r + 0.5) * sr - 0.5)``
    (the map of :meth:`SliceFrame.slice_to_model`), whatever ``L`` is.
    """
    import torch
    import torch.nn.functional as F

    a = np.asarray(array, dtype=np.float32)
    lead = a.shape[:-2]
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"model-frame arrays are square, got shape {a.shape}.")
    t = torch.from_numpy(np.ascontiguousarray(a.reshape((1, -1) + a.shape[-2:])))
    rows, cols = frame.slice_shape
    sr, sc = frame.scale
    s = float(frame.image_size)
    gy = (torch.arange(rows, dtype=torch.float32) + 0.5) * (2.0 * sr / s) - 1.0
    gx = (torch.arange(cols, dtype=torch.float32) + 0.5) * (2.0 * sc / s) - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]  # (1, rows, cols, 2) as (x, y)
    out = F.grid_sample(t, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].numpy().reshape(lead + frame.slice_shape)
