"""From network scores to the label map on the source grid: the one export step.

Like nnU-Net's ``export_prediction.py``, one function (:func:`export_labels`) owns the way back: resampling
to the source grid, the decision, undoing crops (MONAI's ``Compose.inverse``), the checks that the result
has exactly the source grid, and the label clean-up. What it receives and which way it goes is not guessed
from ``None`` arguments: the frozen :class:`~medseg.engine.plan.InferencePlan` says it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.config import InvertMode, PostprocessSpec
from medseg.engine.decision import Decision, Margins
from medseg.engine.plan import InferencePlan, WayBack
from medseg.errors import ModelError

__all__ = ["export_labels"]


def export_labels(
    result: Any, plan: InferencePlan, pre: Any, decision: Decision, postprocess: PostprocessSpec,
    margins: Margins | None = None,
) -> np.ndarray:
    """The prediction's way back to the source grid: a cleaned ``(I, J, K)`` label map on ``pre.geometry``.

    Args:
        result: what the stitching produced (``plan.result`` says which): ``"scores"`` — activated scores
            ``(C, X, Y, Z)`` on the working grid; ``"working_labels"`` — decided labels on the working grid;
            ``"source_labels"`` — labels already resampled and decided on the source grid.
        plan: the inference plan (way back: axis maps or the transforms' inverse; probabilities or labels).
        pre: the predictor's preprocessed input (``geometry``, ``image`` MetaTensor, ``transforms`` Compose).
        decision: the label decision.
        postprocess: the clean-up (largest component, holes, small components).
        margins: when given, the decision margins of ``"scores"`` results are added to it, on the working
            grid (the quality score; cells streamed by :mod:`medseg.infer.slab` were added as they finished).

    Raises:
        ModelError: the result does not land exactly on the source grid (an internal error).
    """
    import torch

    from medseg.infer.resample import invert_and_argmax, resample_labels_nearest
    from medseg.postprocess import clean_labels
    from medseg.transforms import invert

    geometry = pre.geometry
    inv_affine = geometry.affine  # medseg's own inverters write the source grid itself
    axis_maps = plan.way_back is WayBack.AXIS_MAPS
    if plan.result == "scores":
        decision.tally(torch.as_tensor(result), margins)
    if plan.result == "source_labels":
        labels = result
    elif plan.result == "scores" and plan.resample is InvertMode.PROBABILITIES:
        if axis_maps:  # linear resampling and argmax on the source grid, one chunk at a time
            labels = invert_and_argmax(result, plan.maps, geometry.shape, dtype=decision.torch_dtype).numpy()
        else:
            inv = invert(result, pre.image, pre.transforms)
            labels = decision(torch.as_tensor(inv))
            inv_affine = np.asarray(inv.affine, dtype=np.float64)
    else:  # labels cross the grids (nearest)
        lab = result if plan.result == "working_labels" else decision(result)
        if axis_maps:  # chunked: the source grid holds one label per voxel
            labels = resample_labels_nearest(torch.from_numpy(lab), plan.maps, geometry.shape).numpy()
        else:
            inv = invert(torch.from_numpy(lab.astype(np.float32))[None], pre.image, pre.transforms, nearest=True)
            labels = torch.as_tensor(inv)[0].round().cpu().numpy().astype(lab.dtype)
            inv_affine = np.asarray(inv.affine, dtype=np.float64)
    if tuple(labels.shape) != geometry.shape:
        raise ModelError(f"internal error: inverted prediction has shape {labels.shape}, expected {geometry.shape}")
    if not np.allclose(inv_affine, geometry.affine, atol=1e-3):
        raise ModelError("internal error: inverted prediction's affine differs from the input's")
    return clean_labels(labels, postprocess, geometry.spacing)
