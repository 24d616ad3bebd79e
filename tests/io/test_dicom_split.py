"""One SeriesInstanceUID that mixes series numbers, echoes, image types or acquisitions is split into
sub-series ``UID.s1``, ``UID.s2``, ... (as dcm2niix writes separate volumes), and the user picks one with
``--series``; repeated and chunked acquisitions still stack. Real data: the Philips magnitude + field map
file of dcm_qa_enh (its two parts match dcm2niix's ``_e1`` and ``_e2_fieldmaphz`` references in
tests/io/test_dicom.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import SeriesSelectionError
from medseg.io.dicom import read_dicom, scan_dicom
from tests.io._dicom_synth import write_series


def _edit(folder: Path, **per_file: list) -> None:
    """Set attributes file by file (files in name order): ``EchoNumbers=[1, 1, 2, 2]`` ..."""
    files = sorted(folder.glob("*.dcm"))
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        for keyword, values in per_file.items():
            setattr(ds, keyword, values[k])
        ds.save_as(path, enforce_file_format=True)


def test_series_numbers_in_one_uid_are_split(tmp_path: Path) -> None:
    uid, _ = write_series(tmp_path, [0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    _edit(tmp_path, SeriesNumber=[3, 3, 3, 4, 4, 4])
    infos = scan_dicom(tmp_path)
    assert [(i.uid, i.number, i.shape) for i in infos] == [(f"{uid}.s1", 3, (16, 16, 3)), (f"{uid}.s2", 4, (16, 16, 3))]
    assert "mixes series numbers" in infos[0].warnings[0]
    assert read_dicom(tmp_path, series="4").source.extra["series_id"] == f"{uid}.s2"  # the number picks the part
    with pytest.raises(SeriesSelectionError, match="2 image series found; choose one with --series"):
        read_dicom(tmp_path)


def test_echoes_are_split_not_stacked_as_4d(tmp_path: Path) -> None:
    uid, stored = write_series(tmp_path, [0.0, 2.0, 4.0, 0.0, 2.0, 4.0])
    _edit(tmp_path, EchoNumbers=[1, 1, 1, 2, 2, 2], EchoTime=["4.9", "4.9", "4.9", "9.8", "9.8", "9.8"])
    infos = scan_dicom(tmp_path)
    assert [i.shape for i in infos] == [(16, 16, 3), (16, 16, 3)]
    assert [i.extra["part"] for i in infos] == ["echo 1, TE 4.9 ms", "echo 2, TE 9.8 ms"]
    with pytest.raises(SeriesSelectionError) as err:
        read_dicom(tmp_path, series=uid)  # the bare UID names both parts
    assert "(echo 2, TE 9.8 ms)" in str(err.value)
    second = read_dicom(tmp_path, series=f"{uid}.s2")
    np.testing.assert_array_equal(second.array[:, :, 0].T, stored[3] - 1024)  # CT template: intercept -1024


def test_magnitude_and_phase_are_split(tmp_path: Path) -> None:
    write_series(tmp_path, [0.0, 2.0, 0.0, 2.0])
    m, p = ["ORIGINAL", "PRIMARY", "M", "ND"], ["ORIGINAL", "PRIMARY", "P", "ND"]
    _edit(tmp_path, ImageType=[m, m, p, p])
    assert [i.extra["part"] for i in scan_dicom(tmp_path)] == ["magnitude", "phase"]


def test_partly_overlapping_acquisitions_are_split(tmp_path: Path) -> None:
    # acquisition 2 re-acquires the upper half of acquisition 1: not one volume, not a clean 4D
    uid, _ = write_series(tmp_path, [0.0, 2.0, 4.0, 6.0, 4.0, 6.0, 8.0], acquisition=[1, 1, 1, 1, 2, 2, 2])
    infos = scan_dicom(tmp_path)
    assert [(i.uid, i.shape) for i in infos] == [(f"{uid}.s1", (16, 16, 4)), (f"{uid}.s2", (16, 16, 3))]
    assert [i.extra["part"] for i in infos] == ["acquisition 1", "acquisition 2"]
    assert read_dicom(tmp_path, series=f"{uid}.s2").affine[2, 3] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("z", "acq", "shape"),
    [
        ([0.0, 2.0, 4.0] * 2, [1, 1, 1, 2, 2, 2], (16, 16, 3, 2)),  # repeated: the volumes of a 4D series
        ([0.0, 2.0, 4.0, 6.0], [1, 1, 2, 2], (16, 16, 4)),  # disjoint chunks of one volume (step-and-shoot)
        ([0.0, 2.0, 4.0, 6.0], [1, 2, 3, 4], (16, 16, 4)),  # one acquisition number per slice (some CT)
    ],
    ids=["4d", "chunks", "per-slice"],
)
def test_acquisitions_that_stack_stay_one_series(tmp_path: Path, z, acq, shape) -> None:
    write_series(tmp_path, z, acquisition=acq)
    (info,) = scan_dicom(tmp_path)
    assert info.shape == shape and "part" not in info.extra
    assert read_dicom(tmp_path).shape == shape


def test_philips_magnitude_and_field_map_are_two_series(shared_data: Path) -> None:
    folder = shared_data / "dcm_qa_enh" / "In" / "Philips"
    infos = scan_dicom(folder)
    assert [i.shape for i in infos] == [(64, 64, 32), (64, 64, 32)]
    assert [i.extra["part"] for i in infos] == ["TE 1.52 ms, magnitude", "TE 0 ms, field map"]
    with pytest.raises(SeriesSelectionError, match="2 series match '801'"):
        read_dicom(folder, series="801")  # one SeriesNumber for both parts: the id decides
    field_map = read_dicom(folder, series=infos[1].uid)
    assert field_map.source.rescale_intercept == -500.0  # the field map's own scaling (Hz), not the magnitude's
    for short in ("801.s2", ".s2"):  # series number + part, or the part of the only split UID
        assert read_dicom(folder, series=short).source.extra["series_id"] == infos[1].uid
    with pytest.raises(SeriesSelectionError, match="no series matches '7.s2'"):
        read_dicom(folder, series="7.s2")


def test_cli_lists_the_parts_and_takes_one(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "dcm_qa_enh" / "In" / "Philips"
    info = subprocess.run([sys.executable, "-m", "medseg", "info", str(folder)], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    assert "part:        TE 0 ms, field map" in info and "choose one with --series" in info
    out = tmp_path / "fmap.nii.gz"
    refused = subprocess.run([sys.executable, "-m", "medseg", "convert", str(folder), "-o", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and not out.exists()
    assert "--series" in refused.stderr and "(TE 0 ms, field map)" in refused.stderr
    subprocess.run([sys.executable, "-m", "medseg", "convert", str(folder), "--series", "801.s2", "-o", str(out)],
                   capture_output=True, text=True, timeout=120, check=True)
    import nibabel as nib

    assert nib.load(out).shape == (64, 64, 32)


def test_napari_reader_opens_each_part_under_its_own_name(shared_data: Path) -> None:
    from napari_plugin._reader import read_paths

    layers = read_paths(str(shared_data / "dcm_qa_enh" / "In" / "Philips"))
    assert [meta["name"] for _, meta, _ in layers] == ["#801 B0 NS (TE 1.52 ms, magnitude)",
                                                       "#801 B0 NS (TE 0 ms, field map)"]
