"""DICOM reading against the real reference conversions in ../shared/data and synthetic series.

Comparison rule (MANIFEST.md): reorient both images to the closest canonical (RAS) orientation, then
require the same shape, affine within 1e-3 mm and equal voxel values after scaling.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import GeometryError, SeriesSelectionError
from medseg.geometry import orientation_code, reorient, reorient_to_canonical
from medseg.io import dicom as dicom_mod
from medseg.io.dicom import is_dicom_file, read_dicom, scan_dicom
from tests.io._dicom_synth import ct_template, write_series

# (input relative to the data root, reference NIfTI, the sub-series (".s1", ...) of the input or None)
REFERENCE_PAIRS = [
    ("dcm_qa/In/Orientation/ax/axasc35", "dcm_qa/Ref/ax_asc_35sl_6.nii", None),
    ("dcm_qa/In/Orientation/ax/axasc36", "dcm_qa/Ref/ax_asc_36sl_9.nii", None),
    ("dcm_qa/In/Orientation/cor/corasc35", "dcm_qa/Ref/cor_asc_35sl_16.nii", None),
    ("dcm_qa/In/Orientation/sag/sagasc35", "dcm_qa/Ref/sag_asc_35sl_22.nii", None),
    ("dcm_qa/In/Orientation/axmb/AxAsc36mb2a", "dcm_qa/Ref/fMRI_MB_asc_25.nii", None),  # JPEG lossless
    ("dcm_qa/In/Orientation/axmb/AxInt36mb", "dcm_qa/Ref/fMRI_MB_int_26.nii", None),  # JPEG 2000
    ("dcm_qa_nih/In/20180918Si/mr_0003", "dcm_qa_nih/Ref/EPI_PE=AP_3.nii", None),
    ("dcm_qa_nih/In/20180918Si/mr_0004", "dcm_qa_nih/Ref/EPI_PE=PA_4.nii", None),
    ("dcm_qa_nih/In/20180918Si/mr_0005", "dcm_qa_nih/Ref/EPI_PE=RL_5.nii", None),
    ("dcm_qa_nih/In/20180918Si/mr_0006", "dcm_qa_nih/Ref/EPI_PE=LR_6.nii", None),
    ("dcm_qa_nih/In/20180918GE/mr_0004", "dcm_qa_nih/Ref/DCM2NIIX_regression_test_4.nii", None),  # 150 files
    ("dcm_qa_enh/In/Siemens/XA10", "dcm_qa_enh/Ref/Siemens_REST1_w_SMS_PF7-8_6.nii", None),
    # the Philips enhanced file holds a magnitude and a field map: split by echo/image type as dcm2niix does
    ("dcm_qa_enh/In/Philips", "dcm_qa_enh/Ref/Philips_WIP_B0_NS_801_e1.nii", ".s1"),
    ("dcm_qa_enh/In/Philips", "dcm_qa_enh/Ref/Philips_WIP_B0_NS_801_e2_fieldmaphz.nii", ".s2"),
    ("dcm_qa_philips/In", "dcm_qa_philips/Ref/EPI_asc_CLEAR_201.nii", None),
] + [(f"dcm_qa_ts/In/{n}.dcm", f"dcm_qa_ts/Ref/{n}.nii", None) for n in range(1, 10)]


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return reorient_to_canonical(array, affine)


@pytest.mark.parametrize(("inp", "ref", "part"), REFERENCE_PAIRS, ids=[Path(r).stem for _, r, _ in REFERENCE_PAIRS])
def test_matches_dcm2niix_reference(shared_data: Path, inp: str, ref: str, part: str | None) -> None:
    series = None
    if part is not None:
        (series,) = [s.uid for s in scan_dicom(shared_data / inp) if s.uid and s.uid.endswith(part)]
    vol = read_dicom(shared_data / inp, series=series)
    img = nib.load(shared_data / ref)
    ours = vol.array
    t = None
    ours_c, ours_aff = _canonical(ours.astype(np.float64), vol.affine)
    stored = np.asarray(img.dataobj.get_unscaled(), dtype=np.float64)
    ref_scaled = np.asarray(img.dataobj, dtype=np.float64)
    stored_c, ref_aff = _canonical(stored, img.affine)
    ref_c, _ = _canonical(ref_scaled, img.affine)

    assert ours_c.shape == ref_c.shape
    assert np.abs(ours_aff - ref_aff).max() < 1e-3

    # DICOM scaling: medseg = stored * RescaleSlope + RescaleIntercept of the same stored integers
    slope = vol.source.extra["rescale_slope_per_volume"]
    inter = vol.source.extra["rescale_intercept_per_volume"]
    vol_slope = slope[t or 0]
    vol_inter = inter[t or 0]
    assert ours_c.dtype == np.float64
    np.testing.assert_allclose(ours_c, stored_c * vol_slope + vol_inter, rtol=1e-6, atol=1e-6 * abs(vol_slope))

    # ... and equal to the reference's own scaled values. dcm2niix applies Philips' private "precise"
    # scaling (value / (RescaleSlope * MR Scale Slope)) except for Hz field maps.
    philips = vol.source.extra["philips_scale_slope"]
    expected, eq_slope, eq_inter = ours_c, vol_slope, vol_inter
    if philips is not None and "fieldmaphz" not in ref:
        ss = philips[t or 0]
        expected = ours_c / (vol_slope * ss)
        eq_slope, eq_inter = 1.0 / ss, vol_inter / (vol_slope * ss)
    # dcm2niix stores scl_slope/scl_inter rounded (float32, or 4 digits for Philips field maps): allow
    # exactly the error that rounding causes, plus float32 precision
    ref_slope = float(img.dataobj.slope)
    ref_inter = float(img.dataobj.inter)
    tol = (
        np.abs(stored_c).max() * abs(ref_slope - eq_slope)
        + abs(ref_inter - eq_inter)
        + 1e-6 * max(1.0, float(np.abs(ref_c).max()))
    )
    assert tol < 1e-3 * max(1.0, float(np.abs(ref_c).max()))  # the rounding is small
    np.testing.assert_allclose(expected, ref_c, rtol=0, atol=tol)


def test_transfer_syntaxes_give_one_array(shared_data: Path) -> None:
    arrays = [read_dicom(shared_data / f"dcm_qa_ts/In/{n}.dcm") for n in range(1, 10)]
    syntaxes = {v.source.extra["transfer_syntaxes"][0] for v in arrays}
    assert len(syntaxes) == 7  # explicit/implicit LE, big-endian, RLE, JPEG lossless, JPEG-LS, JPEG 2000
    for vol in arrays[1:]:
        np.testing.assert_array_equal(vol.array, arrays[0].array)
        np.testing.assert_array_equal(vol.affine, arrays[0].affine)


def test_totalsegmentator_series_has_exact_reference_affine(shared_data: Path) -> None:
    root = shared_data / "TotalSegmentator" / "tests" / "reference_files"
    vol = read_dicom(root / "example_ct_dicom")
    ref = nib.load(root / "example_seg_dicom.nii.gz")
    assert vol.shape == ref.shape
    arr, aff = reorient(vol.array, vol.affine, orientation_code(ref.affine))
    np.testing.assert_allclose(aff, ref.affine, rtol=0, atol=1e-6)
    assert arr.shape == ref.shape
    assert vol.array.dtype == np.int16 and vol.source.rescale_intercept == -1024.0
    assert vol.source.series_uid is None  # anonymised: empty SeriesInstanceUID


def test_dcmqi_ct_step_comes_from_positions(shared_data: Path) -> None:
    vol = read_dicom(shared_data / "dcmqi" / "data" / "segmentations" / "ct-3slice")
    assert vol.shape == (512, 512, 3)
    assert vol.spacing[2] == pytest.approx(1.0, abs=1e-6)  # SliceThickness says 1.25
    assert vol.array.dtype == np.int16
    assert vol.source.modality == "CT"


def test_dcmqi_seg_next_to_ct_does_not_count_as_a_series(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "dcmqi" / "data" / "segmentations"
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        shutil.copy(src / "ct-3slice" / name, tmp_path / name)
    shutil.copy(src / "liver.dcm", tmp_path / "liver.dcm")
    infos = scan_dicom(tmp_path)
    assert [i.modality for i in infos] == ["CT", "SEG"]
    assert infos[1].extra["readable"] is False and "DICOM SEG" in infos[1].warnings[0]
    assert read_dicom(tmp_path).source.modality == "CT"


def test_monai_ct_slices_are_irregular(shared_data: Path) -> None:
    folder = shared_data / "MONAI" / "tests" / "testing_data" / "CT_DICOM"
    (info,) = scan_dicom(folder)
    assert info.extra["irregular"] and any("missing slices" in w for w in info.warnings)
    with pytest.raises(GeometryError, match="regular grid"):
        read_dicom(folder)
    vol = read_dicom(folder, irregular="resample")
    assert vol.shape[2] > 4 and vol.spacing[2] == pytest.approx(1.25, abs=0.01)
    assert any("resampled" in w for w in vol.source.warnings)


def test_scan_lists_series_and_skips_non_dicom(shared_data: Path) -> None:
    infos = scan_dicom(shared_data / "dcm_qa" / "In")  # also holds a stray .nii
    assert sorted(i.number for i in infos) == [6, 9, 16, 22, 25, 26]
    by_number = {i.number: i for i in infos}
    assert by_number[6].shape == (64, 64, 35, 2) and by_number[6].n_files == 2
    assert by_number[22].orientation == "PIR"
    assert by_number[6].spacing == pytest.approx((3.25, 3.25, 3.6), abs=1e-6)
    with pytest.raises(SeriesSelectionError) as err:
        read_dicom(shared_data / "dcm_qa" / "In")
    assert len(err.value.series) == 6
    assert "ax_asc_35sl" in str(err.value) and "cor_asc_35sl" in str(err.value)
    vol = read_dicom(shared_data / "dcm_qa" / "In", series="16")
    assert vol.source.series_description == "cor_asc_35sl" and vol.shape == (64, 64, 35, 2)


def test_zip_reads_like_the_folder(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "dcm_qa_nih" / "In" / "20180918Si" / "mr_0003"
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"sub/{f.name}")
    before = sorted(p.name for p in tmp_path.iterdir())
    a, b = read_dicom(folder), read_dicom(archive)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted


DCM2NIIX = shutil.which("dcm2niix") or shutil.which("dcm2niix", path=str(Path(sys.executable).parent))


def _dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir()
    subprocess.run(
        [str(DCM2NIIX), "-z", "n", "-b", "n", "-f", "ref", "-o", str(out), str(folder)],
        check=True, capture_output=True, timeout=60,
    )
    return nib.load(out / "ref.nii")


def _assert_same(vol, ref: nib.Nifti1Image) -> None:
    ours, aff = _canonical(vol.array.astype(np.float64), vol.affine)
    theirs, raff = _canonical(np.asarray(ref.dataobj, dtype=np.float64), ref.affine)
    assert ours.shape == theirs.shape
    assert np.abs(aff - raff).max() < 1e-3
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.skipif(DCM2NIIX is None, reason="dcm2niix (PyPI) not installed")
def test_live_dcm2niix_on_synthetic_series(tmp_path: Path) -> None:
    write_series(tmp_path / "in", [10.0, 12.5, 15.0, 17.5, 20.0], size=32)
    _assert_same(read_dicom(tmp_path / "in"), _dcm2niix(tmp_path / "in", tmp_path / "out"))


@pytest.mark.skipif(DCM2NIIX is None, reason="dcm2niix (PyPI) not installed")
def test_live_dcm2niix_on_dcmqi_ct(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "dcmqi" / "data" / "segmentations" / "ct-3slice"
    _assert_same(read_dicom(folder), _dcm2niix(folder, tmp_path / "out"))


def test_single_file_values_and_dtype() -> None:
    ds = ct_template()
    from pydicom.data import get_testdata_file

    vol = read_dicom(get_testdata_file("CT_small.dcm"))
    assert vol.shape == (128, 128, 1)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array[:, :, 0], ds.pixel_array.T.astype(np.int32) - 1024)
    assert vol.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    assert vol.source.format == "dicom" and vol.source.modality == "CT"
    assert vol.source.rescale_slope == 1.0 and vol.source.rescale_intercept == -1024.0
    # LPS (-158.1, -179.0, -75.7) is RAS (158.1, 179.0, -75.7)
    np.testing.assert_allclose(vol.affine[:3, 3], [158.135803, 179.035797, -75.699997])
    assert is_dicom_file(get_testdata_file("CT_small.dcm"))


def test_slices_ordered_by_position_not_instance_or_name(tmp_path: Path) -> None:
    z = [30.0, 10.0, 20.0, 0.0]
    write_series(tmp_path, z, instance=[1, 2, 3, 4], names=["a.dcm", "b.dcm", "c.dcm", "d.dcm"])
    vol = read_dicom(tmp_path)
    # slice n was written with offset 100 * n: sorted by z the order is d(3), b(1), c(2), a(0)
    means = vol.array.reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(np.diff(means), [-200, 100, -200], atol=1e-6)
    assert vol.spacing[2] == pytest.approx(10.0)
    assert vol.affine[2, 3] == pytest.approx(0.0)  # first slice is the lowest z


def test_four_d_ordered_by_acquisition_number(tmp_path: Path) -> None:
    z = [0.0, 2.0, 4.0] * 2
    acq = [2, 2, 2, 1, 1, 1]  # the later files hold the first acquisition
    write_series(tmp_path, z, acquisition=acq, instance=[1, 2, 3, 4, 5, 6])
    vol = read_dicom(tmp_path)
    assert vol.shape == (16, 16, 3, 2)
    # files 3..5 (offset 300..500) are acquisition 1 → t = 0
    first = vol.array[..., 0].reshape(-1, 3).mean(axis=0)
    second = vol.array[..., 1].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(first - second, [300, 300, 300], atol=1e-6)


def test_non_integer_rescale_gives_float32(tmp_path: Path) -> None:
    _, stored = write_series(tmp_path, [0.0, 1.0], slope=0.5, intercept=-3.25)
    vol = read_dicom(tmp_path)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array[:, :, 1], stored[1].T * 0.5 - 3.25)


def test_pixel_data_parsed_once_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path, [float(z) for z in range(60)], size=8)
    calls: list[str] = []
    real = dicom_mod.decode_frames

    def counting(ds, frames):
        calls.append(frames[0].source.name)
        return real(ds, frames)

    monkeypatch.setattr(dicom_mod, "decode_frames", counting)
    vol = read_dicom(tmp_path)
    assert vol.shape == (8, 8, 60)
    assert len(calls) == 60 and len(set(calls)) == 60
