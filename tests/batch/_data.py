"""Helpers for the batch tests: real DICOM series from ../shared/data."""

from __future__ import annotations

import shutil
from pathlib import Path

TS_DICOM = "TotalSegmentator/tests/reference_files/example_ct_dicom"  # 20 CT slices, JPEG 2000, no UID
DCMQI_CT = "dcmqi/data/segmentations/ct-3slice"  # 3 GE CT slices with a SeriesInstanceUID
DERIVED_UID = "1.2.826.0.1.3680043.8.498.20260001"


def copy_two_series(shared_data: Path, dest: Path) -> Path:
    """Put two CT series in one folder ``dest``: dcmqi's real 3-slice GE CT, and a second series made
    from it (new Series/SOP Instance UIDs, series number 99, the image mirrored left-right) so the two
    series differ in their identities and their pixels. Small, uncompressed: quick to segment.
    """
    import numpy as np
    import pydicom

    dest.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(sorted((shared_data / DCMQI_CT).iterdir())):
        shutil.copy(src, dest / src.name)
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = DERIVED_UID
        ds.SOPInstanceUID = f"{DERIVED_UID}.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = 99
        ds.SeriesDescription = "mirrored copy"
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
        ds.save_as(dest / f"derived_{src.name}", enforce_file_format=True)
    return dest
