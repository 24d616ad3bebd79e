"""NRRD / MetaImage through SimpleITK: geometry against ITK's own index->point maths, label alignment."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import ReadError
from medseg.geometry import LPS_TO_RAS
from medseg.io import read, scan, write
from medseg.types import Geometry, Volume

PAIRS = [
    ("pyradiomics/data/brain1_image.nrrd", "pyradiomics/data/brain1_label.nrrd"),
    ("pyradiomics/data/breast1_image.nrrd", "pyradiomics/data/breast1_label.nrrd"),
    ("pyradiomics/data/prostate_phantom_subvolume.nrrd", "pyradiomics/data/prostate_phantom_subvolume-label.nrrd"),
]
DCMQI_LABELS = ["liver_seg.nrrd", "spine_seg.nrrd", "heart_seg.nrrd"]


def _check_against_sitk(path, vol):
    """Voxel values and world positions (ITK's TransformIndexToPhysicalPoint, LPS->RAS) agree."""
    img = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))
    size = img.GetSize()
    for idx in [(0, 0, 0), (size[0] - 1, 0, 0), (0, size[1] - 1, size[2] - 1), tuple(s - 1 for s in size)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(idx))
        ras = (LPS_TO_RAS @ np.append(lps, 1.0))[:3]
        np.testing.assert_allclose(vol.affine @ np.append(idx, 1.0), np.append(ras, 1.0), atol=1e-9)


@pytest.mark.parametrize(("image", "label"), PAIRS, ids=[p[0].split("/")[-1] for p in PAIRS])
def test_pyradiomics_image_and_label_stay_aligned_through_conversion(shared_data, tmp_path, image, label):
    img, lab = read(shared_data / image), read(shared_data / label)
    _check_against_sitk(shared_data / image, img)
    _check_against_sitk(shared_data / label, lab)
    assert img.geometry.allclose(lab.geometry, atol=1e-6)
    write(img, tmp_path / "img.nii.gz")
    write(lab.replace(is_label=True), tmp_path / "lab.nii.gz")
    a, b = nib.load(tmp_path / "img.nii.gz"), nib.load(tmp_path / "lab.nii.gz")
    np.testing.assert_array_equal(a.affine, b.affine)  # identical, not merely close
    np.testing.assert_allclose(a.affine, img.affine, atol=1e-4)  # float32 storage of the float64 affine
    assert b.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), lab.array)
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), img.array)


def test_dcmqi_nrrd_labels_share_the_ct_grid(shared_data):
    base = shared_data / "dcmqi/data/segmentations"
    vols = [read(base / name) for name in DCMQI_LABELS]
    for name, vol in zip(DCMQI_LABELS, vols):
        _check_against_sitk(base / name, vol)
        assert vol.shape == (512, 512, 3)
        assert vol.spacing == pytest.approx((0.810547, 0.810547, 1.0))
        assert vol.array.max() >= 1
    assert all(v.geometry == vols[0].geometry for v in vols)
    assert vols[0].geometry.orientation == "LPS"


def test_scan_nrrd_header_only(shared_data):
    (info,) = scan(shared_data / "pyradiomics/data/brain1_label.nrrd")
    assert (info.format, info.shape, info.orientation) == ("nrrd", (256, 256, 25), "LAS")
    assert info.spacing == pytest.approx((0.78125, 0.78125, 6.5))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_write_and_read_back_exactly(tmp_path, suffix):
    theta = np.deg2rad(9.0)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]]) @ np.diag(
        [0.7, 0.7, 3.3]
    )
    aff[:3, 3] = [-120.123456789, 15.5, 60.25]
    arr = np.random.default_rng(3).integers(-1000, 3000, (9, 8, 7)).astype(np.int16)
    out = write(Volume(arr, Geometry(aff, arr.shape)), tmp_path / f"x{suffix}")
    back = read(out)
    np.testing.assert_allclose(back.affine, aff, atol=1e-9)
    np.testing.assert_array_equal(back.array, arr)
    assert back.array.dtype == np.int16
    lab = write(Volume(arr.clip(0, 3), Geometry(aff, arr.shape), is_label=True), tmp_path / f"l{suffix}")
    assert sitk.ReadImage(str(lab)).GetPixelID() == sitk.sitkUInt8


def test_vector_image_becomes_last_axis(tmp_path):
    data = np.random.default_rng(4).random((5, 6, 7, 3)).astype(np.float32)  # sitk order (k, j, i, c)
    img = sitk.GetImageFromArray(data, isVector=True)
    img.SetSpacing((0.5, 0.6, 0.7))
    sitk.WriteImage(img, str(tmp_path / "v.mha"))
    vol = read(tmp_path / "v.mha")
    assert vol.shape == (7, 6, 5, 3)
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0, 3))
    assert vol.spacing == pytest.approx((0.5, 0.6, 0.7))


def test_4d_scalar_nrrd_becomes_ijkt(tmp_path):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)  # sitk order (t, k, j, i)
    img = sitk.GetImageFromArray(data, isVector=False)
    assert img.GetDimension() == 4
    sitk.WriteImage(img, str(tmp_path / "t.nrrd"))
    vol = read(tmp_path / "t.nrrd")
    assert vol.shape == (5, 4, 3, 2)
    np.testing.assert_array_equal(vol.array, data.transpose(3, 2, 1, 0))


def test_2d_image_is_refused(tmp_path):
    sitk.WriteImage(sitk.Image(4, 5, sitk.sitkUInt8), str(tmp_path / "flat.nrrd"))
    with pytest.raises(ReadError, match="2D image"):
        read(tmp_path / "flat.nrrd")


def test_truncated_raw_nrrd_is_refused_before_reading(tmp_path):
    img = sitk.GetImageFromArray(np.ones((10, 20, 30), np.float32))
    sitk.WriteImage(img, str(tmp_path / "r.nrrd"), False)  # raw encoding
    data = (tmp_path / "r.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="truncated nrrd") as err:
        read(tmp_path / "cut.nrrd")
    assert "cut.nrrd" in str(err.value)


def test_truncated_gzip_nrrd_error_is_translated(tmp_path):
    img = sitk.GetImageFromArray(np.random.default_rng(5).random((10, 20, 30)).astype(np.float32))
    sitk.WriteImage(img, str(tmp_path / "g.nrrd"), True)
    data = (tmp_path / "g.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ReadError) as err:
        read(tmp_path / "cut.nrrd")
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "cut.nrrd")) and "\n" not in msg
