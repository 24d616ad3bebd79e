"""Helpers for the batch tests: real DICOM series from ../shared/data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TS_DICOM = "TotalSegmentator/tests/reference_files/example_ct_dicom"  # 20 CT slices, JPEG 2000, no UID
DCMQI_CT = "dcmqi/data/segmentations/ct-3slice"  # 3 GE CT slices with a SeriesInstanceUID
TS_SERIES_UID = "1.2.826.0.1.3680043.8.498.20260001"


def copy_two_series(shared_data: Path, dest: Path) -> Path:
    """Put two real CT series in one folder ``dest``.

    The TotalSegmentator series was anonymised without a SeriesInstanceUID; the copy gets one (only that
    header element changes; pixel data stay as stored) so the two series can be told apart.
    """
    import pydicom

    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted((shared_data / DCMQI_CT).iterdir()):
        shutil.copy(src, dest / src.name)
    for src in sorted((shared_data / TS_DICOM).iterdir()):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = TS_SERIES_UID
        ds.save_as(dest / src.name, enforce_file_format=True)
    return dest
