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

import numpy as np

from medseg.sam.embed import EmbeddingCache, ProgressCallback, PrecomputeJob, SliceEncoder, known_fingerprint, neighbours
from medseg.sam.image import SliceFrame, Window, WindowPreset, from_model_frame, resolve_axis, to_model_frame, window_for
from medseg.sam.models import SamModel
from medseg.sam.registry import Family
from medseg.sam.slices import SlicePrompt, SliceResult
from medseg.types import Volume

__all__ = ["SlicePrompt", "SliceResult", "SamSession", "decode"]


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
        """Whether the slice's embedding is cached; cheap (``False`` until the volume's fingerprint exists:
        the GUI thread asks this, the first encoding computes it)."""
        if known_fingerprint(self.volume) is None:
            return False
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
