"""Build small synthetic DICOM series in a temporary folder from pydicom's own test file CT_small.dcm."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def ct_template() -> pydicom.Dataset:
    """pydicom's CT_small.dcm (128x128 int16, slope 1, intercept -1024, axial)."""
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def write_series(
    folder: Path,
    positions_z: Sequence[float],
    *,
    size: int = 16,
    series_uid: str | None = None,
    series_number: int = 1,
    description: str = "synthetic",
    xy_shift: Sequence[tuple[float, float]] | None = None,
    acquisition: Sequence[int] | None = None,
    instance: Sequence[int] | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    names: Sequence[str] | None = None,
    values: Sequence[np.ndarray] | None = None,
) -> tuple[str, list[np.ndarray]]:
    """Write one single-frame file per slice; returns the series UID and each slice's stored array.

    Slice ``n`` has ImagePositionPatient ``(x0 + dx, y0 + dy, z)`` and pixels ``base + 100 * n`` (rows, cols)
    cropped to ``size`` (or ``values[n]``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = ct_template()
    crop = base.pixel_array[:size, :size].astype(np.int16)
    uid = series_uid or generate_uid()
    x0, y0, _ = (float(v) for v in base.ImagePositionPatient)
    stored = []
    for n, z in enumerate(positions_z):
        ds = base.copy()
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = (instance[n] if instance is not None else n + 1)
        ds.AcquisitionNumber = acquisition[n] if acquisition is not None else 1
        dx, dy = xy_shift[n] if xy_shift is not None else (0.0, 0.0)
        ds.ImagePositionPatient = [f"{x0 + dx:.6f}", f"{y0 + dy:.6f}", f"{z:.7f}"]
        ds.SliceLocation = f"{z:.4f}"
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        arr = (values[n] if values is not None else crop + 100 * n).astype(np.int16)
        ds.Rows, ds.Columns = arr.shape
        ds.PixelData = arr.tobytes()
        stored.append(arr)
        name = names[n] if names is not None else f"slice_{n:03d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    return uid, stored
