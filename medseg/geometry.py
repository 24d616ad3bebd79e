"""All coordinate maths in one place: RAS/LPS, voxel ↔ world, axis order, reorientation.

Conventions:
    * medseg affines map voxel indices ``(i, j, k)`` to **RAS+** world millimetres (as NIfTI/nibabel).
    * DICOM and ITK (SimpleITK, NRRD, MHA) use **LPS+**; convert with :data:`LPS_TO_RAS`.
    * SimpleITK's ``GetArrayFromImage`` returns ``(k, j, i)``; :func:`sitk_array_to_ijk` reverses it.
    * A DICOM pixel array is ``(rows, columns)`` = ``(j, i)``; :func:`dicom_affine` builds the matching affine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel import orientations as nio

__all__ = [
    "LPS_TO_RAS",
    "lps_to_ras",
    "dicom_affine",
    "sitk_affine",
    "affine_to_sitk",
    "sitk_array_to_ijk",
    "ijk_array_to_sitk",
    "orientation_code",
    "reorient",
    "reorient_to_canonical",
    "voxel_to_world",
    "world_to_voxel",
    "slice_normal",
    "positions_along_normal",
]

#: Flips x and y: an LPS+ point/affine becomes RAS+ (and back; it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a voxel→LPS affine to voxel→RAS (or RAS to LPS: the flip is its own inverse)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def dicom_affine(
    image_position: Sequence[float],
    image_orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float] | None = None,
) -> np.ndarray:
    """RAS affine for a DICOM slice stack stored as an ``(i=column, j=row, k=slice)`` array.

    Args:
        image_position: ImagePositionPatient (LPS mm) of the first slice's first pixel.
        image_orientation: ImageOrientationPatient: row cosine (direction of increasing column index)
            then column cosine (direction of increasing row index), LPS.
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)`` in mm: the distance between rows,
            then between columns.
        slice_step: LPS vector (mm) from one slice's origin to the next; defaults to the unit normal
            (row × column) times 1 mm.
    """
    iop = np.asarray(image_orientation, dtype=np.float64).reshape(2, 3)
    row_cos, col_cos = iop[0], iop[1]
    if slice_step is None:
        slice_step = np.cross(row_cos, col_cos)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * float(pixel_spacing[1])
    lps[:3, 1] = col_cos * float(pixel_spacing[0])
    lps[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    lps[:3, 3] = np.asarray(image_position, dtype=np.float64)
    return lps_to_ras(lps)


def slice_normal(image_orientation: Sequence[float]) -> np.ndarray:
    """Unit normal (row cosine × column cosine) of a DICOM slice, LPS."""
    iop = np.asarray(image_orientation, dtype=np.float64).reshape(2, 3)
    n = np.cross(iop[0], iop[1])
    return n / np.linalg.norm(n)


def positions_along_normal(positions: np.ndarray, image_orientation: Sequence[float]) -> np.ndarray:
    """Distance (mm) of each ImagePositionPatient ``(N, 3)`` along the slice normal."""
    return np.asarray(positions, dtype=np.float64) @ slice_normal(image_orientation)


def sitk_affine(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """RAS affine from an ITK image's LPS origin, spacing and row-major 3x3 direction."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(spacing, dtype=np.float64)
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return lps_to_ras(lps)


def affine_to_sitk(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(origin, spacing, direction)`` in ITK's LPS convention for a RAS affine."""
    lps = lps_to_ras(affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(lps[:3, 3].tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def sitk_array_to_ijk(array: np.ndarray) -> np.ndarray:
    """SimpleITK array ``(k, j, i[, components])`` → ``(i, j, k[, components])`` (a view)."""
    if array.ndim == 3:
        return array.transpose(2, 1, 0)
    if array.ndim == 4:
        return array.transpose(2, 1, 0, 3)
    raise ValueError(f"expected a 3D or 4D SimpleITK array, got shape {array.shape}.")


def ijk_array_to_sitk(array: np.ndarray) -> np.ndarray:
    """``(i, j, k)`` → SimpleITK's ``(k, j, i)`` (a view)."""
    return sitk_array_to_ijk(array)


def orientation_code(affine: np.ndarray) -> str:
    """Closest axis codes of an affine, e.g. ``'RAS'``, ``'LPS'``, ``'PIR'``."""
    return "".join(nio.aff2axcodes(np.asarray(affine)))


def reorient(array: np.ndarray, affine: np.ndarray, target: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute the first three axes so the closest orientation becomes ``target``. No resampling.

    Returns the reoriented array (a view where possible) and its affine; world positions of every
    voxel are unchanged.
    """
    if len(target) != 3 or set(target.upper()) - set("RLAPSI"):
        raise ValueError(f"target orientation must be three of R/L, A/P, S/I, got {target!r}.")
    current = nio.io_orientation(np.asarray(affine))
    wanted = nio.axcodes2ornt(tuple(target.upper()))
    transform = nio.ornt_transform(current, wanted)
    new_array = nio.apply_orientation(array, transform)
    new_affine = np.asarray(affine) @ nio.inv_ornt_aff(transform, array.shape[:3])
    return new_array, new_affine


def reorient_to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reorient` to RAS."""
    return reorient(array, affine, "RAS")


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Voxel indices ``(..., 3)`` → RAS world (mm) ``(..., 3)``."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """RAS world (mm) ``(..., 3)`` → continuous voxel indices ``(..., 3)``."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


# --- slices of a volume along one axis (used by medseg.sam) -------------------------------------


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two voxel axes of a slice normal to ``axis``, as ``(row_axis, col_axis)`` in increasing order.

    A slice ``array[..., k]`` (``axis=2``) is indexed ``(i, j)``: rows are ``i``, columns are ``j``.

    >>> in_plane_axes(0), in_plane_axes(1), in_plane_axes(2)
    ((1, 2), (0, 2), (0, 1))
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (i, j or k), got {axis!r}.")
    rows, cols = (a for a in (0, 1, 2) if a != axis)
    return rows, cols


def take_slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` normal to ``axis`` of an ``(I, J, K[, ...])`` array, indexed ``(row, col)``
    as :func:`in_plane_axes` says (a view)."""
    in_plane_axes(axis)
    n = array.shape[axis]
    if not 0 <= int(index) < n:
        raise IndexError(f"slice index {index} out of range 0..{n - 1} along axis {axis}.")
    return np.take(array, int(index), axis=axis)


def slice_voxels(axis: int, index: float, rows_cols: np.ndarray) -> np.ndarray:
    """Slice pixel coordinates ``(..., 2)`` as ``(row, col)`` → voxel coordinates ``(..., 3)`` ``(i, j, k)``."""
    r_ax, c_ax = in_plane_axes(axis)
    rc = np.asarray(rows_cols, dtype=np.float64)
    out = np.empty(rc.shape[:-1] + (3,), dtype=np.float64)
    out[..., axis] = index
    out[..., r_ax] = rc[..., 0]
    out[..., c_ax] = rc[..., 1]
    return out


def voxels_to_slice(axis: int, ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coordinates ``(..., 3)`` → ``(rows_cols (..., 2), index along axis (...))``."""
    r_ax, c_ax = in_plane_axes(axis)
    v = np.asarray(ijk, dtype=np.float64)
    if v.shape[-1] != 3:
        raise ValueError(f"voxel coordinates must have 3 components, got shape {v.shape}.")
    return np.stack([v[..., r_ax], v[..., c_ax]], axis=-1), v[..., axis]


__all__ += ["in_plane_axes", "take_slice", "slice_voxels", "voxels_to_slice"]
