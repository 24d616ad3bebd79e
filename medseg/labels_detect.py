"""The one rule deciding whether a file or array is a label map rather than a scan.

Used by the napari reader (open as a Labels layer) and by ``medseg batch`` (skip label files that sit
beside scans). A volume is a label map when its values are **non-negative integers** (integer dtype, or a
float array holding only whole numbers, as some tools write), with **few distinct values**
(<= :data:`MAX_LABELS`), and at least one of:

* a label table beside it or in its header (``X.json``/``X.ctbl``/``X.txt``, a NIfTI label-table
  extension: see :func:`medseg.label_tables.find_label_table`);
* a label-map name: ``*_seg*``, ``*seg.*``, ``*label*``, ``*mask*``, ``*segmentation*``, ``*labels*``
  (case-insensitive, on the file name);
* very few values (<= :data:`MAX_UNNAMED_LABELS`), which no real scan has.

>>> rule = label_map_reason("example_seg.nii.gz")   # doctest: +SKIP
>>> rule
"integer values 0..117 (42 distinct) and a label table (NIfTI header label table (TotalSegmentator))"
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["MAX_LABELS", "MAX_UNNAMED_LABELS", "label_name_hint", "label_values", "label_map_reason", "is_label_map"]

#: more distinct values than this is never a label map (TotalSegmentator has 118 with background)
MAX_LABELS = 1024
#: a file with at most this many distinct values is a label map whatever its name
MAX_UNNAMED_LABELS = 8

_NAME_HINT = re.compile(r"(^|[._-])seg|label|mask", re.I)


def label_name_hint(path: str | os.PathLike[str]) -> bool:
    """``True`` when the file name looks like a label map's (``*_seg*``, ``*label*``, ``*mask*``, ...).

    >>> label_name_hint("case1_seg.nii.gz"), label_name_hint("brain1_label.nrrd"), label_name_hint("ct.nii.gz")
    (True, True, False)
    """
    return bool(_NAME_HINT.search(Path(path).name))


def label_values(array: np.ndarray, max_labels: int = MAX_LABELS) -> np.ndarray | None:
    """Sorted distinct values of ``array`` if it could be a label map (non-negative whole numbers, at most
    ``max_labels`` of them), else ``None``. Works in one pass (``bincount``) for integer arrays."""
    a = np.asarray(array)
    if a.size == 0:
        return None
    if a.dtype == bool:
        a = a.view(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            return None
        a = a.astype(np.int64)
    elif not np.issubdtype(a.dtype, np.integer):
        return None
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        return None
    if hi < 1 << 20:
        counts = np.bincount(a.ravel().astype(np.int64, copy=False), minlength=1)
        values = np.flatnonzero(counts)
    else:
        values = np.unique(a)
    return values if values.size <= max_labels else None


def label_map_reason(path: str | os.PathLike[str] | None, array: np.ndarray | None = None) -> str | None:
    """Why ``path`` (or ``array``) is a label map, or ``None`` if it is not one (see the module rule).

    Args:
        path: the file (its name and label tables are looked at); may be ``None`` with an ``array``.
        array: the voxel data if already loaded; otherwise the file is read with :func:`medseg.io.read`.

    Returns:
        A short reason such as ``"integer values 0..5 (3 distinct) and a label-map name"``, or ``None``.

    Raises:
        ReadError: ``array`` is not given and the file cannot be read.
        ValueError: neither ``path`` nor ``array`` is given.
    """
    if path is None and array is None:
        raise ValueError("label_map_reason needs a path or an array.")
    if array is None:
        from medseg.io import read

        array = read(Path(path)).array  # type: ignore[arg-type]
    values = label_values(array)
    if values is None:
        return None
    what = f"integer values {int(values.min())}..{int(values.max())} ({values.size} distinct)"
    if path is not None:
        from medseg.label_tables import find_label_table

        table = find_label_table(path, ids={int(v) for v in values})
        if table is not None and not table[1].startswith("TotalSegmentator class map"):
            return f"{what} and a label table ({table[1]})"
        if label_name_hint(path):
            return f"{what} and a label-map name"
    if values.size <= MAX_UNNAMED_LABELS:
        return f"{what}: only {values.size} distinct values"
    return None


def is_label_map(path: str | os.PathLike[str] | None, array: np.ndarray | None = None) -> bool:
    """``True`` when :func:`label_map_reason` finds a reason."""
    return label_map_reason(path, array) is not None
