"""Case discovery: files, DICOM series wherever their files sit (several per folder, split over folders)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.batch.discover import CaseKind, discover_cases
from medseg.errors import ReadError

from ._data import DCMQI_CT, DERIVED_UID, TS_DICOM, copy_two_series


def _nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(path))


def test_files_and_two_series_in_one_folder(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "in"
    both = copy_two_series(shared_data, root / "dicom" / "mixed")
    (both / "notes.txt").write_text("not an image")
    _nifti(root / "a" / "t1.nii.gz")
    (root / "a" / "broken.nii.gz").write_bytes(b"garbage")
    _nifti(root / ".hidden" / "skip.nii.gz")
    (root / ".DS_Store").write_bytes(b"x")
    _nifti(root / "out" / "old_seg.nii.gz")  # OUTPUT_DIR inside INPUT_DIR: excluded

    found = discover_cases(root, exclude=[root / "out"])
    files = [c for c in found.cases if c.kind is CaseKind.FILE]
    dicoms = [c for c in found.cases if c.kind is CaseKind.DICOM]
    assert sorted(str(c.rel) for c in files) == ["a/broken.nii.gz", "a/t1.nii.gz"]
    assert len(dicoms) == 2
    assert {str(c.rel) for c in dicoms} == {"dicom/mixed"}
    assert len({c.series for c in dicoms}) == 2 and all(c.series for c in dicoms)
    assert len({c.series_label for c in dicoms}) == 2
    assert DERIVED_UID in {c.series for c in dicoms}
    assert all(c.problem is None for c in found.cases)
    assert [c.key for c in found.cases] == sorted(c.key for c in found.cases)


def test_series_split_over_folders_is_one_case(tmp_path: Path, shared_data: Path) -> None:
    files = sorted((shared_data / TS_DICOM).iterdir())
    root = tmp_path / "in"
    for i, src in enumerate(files):
        dest = root / "study" / ("part1" if i % 2 else "part2") / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    found = discover_cases(root)
    assert len(found.cases) == 1
    case = found.cases[0]
    assert case.kind is CaseKind.DICOM and str(case.rel) == "study"
    from medseg.io import read

    assert read(case.path, series=case.series).shape[2] == len(files)


def test_missing_input_folder(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="no such folder"):
        discover_cases(tmp_path / "nope")


def test_series_without_uid_sharing_a_folder_fails_clearly(tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "in" / "mixed"
    folder.mkdir(parents=True)
    for src in sorted((shared_data / TS_DICOM).iterdir()) + sorted((shared_data / DCMQI_CT).iterdir()):
        shutil.copy(src, folder / src.name)  # the TotalSegmentator series has no SeriesInstanceUID
    found = discover_cases(tmp_path / "in")
    assert len(found.cases) == 2
    no_uid = [c for c in found.cases if not c.series]
    assert len(no_uid) == 1 and "without SeriesInstanceUID" in no_uid[0].problem
    alone = tmp_path / "alone"
    shutil.copytree(shared_data / TS_DICOM, alone / "ct")
    (single,) = discover_cases(alone).cases
    assert single.problem is None and single.series is None  # alone in its folder: readable as is
