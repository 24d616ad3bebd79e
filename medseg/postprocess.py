"""From network output to a clean label map: decision (argmax/threshold), components, holes, volumes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medseg.config import Activation, Decision, OutputSpec, PostprocessSpec
from medseg.types import Label, Volume

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["activate", "decide", "clean_labels", "label_dtype", "label_volumes_ml", "largest_component"]


def label_dtype(max_id: int) -> np.dtype:
    """Smallest unsigned dtype holding ``max_id``."""
    return np.dtype(np.uint8) if max_id < 256 else np.dtype(np.uint16)


def activate(scores: torch.Tensor, activation: Activation | str) -> torch.Tensor:
    """Softmax/sigmoid over the channel axis (dim 0 of ``(C, ...)``); ``none`` returns ``scores``."""
    import torch

    act = Activation(getattr(activation, "value", activation))
    if act is Activation.SOFTMAX:
        return torch.softmax(scores, dim=0)
    if act is Activation.SIGMOID:
        return torch.sigmoid(scores)
    return scores


def decide(scores: torch.Tensor, output: OutputSpec, labels: tuple[Label, ...]) -> np.ndarray:
    """``(C, X, Y, Z)`` activated scores → ``(X, Y, Z)`` integer label map.

    argmax: channel index = label id. threshold: ``channel_labels`` pairs painted in order (later ones win),
    or with one label, channel 0 (sigmoid) / the last channel (2-channel softmax) above ``threshold``.
    """
    max_id = max((lab.id for lab in labels), default=1)
    dt = label_dtype(max_id)
    if output.decision is Decision.ARGMAX:
        return scores.argmax(dim=0).cpu().numpy().astype(dt)
    pairs = output.channel_labels or ((scores.shape[0] - 1 if scores.shape[0] > 1 else 0, labels[0].id),)
    out = np.zeros(tuple(scores.shape[1:]), dt)
    for ch, lid in pairs:
        out[(scores[ch] > output.threshold).cpu().numpy()] = lid
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component of a boolean mask."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def clean_labels(labels: np.ndarray, pp: PostprocessSpec, spacing: tuple[float, float, float]) -> np.ndarray:
    """Per label: keep the largest component, fill holes, drop components smaller than ``min_size_mm3``.

    Works inside each label's bounding box so that many small labels stay cheap. Returns a new array.
    """
    if not (pp.largest_component or pp.fill_holes or pp.min_size_mm3 > 0):
        return labels
    from scipy import ndimage

    out = labels.copy()
    voxel_mm3 = float(np.prod(spacing))
    ids = np.unique(labels)
    ids = ids[ids != 0]
    objects = ndimage.find_objects(labels)
    for lid in ids:
        box = objects[int(lid) - 1]
        if box is None:
            continue
        # one voxel of margin so that fill_holes sees the outside
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, labels.shape))
        sub = out[box]
        mask = sub == lid
        if pp.largest_component:
            mask = largest_component(mask)
        if pp.min_size_mm3 > 0:
            lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
            if n:
                sizes = np.bincount(lab.ravel()) * voxel_mm3
                keep = sizes >= pp.min_size_mm3
                keep[0] = False
                mask = keep[lab]
        if pp.fill_holes:
            mask = ndimage.binary_fill_holes(mask)
        sub[(sub == lid) & ~mask] = 0
        sub[mask & (sub == 0)] = lid
    return out


def label_volumes_ml(labels: Volume) -> dict[str, float]:
    """Volume in mL of every label listed in ``labels.labels`` (0.0 for absent ones), by label name."""
    counts = np.bincount(labels.array.ravel().astype(np.int64), minlength=1)
    vml = labels.geometry.voxel_volume_ml
    out = {}
    for lab in labels.labels:
        n = int(counts[lab.id]) if lab.id < len(counts) else 0
        out[lab.name] = round(n * vml, 6)
    return out
