"""The inference plan: how the windows are stitched and how the result goes back to the source grid.

Decided once per volume from the model spec, the preprocessed input and the memory budget
(:attr:`~medseg.engine.options.RunOptions.stream_bytes`), then followed by the stitcher and by
:func:`medseg.engine.export.export_labels`. Three choices, all explicit:

- **stitch**: ``full`` — the whole ``(C, X, Y, Z)`` score volume (TTA, smoothing, small volumes); ``cells`` —
  bounded cells finalised as they complete (:mod:`medseg.infer.slab`), in MONAI's window order when its
  cells fit the budget, else streamed along the longest axis;
- **way back**: ``axis-maps`` — the working grid only reorients and resamples the source (no crop, no
  resize, axis-aligned): medseg's bounded separable resamplers (:mod:`medseg.infer.resample`); ``inverse``
  — MONAI's ``Compose.inverse`` of the spatial transforms;
- **resample**: ``probabilities`` (linear, then the decision on the source grid) or ``labels`` (the decision
  on the working grid, then nearest).

>>> InferencePlan(Stitch.FULL, WayBack.INVERSE, InvertMode.LABELS).result
'scores'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from medseg.config import Decision as Rule
from medseg.config import InferMode, InvertMode, ModelSpec

__all__ = ["Stitch", "WayBack", "InferencePlan", "plan_inference"]


class Stitch(str, Enum):
    """How sliding windows are stitched."""

    FULL = "full"
    CELLS = "cells"


class WayBack(str, Enum):
    """How the result is mapped back to the source grid."""

    AXIS_MAPS = "axis-maps"
    INVERSE = "inverse"


@dataclass(frozen=True)
class InferencePlan:
    """One volume's plan (see the module docstring).

    Attributes:
        stitch: ``full`` or bounded ``cells``.
        way_back: ``axis-maps`` (with ``maps``, working axis ← source axis) or the transforms' ``inverse``.
        resample: what crosses the grids: ``probabilities`` or ``labels``.
        maps: the axis maps for ``axis-maps``, else ``None``.
        order: window order of ``cells``: ``"monai"`` or the axis streamed along.
    """

    stitch: Stitch
    way_back: WayBack
    resample: InvertMode
    maps: tuple[Any, ...] | None = None
    order: str | int = "monai"

    def __post_init__(self) -> None:
        if (self.way_back is WayBack.AXIS_MAPS) != (self.maps is not None):
            raise ValueError(f"axis maps go with way_back='axis-maps', got {self.way_back.value} and maps={self.maps}.")
        if self.stitch is Stitch.CELLS and self.resample is InvertMode.PROBABILITIES and self.maps is None:
            raise ValueError("cells can resample probabilities only along axis maps.")

    @property
    def result(self) -> str:
        """What the stitching hands to the export: ``"scores"`` (working grid), ``"working_labels"`` (cells
        decided on the working grid) or ``"source_labels"`` (cells resampled and decided on the source grid)."""
        if self.stitch is Stitch.FULL:
            return "scores"
        return "working_labels" if self.resample is InvertMode.LABELS else "source_labels"


def _axis_maps(spec: ModelSpec, pre: Any) -> tuple[Any, ...] | None:
    """Axis maps (source → working grid) when the spatial preprocessing only reorients and resamples (no crop,
    no resize) and the grids are axis-aligned, else ``None``."""
    from medseg.infer.resample import axis_maps_from_affines

    inp = spec.input
    if inp.crop_foreground is not None or inp.resize is not None or pre.crop is not None:
        return None
    if tuple(pre.x.shape[2:]) != tuple(pre.image.shape[1:]):  # pragma: no cover - defensive
        return None
    try:
        return axis_maps_from_affines(pre.geometry.affine, np.asarray(pre.image.affine, dtype=np.float64))
    except ValueError:
        return None


def plan_inference(spec: ModelSpec, pre: Any, stream_bytes: int) -> InferencePlan:
    """The plan for ``pre`` (a :class:`medseg.predictor.Preprocessed`) under a score-memory budget.

    Axis maps are used for ``invert: labels`` and for ``invert: probabilities`` with an argmax decision
    (linear resampling + argmax on the source grid); ``probabilities`` + ``threshold`` goes through the
    inverse. Cells are used for sliding-window specs without TTA or smoothing whose float32 scores exceed
    ``stream_bytes``, when their result can be finalised per cell (``labels``, or axis maps).
    """
    from medseg.infer.slab import estimate_peak_bytes, plan_windows

    out, inf = spec.output, spec.inferer
    maps = _axis_maps(spec, pre)
    if out.invert is InvertMode.PROBABILITIES and out.decision is not Rule.ARGMAX:
        maps = None
    way_back = WayBack.AXIS_MAPS if maps is not None else WayBack.INVERSE
    spatial = tuple(int(s) for s in pre.x.shape[2:])
    out_ch = max(spec.n_classes, len(spec.labels))
    cells = (
        inf.mode is InferMode.SLIDING and not inf.tta_flips and out.smooth_sigma <= 0
        and (out.invert is InvertMode.LABELS or maps is not None)
        and 4 * out_ch * math.prod(spatial) > stream_bytes
    )
    if not cells:
        return InferencePlan(Stitch.FULL, way_back, out.invert, maps)
    order: str | int = "monai"  # MONAI's window order: bitwise MONAI's scores
    if estimate_peak_bytes(plan_windows(spatial, inf.roi_size, inf.overlap), out_ch) > stream_bytes:
        order = int(np.argmax(spatial))  # streamed along the longest axis: smaller peak
    return InferencePlan(Stitch.CELLS, way_back, out.invert, maps, order)
