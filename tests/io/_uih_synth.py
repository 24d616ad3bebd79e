"""Build United Imaging (UIH) "VFRAME" files from a real classic series (no UIH sample is in ../shared/data).

Each volume of the source becomes one file: its slices tiled row by row into a grid of
``ceil(sqrt(n))`` columns and ``ceil(n / columns)`` rows (the layout UIH documents for (0065,1050)), no
top-level ImagePositionPatient, and one (0065,1051) "MR VFrame Sequence" item per tile carrying that
slice's ImagePositionPatient, SliceLocation and acquisition time, as dcm2niix's UIH README describes.
The source is taken apart with pydicom only (slices grouped by their position along the normal, volumes by
TemporalPositionIdentifier then InstanceNumber), so medseg's reader is not its own oracle.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid


def source_volumes(folder: Path) -> list[list[Dataset]]:
    """The classic single-frame files under ``folder`` as ``[volume][slice]`` datasets (with pixels),
    slices in ascending position along the slice normal."""
    datasets = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            datasets.append(pydicom.dcmread(path))
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder
            continue
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    by_pos: dict[float, list[Dataset]] = {}
    for ds in datasets:
        key = round(float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal), 2)
        by_pos.setdefault(key, []).append(ds)
    positions = sorted(by_pos)
    for key in positions:
        by_pos[key].sort(key=lambda d: (int(d.get("TemporalPositionIdentifier") or 0), int(d.InstanceNumber)))
    n_vol = len(by_pos[positions[0]])
    return [[by_pos[key][t] for key in positions] for t in range(n_vol)]


def grid_shape(n: int) -> tuple[int, int]:
    """``(tile rows, tile columns)`` of UIH's documented grid for ``n`` slices."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def vframe_dataset(
    slices: list[Dataset], order: list[int] | None = None, series_uid: str | None = None, creator_block: int = 0x10
) -> Dataset:
    """One UIH VFRAME dataset holding ``slices`` (tile ``t`` = ``slices[order[t]]``); its private creator
    reserves ``creator_block`` (0x10: the tags are (0065,1050)/(0065,1051))."""
    order = list(range(len(slices))) if order is None else order
    n = len(order)
    first = slices[order[0]]
    rows, cols = int(first.Rows), int(first.Columns)
    g_rows, g_cols = grid_shape(n)
    stored = [slices[k].pixel_array for k in order]
    mosaic = np.zeros((g_rows * rows, g_cols * cols), dtype=stored[0].dtype)
    for t, img in enumerate(stored):
        r, c = divmod(t, g_cols)
        mosaic[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] = img
    ds = copy.deepcopy(first)
    for kw in ("ImagePositionPatient", "SliceLocation"):
        if kw in ds:
            delattr(ds, kw)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "VFRAME"]
    ds.Manufacturer = "UIH"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    ds.Rows, ds.Columns = mosaic.shape
    ds.PixelData = mosaic.tobytes()
    for other in range(0x10, creator_block):  # other vendors' blocks first
        ds.add_new((0x0065, other), "LO", f"OTHER CREATOR {other}")
    block = ds.private_block(0x0065, "Image Private Header", create=True)
    block.add_new(0x50, "DS", str(n))
    items = []
    for k in order:
        src = slices[k]
        item = Dataset()
        date = str(src.get("AcquisitionDate") or src.get("ContentDate") or "20200101")
        time = str(src.get("AcquisitionTime") or src.get("ContentTime") or "000000")
        item.AcquisitionDate = date
        item.AcquisitionTime = time
        item.AcquisitionDateTime = date + time
        item.ImagePositionPatient = list(src.ImagePositionPatient)
        if "SliceLocation" in src:
            item.SliceLocation = src.SliceLocation
        items.append(item)
    block.add_new(0x51, "SQ", Sequence(items))
    return ds


def write_vframe_series(
    folder: Path, out: Path, *, keep: int | None = None, reverse_tiles: bool = True, implicit: bool = False
) -> list[Path]:
    """Write one VFRAME file per volume of the classic series in ``folder``; returns the paths.

    Args:
        keep: use only the first ``keep`` slices of each volume (to get a non-square grid).
        reverse_tiles: tile the slices in descending position, so order must come from the positions.
        implicit: implicit VR little endian (the private tags then arrive without their VR).
    """
    out.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    paths = []
    for t, slices in enumerate(source_volumes(folder)):
        slices = slices[:keep] if keep else slices
        order = list(range(len(slices)))[::-1] if reverse_tiles else None
        ds = vframe_dataset(slices, order, series_uid=uid)
        ds.InstanceNumber = t + 1
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        path = out / f"{t:08d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
