"""Propagate a prompted object through the volume, slice by slice, and write it into a label map.

From each prompted (seed) slice the object is followed in both directions; each next slice is prompted
from the previous slice's result (its mask, the box around it and points inside it). A direction stops
at the object's end: the predicted IoU drops below ``StopRule.min_score``, the mask vanishes or its
area collapses relative to the previous slice, or ``StopRule.max_slices`` is reached. Prompts on several
slices of one object combine: every seed is authoritative on its own slice, and any other slice takes
the mask propagated from the nearest seed that reached it (the union on a tie).

With SAM 2, :func:`propagate_sam2` uses its memory-based video propagation instead, slices as frames.

>>> res = propagate(session, axis=2, seeds={40: SlicePrompt(points=[(120, 88)], labels=[1])})  # doctest: +SKIP
>>> labels = write_label(label_map, res.mask, label_id=3)                                     # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np

from medseg.sam.image import resolve_axis
from medseg.sam.slices import SlicePrompt, SliceResult
from medseg.types import Geometry, Label, Volume

__all__ = [
    "StopReason",
    "StopRule",
    "CarryPrompt",
    "SlicePredictor",
    "PropagationResult",
    "propagate",
    "propagate_sam2",
    "prompt_from_mask",
    "write_label",
    "write_label_array",
]


class StopReason(str, Enum):
    """Why propagation in one direction ended."""

    EDGE = "edge"  # first or last slice of the volume
    MAX_SLICES = "max_slices"
    LOW_SCORE = "low_score"  # predicted IoU (SAM) / object probability (SAM 2) below min_score
    EMPTY = "empty"
    AREA_COLLAPSE = "area_collapse"  # area < min_area or < min_area_ratio x previous area
    SEED = "seed"  # reached another prompted slice (which takes over)
    CUSTOM = "custom"  # StopRule.accept returned False


@dataclass(frozen=True)
class StopRule:
    """When to stop following the object.

    Args:
        min_score: stop when the slice's predicted IoU (SAM) or object probability (SAM 2) is below this.
        min_area: stop when the mask has fewer pixels.
        min_area_ratio: stop when the area falls below this fraction of the previous slice's area.
        max_slices: at most this many slices from a seed in each direction.
        accept: optional extra test ``accept(result, previous) -> bool``; False stops (reason ``custom``).
    """

    min_score: float = 0.5
    min_area: int = 1
    min_area_ratio: float = 0.2
    max_slices: int = 64
    accept: Callable[[SliceResult, SliceResult], bool] | None = None

    def __post_init__(self) -> None:
        if self.max_slices < 0:
            raise ValueError(f"max_slices must be >= 0, got {self.max_slices}.")
        if not 0.0 <= self.min_area_ratio <= 1.0:
            raise ValueError(f"min_area_ratio must be in [0, 1], got {self.min_area_ratio}.")
        if self.min_area < 1:
            raise ValueError(f"min_area must be >= 1, got {self.min_area}.")

    def check(self, result: SliceResult, previous: SliceResult) -> StopReason | None:
        """The reason to stop at ``result`` (which is then not kept), or ``None`` to keep it and go on."""
        area = result.area
        if area == 0:
            return StopReason.EMPTY
        if area < self.min_area or area < self.min_area_ratio * previous.area:
            return StopReason.AREA_COLLAPSE
        if result.score < self.min_score:
            return StopReason.LOW_SCORE
        if self.accept is not None and not self.accept(result, previous):
            return StopReason.CUSTOM
        return None


@dataclass(frozen=True)
class CarryPrompt:
    """What of the previous slice's result prompts the next slice.

    Args:
        mask: the previous mask as a dense mask prompt.
        box: the bounding box of the previous mask (padded by ``box_margin`` pixels).
        points: number of positive points placed deep inside the previous mask (0 for none).
    """

    mask: bool = True
    box: bool = True
    points: int = 1
    box_margin: float = 1.0

    def __post_init__(self) -> None:
        if not (self.mask or self.box or self.points > 0):
            raise ValueError("CarryPrompt needs at least one of mask, box or points.")


def prompt_from_mask(mask: np.ndarray, carry: CarryPrompt = CarryPrompt()) -> SlicePrompt:
    """The prompt for the next slice made from a ``(rows, cols)`` mask (which must not be empty)."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        raise ValueError("cannot build a prompt from an empty mask.")
    box = None
    if carry.box:
        rr, cc = np.nonzero(m)
        g = carry.box_margin
        box = (
            max(rr.min() - g, 0), max(cc.min() - g, 0), min(rr.max() + g, m.shape[0] - 1), min(cc.max() + g, m.shape[1] - 1)
        )
    pts = np.zeros((0, 2))
    if carry.points > 0:
        from scipy import ndimage

        dist = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        chosen = []
        d = dist.copy()
        yy, xx = np.mgrid[: m.shape[0], : m.shape[1]]
        for _ in range(carry.points):
            if d.max() <= 0:
                break
            r, c = np.unravel_index(int(np.argmax(d)), d.shape)
            chosen.append((r, c))
            d[(yy - r) ** 2 + (xx - c) ** 2 <= max(dist[r, c], 1.0) ** 2] = 0  # next point elsewhere
        pts = np.asarray(chosen, dtype=np.float64).reshape(-1, 2)
    return SlicePrompt(pts, np.ones(len(pts), dtype=np.int64), box, m if carry.mask else None)


class SlicePredictor(Protocol):
    """What :func:`propagate` needs: :class:`~medseg.sam.segment.SamSession` implements it."""

    def segment(self, axis: int, index: int, prompt: SlicePrompt) -> SliceResult: ...

    def num_slices(self, axis: int) -> int: ...


@dataclass(frozen=True)
class SliceRecord:
    """Where a propagated slice's mask came from."""

    index: int
    seed: int
    distance: int
    score: float
    area: int


@dataclass(frozen=True)
class DirectionStop:
    """How one direction from one seed ended: ``last`` is the last slice kept."""

    seed: int
    direction: int
    reason: StopReason
    last: int


@dataclass(eq=False)
class PropagationResult:
    """A propagated object.

    Args:
        axis: axis the slices were taken along.
        mask: ``(I, J, K)`` bool object mask in the source geometry.
        geometry: the source volume's geometry.
        slices: per covered slice, where its mask came from.
        stops: how each direction from each seed ended.
    """

    axis: int
    mask: np.ndarray
    geometry: Geometry
    slices: dict[int, SliceRecord] = field(default_factory=dict)
    stops: list[DirectionStop] = field(default_factory=list)

    @property
    def extent(self) -> tuple[int, int] | None:
        """First and last slice (along ``axis``) holding the object, or ``None`` if empty."""
        idx = [i for i in self.slices if self.slices[i].area > 0]
        return (min(idx), max(idx)) if idx else None

    def to_volume(self, label_id: int = 1, name: str = "object") -> Volume:
        """The mask as a label :class:`Volume` (uint8/uint16) in the source geometry."""
        dtype = np.uint8 if label_id < 256 else np.uint16
        arr = self.mask.astype(dtype) * dtype(label_id)
        return Volume(arr, self.geometry, is_label=True, labels=(Label(int(label_id), name),))


def _check_seeds(seeds: Mapping[int, SlicePrompt], n: int) -> list[int]:
    if not seeds:
        raise ValueError("propagation needs at least one prompted slice.")
    for s, p in seeds.items():
        if not 0 <= int(s) < n:
            raise IndexError(f"seed slice {s} out of range 0..{n - 1}.")
        if not isinstance(p, SlicePrompt):
            raise TypeError(f"seed prompts must be SlicePrompt, got {type(p).__name__} for slice {s}.")
    return sorted(int(s) for s in seeds)


def _combine(
    axis: int, geometry: Geometry, runs: dict[int, list[tuple[int, int, SliceResult]]], stops: list[DirectionStop]
) -> PropagationResult:
    """``runs[index] = [(distance, seed, result), ...]`` → nearest-seed masks (union on ties)."""
    mask = np.zeros(geometry.shape, dtype=bool)
    records: dict[int, SliceRecord] = {}
    for idx, cands in sorted(runs.items()):
        dmin = min(d for d, _, _ in cands)
        near = [(s, r) for d, s, r in cands if d == dmin]
        m = np.logical_or.reduce([r.mask for _, r in near])
        sl = [slice(None)] * 3
        sl[axis] = idx
        mask[tuple(sl)] = m
        records[idx] = SliceRecord(idx, near[0][0], dmin, float(max(r.score for _, r in near)), int(m.sum()))
    return PropagationResult(axis, mask, geometry, records, stops)


def propagate(
    predictor: SlicePredictor,
    axis: int | str,
    seeds: Mapping[int, SlicePrompt],
    rule: StopRule = StopRule(),
    carry: CarryPrompt = CarryPrompt(),
    geometry: Geometry | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
) -> PropagationResult:
    """Follow one object from its prompted slices through the volume (slice by slice, any SAM model).

    Args:
        predictor: a :class:`~medseg.sam.segment.SamSession` (or anything with ``segment`` and ``num_slices``).
        axis: slice axis (0/1/2 or i/j/k).
        seeds: prompts of the same object, by slice index along ``axis``.
        rule: the stop rule.
        carry: what of each result prompts the next slice.
        geometry: geometry of the result; default ``predictor.volume.geometry``.
        progress: ``progress(slices_done, max_total)``.
        cancel: a ``threading.Event``; when set, propagation ends after the current slice.

    Returns:
        :class:`PropagationResult` with an ``(I, J, K)`` mask in the source geometry.
    """
    ax = resolve_axis(axis)
    n = predictor.num_slices(ax)
    order = _check_seeds(seeds, n)
    geom = geometry if geometry is not None else predictor.volume.geometry  # type: ignore[attr-defined]
    runs: dict[int, list[tuple[int, int, SliceResult]]] = {}
    stops: list[DirectionStop] = []
    total = len(order) * (1 + 2 * rule.max_slices)
    done = 0
    for s in order:
        res = predictor.segment(ax, s, seeds[s])
        runs.setdefault(s, []).append((0, s, res))
        done += 1
        for d in (+1, -1):
            prev, i, steps, reason = res, s + d, 0, None
            if prev.area == 0:
                reason = StopReason.EMPTY
            while reason is None:
                if cancel is not None and cancel.is_set():
                    reason = StopReason.CUSTOM
                elif not 0 <= i < n:
                    reason = StopReason.EDGE
                elif steps >= rule.max_slices:
                    reason = StopReason.MAX_SLICES
                elif i in seeds:
                    reason = StopReason.SEED
                else:
                    r = predictor.segment(ax, i, prompt_from_mask(prev.mask, carry))
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    reason = rule.check(r, prev)
                    if reason is None:
                        steps += 1
                        runs.setdefault(i, []).append((steps, s, r))
                        prev, i = r, i + d
            stops.append(DirectionStop(s, d, reason, i - d))
    return _combine(ax, geom, runs, stops)


# --- SAM 2: slices as video frames -------------------------------------------------------------


class _SliceFrames:
    """Lazy ``(3, S, S)`` model inputs of slices ``lo..hi`` along an axis, for SAM 2's video state."""

    def __init__(self, session, axis: int, lo: int, hi: int) -> None:
        self.session, self.axis, self.lo, self.hi = session, axis, lo, hi
        self.frame = session.frame(axis)

    def __len__(self) -> int:
        return self.hi - self.lo + 1

    def __getitem__(self, f: int):
        from medseg.sam.embed import _model_input
        from medseg.sam.image import slice_image

        if not 0 <= f < len(self):
            raise IndexError(f)
        s = self.session
        img = slice_image(s.volume, self.axis, self.lo + f, s.window, self.frame)
        return _model_input(s.model, img)[0]


def _video_state(net, frames: _SliceFrames) -> dict:
    """SAM 2 ``inference_state`` over in-memory frames (the same keys as sam2 1.1's ``init_state``,
    which only reads JPEG folders or MP4 files)."""
    import torch

    size = frames.frame.image_size
    dev = torch.device(net.device)
    return {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": size,
        "video_width": size,
        "device": dev,
        "storage_device": dev,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def _object_probability(state: dict, f: int) -> float:
    import torch

    out = state["output_dict_per_obj"][0]
    rec = out["cond_frame_outputs"].get(f) or out["non_cond_frame_outputs"].get(f)
    if rec is None or rec.get("object_score_logits") is None:
        return 1.0
    return float(torch.sigmoid(rec["object_score_logits"].float()).max())


def propagate_sam2(
    session,
    axis: int | str,
    seeds: Mapping[int, SlicePrompt],
    rule: StopRule = StopRule(),
    progress: Callable[[int, int], None] | None = None,
    cancel=None,
) -> PropagationResult:
    """Follow one object with SAM 2's memory-based video propagation, slices as frames.

    Seeds with points and/or a box are added with ``add_new_points_or_box``; a seed with only a mask with
    ``add_new_mask`` (SAM 2 takes one or the other on a frame). Frames run forward from the first seed
    and backward from the last; the stop rule is checked on every frame, ``score`` being SAM 2's
    object-presence probability (its video predictor reports no IoU). After a stop, tracking restarts
    at the next seed in that direction, if any. Each frame's image encoder runs inside SAM 2's own state
    (the slice embedding cache is not shared with this path).
    """
    import torch

    from medseg.sam.registry import Family
    from medseg.sam.image import from_model_frame, to_model_frame

    if session.model.family is not Family.SAM2:
        raise ValueError(f"propagate_sam2 needs a SAM 2 model, got {session.model.family.value}.")
    ax = resolve_axis(axis)
    n = session.num_slices(ax)
    order = _check_seeds(seeds, n)
    lo, hi = max(0, order[0] - rule.max_slices), min(n - 1, order[-1] + rule.max_slices)
    frames = _SliceFrames(session, ax, lo, hi)
    frame = frames.frame
    net = session.model.network
    state = _video_state(net, frames)
    with torch.inference_mode():
        for s in order:
            p = seeds[s]
            if len(p.points) or p.box is not None:
                xy = frame.slice_to_model(p.points) if len(p.points) else None
                box = frame.box_to_model(p.box) if p.box is not None else None
                net.add_new_points_or_box(
                    state, s - lo, 1, points=xy, labels=p.labels if xy is not None else None, box=box,
                )
            else:
                net.add_new_mask(state, s - lo, 1, to_model_frame(p.mask, frame) > 0.5)

    runs: dict[int, list[tuple[int, int, SliceResult]]] = {}
    stops: list[DirectionStop] = []
    total, done = hi - lo + 1 + len(order), 0

    def result(idx: int, logits_full) -> SliceResult:
        lg = from_model_frame(logits_full[0].float().cpu().numpy(), frame)
        m = lg > 0
        score = _object_probability(state, idx - lo)
        return SliceResult(ax, idx, m[0], score, m, np.array([score]), 0, lg)

    for d in (+1, -1):
        starts = order if d > 0 else order[::-1]
        k = 0
        while k < len(starts):
            seed = starts[k]
            prev: SliceResult | None = None
            reason, last = None, seed
            gen = net.propagate_in_video(state, start_frame_idx=seed - lo, reverse=d < 0)
            try:
                for f, _ids, logits in gen:
                    idx = f + lo
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    r = result(idx, logits)
                    if idx in seeds:  # a prompted frame: authoritative, and the distance restarts
                        seed, prev = idx, r
                        runs.setdefault(idx, []).append((0, idx, r))
                        last = idx
                        k = starts.index(idx)
                        continue
                    dist = abs(idx - seed)
                    if cancel is not None and cancel.is_set():
                        reason = StopReason.CUSTOM
                    elif dist > rule.max_slices:
                        reason = StopReason.MAX_SLICES
                    else:
                        reason = rule.check(r, prev) if prev is not None else None
                    if reason is not None:
                        break
                    runs.setdefault(idx, []).append((dist, seed, r))
                    prev, last = r, idx
            finally:
                gen.close()
            if reason is None:
                reason = StopReason.EDGE if last in (0, n - 1) else StopReason.MAX_SLICES
            stops.append(DirectionStop(seed, d, reason, last))
            k += 1  # restart at the next seed beyond the stop (if any)
            while k < len(starts) and (starts[k] - last) * d <= 0:
                k += 1
            if cancel is not None and cancel.is_set():
                break
    return _combine(ax, session.volume.geometry, runs, stops)


# --- writing into a label map ------------------------------------------------------------------


def write_label_array(labels: np.ndarray, mask: np.ndarray, label_id: int, replace: bool = False) -> int:
    """Write ``mask`` into an integer label array in place, as ``label_id``, never over other labels.

    Voxels already holding another label keep it. With ``replace=True`` the voxels of ``label_id`` outside
    ``mask`` are cleared first (the object is replaced, not extended).

    Returns:
        Number of voxels whose value changed.
    """
    if labels.shape[:3] != mask.shape[:3] or labels.ndim != 3:
        raise ValueError(f"label map shape {labels.shape} does not match mask shape {mask.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"label map must have an integer dtype, got {labels.dtype}.")
    info = np.iinfo(labels.dtype)
    if not (0 < int(label_id) <= info.max):
        raise ValueError(f"label_id must be in 1..{info.max} for a {labels.dtype} label map, got {label_id}.")
    m = np.asarray(mask, dtype=bool)
    changed = 0
    if replace:
        clear = (labels == label_id) & ~m
        changed += int(np.count_nonzero(clear))
        labels[clear] = 0
    target = m & (labels == 0)  # never over another label; voxels already label_id stay as they are
    changed += int(np.count_nonzero(target))
    labels[target] = label_id
    return changed


def write_label(
    label_map: Volume, mask: np.ndarray, label_id: int, replace: bool = False, name: str | None = None
) -> Volume:
    """A copy of ``label_map`` with ``mask`` written as ``label_id`` (other labels untouched).

    Args:
        label_map: existing label :class:`Volume` in the same geometry as ``mask``.
        mask: ``(I, J, K)`` bool, e.g. :attr:`PropagationResult.mask`.
        label_id: the object's label.
        replace: clear ``label_id`` voxels outside ``mask`` first.
        name: label name to add to ``label_map.labels`` if ``label_id`` has none.
    """
    if not isinstance(label_map, Volume):
        raise TypeError(f"label_map must be a Volume, got {type(label_map).__name__}.")
    arr = label_map.array.copy()
    write_label_array(arr, mask, label_id, replace)
    labels = label_map.labels
    if name is not None and all(lb.id != label_id for lb in labels):
        labels = labels + (Label(int(label_id), name),)
    return label_map.replace(array=arr, is_label=True, labels=labels)


def write_slice_label(
    labels: np.ndarray, axis: int | str, index: int, mask: np.ndarray, label_id: int, replace: bool = False
) -> int:
    """Write a ``(rows, cols)`` slice mask (e.g. :attr:`SliceResult.mask`) into slice ``index`` of an
    ``(I, J, K)`` label array in place, as :func:`write_label_array` does (other labels untouched).

    Returns the number of voxels changed.
    """
    ax = resolve_axis(axis)
    if labels.ndim != 3:
        raise ValueError(f"label array must be 3D, got shape {labels.shape}.")
    if not 0 <= int(index) < labels.shape[ax]:
        raise IndexError(f"slice index {index} out of range 0..{labels.shape[ax] - 1} along axis {ax}.")
    sl: list = [slice(None)] * 3
    sl[ax] = slice(int(index), int(index) + 1)
    view = labels[tuple(sl)]  # a (.., 1, ..) view, written in place
    m = np.expand_dims(np.asarray(mask, dtype=bool), ax)
    if m.shape != view.shape:
        raise ValueError(f"slice mask shape {np.shape(mask)} does not match the label slice {np.squeeze(view, ax).shape}.")
    return write_label_array(view, m, label_id, replace)


__all__.append("write_slice_label")
