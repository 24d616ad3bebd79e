"""United Imaging (UIH) VFRAME grids, built from real classic series (no UIH sample is in ../shared/data).

The real Philips EPI (oblique, 3 volumes of 9 slices) and GE EPI (10 volumes; 12 of its 15 slices, giving
UIH's non-square 4x3 grid) are re-stored as one VFRAME file per volume (tiles in reverse slice order, no
top-level ImagePositionPatient). Reading them must give the original slices and geometry, dcm2niix's
reference conversion of the original, and what a live dcm2niix makes of the UIH files themselves.
Bogus private claims must be one-line errors naming the file, before any large allocation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.errors import ReadError
from medseg.geometry import reorient_to_canonical
from medseg.io.dicom import read_dicom, scan_dicom
from tests.io._uih_synth import source_volumes, vframe_dataset, write_vframe_series

PHILIPS = "dcm_qa_philips/In"
PHILIPS_REF = "dcm_qa_philips/Ref/EPI_asc_CLEAR_201.nii"
GE = "dcm_qa_nih/In/20180918GE/mr_0004"
DCM2NIIX = shutil.which("dcm2niix") or shutil.which("dcm2niix", path=str(Path(sys.executable).parent))


def _close_to_nifti(vol, img: nib.Nifti1Image) -> None:
    """MANIFEST rule: canonical reorientation, same shape, affine within 1e-3 mm, equal scaled values
    (within what dcm2niix's float32 scl_slope rounding allows)."""
    ours, aff = reorient_to_canonical(vol.array.astype(np.float64), vol.affine)
    theirs, raff = reorient_to_canonical(np.asarray(img.dataobj, dtype=np.float64), img.affine)
    assert ours.shape == theirs.shape
    assert np.abs(aff - raff).max() < 1e-3
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(theirs).max())))


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit-vr", "implicit-vr"])
def test_uih_vframe_equals_the_real_series_and_dcm2niix_reference(
    shared_data: Path, tmp_path: Path, implicit: bool
) -> None:
    paths = write_vframe_series(shared_data / PHILIPS, tmp_path / "uih", implicit=implicit)
    assert len(paths) == 3 and pydicom.dcmread(paths[0]).Rows == 192  # 9 tiles of 64x64 in a 3x3 grid
    assert "ImagePositionPatient" not in pydicom.dcmread(paths[0])
    uih = read_dicom(tmp_path / "uih")
    original = read_dicom(shared_data / PHILIPS)
    assert uih.shape == original.shape == (64, 64, 9, 3)
    np.testing.assert_array_equal(uih.array, original.array)
    np.testing.assert_allclose(uih.affine, original.affine, rtol=0, atol=1e-9)
    # the Philips private "precise" scale aside (dcm2niix applies it), values equal the reference's
    ss = original.source.extra["philips_scale_slope"][0]
    slope = original.source.rescale_slope
    precise = uih.replace(array=uih.array.astype(np.float64) / (slope * ss))
    _close_to_nifti(precise, nib.load(shared_data / PHILIPS_REF))
    info = scan_dicom(tmp_path / "uih")
    assert len(info) == 1 and info[0].extra["uih_grid"] and info[0].extra["readable"]


def test_uih_non_square_grid_is_four_d(shared_data: Path, tmp_path: Path) -> None:
    write_vframe_series(shared_data / GE, tmp_path / "uih", keep=12)  # 12 tiles: 4 columns x 3 rows
    assert pydicom.dcmread(tmp_path / "uih" / "00000000.dcm").pixel_array.shape == (192, 256)
    uih = read_dicom(tmp_path / "uih")
    original = read_dicom(shared_data / GE)
    assert uih.shape == (64, 64, 12, 10)
    np.testing.assert_array_equal(uih.array, original.array[:, :, :12])
    np.testing.assert_allclose(uih.affine, original.affine, rtol=0, atol=1e-9)


def test_one_uih_file_is_one_volume(shared_data: Path, tmp_path: Path) -> None:
    paths = write_vframe_series(shared_data / GE, tmp_path / "uih")
    one = read_dicom(paths[4])
    assert one.shape == (64, 64, 15)
    np.testing.assert_array_equal(one.array, read_dicom(shared_data / GE).array[..., 4])


def test_uih_private_block_found_by_its_creator(shared_data: Path, tmp_path: Path) -> None:
    slices = source_volumes(shared_data / PHILIPS)[1]
    ds = vframe_dataset(slices, creator_block=0x12)  # tags at (0065,1250)/(0065,1251)
    assert 0x00651250 in ds and 0x00651050 not in ds
    ds.save_as(tmp_path / "moved.dcm", enforce_file_format=True)
    original = read_dicom(shared_data / PHILIPS)
    np.testing.assert_array_equal(read_dicom(tmp_path / "moved.dcm").array, original.array[..., 1])


def test_uih_count_taken_from_the_sequence_when_the_tag_is_absent(shared_data: Path, tmp_path: Path) -> None:
    slices = source_volumes(shared_data / PHILIPS)[2]
    ds = vframe_dataset(slices)
    del ds[0x00651050]
    ds.save_as(tmp_path / "no_count.dcm", enforce_file_format=True)
    original = read_dicom(shared_data / PHILIPS)
    np.testing.assert_array_equal(read_dicom(tmp_path / "no_count.dcm").array, original.array[..., 2])
    single = vframe_dataset(slices[4:5])  # one slice: a 1x1 grid placed by its only item
    single.save_as(tmp_path / "single.dcm", enforce_file_format=True)
    one = read_dicom(tmp_path / "single.dcm")
    expected_origin = original.affine[:3, :3] @ [0, 0, 4] + original.affine[:3, 3]
    np.testing.assert_allclose(one.affine[:3, 3], expected_origin, atol=1e-6)


@pytest.mark.skipif(DCM2NIIX is None, reason="dcm2niix (PyPI) not installed")
@pytest.mark.parametrize(("src", "keep"), [(PHILIPS, None), (GE, 12)], ids=["philips-3x3", "ge-4x3"])
def test_uih_matches_live_dcm2niix(shared_data: Path, tmp_path: Path, src: str, keep: int | None) -> None:
    write_vframe_series(shared_data / src, tmp_path / "uih", keep=keep)
    (tmp_path / "out").mkdir()
    cmd = [str(DCM2NIIX), "-z", "n", "-b", "n", "-f", "ref", "-o", str(tmp_path / "out"), str(tmp_path / "uih")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    _close_to_nifti(read_dicom(tmp_path / "uih"), nib.load(tmp_path / "out" / "ref.nii"))


# --------------------------------------------------------------------------------------------------
# hostile private tags
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_volume(tmp_path_factory) -> list[pydicom.Dataset]:
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return source_volumes(SHARED_DATA / PHILIPS)[0]


def _bogus(
    slices: list[pydicom.Dataset],
    count: str | None = None,
    drop_items: int = 0,
    break_item: bool = False,
    no_sequence: bool = False,
    raw_count: bytes | None = None,
) -> pydicom.Dataset:
    ds = vframe_dataset(slices)
    if count is not None:
        ds[0x00651050].value = count
    if raw_count is not None:
        ds[0x00651050] = pydicom.DataElement(0x00651050, "UN", raw_count)
    seq = ds[0x00651051].value
    for _ in range(drop_items):
        seq.pop()
    if break_item:
        del seq[2].ImagePositionPatient
    if no_sequence:
        del ds[0x00651051]
    return ds


BOGUS = {
    "huge": (dict(count="1e12"), "more than the 192x192 image has pixels"),
    "negative": (dict(count="-9"), "whole number >= 1"),
    "zero": (dict(count="0"), "whole number >= 1"),
    "fraction": (dict(count="8.5"), "whole number >= 1"),
    "nan": (dict(count="NaN"), "whole number >= 1"),
    "text": (dict(raw_count=b"nine\x00"), "is not a number"),
    "many-values": (dict(count=["9", "9"]), "must be one number"),
    "too-many-for-items": (dict(count="16"), "claims 16 slices per volume but the (0065,1051) VFrame sequence has 9"),
    "grid-does-not-divide": (dict(count="25", drop_items=0), "do not divide"),
    "items-missing": (dict(drop_items=2), "claims 9 slices per volume but the (0065,1051) VFrame sequence has 7 items"),
    "item-without-position": (dict(break_item=True), "item 3 has no valid ImagePositionPatient"),
    "no-sequence": (dict(no_sequence=True), "without the (0065,1051) VFrame sequence"),
}


@pytest.mark.parametrize("case", sorted(BOGUS))
def test_bogus_uih_claims_are_one_line_errors(one_volume, tmp_path: Path, case: str) -> None:
    kwargs, expected = BOGUS[case]
    path = tmp_path / "bogus.dcm"
    _bogus(one_volume, **kwargs).save_as(path, enforce_file_format=True)
    with pytest.raises(ReadError) as err:
        read_dicom(path)
    message = str(err.value)
    assert expected in message and "bogus.dcm" in message and "\n" not in message
    # the listing (medseg info) reads the header and reports the same problem without raising
    (info,) = scan_dicom(path)
    assert not info.extra["readable"] and any(expected in w for w in info.warnings)


def test_bogus_uih_claim_on_the_command_line(one_volume, tmp_path: Path) -> None:
    path = tmp_path / "bogus.dcm"
    _bogus(one_volume, count="123456789").save_as(path, enforce_file_format=True)
    out = tmp_path / "out.nii.gz"
    run = subprocess.run([sys.executable, "-m", "medseg", "convert", str(path), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and not out.exists()
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bogus.dcm" in lines[0] and "(0065,1050)" in lines[0], run.stderr
