"""napari reader: DICOM folders/files/zips, NIfTI, NRRD/NHDR, MHA/MHD, through :func:`medseg.io.read`.

* :func:`get_reader` only looks at names and, for folders or files without a known suffix, at the first
  132 bytes of a few files (``DICM`` marker or a DICOM first element); it never raises and returns
  ``None`` for anything else.
* A folder (or zip) holding **several series opens each series as its own layer** (named
  ``"#<number> <description>"``), all placed in the same world frame so they overlay where they overlap;
  hide or delete the ones you do not need. Series that cannot be read are skipped with a warning naming
  them; only when none can be read does the reader raise.
* A DICOM SEG opens as a Labels layer (segment names and colours) on top of its referenced series,
  which must lie in the same folder.
* A **label map** (the one rule of :mod:`medseg.labels_detect`: integer values, few of them, and a label
  table or a ``*_seg*``/``*label*``/``*mask*`` name) opens as a Labels layer, with names and colours from
  ``X.json`` (medseg), ``X.ctbl`` (Slicer), ``X.txt`` (ITK-SNAP), the NIfTI header (TotalSegmentator) or
  TotalSegmentator's class map (:mod:`medseg.label_tables`): TotalSegmentator outputs, NRRD labels, medseg's
  own results.
* The manifest claims only these formats (no ``*`` pattern): a PNG never reaches this reader. DICOM files
  without a suffix are opened through their folder, or when named like UIDs (``1.2.840....``).
* Slices that do not form a regular grid (uneven spacing, missing slice, gantry tilt) are resampled onto
  a regular grid for display, with a warning; the CLI's default is to refuse such series.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["get_reader", "read_paths", "read_volumes", "as_label_map", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima", ".zip")
_MAX_PROBE = 64  # files probed for the DICM marker in a folder


def _stem(name: str) -> str:
    """File name without its image suffix (``ct.nii.gz`` -> ``ct``)."""
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _has_dicm(path: Path) -> bool:
    """``DICM`` marker, or a preamble-less first data element (medseg's own cheap DICOM test)."""
    from medseg.io.dicom_files import looks_like_dicom

    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return looks_like_dicom(head)


def _folder_has_dicom(folder: Path) -> bool:
    probed = 0
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            p = Path(root) / name
            if name.lower().endswith((".dcm", ".ima")) or _has_dicm(p):
                return True
            probed += 1
            if probed >= _MAX_PROBE:
                return False
    return False


def _looks_readable(path: Path) -> bool:
    name = path.name.lower()
    if path.is_dir():
        return _folder_has_dicom(path)
    if not path.is_file():
        return False
    if name.endswith(IMAGE_SUFFIXES):
        return True
    return _has_dicm(path)  # DICOM files without a .dcm suffix (often named by their UID)


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list] | None:
    """Return :func:`read_paths` if every path looks like something medseg reads, else ``None``. Never raises."""
    try:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths or not all(_looks_readable(Path(p)) for p in paths):
            return None
        return read_paths
    except Exception:  # a reader probe must never raise (npe2 contract)
        return None


def _series_name(volume: Any, fallback: str) -> str:
    src = volume.source
    parts = []
    if src.series_number is not None:
        parts.append(f"#{src.series_number}")
    if src.series_description:
        parts.append(str(src.series_description))
    if (src.extra or {}).get("part"):  # one part of a split DICOM series (echo, image type, ...)
        parts.append(f"({src.extra['part']})")
    return " ".join(parts) or fallback


def _read_one(path: Path, series: str | None = None) -> Any:
    from medseg.errors import GeometryError
    from medseg.io import read

    try:
        return read(path, series=series)
    except GeometryError as err:
        volume = read(path, series=series, irregular="resample")
        warnings.warn(f"{err}; resampled onto a regular grid for display.", stacklevel=2)
        return volume


def as_label_map(path: Path, volume: Any) -> Any:
    """``volume`` as a label map when :func:`medseg.labels_detect.label_map_reason` says it is one, with names
    and colours from :func:`medseg.label_tables.find_label_table` (else ``"label N"``, or the file's stem for
    a one-label mask); otherwise ``volume`` unchanged. A volume the reader already knows is a label map (a
    NIfTI with a label intent, as medseg writes) gets its names from the same tables."""
    from medseg.label_tables import find_label_table
    from medseg.labels import label_color
    from medseg.labels_detect import label_map_reason, label_values
    from medseg.types import Label

    if (volume.is_label and volume.labels) or volume.array.ndim != 3 or not path.is_file():
        return volume
    if not volume.is_label and label_map_reason(path, volume.array) is None:
        return volume
    values = label_values(volume.array)
    ids = ({int(v) for v in values} if values is not None else set()) - {0}
    table = find_label_table(path, ids=ids)
    if table is not None:
        labels = table[0]
    elif len(ids) == 1:
        (only,) = ids
        labels = (Label(only, _stem(path.name), label_color(only)),)
    else:
        labels = tuple(Label(i, f"label {i}", label_color(i)) for i in sorted(ids))
    array = volume.array
    if not np.issubdtype(array.dtype, np.integer):
        from medseg.labels import label_dtype

        array = array.astype(label_dtype(max(ids, default=1)))
    return volume.replace(array=array, is_label=True, labels=labels)


_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip")


def _is_seg(path: Path) -> bool:
    from medseg.io.dicom_seg import is_seg

    return is_seg(path)


def _read_seg_with_series(path: Path) -> list[Any]:
    """A DICOM SEG: its referenced series (found in the SEG's folder) and, on top, the segments as one
    label map with their names and colours."""
    from medseg.io.dicom_seg import read_seg

    labels = read_seg(path)
    ref_uid = labels.source.extra.get("referenced_series_uid")
    try:
        image = _read_one(path.parent, series=ref_uid)
    except Exception:  # noqa: BLE001 - read_seg already placed the SEG on this folder's only image series
        image = _read_one(path.parent)
    return [image, labels.replace(source=labels.source)]


def read_volumes(path: str | os.PathLike[str]) -> list[Any]:
    """Every volume at ``path``: one for a file or a single-series folder, one per series otherwise.

    A file that is a label map (:func:`as_label_map`) comes back with ``is_label=True`` and its labels.
    """
    from medseg.errors import ReadError, SeriesSelectionError

    p = Path(path)
    if p.is_file() and not p.name.lower().endswith(_VOLUME_SUFFIXES) and _is_seg(p):  # .dcm, none, or UID-named
        return _read_seg_with_series(p)
    try:
        return [as_label_map(p, _read_one(p))]
    except SeriesSelectionError as err:
        infos = list(err.series)
        if not infos:
            raise
    volumes, failures = [], []
    for info in infos:
        uid = getattr(info, "uid", None) or str(info)
        try:
            volumes.append(_read_one(p, series=uid))
        except ReadError as exc:
            failures.append(f"{uid}: {exc.message}")
    if failures:
        warnings.warn(f"{p}: skipped {len(failures)} series: " + "; ".join(failures), stacklevel=2)
    if not volumes:
        raise ReadError("none of its series could be read: " + "; ".join(failures), p)
    return volumes


def read_paths(path: str | Sequence[str]) -> list[tuple]:
    """napari reader function: a list of ``(data, kwargs, layer_type)`` tuples (see :mod:`._layers`)."""
    from ._layers import volume_to_layer_data

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out = []
    for p in paths:
        volumes = read_volumes(p)
        stem = _stem(Path(p).name)
        for vol in volumes:
            if len(volumes) > 1:
                name = _series_name(vol, stem)
            else:  # a DICOM series by its description, a file by its name
                name = (vol.source.series_description if vol.source.format == "dicom" else None) or stem
            out.append(volume_to_layer_data(vol, name=name))
    return out
