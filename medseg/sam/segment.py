"""Prompt one slice: positive/negative points, a box and/or an existing mask → a mask on the slice.

>>> from medseg.sam import SamSession, SlicePrompt
>>> session = SamSession(model, volume, window="ct_soft_tissue")                 # doctest: +SKIP
>>> res = session.segment(2, 40, SlicePrompt(points=[(120, 88)], labels=[1]))    # doctest: +SKIP
>>> res.mask.shape == session.frame(2).slice_shape, res.score, res.scores        # doctest: +SKIP

Coordinates of a :class:`SlicePrompt` are slice pixels ``(row, col)`` (see
:func:`medseg.geometry.in_plane_axes`); :meth:`SlicePrompt.from_voxels` builds one from voxel
``(i, j, k)`` coordinates, e.g. a napari points layer's data.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medseg.sam.embed import EmbeddingCache, ProgressCallback, PrecomputeJob, SliceEncoder, neighbours
from medseg.sam.image import SliceFrame, Window, WindowPreset, from_model_frame, resolve_axis, to_model_frame, window_for
from medseg.sam.models import SamModel
from medseg.sam.registry import Family
from medseg.types import Volume

__all__ = ["SlicePrompt", "SliceResult", "SamSession", "decode"]


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


def _mask_input(mask: np.ndarray, frame: SliceFrame, size: tuple[int, int]) -> np.ndarray:
    """Slice mask → SAM's dense mask prompt: ``(1, 1, *size)`` logits (±6.9) in the padded model frame."""
    from medseg.sam.image import _resize

    full = to_model_frame(mask.astype(np.float32), frame, pad_value=0.0)
    low = np.clip(_resize(full, size), 1e-3, 1 - 1e-3)
    return np.log(low / (1.0 - low)).astype(np.float32)[None, None]


def decode(
    model: SamModel,
    features: dict[str, np.ndarray],
    frame: SliceFrame,
    prompt: SlicePrompt,
    multimask: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt encoder + mask decoder on cached features (never the image encoder).

    Returns ``(logits (M, rows, cols) float32 on the slice grid, predicted IoU (M,))``. ``multimask=None``
    asks for three candidates when the prompt is ambiguous (a single point and nothing else), one otherwise.
    """
    import torch

    if prompt.mask is not None and prompt.mask.shape != frame.slice_shape:
        raise ValueError(f"mask shape {prompt.mask.shape} does not match the slice shape {frame.slice_shape}.")
    if multimask is None:
        multimask = len(prompt.points) == 1 and prompt.box is None and prompt.mask is None
    dev = model.device
    net = model.network
    coords = frame.slice_to_model(prompt.points) if len(prompt.points) else np.zeros((0, 2))
    labels = prompt.labels.astype(np.int64)
    box = frame.box_to_model(prompt.box) if prompt.box is not None else None
    is_sam2 = model.family is Family.SAM2
    penc = net.sam_prompt_encoder if is_sam2 else net.prompt_encoder
    mask_t = None
    if prompt.mask is not None:
        mask_t = torch.from_numpy(_mask_input(prompt.mask, frame, tuple(penc.mask_input_size))).to(dev)
    t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt, device=dev)  # noqa: E731
    feats = {k: torch.from_numpy(v).to(dev) for k, v in features.items()}
    with torch.inference_mode():
        if not is_sam2:
            pts = (t(coords)[None], t(labels, torch.int64)[None]) if len(coords) else None
            boxes = t(box)[None] if box is not None else None
            sparse, dense = penc(points=pts, boxes=boxes, masks=mask_t)
            low, iou = net.mask_decoder(
                image_embeddings=feats["image_embed"], image_pe=penc.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
            )
        else:
            c, lab = coords, labels
            if box is not None:  # SAM 2 takes a box as two corner points labelled 2 and 3, first
                c = np.concatenate([box.reshape(2, 2), c], axis=0)
                lab = np.concatenate([[2, 3], lab])
            if len(c) == 0:  # mask-only prompt: one padding point, as SAM 2's own tracking does
                c, lab = np.zeros((1, 2)), np.array([-1])
            sparse, dense = penc(points=(t(c)[None], t(lab, torch.int32)[None]), boxes=None, masks=mask_t)
            high = [feats[k] for k in sorted(feats) if k.startswith("high_res_")]
            low, iou, _, _ = net.sam_mask_decoder(
                image_embeddings=feats["image_embed"], image_pe=penc.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
                repeat_image=False, high_res_features=high if net.use_high_res_features_in_sam else None,
            )
    logits = from_model_frame(low[0].float().cpu().numpy(), frame)
    return logits, iou[0].float().cpu().numpy()


class SamSession:
    """One model on one volume with one intensity window: prompt slices, precompute, propagate.

    Args:
        model: a loaded :class:`SamModel`.
        volume: the image (3D, or 4D using its first time point).
        window: a :class:`WindowPreset` name, a :class:`Window` or ``(low, high)``.
        cache: embedding cache (share one between sessions to share its memory budget).
    """

    def __init__(
        self,
        model: SamModel,
        volume: Volume,
        window: str | WindowPreset | Window | tuple[float, float] = WindowPreset.AUTO,
        cache: EmbeddingCache | None = None,
    ) -> None:
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a medseg Volume, got {type(volume).__name__}.")
        self.model = model
        self.volume = volume
        self.window = window_for(volume, window)
        self.encoder = SliceEncoder(model, cache)

    @property
    def cache(self) -> EmbeddingCache:
        return self.encoder.cache

    def frame(self, axis: int | str) -> SliceFrame:
        """The :class:`SliceFrame` of this volume's slices along ``axis``."""
        return self.encoder.frame(self.volume, axis)

    def slice_shape(self, axis: int | str) -> tuple[int, int]:
        return self.frame(axis).slice_shape

    def num_slices(self, axis: int | str) -> int:
        return int(self.volume.shape[resolve_axis(axis)])

    def is_cached(self, axis: int | str, index: int) -> bool:
        return self.encoder.key(self.volume, axis, index, self.window) in self.cache

    def segment(
        self, axis: int | str, index: int, prompt: SlicePrompt, multimask: bool | None = None
    ) -> SliceResult:
        """Masks for ``prompt`` on slice ``index`` along ``axis``; the best by predicted IoU is ``mask``."""
        ax = resolve_axis(axis)
        emb = self.encoder.get(self.volume, ax, index, self.window)
        logits, iou = decode(self.model, emb.features, emb.frame, prompt, multimask)
        cands = logits > 0.0
        best = int(np.argmax(iou))
        return SliceResult(ax, int(index), cands[best], float(iou[best]), cands, iou, best, logits)

    def precompute(
        self,
        axis: int | str,
        index: int,
        radius: int = 5,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> PrecomputeJob:
        """Encode slice ``index`` and its ``radius`` neighbours on each side (nearest first) in the background.

        Returns a :class:`~medseg.sam.embed.PrecomputeJob` (``cancel()``, ``wait()``, ``done``, ``computed``).
        ``progress(done, total)`` is called from the worker thread.
        """
        ax = resolve_axis(axis)
        todo = neighbours(int(index), int(radius), self.num_slices(ax))
        return self.encoder.precompute(self.volume, ax, todo, self.window, progress, cancel)

    def propagate(
        self,
        axis: int | str,
        seeds: dict[int, SlicePrompt],
        rule=None,
        carry=None,
        video: bool | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ):
        """Propagate one object from its prompted slices; see :func:`medseg.sam.propagate.propagate`.

        ``video=None`` uses SAM 2's memory-based video propagation for SAM 2 models
        (:func:`~medseg.sam.propagate.propagate_sam2`) and slice-by-slice prompting otherwise; ``False``
        forces slice-by-slice prompting (``carry`` only applies to that mode).
        """
        from medseg.sam.propagate import CarryPrompt, StopRule, propagate, propagate_sam2

        rule = rule if rule is not None else StopRule()
        if video is None:
            video = self.model.family is Family.SAM2
        if video:
            return propagate_sam2(self, axis, seeds, rule, progress=progress, cancel=cancel)
        carry = carry if carry is not None else CarryPrompt()
        return propagate(self, axis, seeds, rule, carry, progress=progress, cancel=cancel)
