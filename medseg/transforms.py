"""MONAI preprocessing built from a spec's input contract; invertible back to the source grid.

The spatial part (orientation → spacing → foreground crop → localiser crop → resize) is a MONAI
``Compose`` of invertible array transforms applied to a ``MetaTensor``; its ``inverse`` maps a prediction on
the network grid back onto the source grid exactly (same shape and affine). Intensity normalisation steps
run afterwards, on the network grid, in the order the spec lists them (as in MONAI bundles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.config import InputSpec, NormStep, NormType
from medseg.errors import ModelError
from medseg.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose

__all__ = ["to_metatensor", "spatial_transforms", "image_statistics", "normalize", "invert"]


def to_metatensor(volume: Volume, channels: int) -> MetaTensor:
    """``(C, I, J, K)`` float32 MetaTensor with the volume's RAS affine; a 4D volume's last axis is channels.

    Raises:
        ModelError: the volume's channel count differs from the model's.
    """
    import torch
    from monai.data import MetaTensor

    arr = volume.array
    if arr.ndim == 3:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, 3, 0)
    if arr.shape[0] != channels:
        raise ModelError(
            f"the model expects {channels} channel(s) but the volume has {arr.shape[0]} "
            f"(shape {volume.shape})",
            volume.source.path,
        )
    data = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    data = torch.nan_to_num(data)
    return MetaTensor(data, affine=torch.tensor(volume.affine, dtype=torch.float64), meta={"space": "RAS"})


def spatial_transforms(spec: InputSpec, crop_slices: Sequence[slice] | None = None, float64: bool = True) -> Compose:
    """Invertible spatial preprocessing for ``spec`` (the localiser's crop, if any, goes before resize).

    ``float64``: resample in float64 (MONAI's ``Spacing`` default, as bundles do); ``False`` resamples in
    float32, which needs half the memory (used for very large volumes, see ``Predictor.float64_voxels``).
    """
    import torch
    from monai.transforms import Compose, CropForeground, Orientation, Resize, Spacing, SpatialCrop

    ts: list[Any] = []
    if spec.orientation is not None:
        ts.append(Orientation(axcodes=spec.orientation, labels=None))  # labels from the MetaTensor space (RAS)
    if spec.spacing is not None:
        ts.append(Spacing(pixdim=spec.spacing, mode=spec.spacing_mode, dtype=torch.float64 if float64 else torch.float32))
    if spec.crop_foreground is not None:
        thr = float(spec.crop_foreground["threshold"])
        ts.append(CropForeground(select_fn=lambda x: x > thr, margin=int(spec.crop_foreground["margin"])))
    if crop_slices is not None:
        ts.append(SpatialCrop(roi_slices=list(crop_slices)))
    if spec.resize is not None:
        ts.append(Resize(spatial_size=spec.resize, mode=spec.resize_mode))
    return Compose(ts)


def image_statistics(x: torch.Tensor, spec: InputSpec) -> dict[int, tuple[float, float]]:
    """Percentiles of the whole image for steps with ``reference: image`` (index → (low, high))."""
    stats = {}
    for i, step in enumerate(spec.normalize):
        if step.type is NormType.PERCENTILE and step.params["reference"] == "image":
            a = x.detach().cpu().numpy().ravel()
            lo, hi = np.percentile(a, [step.params["lower"], step.params["upper"]])
            stats[i] = (float(lo), float(hi))
    return stats


def normalize(x: torch.Tensor, steps: Sequence[NormStep], stats: dict[int, tuple[float, float]] | None = None):
    """Apply the spec's intensity steps to ``x`` ``(C, ...)`` (MONAI array transforms, float32)."""
    from monai.transforms import NormalizeIntensity, ScaleIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

    stats = stats or {}
    for i, step in enumerate(steps):
        p = step.params
        if step.type is NormType.WINDOW:
            x = ScaleIntensityRange(p["a_min"], p["a_max"], p["b_min"], p["b_max"], clip=p["clip"])(x)
        elif step.type is NormType.PERCENTILE:
            if i in stats:
                lo, hi = stats[i]
                x = ScaleIntensityRange(lo, hi, p["b_min"], p["b_max"], clip=p["clip"])(x)
            else:
                x = ScaleIntensityRangePercentiles(p["lower"], p["upper"], p["b_min"], p["b_max"], clip=p["clip"])(x)
        elif step.type is NormType.ZSCORE:
            x = NormalizeIntensity(nonzero=p["nonzero"], channel_wise=p["channel_wise"])(x)
        elif step.type is NormType.MINMAX:
            x = ScaleIntensity(minv=p["b_min"], maxv=p["b_max"])(x)
        elif step.type is NormType.AFFINE:
            x = x * p["scale"] + p["shift"]
        else:  # pragma: no cover - the spec validator rejects other types
            raise ModelError(f"unsupported normalisation {step.type}")
    return x


def invert(pred: torch.Tensor, reference: MetaTensor, transforms: Compose, nearest: bool = False) -> MetaTensor:
    """Map ``pred`` ``(C, ...)`` on the network grid back to the source grid of ``reference``'s input.

    Args:
        pred: prediction with the spatial shape of ``reference`` (the preprocessed image).
        reference: the preprocessed MetaTensor (its ``applied_operations`` are replayed in reverse).
        transforms: the Compose that produced ``reference``.
        nearest: resample with nearest neighbour (labels) instead of each transform's own mode.
    """
    import copy

    from monai.data import MetaTensor
    from monai.transforms.utils import convert_applied_interp_mode

    ops = copy.deepcopy(reference.applied_operations)
    if nearest:
        ops = convert_applied_interp_mode(ops, mode="nearest", align_corners=None)
    out = MetaTensor(pred, meta=copy.deepcopy(reference.meta), applied_operations=ops)
    out = transforms.inverse(out)
    return out
