"""Bad DICOM input: each case gives a clear error naming the file and the problem (or, where the input is
usable, a clear warning). Synthetic series are built from pydicom's own test files in ``tmp_path``."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless

from medseg.errors import GeometryError, ReadError, SeriesSelectionError
from medseg.io.dicom import is_dicom_file, read_dicom, scan_dicom
from tests.io._dicom_synth import write_series


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --- files that are not (whole) DICOM -----------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_truncated_single_file_names_the_file(tmp_path: Path, name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(data[: len(data) * 2 // 3])  # cut inside the pixel data
    with pytest.raises(ReadError, match="truncated") as err:
        read_dicom(bad)
    assert str(bad) in str(err.value)


def test_truncated_header_names_the_file(tmp_path: Path) -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    bad = tmp_path / "head.dcm"
    bad.write_bytes(data[:400])  # preamble + part of the meta header
    with pytest.raises(ReadError) as err:
        read_dicom(bad)
    assert str(bad) in str(err.value)


def test_truncated_slice_in_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    write_series(tmp_path, [0.0, 1.0, 2.0, 3.0])
    victim = tmp_path / "slice_002.dcm"
    victim.write_bytes(victim.read_bytes()[:-200])
    (info,) = scan_dicom(tmp_path)
    assert any("truncated" in w and "slice_002.dcm" in w for w in info.warnings)
    with pytest.raises(ReadError, match="truncated") as err:
        read_dicom(tmp_path)
    assert "slice_002.dcm" in str(err.value)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="empty folder") as err:
        read_dicom(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "image.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))  # extension lies
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "volume.nii").write_bytes(b"\x5c\x01\x00\x00" + bytes(400))
    with pytest.raises(ReadError, match=r"no DICOM files found \(3 files checked\)"):
        scan_dicom(tmp_path)


def test_file_that_is_not_what_its_extension_says(tmp_path: Path) -> None:
    fake = tmp_path / "scan.dcm"
    fake.write_text("this is a text file, not DICOM\n" * 10)
    with pytest.raises(ReadError, match="not a DICOM file") as err:
        read_dicom(fake)
    assert str(fake) in str(err.value)
    assert not is_dicom_file(fake)
    assert not is_dicom_file(tmp_path / "missing.dcm")
    assert not is_dicom_file(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="no such file"):
        read_dicom(tmp_path / "nope")


def test_headerless_dicom_is_recognised(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    raw = tmp_path / "raw"
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"
    assert is_dicom_file(raw)
    assert read_dicom(raw).shape == (128, 128, 1)


# --- several series, sizes, duplicates ---------------------------------------------------------


def test_two_series_need_a_choice(tmp_path: Path) -> None:
    uid_a, _ = write_series(tmp_path / "a", [0.0, 1.0, 2.0], series_number=1, description="first")
    uid_b, _ = write_series(tmp_path / "b", [0.0, 2.0], series_number=7, description="second")
    with pytest.raises(SeriesSelectionError) as err:
        read_dicom(tmp_path)
    msg = str(err.value)
    assert uid_a in msg and uid_b in msg and "'first'" in msg and "#7" in msg
    assert {s.uid for s in err.value.series} == {uid_a, uid_b}
    assert read_dicom(tmp_path, series=uid_b).shape == (16, 16, 2)
    assert read_dicom(tmp_path, series=7).source.series_uid == uid_b
    assert read_dicom(tmp_path, series="1").shape == (16, 16, 3)  # a number, although "1" prefixes both UIDs
    assert read_dicom(tmp_path, series=uid_a[:-2]).source.series_uid == uid_a  # a unique prefix
    with pytest.raises(SeriesSelectionError, match="no series matches '99'"):
        read_dicom(tmp_path, series="99")


def test_different_sizes_in_one_uid_are_split(tmp_path: Path) -> None:
    uid, _ = write_series(tmp_path, [0.0, 1.0, 2.0], size=16)
    base = pydicom.dcmread(tmp_path / "slice_000.dcm")
    small = base.copy()
    small.SOPInstanceUID = pydicom.uid.generate_uid()
    small.InstanceNumber = 10
    small.Rows, small.Columns = 8, 8
    small.PixelData = np.zeros((8, 8), np.int16).tobytes()
    small.save_as(tmp_path / "small.dcm", enforce_file_format=True)
    infos = scan_dicom(tmp_path)
    assert [i.uid for i in infos] == [f"{uid}.s1", f"{uid}.s2"]
    assert [i.shape for i in infos] == [(16, 16, 3), (8, 8, 1)]
    assert "mixes matrix sizes: split into 2" in infos[0].warnings[0]
    with pytest.raises(SeriesSelectionError, match=r"\.s2"):
        read_dicom(tmp_path)
    with pytest.raises(SeriesSelectionError, match="2 series match"):
        read_dicom(tmp_path, series=uid)  # the bare UID is ambiguous
    vol = read_dicom(tmp_path, series=f"{uid}.s2")
    assert vol.shape == (8, 8, 1) and vol.source.series_uid == uid


def test_duplicate_positions_are_an_error(tmp_path: Path) -> None:
    write_series(tmp_path, [0.0, 1.0, 1.0, 2.0])
    with pytest.raises(GeometryError, match="duplicate slice positions") as err:
        read_dicom(tmp_path)
    assert "slice_001.dcm" in str(err.value) and "slice_002.dcm" in str(err.value)
    with pytest.raises(GeometryError, match="duplicate"):  # resampling cannot fix it
        read_dicom(tmp_path, irregular="resample")


def test_same_file_twice_is_deduplicated(tmp_path: Path) -> None:
    write_series(tmp_path / "s", [0.0, 1.0, 2.0])
    shutil.copy(tmp_path / "s" / "slice_001.dcm", tmp_path / "copy_of_1.dcm")
    vol = read_dicom(tmp_path)
    assert vol.shape == (16, 16, 3)
    assert any("duplicate copies" in w for w in vol.source.warnings)


# --- geometry ----------------------------------------------------------------------------------


def test_missing_slice_is_reported_and_resampled(tmp_path: Path) -> None:
    _, stored = write_series(tmp_path, [0.0, 2.0, 4.0, 8.0, 10.0])  # 6.0 missing
    (info,) = scan_dicom(tmp_path)
    assert any("missing slices: about 1 missing" in w for w in info.warnings)
    with pytest.raises(GeometryError, match="missing slices") as err:
        read_dicom(tmp_path)
    assert "--irregular resample" in str(err.value)
    vol = read_dicom(tmp_path, irregular="resample")
    assert vol.shape == (16, 16, 6) and vol.array.dtype == np.float32
    assert vol.spacing[2] == pytest.approx(2.0)
    # the new slice at 6 mm is the mean of its neighbours at 4 and 8 mm
    expected = (stored[2].astype(np.float64) + stored[3]) / 2 - 1024
    np.testing.assert_allclose(vol.array[:, :, 3], expected.T, atol=1e-3)
    np.testing.assert_allclose(vol.array[:, :, 4], stored[3].T - 1024.0)
    assert any("resampled onto a regular grid" in w for w in vol.source.warnings)


def test_non_uniform_spacing_is_reported(tmp_path: Path) -> None:
    write_series(tmp_path, [0.0, 1.0, 2.5, 3.0, 4.7])
    with pytest.raises(GeometryError, match="irregular slice spacing"):
        read_dicom(tmp_path)


def test_micrometre_jitter_is_not_flagged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = np.arange(12) * 1.25 + rng.uniform(-1e-6, 1e-6, 12)
    write_series(tmp_path, z.tolist(), xy_shift=[(float(d), -float(d)) for d in rng.uniform(-1e-6, 1e-6, 12)])
    (info,) = scan_dicom(tmp_path)
    assert info.warnings == () and not info.extra["irregular"]
    vol = read_dicom(tmp_path)
    assert vol.shape == (16, 16, 12) and vol.spacing[2] == pytest.approx(1.25, abs=1e-5)
    assert vol.source.warnings == ()


def test_gantry_tilt_is_reported_and_resampled(tmp_path: Path) -> None:
    # each slice 2 mm further in z is shifted by one row (0.661468 mm) in y: a tilted stack
    row = 0.661468
    n = 4
    base = np.arange(16 * 16, dtype=np.int16).reshape(16, 16)
    values = [np.roll(base, -k, axis=0) for k in range(n)]  # world content fixed: row J of slice k is J + k
    write_series(tmp_path, [2.0 * k for k in range(n)], xy_shift=[(0.0, row * k) for k in range(n)], values=values)
    with pytest.raises(GeometryError, match="gantry tilt") as err:
        read_dicom(tmp_path)
    assert "°" in str(err.value)
    vol = read_dicom(tmp_path, irregular="resample")
    assert vol.shape == (16, 16, n)
    # orthogonal grid: slice step along the normal only
    np.testing.assert_allclose(vol.affine[:3, 2], [0.0, 0.0, 2.0], atol=1e-9)
    # in world space the content is the same on every slice (away from the edge rows shifted in)
    for k in range(1, n):
        np.testing.assert_allclose(vol.array[:, k:, k], vol.array[:, k:, 0], atol=1e-3)
        assert not np.allclose(vol.array[:, :, k], vol.array[:, :, 0])  # the first rows were shifted in


# --- objects that are not images, decoders -------------------------------------------------------


def test_rtstruct_given_as_image(tmp_path: Path) -> None:
    path = get_testdata_file("rtstruct.dcm")
    with pytest.raises(ReadError, match="RTSTRUCT") as err:
        read_dicom(path)
    assert "not an image" in str(err.value)


def test_seg_given_as_image(shared_data: Path) -> None:
    seg = shared_data / "dcmqi" / "data" / "segmentations" / "liver.dcm"
    with pytest.raises(ReadError, match="DICOM SEG"):
        read_dicom(seg)
    (info,) = scan_dicom(seg)
    assert info.modality == "SEG" and info.extra["readable"] is False


def test_seg_built_with_highdicom_given_as_image(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    write_series(tmp_path / "ct", [0.0, 1.0])
    sources = [pydicom.dcmread(p) for p in _files(tmp_path / "ct")]
    mask = np.zeros((2, 16, 16), dtype=bool)
    mask[:, 4:8, 4:8] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="box",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", "Liver"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="medseg-test", manufacturer_model_name="t", software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(tmp_path / "seg.dcm")
    with pytest.raises(ReadError, match="DICOM SEG"):
        read_dicom(tmp_path / "seg.dcm")
    with pytest.raises(ReadError, match="series 99 is a DICOM SEG"):
        read_dicom(tmp_path, series=99)


def test_colour_image_is_a_clear_error() -> None:
    path = get_testdata_file("SC_rgb_small_odd.dcm")
    with pytest.raises(ReadError, match="colour DICOM images") as err:
        read_dicom(path)
    assert not isinstance(err.value, GeometryError)


def test_missing_decoder_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = get_testdata_file("MR_small_jp2klossless.dcm")
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})  # as if no JPEG 2000 plugin were installed
    (info,) = scan_dicom(path)
    assert any("pylibjpeg-openjpeg" in w for w in info.warnings)
    with pytest.raises(ReadError, match="install pylibjpeg and pylibjpeg-openjpeg") as err:
        read_dicom(path)
    assert str(path) in str(err.value)
    monkeypatch.undo()
    assert read_dicom(path).shape == (64, 64, 1)  # with the plugin it decodes


# --- filesystem and archives -------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="symlinks")
def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    write_series(tmp_path / "data", [0.0, 1.0, 2.0])
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "deeper").mkdir()
    (tmp_path / "data" / "deeper" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "data" / "self").symlink_to(tmp_path / "data" / "self")  # a file link to itself
    write_series(tmp_path / "elsewhere", [5.0, 6.0])  # outside the folder: must not be found via "up"
    vol = read_dicom(tmp_path / "data")
    assert vol.shape == (16, 16, 3)  # each file read once despite the loops
    loops = [w for w in vol.source.warnings if "symbolic link loop" in w]
    assert {Path(w.split(":")[0].removeprefix("skipped ")).name for w in loops} == {"loop", "up", "self"}
    with pytest.raises(ReadError, match="symbolic link loop"):
        read_dicom(tmp_path / "data" / "self")


def test_zip_with_traversal_entries(tmp_path: Path) -> None:
    write_series(tmp_path / "in", [0.0, 1.0])
    archive = tmp_path / "evil.zip"
    payload = (tmp_path / "in" / "slice_000.dcm").read_bytes()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in _files(tmp_path / "in"):
            zf.write(f, f"series/{f.name}")
        zf.writestr("../escaped.dcm", payload)
        zf.writestr("/abs/escaped2.dcm", payload)
    before = sorted(os.listdir(tmp_path))
    vol = read_dicom(archive)
    assert vol.shape == (16, 16, 2)  # the unsafe members were skipped, not stacked as duplicates
    warnings = " ".join(vol.source.warnings)
    assert "'../escaped.dcm'" in warnings and "'/abs/escaped2.dcm'" in warnings and "unsafe" in warnings
    assert sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path.parent / "escaped.dcm").exists()

    only_bad = tmp_path / "only_bad.zip"
    with zipfile.ZipFile(only_bad, "w") as zf:
        zf.writestr("../../x.dcm", payload)
    with pytest.raises(ReadError, match="unsafe name") as err:
        read_dicom(only_bad)
    assert str(only_bad) in str(err.value)


def test_corrupt_zip(tmp_path: Path) -> None:
    bad = tmp_path / "broken.zip"
    data = bytearray(b"PK\x03\x04" + bytes(100))
    bad.write_bytes(bytes(data))
    with pytest.raises(ReadError):
        read_dicom(bad)


def test_bad_irregular_option(tmp_path: Path) -> None:
    write_series(tmp_path, [0.0, 1.0])
    with pytest.raises(ValueError, match="irregular must be one of"):
        read_dicom(tmp_path, irregular="interpolate")
