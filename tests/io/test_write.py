"""Writing: label dtypes, exact affines (sform) with a best-fit qform, dtypes, atomic and safe outputs."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import WriteError
from medseg.io import read, write
from medseg.io.atomic import atomic_output
from medseg.types import Geometry, SourceInfo, Volume

AFF = np.array([[0.75, 0.0, 0.0, -90.5], [0.0, 0.8125, 0.0, 12.25], [0.0, 0.0, 2.5, 40.0], [0, 0, 0, 1]])


def _vol(arr, affine=AFF, **kw):
    return Volume(arr, Geometry(affine, arr.shape[:3]), **kw)


@pytest.mark.parametrize(
    ("max_label", "dtype"), [(1, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (70000, np.uint32)]
)
def test_label_maps_use_smallest_unsigned_type(tmp_path, max_label, dtype):
    arr = np.zeros((4, 5, 6), np.int64)
    arr[1, 2, 3] = max_label
    arr[0, 0, 0] = 1
    out = write(_vol(arr, is_label=True), tmp_path / "seg.nii.gz")
    img = nib.load(out)
    assert img.get_data_dtype() == dtype
    assert img.header.get_intent()[0] == "label"
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), arr)
    back = read(out)
    assert back.is_label and back.array.dtype == dtype


def test_label_map_from_bool_and_integral_float(tmp_path):
    assert nib.load(write(_vol(np.ones((2, 3, 4), bool), is_label=True), tmp_path / "b.nii")).get_data_dtype() == np.uint8
    f = np.zeros((2, 3, 4), np.float32)
    f[0, 0, 0] = 3.0
    out = write(_vol(f, is_label=True), tmp_path / "f.nii")
    assert nib.load(out).get_data_dtype() == np.uint8
    assert read(out).array[0, 0, 0] == 3


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (np.full((2, 2, 2), -1, np.int16), "negative labels"),
        (np.full((2, 2, 2), 0.5, np.float32), "non-integer"),
        (np.full((2, 2, 2), np.nan, np.float32), "NaN"),
        (np.full((2, 2, 2), 2**33, np.int64), "uint32"),
    ],
)
def test_invalid_label_maps_are_refused_without_output(tmp_path, arr, message):
    with pytest.raises(WriteError, match=message):
        write(_vol(arr, is_label=True), tmp_path / "bad.nii.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64, np.int64])
def test_intensity_images_keep_their_dtype(tmp_path, dtype):
    arr = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 3).astype(dtype)
    out = write(_vol(arr), tmp_path / "i.nii.gz")
    assert nib.load(out).get_data_dtype() == np.dtype(dtype)
    back = read(out)
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, arr)


def test_sheared_affine_exact_in_sform_and_best_fit_qform(tmp_path):
    sheared = np.array([[1.0, 0.25, 0.0, 10.0], [0.0, 2.0, 0.125, -5.0], [0.0, 0.0, 3.0, 1.0], [0, 0, 0, 1]])
    out = write(_vol(np.zeros((3, 4, 5), np.int16), sheared), tmp_path / "s.nii.gz")
    img = nib.load(out)
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    np.testing.assert_array_equal(img.header.get_sform(), sheared)  # exact
    qform = img.header.get_qform()
    assert not np.allclose(qform, sheared)  # a quaternion cannot hold the shear ...
    rot = qform[:3, :3] / np.linalg.norm(qform[:3, :3], axis=0)
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-6)  # ... it holds the closest rotation
    np.testing.assert_allclose(qform[:3, 3], sheared[:3, 3])
    np.testing.assert_array_equal(read(out).affine, sheared)  # reading uses the sform


def test_orthogonal_affine_equal_in_qform_and_sform(tmp_path):
    theta = np.deg2rad(13.0)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]]) @ np.diag(
        [0.8, 0.9, 2.5]
    )
    aff[:3, 3] = [-100.0, 20.5, 33.0]
    img = nib.load(write(_vol(np.zeros((3, 4, 5), np.uint8), aff), tmp_path / "o.nii"))
    np.testing.assert_allclose(img.header.get_qform(), img.header.get_sform(), atol=1e-5)
    np.testing.assert_allclose(img.header.get_sform(), aff, atol=1e-5)


def test_4d_keeps_time_axis_and_step(tmp_path):
    arr = np.random.default_rng(0).random((3, 4, 5, 6)).astype(np.float32)
    vol = _vol(arr, source=SourceInfo(extra={"time_step": 2.5}))
    img = nib.load(write(vol, tmp_path / "t.nii.gz"))
    assert img.shape == (3, 4, 5, 6)
    assert img.header.get_zooms()[3] == pytest.approx(2.5)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), arr)


@pytest.mark.parametrize("order", ["C", "F"])
def test_memory_layout_does_not_matter(tmp_path, order):
    arr = np.asarray(np.random.default_rng(2).integers(0, 999, (7, 8, 9)), dtype=np.int16, order=order)
    img = nib.load(write(_vol(arr), tmp_path / f"{order}.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), arr)
    strided = arr[::2, 1:, ::3]
    img2 = nib.load(write(_vol(strided), tmp_path / f"{order}s.nii"))
    np.testing.assert_array_equal(np.asanyarray(img2.dataobj), strided)


def test_refuses_existing_output_and_leaves_it_byte_for_byte(tmp_path):
    out = tmp_path / "x.nii.gz"
    out.write_bytes(b"precious")
    with pytest.raises(WriteError, match="already exists") as err:
        write(_vol(np.zeros((2, 2, 2), np.uint8)), out)
    assert str(out) in str(err.value)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]
    write(_vol(np.zeros((2, 2, 2), np.uint8)), out, overwrite=True)
    assert nib.load(out).shape == (2, 2, 2)


def test_missing_directory_and_directory_as_output(tmp_path):
    with pytest.raises(WriteError, match="does not exist") as err:
        write(_vol(np.zeros((2, 2, 2), np.uint8)), tmp_path / "nope" / "x.nii.gz")
    assert "nope" in str(err.value)
    (tmp_path / "d.nii").mkdir()
    with pytest.raises(WriteError, match="is a directory"):
        write(_vol(np.zeros((2, 2, 2), np.uint8)), tmp_path / "d.nii", overwrite=True)


def test_unsupported_output_suffix(tmp_path):
    with pytest.raises(WriteError, match=r"\.png"):
        write(_vol(np.zeros((2, 2, 2), np.uint8)), tmp_path / "x.png")
    with pytest.raises(WriteError, match=r"\.mhd"):
        write(_vol(np.zeros((2, 2, 2), np.uint8)), tmp_path / "x.mhd")


def test_atomic_output_removes_temp_file_on_failure(tmp_path):
    out = tmp_path / "a.nii.gz"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(out, overwrite=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
        tmp.write_bytes(b"half a file")
        raise RuntimeError("boom")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]


def test_atomic_output_race_does_not_clobber(tmp_path):
    """An output that appears while we write (another process) is not replaced without overwrite."""
    out = tmp_path / "r.nii"
    with pytest.raises(WriteError, match="already exists"), atomic_output(out) as tmp:
        tmp.write_bytes(b"mine")
        out.write_bytes(b"theirs")
    assert out.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nii"]


def test_written_file_has_normal_permissions(tmp_path):
    out = write(_vol(np.zeros((2, 2, 2), np.uint8)), tmp_path / "p.nii")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
