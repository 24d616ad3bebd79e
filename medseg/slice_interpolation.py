"""Fill the slices between annotated slices of a label map (shape-based interpolation).

Draw a structure on slices ``k1`` and ``k2`` and :func:`interpolate_slices` fills every slice in between,
label by label: each annotated slice's mask becomes a signed distance map (negative inside, in mm when a
spacing is given), the two maps are blended linearly with the slice's position, and the blend's negative
part is the interpolated mask (Raya & Udupa's shape-based interpolation). Shapes morph, move and change
size smoothly; a label drawn on a single slice, or on adjacent slices only, is left alone. Voxels that
already belong to another label are kept unless ``overwrite`` is true. No Qt, no torch.

>>> import numpy as np
>>> lab = np.zeros((5, 11, 11), np.uint8); lab[0, 2:9, 2:9] = 1; lab[4, 4:7, 4:7] = 1  # 7x7 ... 3x3
>>> out = interpolate_slices(lab, axis=0)
>>> [int((out[k] == 1).sum()) for k in range(5)]
[49, 25, 25, 9, 9]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["interpolate_slices", "annotated_slices", "SliceGap"]


@dataclass(frozen=True)
class SliceGap:
    """A run of empty slices of label ``label`` between annotated slices ``k1`` and ``k2`` (``k2 - k1 > 1``)."""

    label: int
    k1: int
    k2: int


def annotated_slices(labels: np.ndarray, axis: int = 0, label_ids: Iterable[int] | None = None) -> list[SliceGap]:
    """The gaps :func:`interpolate_slices` would fill: consecutive annotated slices more than one slice apart.

    Args:
        labels: ``(D0, D1, D2)`` integer label map.
        axis: slice axis (0, 1 or 2).
        label_ids: labels to consider (default: every non-zero label present).
    """
    arr = _check(labels, axis)
    moved = np.moveaxis(arr, axis, 0)
    ids = _ids(moved, label_ids)
    gaps = []
    for lid in ids:
        present = np.flatnonzero((moved == lid).any(axis=(1, 2)))
        for k1, k2 in zip(present[:-1], present[1:]):
            if k2 - k1 > 1:
                gaps.append(SliceGap(int(lid), int(k1), int(k2)))
    return gaps


def _check(labels: np.ndarray, axis: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must have an integer dtype, got {arr.dtype}.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}.")
    return arr


def _ids(moved: np.ndarray, label_ids: Iterable[int] | None) -> list[int]:
    if label_ids is None:
        return [int(v) for v in np.unique(moved) if v != 0]
    ids = [int(v) for v in label_ids]
    if any(v <= 0 for v in ids):
        raise ValueError(f"label_ids must be positive, got {ids}.")
    return ids


def _signed_distance(mask: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """Negative inside ``mask``, positive outside: the distance to the mask's edge, which lies half a pixel
    beyond the centre of the last pixel on either side (so a mask and its complement are symmetric)."""
    half = 0.5 * min(sampling)
    inside = ndimage.distance_transform_edt(mask, sampling=sampling)
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)
    return np.where(mask, half - inside, outside - half)


def interpolate_slices(
    labels: np.ndarray,
    axis: int = 0,
    label_ids: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """Fill the slices between annotated slices, per label (see the module docstring).

    Args:
        labels: ``(D0, D1, D2)`` integer label map (not modified).
        axis: the slice axis: slices ``labels.take(k, axis)`` are the drawn ones.
        label_ids: labels to interpolate (default: every non-zero label present).
        spacing: voxel size (mm) along the three axes; only the two in-plane values matter (default 1, 1).
        overwrite: also replace voxels that hold another non-zero label (default: only background is filled).

    Returns:
        A new array (same shape and dtype) with the gaps filled.
    """
    arr = _check(labels, axis)
    if spacing is None:
        sampling = (1.0, 1.0)
    else:
        sp = [float(s) for s in spacing]
        if len(sp) != 3 or not all(s > 0 for s in sp):
            raise ValueError(f"spacing must be three positive numbers, got {spacing!r}.")
        sampling = tuple(s for i, s in enumerate(sp) if i != axis)  # type: ignore[assignment]
    out = arr.copy()
    moved_in = np.moveaxis(arr, axis, 0)
    moved_out = np.moveaxis(out, axis, 0)  # a view: writes go to `out`
    for gap in annotated_slices(arr, axis, label_ids):
        m1 = moved_in[gap.k1] == gap.label
        m2 = moved_in[gap.k2] == gap.label
        rows, cols = np.nonzero(m1 | m2)
        r0, r1 = max(int(rows.min()) - 2, 0), min(int(rows.max()) + 3, m1.shape[0])
        c0, c1 = max(int(cols.min()) - 2, 0), min(int(cols.max()) + 3, m1.shape[1])
        # the blend is negative only where one of the masks is: the padded bounding box holds all of it
        d1 = _signed_distance(m1[r0:r1, c0:c1], sampling)
        d2 = _signed_distance(m2[r0:r1, c0:c1], sampling)
        for k in range(gap.k1 + 1, gap.k2):
            t = (k - gap.k1) / (gap.k2 - gap.k1)
            fill = (1.0 - t) * d1 + t * d2 < 0
            target = moved_out[k, r0:r1, c0:c1]
            if not overwrite:
                fill &= target == 0
            target[fill] = gap.label
    return out
