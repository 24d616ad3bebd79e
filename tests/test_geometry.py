"""Geometry maths against independent implementations (nibabel, SimpleITK) and round trips."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg import geometry as g
from medseg.types import Geometry, Volume


def _oblique_affine() -> np.ndarray:
    theta = np.deg2rad(13.0)
    rot = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    aff[:3, 3] = [-100.0, 20.5, 33.0]
    return aff


def test_sitk_affine_matches_nibabel_on_written_nifti(tmp_path):
    aff = _oblique_affine()
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    path = tmp_path / "x.nii.gz"
    nib.save(img, path)
    im = sitk.ReadImage(str(path))
    ours = g.sitk_affine(im.GetOrigin(), im.GetSpacing(), im.GetDirection())
    np.testing.assert_allclose(ours, nib.load(path).affine, atol=1e-4)
    origin, spacing, direction = g.affine_to_sitk(ours)
    np.testing.assert_allclose(origin, im.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(spacing, im.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(direction, im.GetDirection(), atol=1e-5)


def test_sitk_array_axis_order_matches_index_order():
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (i, j, k)
    im = sitk.GetImageFromArray(g.ijk_array_to_sitk(arr).copy())
    assert im.GetSize() == (2, 3, 4)
    assert im.GetPixel(1, 2, 3) == arr[1, 2, 3]
    np.testing.assert_array_equal(g.sitk_array_to_ijk(sitk.GetArrayFromImage(im)), arr)


def test_dicom_affine_axial_slice_is_lps_flipped():
    # Axial slice, rows along +x (L), columns along +y (P), origin at (-100, -120, 50) LPS.
    aff = g.dicom_affine([-100, -120, 50], [1, 0, 0, 0, 1, 0], [0.5, 0.7], slice_step=[0, 0, 2.0])
    # column index i moves along LPS +x by the column spacing (0.7) -> RAS -x
    np.testing.assert_allclose(aff[:3, 0], [-0.7, 0, 0])
    np.testing.assert_allclose(aff[:3, 1], [0, -0.5, 0])
    np.testing.assert_allclose(aff[:3, 2], [0, 0, 2.0])
    np.testing.assert_allclose(aff[:3, 3], [100, 120, 50])
    assert g.orientation_code(aff) == "LPS"


@pytest.mark.parametrize("target", ["RAS", "LPS", "PIR", "SAL"])
def test_reorient_keeps_world_positions(target):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 100, size=(4, 5, 6))
    aff = _oblique_affine()
    new, new_aff = g.reorient(arr, aff, target)
    assert g.orientation_code(new_aff) == target
    for ijk in itertools.product(range(4), range(5), range(6)):
        world = g.voxel_to_world(aff, ijk)
        nijk = np.rint(g.world_to_voxel(new_aff, world)).astype(int)
        assert new[tuple(nijk)] == arr[ijk]


def test_positions_along_normal_orders_slices():
    iop = [1, 0, 0, 0, 0, -1]  # coronal
    pos = np.array([[0, 5, 0], [0, 1, 0], [0, 3, 0]], float)
    d = g.positions_along_normal(pos, iop)
    assert list(np.argsort(d)) == [1, 2, 0]


def test_geometry_validation_and_repr():
    with pytest.raises(ValueError, match="singular"):
        Geometry(np.zeros((4, 4)), (2, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        Geometry(np.eye(4), (2, 0, 2))
    geo = Geometry(np.diag([0.8, 0.8, 1.5, 1.0]), (10, 10, 4))
    assert geo.spacing == pytest.approx((0.8, 0.8, 1.5))
    assert geo.orientation == "RAS"
    assert geo.voxel_volume_ml == pytest.approx(0.8 * 0.8 * 1.5 / 1000)
    with pytest.raises(ValueError, match="does not match"):
        Volume(np.zeros((3, 3, 3)), geo)
    assert "RAS" in repr(Volume(np.zeros((10, 10, 4)), geo))
