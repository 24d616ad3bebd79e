"""Network output activation and label-map clean-up (components, holes).

The decision (argmax/threshold) is :class:`medseg.engine.decision.Decision`; label dtypes and volumes are
:mod:`medseg.labels`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medseg.config import Activation, PostprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["activate", "clean_labels", "largest_component"]


def activate(scores: torch.Tensor, activation: Activation | str) -> torch.Tensor:
    """Softmax/sigmoid over the channel axis (dim 0 of ``(C, ...)``); ``none`` returns ``scores``."""
    import torch

    act = Activation(getattr(activation, "value", activation))
    if act is Activation.SOFTMAX:
        return torch.softmax(scores, dim=0)
    if act is Activation.SIGMOID:
        return torch.sigmoid(scores)
    return scores


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
