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
* A NIfTI saved by medseg (label map + ``<stem>.json`` sidecar) reopens as a Labels layer with its names
  and colours.
* Slices that do not form a regular grid (uneven spacing, missing slice, gantry tilt) are resampled onto
  a regular grid for display, with a warning; the CLI's default is to refuse such series.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["get_reader", "read_paths", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima", ".zip")
_MAX_PROBE = 64  # files probed for the DICM marker in a folder


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


def _sidecar_labels(path: Path) -> tuple | None:
    """Labels from the ``<stem>.json`` sidecar medseg writes next to a label map, or ``None`` if there is none
    (or it is not a medseg label sidecar)."""
    import json

    from medseg.io.sidecar import sidecar_paths
    from medseg.types import Label

    side = sidecar_paths(path)["json"]
    if not side.is_file():
        return None
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
        entries = doc["labels"]
        labels = tuple(
            Label(int(e["id"]), str(e["name"]), tuple(int(c) for c in e.get("color", (255, 0, 0))))
            for e in entries
            if int(e["id"]) != 0
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"{side}: not a usable label sidecar ({exc}); opened as an image", stacklevel=2)
        return None
    return labels


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

    A NIfTI with medseg's ``<stem>.json`` label sidecar beside it is a label map with those names/colours.
    """
    import numpy as np

    from medseg.errors import ReadError, SeriesSelectionError

    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".dcm", "") and _is_seg(p):
        return _read_seg_with_series(p)
    try:
        volume = _read_one(p)
        labels = _sidecar_labels(p) if p.is_file() else None
        if labels is not None and np.issubdtype(volume.array.dtype, np.integer) and volume.array.ndim == 3:
            volume = volume.replace(is_label=True, labels=labels)
        return [volume]
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
        stem = Path(p).name
        for stem_suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
            if stem.lower().endswith(stem_suffix):
                stem = stem[: -len(stem_suffix)]
                break
        for vol in volumes:
            if len(volumes) > 1:
                name = _series_name(vol, stem)
            else:  # a DICOM series by its description, a file by its name
                name = (vol.source.series_description if vol.source.format == "dicom" else None) or stem
            out.append(volume_to_layer_data(vol, name=name))
    return out
