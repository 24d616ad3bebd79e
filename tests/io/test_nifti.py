"""NIfTI reading against nibabel on real header edge cases, and read -> write -> read round trips."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import ReadError
from medseg.io import read, scan, write
from medseg.types import Geometry, Volume

NIB = "nibabel/nibabel/tests/data"

# file, what it exercises
EDGE_CASES = [
    (f"{NIB}/anatomical.nii", "big-endian int16, qform 2 + sform 2"),
    (f"{NIB}/reoriented_anat_moved.nii", "big-endian float32"),
    (f"{NIB}/example_nifti2.nii.gz", "NIfTI-2, 4D"),
    (f"{NIB}/functional.nii", "scl_slope/scl_inter, 4D"),
    (f"{NIB}/standard.nii.gz", "qform_code 0 with sform_code 2"),
    (f"{NIB}/example4d.nii.gz", "4D gzip"),
    ("dcm_qa_enh/Ref/Philips_WIP_B0_NS_801_e2_fieldmaphz.nii", "small slope, negative intercept"),
    ("dcm_qa_enh/Ref/Philips_WIP_B0_NS_801_e1.nii", "huge slope"),
    ("MONAI/tests/testing_data/anatomical_label.nii.gz", "qform only (sform_code 0), uint16 labels"),
]


def _raw_scaling(img: nib.Nifti1Image) -> tuple[float, float]:
    return float(img.dataobj.slope), float(img.dataobj.inter)


@pytest.mark.parametrize("rel", [c[0] for c in EDGE_CASES], ids=[c[1] for c in EDGE_CASES])
def test_reads_like_nibabel_and_round_trips(shared_data, tmp_path, rel):
    src = shared_data / rel
    ref = nib.load(src)
    ref_data = np.asanyarray(ref.dataobj)
    vol = read(src)

    # reading: nibabel's affine exactly, its (scaled) values, native byte order
    np.testing.assert_array_equal(vol.affine, ref.affine)
    assert vol.shape == ref_data.shape
    assert vol.array.dtype.isnative
    slope, inter = _raw_scaling(ref)
    scaled = (slope, inter) != (1.0, 0.0)
    stored = ref.get_data_dtype().newbyteorder("=")
    if scaled:
        assert vol.array.dtype == np.float32
        np.testing.assert_allclose(vol.array, ref_data, rtol=1e-6, atol=abs(slope) * 1e-3)
    else:
        assert vol.array.dtype == stored
        np.testing.assert_array_equal(vol.array, ref_data)

    # round trip: same affine (exactly), same values and dtype, same stored dtype and scaling
    out = tmp_path / "rt.nii.gz"
    write(vol, out)
    back = read(out)
    np.testing.assert_array_equal(back.affine, vol.affine)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == vol.array.dtype
    written = nib.load(out)  # independent check of the file itself
    np.testing.assert_array_equal(written.affine, ref.affine)
    assert written.get_data_dtype() == stored
    assert np.allclose(_raw_scaling(written), (slope, inter), rtol=1e-7)
    assert type(written.header) is type(ref.header)  # NIfTI-2 stays NIfTI-2
    # codes: both set, to the code of the transform the source used (scanner = 1 when none)
    rq, rs = int(ref.header["qform_code"]), int(ref.header["sform_code"])
    expected_code = rs if rs > 0 else (rq if rq > 0 else 1)
    assert int(written.header["qform_code"]) == int(written.header["sform_code"]) == expected_code
    assert back.source.extra["space_code"] == expected_code


def test_scan_reads_header_only(shared_data):
    (info,) = scan(shared_data / NIB / "functional.nii")
    assert info.format == "nifti1"
    assert info.shape == (17, 21, 3, 20)
    assert info.spacing == pytest.approx((4.0, 4.0, 8.0))
    assert info.orientation == "".join(nib.aff2axcodes(nib.load(shared_data / NIB / "functional.nii").affine))
    assert info.extra["scl_slope"] == pytest.approx(0.0754069686)
    assert info.extra["dtype"] == "int16"


def test_monai_image_and_label_share_geometry_despite_codes(shared_data, tmp_path):
    base = shared_data / "MONAI/tests/testing_data"
    img, lab = read(base / "anatomical.nii"), read(base / "anatomical_label.nii.gz")
    assert (img.source.extra["qform_code"], img.source.extra["sform_code"]) == (2, 2)
    assert (lab.source.extra["qform_code"], lab.source.extra["sform_code"]) == (1, 0)
    assert img.geometry.allclose(lab.geometry, atol=1e-4)
    write(img, tmp_path / "img.nii.gz")
    write(lab.replace(is_label=True), tmp_path / "lab.nii.gz")
    a, b = nib.load(tmp_path / "img.nii.gz"), nib.load(tmp_path / "lab.nii.gz")
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert b.get_data_dtype() == np.uint8  # labels 0..max fit in uint8
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), np.asanyarray(nib.load(base / "anatomical_label.nii.gz").dataobj))


@pytest.mark.parametrize("name", ["nifti1.hdr", "nifti2.hdr"])
def test_header_only_pair_is_refused(shared_data, name):
    with pytest.raises(ReadError, match=r"header-only.*no matching \.img") as err:
        read(shared_data / NIB / name)
    assert name in str(err.value)


def test_analyze_header_is_refused_clearly(shared_data):
    with pytest.raises(ReadError, match="Analyze 7.5"):
        read(shared_data / NIB / "analyze.hdr")


# ------------------------------------------------------------------------------------ synthetic headers


def _save(tmp_path, data, name="x.nii.gz", affine=None, **header):
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]) if affine is None else affine)
    for key, value in header.items():
        img.header[key] = value
    path = tmp_path / name
    nib.save(img, path)
    return path


def test_pair_with_img_reads(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Pair(data, np.diag([1.0, 2.0, 3.0, 1.0]))
    nib.save(img, tmp_path / "p.hdr")
    vol = read(tmp_path / "p.hdr")
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_array_equal(read(tmp_path / "p.img").array, data)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 6, 2, 3)])
def test_2d_and_5d_are_refused(tmp_path, shape):
    path = _save(tmp_path, np.zeros(shape, np.uint8))
    with pytest.raises(ReadError, match=f"{len(shape)}D image"):
        read(path)


def test_trailing_singletons_and_vector_layout(tmp_path):
    a = read(_save(tmp_path, np.ones((4, 5, 6, 1), np.uint8), "a.nii"))
    assert a.shape == (4, 5, 6)
    data = np.random.default_rng(0).random((4, 5, 6, 1, 3)).astype(np.float32)
    b = read(_save(tmp_path, data, "b.nii"))
    assert b.shape == (4, 5, 6, 3)
    np.testing.assert_array_equal(b.array, data[:, :, :, 0, :])


def test_units_in_metres_become_mm(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.diag([0.001, 0.002, 0.003, 1.0]))
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "m.nii")
    vol = read(tmp_path / "m.nii")
    assert vol.spacing == pytest.approx((1.0, 2.0, 3.0))
    assert any("meter" in w for w in vol.source.warnings)


def test_no_orientation_codes_warns_and_uses_nibabel_fallback(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "z.nii")
    vol = read(tmp_path / "z.nii")
    np.testing.assert_array_equal(vol.affine, nib.load(tmp_path / "z.nii").affine)
    assert any("no orientation" in w for w in vol.source.warnings)


def test_disagreeing_qform_and_sform_warn(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.eye(4))
    img.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    shifted = np.eye(4)
    shifted[:3, 3] = [5.0, 0.0, 0.0]
    img.set_sform(shifted, code=1)
    nib.save(img, tmp_path / "d.nii")
    vol = read(tmp_path / "d.nii")
    np.testing.assert_array_equal(vol.affine, shifted)
    assert any("disagree" in w for w in vol.source.warnings)


def test_label_intent_and_rgb(tmp_path):
    img = nib.Nifti1Image(np.array([[[0, 1], [2, 3]]], np.uint8), np.eye(4))
    img.header.set_intent("label")
    nib.save(img, tmp_path / "l.nii")
    assert read(tmp_path / "l.nii").is_label
    rgb = np.zeros((2, 3, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 7
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii")
    vol = read(tmp_path / "rgb.nii")
    assert vol.shape == (2, 3, 4, 3)
    assert vol.array[..., 1].min() == 7 and vol.array[..., 0].max() == 0


def test_gzip_content_named_nii_reads_with_warning(tmp_path):
    path = _save(tmp_path, np.arange(60, dtype=np.int16).reshape(3, 4, 5), "x.nii")
    gz = tmp_path / "really_gz.nii"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    vol = read(gz)
    np.testing.assert_array_equal(vol.array, np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    assert any("gzip" in w for w in vol.source.warnings)
    plain = tmp_path / "plain.nii.gz"
    shutil.copy(path, plain)
    assert any("not gzip" in w for w in read(plain).source.warnings)


def test_read_is_single_copy_for_uncompressed(tmp_path):
    """The loaded array owns its buffer directly (no intermediate copy kept alive)."""
    data = np.random.default_rng(1).integers(-1000, 1000, (20, 30, 40)).astype(np.int16)
    vol = read(_save(tmp_path, data, "c.nii"))
    np.testing.assert_array_equal(vol.array, data)
    base = vol.array.base
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert base.nbytes == data.nbytes  # the one buffer that was read into


def test_geometry_round_trip_through_volume_api(tmp_path):
    """Permuted axes survive exactly; NIfTI-1 stores float32, so float64-only digits round (< 1e-7 relative)."""
    aff = np.array([[0.0, 0.0, -2.5, 10.0], [-0.75, 0.0, 0.0, 20.0], [0.0, 0.875, 0.0, -30.5], [0, 0, 0, 1]])
    vol = Volume(np.zeros((3, 4, 5), np.float32), Geometry(aff, (3, 4, 5)))
    write(vol, tmp_path / "g.nii")
    back = read(tmp_path / "g.nii")
    np.testing.assert_array_equal(back.affine, aff)
    assert back.geometry.orientation == vol.geometry.orientation == "PSL"
    dicom_like = aff.copy()
    dicom_like[:3, 3] = [-235.19999999999999, -226.80000000000001, -128.69]
    dicom_like[1, 0] = -0.810547
    write(Volume(np.zeros((3, 4, 5), np.int16), Geometry(dicom_like, (3, 4, 5))), tmp_path / "f.nii")
    np.testing.assert_allclose(read(tmp_path / "f.nii").affine, dicom_like, rtol=0, atol=3e-5)


def test_degenerate_sform_falls_back_to_qform(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_qform(np.diag([2.0, 3.0, 4.0, 1.0]), code=1)
    img.set_sform(np.diag([2.0, 3.0, 4.0, 1.0]), code=1)
    nib.save(img, tmp_path / "s.nii")
    raw = bytearray((tmp_path / "s.nii").read_bytes())
    raw[280:328] = bytes(48)  # srow_x, srow_y, srow_z = 0 while sform_code stays 1
    (tmp_path / "s.nii").write_bytes(bytes(raw))
    assert int(nib.load(tmp_path / "s.nii").header["sform_code"]) == 1
    vol = read(tmp_path / "s.nii")
    np.testing.assert_array_equal(vol.affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    assert any("degenerate" in w for w in vol.source.warnings)


def test_time_step_in_msec_is_kept_in_seconds(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.int16), np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0, 2500.0))
    img.header.set_xyzt_units("mm", "msec")
    nib.save(img, tmp_path / "ms.nii")
    vol = read(tmp_path / "ms.nii")
    assert vol.source.extra["time_step"] == pytest.approx(2.5)
    out = nib.load(write(vol, tmp_path / "s.nii"))
    assert out.header.get_xyzt_units()[1] == "sec" and out.header.get_zooms()[3] == pytest.approx(2.5)
