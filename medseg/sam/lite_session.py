"""LiteMedSAM behind the interactive session interface (what the napari SAM widget drives), no Qt.

:class:`LiteSession` answers the calls the widget makes on a :class:`~medseg.sam.segment.SamSession`
(``segment``, ``precompute``, ``is_cached``, ``propagate``) but runs everything through
:class:`medseg.sam.protocol.BoxSession`: the same uint8 intensities, the same plane orientation, the same
resize and box rules as ``medseg prompt``. Prompts arrive as :class:`~medseg.sam.segment.SlicePrompt`
(``(row, col)`` = the two remaining voxel axes in increasing order) and masks go back in that orientation;
the protocol's plane is its transpose (columns = the lower voxel axis), handled here.

>>> s = LiteSession(LiteMedSAM.load(), volume)                       # doctest: +SKIP
>>> r = s.segment(2, 40, SlicePrompt(box=(60, 70, 120, 140)))         # doctest: +SKIP
>>> res = s.propagate(2, {40: SlicePrompt(box=(60, 70, 120, 140))}, z_range=(30, 50))  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from medseg.sam.embed import EmbeddingCache, PrecomputeJob, neighbours
from medseg.sam.image import WindowPreset, _CT_WL, resolve_axis
from medseg.sam.protocol import BoxSession, LiteMedSAM
from medseg.sam.slices import SlicePrompt
from medseg.types import Volume

__all__ = ["LiteSession", "LiteSliceResult", "LitePropagation", "window_choice"]


def window_choice(window: str | WindowPreset | tuple[float, float] | None) -> tuple[str, tuple[float, float] | None]:
    """A widget window choice → ``(modality, (width, level) or None)`` for :class:`BoxSession`.

    ``auto`` → the modality rule; ``ct_*`` presets → that CT window; ``mr`` → the percentile rule;
    ``(width, level)`` → that window.
    """
    if window is None:
        return "auto", None
    if isinstance(window, tuple):
        return "ct", (float(window[0]), float(window[1]))
    p = window if isinstance(window, WindowPreset) else WindowPreset(str(window).lower())
    if p is WindowPreset.AUTO:
        return "auto", None
    if p is WindowPreset.MR:
        return "mr", None
    return "ct", _CT_WL[p]


@dataclass(frozen=True, eq=False)
class LiteSliceResult:
    """One slice's mask ``(rows, cols)`` in :class:`SlicePrompt` orientation."""

    axis: int
    index: int
    mask: np.ndarray
    score: float = float("nan")

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True, eq=False)
class LitePropagation:
    """A propagated object: ``mask`` ``(I, J, K)`` bool on the volume grid."""

    axis: int
    mask: np.ndarray
    slices: tuple[int, int]
    middle: int
    stats: dict = field(default_factory=dict)

    @property
    def extent(self) -> tuple[int, int] | None:
        other = tuple(a for a in range(3) if a != self.axis)
        idx = np.nonzero(self.mask.any(axis=other))[0]
        return (int(idx.min()), int(idx.max())) if idx.size else None


def _to_plane_xy(rc: np.ndarray) -> np.ndarray:
    """SlicePrompt ``(row, col)`` → protocol plane ``(x, y)``: the same two numbers (x = lower voxel axis)."""
    return np.asarray(rc, dtype=np.float64).reshape(-1, 2)


class LiteSession:
    """LiteMedSAM on one volume with one intensity choice (see :func:`window_choice`).

    Args:
        model: a loaded :class:`LiteMedSAM`.
        volume: the image.
        window: a :class:`~medseg.sam.image.WindowPreset` name or ``(width, level)``.
        cache: the embedding cache (:class:`BoxSession`'s); share one between sessions of an image, e.g.
            across window changes, as :class:`~medseg.sam.segment.SamSession` does.
    """

    def __init__(self, model: LiteMedSAM, volume: Volume, window: str | tuple[float, float] | None = "auto",
                 cache: EmbeddingCache | None = None) -> None:
        self.model = model
        self.volume = volume
        modality, self.window = window_choice(window)
        self.box = BoxSession(model, volume, modality=modality, cache=cache)

    @property
    def cache(self) -> EmbeddingCache:
        return self.box.cache

    def num_slices(self, axis: int | str) -> int:
        return int(self.box.shape[resolve_axis(axis)])

    def slice_shape(self, axis: int | str) -> tuple[int, int]:
        h, w = self.box.plane_shape(axis)
        return (w, h)

    def is_cached(self, axis: int | str, index: int) -> bool:
        return self.box.is_cached(axis, index, self.window)

    def segment(self, axis: int | str, index: int, prompt: SlicePrompt, multimask: bool | None = None) -> LiteSliceResult:
        """Mask for a box and/or points on one slice (a mask prompt is not used by LiteMedSAM)."""
        ax = resolve_axis(axis)
        box = None if prompt.box is None else tuple(float(v) for v in prompt.box)  # (row0, col0, row1, col1) = (x0, y0, x1, y1)
        pts = _to_plane_xy(prompt.points) if len(prompt.points) else ()
        if box is None and not len(pts):
            raise ValueError("LiteMedSAM needs a box or points on the slice.")
        m = self.box.slice2d(ax, index, box=box, points=pts, labels=prompt.labels, window=self.window)
        return LiteSliceResult(ax, int(index), m.T)

    def precompute(self, axis: int | str, index: int, radius: int = 2,
                   progress: Callable[[int, int], None] | None = None,
                   cancel: threading.Event | None = None) -> PrecomputeJob:
        """Embed slice ``index`` and its neighbours in a background thread (nearest first)."""
        ax = resolve_axis(axis)
        todo = neighbours(int(index), int(radius), self.num_slices(ax))
        return PrecomputeJob.start(todo, lambda i: self.box.embedding(ax, i, self.window), progress, cancel,
                                   name="medseg-litemedsam-precompute")

    def propagate(self, axis: int | str, seeds: Mapping[int, SlicePrompt], rule=None, carry=None, video=None,
                  progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
                  z_range: tuple[int, int] | None = None, stop_when_empty: bool | None = None) -> LitePropagation:
        """3D box propagation from the seed slice holding a box (the reference protocol).

        Args:
            seeds: prompts by slice; the first slice with a box is the middle slice, points on any seed
                slice refine that slice.
            z_range: first and last slice; default the whole volume, then with ``stop_when_empty``.
            stop_when_empty: default True without ``z_range`` (no object beyond its ends), else False.
        """
        ax = resolve_axis(axis)
        with_box = [s for s in sorted(seeds) if seeds[s].box is not None]
        if not with_box:
            raise ValueError("LiteMedSAM propagates a box: draw a box on a slice first.")
        mid = with_box[0]
        n = self.num_slices(ax)
        z0, z1 = (0, n - 1) if z_range is None else (int(z_range[0]), int(z_range[1]))
        if not 0 <= z0 <= mid <= z1 < n:
            raise ValueError(f"slice range {z0}..{z1} must lie in 0..{n - 1} and contain the box's slice {mid}.")
        stop = (z_range is None) if stop_when_empty is None else bool(stop_when_empty)
        r0, c0, r1, c1 = seeds[mid].box  # type: ignore[misc]
        points = {s: (_to_plane_xy(p.points), p.labels) for s, p in seeds.items() if len(p.points)}
        mask = self.box.box3d(ax, (r0, c0, z0, r1, c1, z1), window=self.window, middle=mid, points=points,
                              stop_when_empty=stop, progress=progress, cancel=cancel)
        return LitePropagation(ax, mask, (z0, z1), mid)
