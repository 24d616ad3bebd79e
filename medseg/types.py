"""Core value types: :class:`Geometry`, :class:`Volume` and :class:`SourceInfo`.

Axis convention (the same as nibabel, MONAI and TorchIO): ``Volume.array`` is indexed ``(i, j, k[, t])``
and ``Geometry.affine`` maps voxel indices ``(i, j, k, 1)`` to RAS+ world coordinates in millimetres.
All LPS/RAS and axis-order maths lives in :mod:`medseg.geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["Geometry", "SourceInfo", "Volume", "Label"]


@dataclass(frozen=True, eq=False)
class Geometry:
    """Spatial grid of a 3D volume.

    Args:
        affine: ``(4, 4)`` float64 voxel-index ``(i, j, k)`` → RAS+ world (mm) matrix.
        shape: number of voxels along ``(i, j, k)``.

    >>> g = Geometry(np.diag([0.8, 0.8, 1.5, 1.0]), (512, 512, 100))
    >>> g.spacing, g.orientation
    ((0.8, 0.8, 1.5), 'RAS')
    """

    affine: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        aff = np.array(self.affine, dtype=np.float64, copy=True)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {aff.shape}.")
        if not np.all(np.isfinite(aff)):
            raise ValueError("affine contains NaN or infinite values.")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise ValueError("affine is singular (zero voxel size or degenerate axes).")
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be three positive ints, got {self.shape}.")
        aff.setflags(write=False)
        object.__setattr__(self, "affine", aff)
        object.__setattr__(self, "shape", shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along ``(i, j, k)`` in mm."""
        return tuple(float(x) for x in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` unit column vectors of the ``i, j, k`` axes in RAS+."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def origin(self) -> np.ndarray:
        """RAS+ position (mm) of voxel ``(0, 0, 0)``'s centre."""
        return self.affine[:3, 3].copy()

    @property
    def orientation(self) -> str:
        """Closest orientation code, e.g. ``'RAS'`` or ``'LPS'`` (the direction each axis points to)."""
        from medseg.geometry import orientation_code

        return orientation_code(self.affine)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def with_shape(self, shape: tuple[int, ...]) -> Geometry:
        return Geometry(self.affine, tuple(shape[:3]))  # type: ignore[arg-type]

    def allclose(self, other: Geometry, atol: float = 1e-4) -> bool:
        """Same shape and affine within ``atol`` (mm)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return self.shape == other.shape and bool(np.array_equal(self.affine, other.affine))

    def __hash__(self) -> int:
        return hash((self.shape, self.affine.tobytes()))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        return f"Geometry(shape={self.shape}, spacing=({sp}) mm, orientation={self.orientation})"


@dataclass(frozen=True)
class SourceInfo:
    """Where a volume came from. All fields optional; ``extra`` holds format-specific items."""

    path: str | None = None
    format: str | None = None  # "nifti", "dicom", "nrrd", "mha", ...
    modality: str | None = None  # DICOM Modality, e.g. "CT", "MR"
    series_uid: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Label:
    """One label of a label map: integer id, name and RGB colour (0-255)."""

    id: int
    name: str
    color: tuple[int, int, int] = (255, 0, 0)


@dataclass(frozen=True, eq=False)
class Volume:
    """An image or label map with its geometry.

    Args:
        array: ``(I, J, K)`` or ``(I, J, K, T)`` array, indexed as the affine expects.
        geometry: spatial grid; ``geometry.shape == array.shape[:3]``.
        source: provenance (file, modality, series UID, rescale).
        is_label: label map (nearest-neighbour resampling, integer storage) vs intensity image.
        labels: names and colours for a label map (may be empty).

    >>> v = Volume(np.zeros((4, 5, 6), np.float32), Geometry(np.eye(4), (4, 5, 6)))
    >>> v.shape
    (4, 5, 6)
    """

    array: np.ndarray
    geometry: Geometry
    source: SourceInfo = field(default_factory=SourceInfo)
    is_label: bool = False
    labels: tuple[Label, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            raise TypeError(f"array must be a numpy array, got {type(self.array).__name__}.")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array must be 3D or 4D, got shape {self.array.shape}.")
        if tuple(self.array.shape[:3]) != self.geometry.shape:
            raise ValueError(
                f"array shape {self.array.shape[:3]} does not match geometry shape {self.geometry.shape}."
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def affine(self) -> np.ndarray:
        return self.geometry.affine

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    def replace(self, **changes: Any) -> Volume:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)

    def __repr__(self) -> str:
        kind = "labels" if self.is_label else "image"
        return f"Volume({kind}, shape={self.shape}, dtype={self.array.dtype}, {self.geometry!r})"
