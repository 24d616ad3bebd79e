"""Multi-input models: several scans (MR sequences, nnU-Net ``CASE_000N`` files) stacked into one volume.

The first channel's grid is the reference: every other channel is checked to overlap it in scanner space
and, when its grid differs, resampled onto it (trilinear, zero outside its field of view, as SimpleITK). The result is
a ``(I, J, K, C)`` :class:`~medseg.types.Volume` in the model's channel order, which the engine reads as
channels (see :func:`medseg.transforms.to_metatensor`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.types import Volume

__all__ = [
    "NNUNET_CHANNEL",
    "parse_channel_args",
    "nnunet_channel_files",
    "order_channels",
    "coverage",
    "resample_onto",
    "stack_channels",
]

#: nnU-Net's raw-data naming: ``CASE_0000.nii.gz`` is channel 0 of CASE
NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<suffix>\.nii\.gz|\.nii|\.nrrd|\.mha|\.mhd|\.nhdr)$", re.I)
#: smallest share of the first channel's field of view another channel must cover to count as overlapping
MIN_COVERAGE = 0.1


def parse_channel_args(items: Sequence[str]) -> dict[str, str]:
    """``["t1=a.nii.gz", "flair=b/"]`` → ``{"t1": "a.nii.gz", "flair": "b/"}`` (names lower-cased).

    Raises:
        ValueError: an item is not ``NAME=PATH`` or a name is given twice.
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = str(item).partition("=")
        name = name.strip().lower()
        if not sep or not name or not path:
            raise ValueError(f"--channel takes NAME=PATH, got {item!r}.")
        if name in out:
            raise ValueError(f"--channel {name} is given twice.")
        out[name] = path
    return out


def nnunet_channel_files(path: str | Path) -> list[Path] | None:
    """The files of an nnU-Net case from any one of them: ``X_0000.nii.gz`` → ``[X_0000, X_0001, ...]``.

    Returns ``None`` when ``path`` does not follow the naming. Channels must be numbered from 0 without gaps.

    Raises:
        InputError: the numbering has a gap.
    """
    p = Path(path)
    m = NNUNET_CHANNEL.match(p.name)
    if m is None:
        return None
    case, suffix = m.group("case"), m.group("suffix")
    found: dict[int, Path] = {}
    for sib in p.parent.iterdir():
        sm = NNUNET_CHANNEL.match(sib.name)
        if sm and sm.group("case") == case and sm.group("suffix").lower() == suffix.lower():
            found[int(sm.group("channel"))] = sib
    numbers = sorted(found)
    if numbers != list(range(len(numbers))):
        raise InputError(f"nnU-Net case {case} has channels {numbers}; expected {case}_0000 .. without gaps", p.parent)
    return [found[i] for i in numbers]


def order_channels(given: Mapping[str, str], names: Sequence[str], model: str) -> list[tuple[str, str]]:
    """``--channel`` items in the model's channel order; every channel named, no unknown names.

    Raises:
        InputError: a channel is missing or unknown (the message lists the model's channel names).
    """
    if not names:
        raise InputError(f"model {model} does not name its input channels, so --channel cannot be used; give one INPUT")
    unknown = sorted(set(given) - set(names))
    missing = [n for n in names if n not in given]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown channel(s) {', '.join(unknown)}")
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        listing = " ".join(f"--channel {n}=PATH" for n in names)
        raise InputError(f"model {model} takes channels {', '.join(names)}: {'; '.join(parts)} (give {listing})")
    return [(n, given[n]) for n in names]


def _grid_points(shape: Sequence[int], n: int = 32) -> np.ndarray:
    axes = [np.linspace(0, s - 1, min(n, s)) for s in shape[:3]]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def coverage(reference: Volume, other: Volume) -> float:
    """Share (0-1) of ``reference``'s field of view that ``other`` covers, on a regular lattice of points."""
    pts = _grid_points(reference.shape)
    world = reference.affine[:3, :3] @ pts.T + reference.affine[:3, 3:4]
    inv = np.linalg.inv(other.affine)
    ijk = (inv[:3, :3] @ world + inv[:3, 3:4]).T
    size = np.asarray(other.shape[:3], dtype=float)
    inside = np.all((ijk >= -0.5) & (ijk <= size - 0.5), axis=1)
    return float(inside.mean())


def resample_onto(volume: Volume, reference: Volume, slab_voxels: int = 8_000_000) -> np.ndarray:
    """``volume``'s 3D array resampled onto ``reference``'s grid (trilinear, as SimpleITK's ``Resample``), float32.

    A voxel covers its whole extent: points up to half a voxel beyond the outer voxel centres take the edge
    value, points further out are 0.

    Works slab by slab along the last axis, so memory stays near the output's size.
    """
    from scipy.ndimage import map_coordinates

    shape = reference.shape[:3]
    if volume.geometry.allclose(reference.geometry, atol=1e-4) and volume.shape[:3] == shape:
        return np.asarray(volume.array, dtype=np.float32)
    m = np.linalg.inv(volume.affine) @ reference.affine  # reference voxel -> volume voxel
    src = np.asarray(volume.array, dtype=np.float32)
    out = np.empty(shape, dtype=np.float32)
    per_k = max(1, slab_voxels // max(1, shape[0] * shape[1]))
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k0 in range(0, shape[2], per_k):
        ks = np.arange(k0, min(shape[2], k0 + per_k))
        kk = np.broadcast_to(ks, (*ii.shape, ks.size))
        pts = np.stack([np.broadcast_to(ii[..., None], kk.shape), np.broadcast_to(jj[..., None], kk.shape), kk])
        coords = np.tensordot(m[:3, :3], pts, axes=1) + m[:3, 3].reshape(3, 1, 1, 1)
        # ITK's rule: a voxel covers its whole extent (edge values up to half a voxel out), zero beyond
        vals = map_coordinates(src, coords, order=1, mode="nearest")
        size = np.asarray(src.shape, dtype=float).reshape(3, 1, 1, 1)
        outside = np.any((coords < -0.5) | (coords > size - 0.5), axis=0)
        vals[outside] = 0.0
        out[..., ks[0] : ks[-1] + 1] = vals
    return out


def stack_channels(volumes: Sequence[tuple[str, Volume]]) -> Volume:
    """One ``(I, J, K, C)`` volume from named 3D channels, on the first channel's grid.

    Raises:
        InputError: a channel is 4D, or does not overlap the first channel in scanner space.
    """
    if not volumes:
        raise ValueError("stack_channels needs at least one channel.")
    for name, vol in volumes:
        if vol.array.ndim != 3:
            raise InputError(
                f"channel {name} is 4D ({vol.shape[3]} volumes); choose one with --volume N", vol.source.path
            )
    ref_name, ref = volumes[0]
    arrays = [np.asarray(ref.array, dtype=np.float32)]
    notes = []
    for name, vol in volumes[1:]:
        share = coverage(ref, vol)
        if share < MIN_COVERAGE:
            raise InputError(
                f"channel {name} does not overlap channel {ref_name} in scanner space ({share:.0%} of its field of "
                "view covered): are they from the same study and frame of reference?",
                vol.source.path,
            )
        same = vol.geometry.allclose(ref.geometry, atol=1e-4) and vol.shape[:3] == ref.shape[:3]
        if not same:
            notes.append(f"channel {name} resampled onto the grid of channel {ref_name}")
        arrays.append(resample_onto(vol, ref))
    source = replace(
        ref.source,
        warnings=tuple(ref.source.warnings) + tuple(notes),
        extra={**ref.source.extra, "channels": {n: v.source.path for n, v in volumes}},
    )
    return Volume(np.stack(arrays, axis=-1), ref.geometry, source)
