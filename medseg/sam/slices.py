"""What one slice is prompted with and what comes back: :class:`SlicePrompt` and :class:`SliceResult`.

Plain data shared by the segmenting session (:mod:`medseg.sam.segment`), propagation
(:mod:`medseg.sam.propagate`), LiteMedSAM's session and the annotation session; imports no model code.
Coordinates are slice pixels ``(row, col)`` (see :func:`medseg.geometry.in_plane_axes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medseg.sam.image import resolve_axis

__all__ = ["SlicePrompt", "SliceResult"]


@dataclass(frozen=True, eq=False)
class SlicePrompt:
    """Prompts on one slice, in slice pixel coordinates.

    Args:
        points: ``(N, 2)`` ``(row, col)``; may be empty.
        labels: ``(N,)`` 1 = object (positive), 0 = background (negative).
        box: ``(row0, col0, row1, col1)`` corner pixel centres, or ``None``.
        mask: ``(rows, cols)`` bool/0-1 mask to refine (e.g. a label from automatic segmentation), or ``None``.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64).reshape(-1, 2) if len(self.points) else np.zeros((0, 2))
        lab = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(pts) != len(lab):
            raise ValueError(f"got {len(pts)} points but {len(lab)} labels.")
        if np.any((lab != 0) & (lab != 1)):
            raise ValueError(f"point labels must be 1 (object) or 0 (background), got {sorted(set(lab.tolist()))}.")
        if not np.all(np.isfinite(pts)):
            raise ValueError("point coordinates must be finite.")
        box = None
        if self.box is not None:
            b = np.asarray(self.box, dtype=np.float64).reshape(-1)
            if b.shape != (4,) or not np.all(np.isfinite(b)):
                raise ValueError(f"box must be 4 finite numbers (row0, col0, row1, col1), got {self.box!r}.")
            box = tuple(float(v) for v in b)
        mask = None if self.mask is None else np.asarray(self.mask).astype(bool)
        if mask is not None and mask.ndim != 2:
            raise ValueError(f"mask must be 2D (rows, cols), got shape {mask.shape}.")
        if len(pts) == 0 and box is None and mask is None:
            raise ValueError("a prompt needs at least one point, a box or a mask.")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "labels", lab)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "mask", mask)

    @classmethod
    def from_voxels(
        cls,
        axis: int | str,
        index: int,
        points_ijk: np.ndarray | Sequence = (),
        labels: Sequence[int] = (),
        box_ijk: np.ndarray | Sequence | None = None,
        mask: np.ndarray | None = None,
        tolerance: float = 0.5,
    ) -> SlicePrompt:
        """Points ``(N, 3)`` and box corners ``(2, 3)`` in voxel ``(i, j, k)`` coordinates on slice ``index``.

        Raises ``ValueError`` when a point lies farther than ``tolerance`` voxels from the slice.
        """
        from medseg.geometry import voxels_to_slice

        ax = resolve_axis(axis)
        pts = np.asarray(points_ijk, dtype=np.float64).reshape(-1, 3)
        rc, idx = voxels_to_slice(ax, pts)
        if np.any(np.abs(idx - index) > tolerance):
            raise ValueError(f"points {pts[np.abs(idx - index) > tolerance].tolist()} are not on slice {index}.")
        box = None
        if box_ijk is not None:
            b_rc, b_idx = voxels_to_slice(ax, np.asarray(box_ijk, dtype=np.float64).reshape(2, 3))
            if np.any(np.abs(b_idx - index) > tolerance):
                raise ValueError(f"box corners are not on slice {index}.")
            box = (b_rc[0, 0], b_rc[0, 1], b_rc[1, 0], b_rc[1, 1])
        return cls(rc, np.asarray(labels, dtype=np.int64), box, mask)


@dataclass(frozen=True, eq=False)
class SliceResult:
    """Masks for one prompt on one slice.

    Args:
        axis, index: the slice.
        mask: ``(rows, cols)`` bool, the best candidate.
        score: predicted IoU of ``mask``.
        candidates: ``(M, rows, cols)`` bool, every candidate (M = 3 with multimask output, else 1).
        scores: ``(M,)`` predicted IoU of each candidate.
        best: index of ``mask`` in ``candidates``.
        logits: ``(M, rows, cols)`` float32 mask logits on the slice grid.
    """

    axis: int
    index: int
    mask: np.ndarray
    score: float
    candidates: np.ndarray
    scores: np.ndarray
    best: int
    logits: np.ndarray

    @property
    def area(self) -> int:
        """Pixels in ``mask``."""
        return int(self.mask.sum())
