"""Interactive annotation of one object at a time with SAM, in plain Python (no Qt).

An :class:`AnnotationSession` holds what the user is doing on one volume: the prompts of the current
object per slice (positive/negative points and a box, in voxel ``(i, j, k)`` coordinates), the pending
:class:`Candidate` (a mask on one slice, or on the whole volume after propagation), and the history of
accepted candidates. It never owns the label map: :meth:`AnnotationSession.accept` returns the voxels it
changes as a :class:`LabelChange`, which the caller applies (a numpy array with :meth:`LabelChange.apply`,
a napari labels layer through the plugin's layer helper), and :meth:`~AnnotationSession.undo` /
:meth:`~AnnotationSession.redo` return the changes that revert / repeat it. Segmenting and propagating use
the existing SAM code: a :class:`~medseg.sam.segment.SamSession` (SAM, SAM 2) or a
:class:`~medseg.sam.lite_session.LiteSession` (LiteMedSAM).

>>> from medseg.sam import LiteMedSAM, LiteSession
>>> session = AnnotationSession(LiteSession(LiteMedSAM.load(), volume))   # doctest: +SKIP
>>> session.set_box(2, 40, [(60, 70, 40), (120, 140, 40)])               # doctest: +SKIP
>>> cand = session.segment(2, 40)                                         # doctest: +SKIP
>>> change = session.accept(labels, label_id=3); change.apply(labels)     # doctest: +SKIP
>>> session.undo(labels).apply(labels)                                    # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from medseg.sam.image import resolve_axis
from medseg.sam.propagate import write_label_array
from medseg.sam.slices import SlicePrompt

__all__ = ["AnnotationSession", "Candidate", "LabelChange", "Prompts", "Segmenter"]

SliceKey = tuple[int, int]  # (voxel axis, slice index)


class Segmenter(Protocol):
    """What the session needs from a SAM session (:class:`SamSession` and :class:`LiteSession` have it)."""

    def segment(self, axis: int, index: int, prompt: SlicePrompt) -> Any: ...

    def propagate(self, axis: int, seeds: dict[int, SlicePrompt], **kwargs: Any) -> Any: ...

    def num_slices(self, axis: int) -> int: ...


@dataclass
class Prompts:
    """Prompts of the current object, by ``(voxel axis, slice index)``, in voxel ``(i, j, k)`` coordinates.

    ``points[(axis, index)]`` is a list of ``(ijk (3,), label)`` with label 1 = object, 0 = background;
    ``boxes[(axis, index)]`` is the box's ``(2, 3)`` low/high corners (one box per slice).
    """

    points: dict[SliceKey, list[tuple[np.ndarray, int]]] = field(default_factory=dict)
    boxes: dict[SliceKey, np.ndarray] = field(default_factory=dict)

    def slices(self, axis: int) -> list[int]:
        """Prompted slice indices along ``axis``, sorted."""
        return sorted({i for (a, i) in [*self.points, *self.boxes] if a == axis})

    def __bool__(self) -> bool:
        return bool(self.points or self.boxes)

    def all_points(self) -> list[tuple[np.ndarray, int]]:
        """Every point ``(ijk, label)`` on every slice."""
        return [pt for pts in self.points.values() for pt in pts]

    def box_outlines(self) -> list[np.ndarray]:
        """Every box as its 4 corners ``(4, 3)`` in voxel ``(i, j, k)``, going round the rectangle."""
        out = []
        for (axis, _index), (lo, hi) in self.boxes.items():
            r_ax, c_ax = [a for a in range(3) if a != axis]
            corners = []
            for r, c in ((lo[r_ax], lo[c_ax]), (lo[r_ax], hi[c_ax]), (hi[r_ax], hi[c_ax]), (hi[r_ax], lo[c_ax])):
                v = lo.copy()
                v[r_ax], v[c_ax] = r, c
                corners.append(v)
            out.append(np.array(corners))
        return out

    def clear(self) -> None:
        self.points.clear()
        self.boxes.clear()


@dataclass(frozen=True, eq=False)
class Candidate:
    """A mask waiting to be accepted.

    Args:
        axis: the voxel axis the user prompted along.
        mask: ``(rows, cols)`` bool on slice ``index`` (rows/cols = the two other voxel axes in increasing
            order), or ``(I, J, K)`` bool on the volume when ``index`` is ``None`` (a propagation).
        index: the slice, or ``None`` for a volume candidate.
        score: the model's predicted IoU (NaN when the model gives none).
    """

    axis: int
    mask: np.ndarray
    index: int | None = None
    score: float = float("nan")

    @property
    def is_slice(self) -> bool:
        return self.index is not None

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    def region(self) -> tuple[slice, slice, slice]:
        """Where the candidate lies in the ``(I, J, K)`` volume: one slice, or everything."""
        sl = [slice(None)] * 3
        if self.index is not None:
            sl[self.axis] = slice(self.index, self.index + 1)
        return tuple(sl)  # type: ignore[return-value]

    def region_mask(self) -> np.ndarray:
        """The mask shaped like ``volume[self.region()]`` (a slice mask gets its slice axis back)."""
        m = np.asarray(self.mask, dtype=bool)
        return np.expand_dims(m, self.axis) if self.index is not None else m

    def extent(self) -> tuple[int, int] | None:
        """First and last slice along ``axis`` holding the object (``None`` if empty)."""
        if self.index is not None:
            return (self.index, self.index) if self.mask.any() else None
        other = tuple(a for a in range(3) if a != self.axis)
        idx = np.nonzero(np.asarray(self.mask).any(axis=other))[0]
        return (int(idx.min()), int(idx.max())) if idx.size else None


@dataclass(frozen=True, eq=False)
class LabelChange:
    """Voxels of an ``(I, J, K)`` label map that an accept (or its undo/redo) changes.

    Args:
        index: three int arrays ``(i, j, k)`` of the changed voxels (numpy advanced indexing).
        before: their values before the change.
        after: their values after it.
        label_id: the label the accept wrote.
    """

    index: tuple[np.ndarray, np.ndarray, np.ndarray]
    before: np.ndarray
    after: np.ndarray
    label_id: int

    @property
    def size(self) -> int:
        return int(self.before.size)

    def apply(self, labels: np.ndarray) -> None:
        """Write ``after`` into ``labels`` (an ``(I, J, K)`` array) in place."""
        labels[self.index] = self.after

    def inverted(self) -> LabelChange:
        return LabelChange(self.index, self.after, self.before, self.label_id)

    def where_current(self, labels: np.ndarray | None) -> LabelChange:
        """The part of this change whose voxels still hold ``before`` in ``labels`` (all of it for ``None``):
        an undo never reverts a voxel edited by hand since."""
        if labels is None or not self.size:
            return self
        keep = np.asarray(labels)[self.index] == self.before
        return LabelChange(tuple(ix[keep] for ix in self.index), self.before[keep], self.after[keep],  # type: ignore[arg-type]
                           self.label_id)


def label_slice_mask(labels: np.ndarray, axis: int, index: int, label_id: int) -> np.ndarray | None:
    """Label ``label_id`` on slice ``index`` of an ``(I, J, K)`` label map as a ``(rows, cols)`` mask
    (a *refine* prompt), or ``None`` when the slice does not hold it."""
    m = np.take(np.asarray(labels), int(index), axis=resolve_axis(axis)) == int(label_id)
    return m if m.any() else None


class AnnotationSession:
    """One volume being annotated: prompts per slice, a pending candidate, accept/undo/redo.

    Args:
        segmenter: a :class:`~medseg.sam.segment.SamSession` or :class:`~medseg.sam.lite_session.LiteSession`
            on the volume (see :class:`Segmenter`).
        shape: the volume's ``(I, J, K)`` shape (label maps given to :meth:`accept` must have it).

    Thread use: :meth:`run_segment` and :meth:`run_propagate` only compute (safe in a worker thread);
    everything else changes the session and belongs to one thread (the UI's).
    """

    def __init__(self, segmenter: Segmenter, shape: Sequence[int]) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be a 3D (I, J, K) shape, got {shape}.")
        self.segmenter = segmenter
        self.shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.prompts = Prompts()
        self.pending: Candidate | None = None
        self._undo: list[LabelChange] = []
        self._redo: list[LabelChange] = []

    # ---- prompts -------------------------------------------------------------------------------------
    def _slice_key(self, axis: int | str, index: int) -> SliceKey:
        ax = resolve_axis(axis)
        if not 0 <= int(index) < self.shape[ax]:
            raise IndexError(f"slice index {index} out of range 0..{self.shape[ax] - 1} along axis {'ijk'[ax]}.")
        return ax, int(index)

    def add_point(self, axis: int | str, index: int, ijk: Sequence[float], positive: bool = True) -> None:
        """A positive (object) or negative (background) point at voxel ``ijk``, put on slice ``index``."""
        key = self._slice_key(axis, index)
        p = np.asarray(ijk, dtype=np.float64).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError(f"a point needs 3 finite voxel coordinates (i, j, k), got {ijk!r}.")
        p = p.copy()
        p[key[0]] = key[1]  # on the slice (an oblique plane is shown without tilt)
        self.prompts.points.setdefault(key, []).append((p, 1 if positive else 0))

    def set_box(self, axis: int | str, index: int, corners_ijk: Sequence[Sequence[float]]) -> None:
        """The box of slice ``index`` (replacing its previous box) from two or more voxel corners ``(N, 3)``."""
        key = self._slice_key(axis, index)
        c = np.asarray(corners_ijk, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != 3 or len(c) < 2 or not np.all(np.isfinite(c)):
            raise ValueError(f"a box needs at least 2 finite (i, j, k) corners, got shape {c.shape}.")
        c = c.copy()
        c[:, key[0]] = key[1]
        self.prompts.boxes[key] = np.stack([c.min(axis=0), c.max(axis=0)])

    def has_prompts(self, axis: int | str, index: int) -> bool:
        key = (resolve_axis(axis), int(index))
        return bool(self.prompts.points.get(key)) or key in self.prompts.boxes

    def clear_prompts(self) -> None:
        """Forget the prompts and the pending candidate."""
        self.prompts.clear()
        self.pending = None

    def slice_prompt(self, axis: int | str, index: int, mask: np.ndarray | None = None) -> SlicePrompt:
        """The :class:`SlicePrompt` of slice ``index`` (its points and box, plus an optional refine mask)."""
        ax, idx = resolve_axis(axis), int(index)
        pts = self.prompts.points.get((ax, idx), [])
        return SlicePrompt.from_voxels(
            ax, idx, np.array([p for p, _ in pts]).reshape(-1, 3), [lab for _, lab in pts],
            box_ijk=self.prompts.boxes.get((ax, idx)), mask=mask,
        )

    def seeds(self, axis: int | str, mask_for: Callable[[int], np.ndarray | None] | None = None) -> dict[int, SlicePrompt]:
        """Prompts of every prompted slice along ``axis`` (slices whose prompt is invalid are skipped);
        ``mask_for(index)`` gives each slice's refine mask."""
        ax = resolve_axis(axis)
        out = {}
        for idx in self.prompts.slices(ax):
            try:
                out[idx] = self.slice_prompt(ax, idx, None if mask_for is None else mask_for(idx))
            except ValueError:
                continue
        return out

    # ---- candidates ----------------------------------------------------------------------------------
    def run_segment(self, axis: int | str, index: int, prompt: SlicePrompt) -> Candidate:
        """Segment one slice from ``prompt`` (compute only: the session is not changed)."""
        ax = resolve_axis(axis)
        res = self.segmenter.segment(ax, int(index), prompt)
        return Candidate(ax, np.asarray(res.mask, dtype=bool), int(index), float(getattr(res, "score", float("nan"))))

    def run_propagate(
        self, axis: int | str, seeds: dict[int, SlicePrompt], progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None, **options: Any,
    ) -> Candidate:
        """Follow the object from ``seeds`` through the volume (compute only). ``options`` go to the
        segmenter's ``propagate`` (e.g. LiteMedSAM's ``z_range``)."""
        ax = resolve_axis(axis)
        if not seeds:
            raise ValueError(f"no prompts on axis {'ijk'[ax]}: prompt a slice first.")
        res = self.segmenter.propagate(ax, seeds, progress=progress, cancel=cancel, **options)
        mask = np.asarray(res.mask, dtype=bool)
        if mask.shape != self.shape:
            raise ValueError(f"propagation gave a mask of shape {mask.shape}, expected {self.shape}.")
        return Candidate(ax, mask)

    def propose(self, candidate: Candidate | None) -> None:
        """Make ``candidate`` the pending one (``None``: no candidate)."""
        if candidate is not None and not isinstance(candidate, Candidate):
            raise TypeError(f"candidate must be a Candidate or None, got {type(candidate).__name__}.")
        self.pending = candidate

    def segment(self, axis: int | str, index: int, mask: np.ndarray | None = None) -> Candidate:
        """Segment slice ``index`` from its prompts; the result becomes the pending candidate."""
        cand = self.run_segment(axis, index, self.slice_prompt(axis, index, mask))
        self.propose(cand)
        return cand

    def propagate(self, axis: int | str, progress: Callable[[int, int], None] | None = None,
                  cancel: threading.Event | None = None, **options: Any) -> Candidate:
        """Propagate from every prompted slice along ``axis``; the result becomes the pending candidate."""
        cand = self.run_propagate(axis, self.seeds(axis), progress, cancel, **options)
        self.propose(cand)
        return cand

    # ---- accept / undo / redo ------------------------------------------------------------------------
    def accept(self, labels: np.ndarray, label_id: int, replace: bool = False) -> LabelChange:
        """Accept the pending candidate as ``label_id`` into ``labels`` (``(I, J, K)`` int, not modified).

        Voxels of other labels are never overwritten; ``replace=True`` also clears ``label_id`` outside the
        candidate (on its slice for a slice candidate). Clears the prompts and the candidate.

        Returns:
            The changed voxels (apply them with :meth:`LabelChange.apply`); an empty change when nothing changes.

        Raises:
            ValueError: no pending candidate, or ``labels`` has another shape.
        """
        if self.pending is None:
            raise ValueError("nothing to accept: segment a slice or propagate first.")
        arr = np.asarray(labels)
        if arr.shape != self.shape:
            raise ValueError(f"label map shape {arr.shape} does not match the volume's {self.shape}.")
        cand = self.pending
        region = cand.region()
        current = arr[region]
        new = np.array(current, copy=True)
        write_label_array(new, cand.region_mask(), label_id, replace=replace)
        local = np.nonzero(new != current)
        offset = [0 if s.start is None else s.start for s in region]
        index = tuple((ix + off).astype(np.intp) for ix, off in zip(local, offset))
        change = LabelChange(index, current[local].copy(), new[local], int(label_id))  # type: ignore[arg-type]
        if change.size:
            self._undo.append(change)
            self._redo.clear()
        self.clear_prompts()
        return change

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self, labels: np.ndarray | None = None) -> LabelChange | None:
        """The change that reverts the last accept (``None`` if there is none). With ``labels`` given, voxels
        edited since that accept are left alone."""
        if not self._undo:
            return None
        change = self._undo.pop()
        self._redo.append(change)
        return change.inverted().where_current(labels)

    def redo(self, labels: np.ndarray | None = None) -> LabelChange | None:
        """The change that repeats the last undone accept (``None`` if there is none)."""
        if not self._redo:
            return None
        change = self._redo.pop()
        self._undo.append(change)
        return change.where_current(labels)
