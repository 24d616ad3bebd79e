"""From network scores to the label map on the source grid: the one export step.

Like nnU-Net's ``export_prediction.py``, one module owns the way back: resampling to the source grid, the
decision, undoing crops, the checks that the result has exactly the source grid, and the label clean-up.

- :func:`export_labels`: MONAI-spec predictors. What it receives and which way it goes is not guessed from
  ``None`` arguments: the frozen :class:`~medseg.engine.plan.InferencePlan` says it (axis maps or MONAI's
  ``Compose.inverse``).
- :func:`export_cropped_scores` / :func:`uncrop_labels`: nnU-Net's way back, described by a frozen
  :class:`CropBack` (resample each channel to the cropped grid, the decision over channels, paste the crop into
  the background, undo the axis transposition and any reorientation). Scores stitched in bounded row slabs are
  resampled and decided slab by slab by the predictor, then go back through :func:`uncrop_labels` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.config import InvertMode, PostprocessSpec
from medseg.engine.decision import Decision, Margins
from medseg.engine.plan import InferencePlan, WayBack
from medseg.errors import ModelError

__all__ = ["CropBack", "SlabExport", "export_cropped_scores", "export_labels", "sigmoid", "uncrop_labels"]


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


# ------------------------------------------------------------------------------------- nnU-Net's way back


@dataclass(frozen=True)
class CropBack:
    """How labels on a cropped, axis-transposed (and maybe reoriented) working array go back to the source grid.

    The working array is the source ``(I, J, K)`` array, optionally reoriented to ``reoriented_affine``'s
    orientation, read as ``(K, J, I)`` (SimpleITK's ``(z, y, x)``), transposed by the plans'
    ``transpose_forward`` and cropped to ``bbox``: nnU-Net's preprocessing.

    Attributes:
        geometry: the source volume's :class:`~medseg.types.Geometry` (the output's grid).
        shape_before_cropping: ``(X, Y, Z)`` of the transposed array before cropping.
        bbox: half-open crop box ``((x0, x1), (y0, y1), (z0, z1))`` in that array.
        transpose_backward: the axis permutation that undoes ``transpose_forward``.
        reoriented_affine: affine of the reoriented grid when the input was reoriented first, else ``None``.
    """

    geometry: Any
    shape_before_cropping: tuple[int, int, int]
    bbox: tuple[tuple[int, int], ...]
    transpose_backward: tuple[int, ...]
    reoriented_affine: np.ndarray | None = None

    @property
    def cropped_shape(self) -> tuple[int, ...]:
        """Shape of the cropped working array: the grid labels have before :func:`uncrop_labels`."""
        return tuple(b - a for a, b in self.bbox)


def uncrop_labels(seg: np.ndarray, back: CropBack) -> np.ndarray:
    """Labels on the cropped working grid → ``(I, J, K)`` labels on ``back.geometry``: pasted into background 0,
    transposed back, reoriented back.

    Raises:
        ValueError: ``seg`` does not have the crop's shape.
        ModelError: the reorientation round trip misses the source grid (an internal error).
    """
    if tuple(seg.shape) != back.cropped_shape:
        raise ValueError(f"labels have shape {tuple(seg.shape)}, the crop is {back.cropped_shape}.")
    full = np.zeros(back.shape_before_cropping, dtype=seg.dtype)
    full[tuple(slice(a, b) for a, b in back.bbox)] = seg
    full = full.transpose(back.transpose_backward)
    out = np.ascontiguousarray(full.transpose(2, 1, 0))  # (z, y, x) -> (i, j, k)
    source_affine = np.asarray(back.geometry.affine)
    if back.reoriented_affine is not None:
        from medseg.geometry import orientation_code, reorient

        out, back_affine = reorient(out, back.reoriented_affine, orientation_code(source_affine))
        if not np.allclose(back_affine, source_affine, atol=1e-4) or out.shape != tuple(back.geometry.shape[:3]):
            raise ModelError("internal error: reorientation round trip changed the grid")
        out = np.ascontiguousarray(out)
    if tuple(out.shape) != tuple(back.geometry.shape[:3]):
        raise ModelError(f"internal error: exported labels have shape {out.shape}, expected {back.geometry.shape}")
    return out


def export_cropped_scores(
    scores: np.ndarray,
    resample: Callable[[np.ndarray], np.ndarray],
    decision: Decision,
    back: CropBack,
    activation: str | None = None,
) -> np.ndarray:
    """nnU-Net's export: working-grid scores ``(C, X, Y, Z)`` → ``(I, J, K)`` labels on ``back.geometry``.

    Each channel is resampled to the cropped grid by ``resample`` (``(1, X, Y, Z)`` → ``(1, *cropped)``) and
    activated one at a time, and :meth:`Decision.over_channels` decides over them as they arrive (a running
    argmax, first maximum wins; or per-channel thresholds): unlike nnU-Net, never more than one resampled
    channel is held (117 TotalSegmentator classes on a 512 x 512 x 400 CT are 25 GB of float16), with identical
    labels. Then :func:`uncrop_labels`.

    Args:
        scores: logits on the working grid (numpy or a CPU tensor).
        resample: one channel to the cropped grid (e.g. nnU-Net's linear resampling of probabilities).
        decision: the label decision.
        back: the crop, transposition and reorientation to undo.
        activation: ``None`` (argmax of logits) or ``"sigmoid"`` (region-based models: thresholds on sigmoids).
    """
    arr = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)
    channels: Iterator[tuple[int, np.ndarray]] = ((c, resample(arr[c:c + 1])[0]) for c in range(arr.shape[0]))
    if activation == "sigmoid":
        channels = ((c, sigmoid(ch)) for c, ch in channels)
    elif activation is not None:
        raise ValueError(f"activation must be None or 'sigmoid', got {activation!r}.")
    seg = decision.over_channels(channels, back.cropped_shape)
    return uncrop_labels(seg, back)


class SlabExport:
    """:func:`export_cropped_scores` for working-grid scores arriving in slabs of rows along axis 0.

    Each slab goes to ``resampler`` (e.g. :class:`medseg.nnunet.resample.RowResampler`), which hands back the
    output rows of the cropped grid it completes, one channel at a time; the decision runs over those channels
    and the labels are written into the cropped label map, the only full-size array (one or two bytes per
    voxel). :meth:`finish` undoes the crop, transposition and reorientation (:func:`uncrop_labels`).

    Args:
        resampler: has ``push(block)`` yielding ``(o0, o1, channels)`` (see ``RowResampler.push``).
        decision, back, activation: as :func:`export_cropped_scores`.
    """

    def __init__(self, resampler: Any, decision: Decision, back: CropBack, activation: str | None = None) -> None:
        if activation not in (None, "sigmoid"):
            raise ValueError(f"activation must be None or 'sigmoid', got {activation!r}.")
        self.resampler = resampler
        self.decision = decision
        self.back = back
        self.activation = activation
        self.seg = np.zeros(back.cropped_shape, dtype=decision.dtype)
        self.rows_done = 0

    def push(self, block: Any) -> None:
        """The next slab ``(C, rows, Y, Z)`` of working-grid scores (numpy or a CPU tensor; not kept)."""
        arr = block.numpy() if hasattr(block, "numpy") else np.asarray(block)
        for o0, o1, channels in self.resampler.push(arr):
            if self.activation == "sigmoid":
                channels = ((c, sigmoid(ch)) for c, ch in channels)
            self.seg[o0:o1] = self.decision.over_channels(channels, (o1 - o0, *self.seg.shape[1:]))
            self.rows_done = o1

    def finish(self) -> np.ndarray:
        """The ``(I, J, K)`` label map on the source grid.

        Raises:
            ModelError: some rows of the crop never arrived (an internal error).
        """
        if self.rows_done != self.seg.shape[0]:
            raise ModelError(f"internal error: {self.rows_done} of {self.seg.shape[0]} rows were exported")
        return uncrop_labels(self.seg, self.back)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """torch's float32 sigmoid of ``x`` as numpy (the same values nnU-Net's export computes)."""
    import torch

    return torch.sigmoid(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()
