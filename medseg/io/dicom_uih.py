"""United Imaging (UIH) "VFRAME" grids: one classic DICOM file holding a whole volume as a mosaic.

UIH stores fMRI/DWI volumes (one file per volume) the way Siemens stores mosaics, but with its own private
tags (dcm2niix's ``UIH/README.md``, information from UIH in dcm2niix issue 225):

* ImageType (0008,0008) contains ``VFRAME``;
* (0065,1050) "MR Number Of Slice In Volume" (DS): ``n`` slices, tiled row by row in a grid of
  ``ceil(sqrt(n))`` tile columns and ``ceil(n / columns)`` tile rows (a square grid of ``ceil(sqrt(n))``
  rows, as in Siemens mosaics, is accepted when the pixel matrix only fits that);
* (0065,1051) "MR VFrame Sequence": one item per slice, each with its own ImagePositionPatient (the
  position of that tile's first pixel, so no mosaic shift is applied, unlike Siemens) and acquisition time.
  The file itself has no top-level ImagePositionPatient.

Private tags are untrusted: every claim is checked against the pixel matrix and the sequence before a
single frame record is built, and an inconsistent one is a one-line :class:`ValueError` reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["UIH_SLICES_TAG", "UIH_VFRAME_SEQUENCE_TAG", "UihGrid", "is_vframe", "uih_vframe_grid"]

#: (0065,1050) MR Number Of Slice In Volume (DS)
UIH_SLICES_TAG = 0x00651050
#: (0065,1051) MR VFrame Sequence (SQ), one item per slice
UIH_VFRAME_SEQUENCE_TAG = 0x00651051


@dataclass(frozen=True)
class UihGrid:
    """Layout of one UIH VFRAME file: ``n`` tiles of ``tile_rows x tile_cols`` pixels in a grid of
    ``grid_rows x grid_cols`` tiles, tile ``t`` at grid row ``t // grid_cols``, column ``t % grid_cols``.
    ``positions[t]`` is tile ``t``'s ImagePositionPatient (LPS mm); ``times[t]`` its acquisition time
    (seconds) when the item gives one."""

    n: int
    grid_rows: int
    grid_cols: int
    tile_rows: int
    tile_cols: int
    positions: tuple[tuple[float, float, float], ...]
    times: tuple[float | None, ...]


def is_vframe(ds: Any) -> bool:
    """``True`` when ImageType (0008,0008) contains ``VFRAME``. Never raises."""
    try:
        values = ds.get("ImageType") or []
        if isinstance(values, (str, bytes)):
            values = [values]
        return any(str(v).strip().upper() == "VFRAME" for v in values)
    except Exception:  # noqa: BLE001 - a garbled ImageType is just "not VFRAME"
        return False


#: private creator of the UIH image block (0065,xx50/xx51); usually reserved at (0065,0010), hence 0065,10xx
UIH_CREATOR = "Image Private Header"


def _tag(ds: Any, fixed: int) -> int:
    """``fixed`` (0065,10xx) moved to the block the "Image Private Header" creator reserves, when the file
    reserves another block than 0x10 for it (as pydicom's ``private_block`` and GDCM look it up)."""
    for block in range(0x10, 0x100):
        el = ds.get(0x00650000 | block)
        if el is None:
            continue
        value = el.value.decode("ascii", "replace") if isinstance(el.value, (bytes, bytearray)) else el.value
        if str(value).strip(" \x00") == UIH_CREATOR:
            return 0x00650000 | (block << 8) | (fixed & 0xFF)
    return fixed


def _slice_count(ds: Any) -> int | None:
    """(0065,1050) as an integer, ``None`` when absent. Raises ValueError naming a value that is not one."""
    el = ds.get(_tag(ds, UIH_SLICES_TAG))
    if el is None:
        return None
    value = el.value
    if isinstance(value, (bytes, bytearray)):  # implicit VR or UN: the DS text itself
        value = bytes(value[:64]).decode("ascii", "backslashreplace").strip(" \x00")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("UIH (0065,1050) slices per volume is empty")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) != 1:
            raise ValueError(f"UIH (0065,1050) slices per volume must be one number, got {len(value)} values")
        value = value[0]
    text = str(value).strip()[:32]
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"UIH (0065,1050) slices per volume is not a number: {text!r}") from None
    if not math.isfinite(number) or number < 1 or not number.is_integer():
        raise ValueError(f"UIH (0065,1050) slices per volume must be a whole number >= 1, got {text!r}")
    return int(number)


def _items(ds: Any, n_max: int) -> list[Any] | None:
    """The (0065,1051) items, ``None`` when absent. A sequence stored as UN bytes (implicit VR file, or
    an unknown private VR) is parsed as implicit VR little endian, as DICOM encodes UN values."""
    el = ds.get(_tag(ds, UIH_VFRAME_SEQUENCE_TAG))
    if el is None:
        return None
    value = el.value
    if isinstance(value, (bytes, bytearray)):
        from pydicom.values import convert_SQ

        try:
            value = convert_SQ(bytes(value), True, True)
        except Exception as err:  # noqa: BLE001 - pydicom raises many types for corrupt bytes
            raise ValueError(f"UIH (0065,1051) VFrame sequence cannot be parsed ({type(err).__name__})") from None
    try:
        items = list(value)
    except TypeError:
        raise ValueError("UIH (0065,1051) VFrame sequence is not a sequence") from None
    if len(items) > n_max:
        raise ValueError(f"UIH (0065,1051) VFrame sequence has {len(items)} items, more than the image can hold")
    return items


def _position(item: Any, t: int) -> tuple[float, float, float]:
    try:
        raw = item.get("ImagePositionPatient")
        vals = tuple(float(v) for v in raw) if raw is not None else ()
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ValueError(
            f"UIH (0065,1051) VFrame sequence item {t + 1} has no valid ImagePositionPatient (3 finite numbers)"
        )
    return (vals[0], vals[1], vals[2])


def _time(item: Any, time_of: Callable[[Any], float | None] | None) -> float | None:
    if time_of is None:
        return None
    try:
        return time_of(item)
    except Exception:  # noqa: BLE001 - times only order volumes; a garbled one is just absent
        return None


def _layout(n: int, rows: int, cols: int) -> tuple[int, int]:
    """``(grid_rows, grid_cols)`` for ``n`` tiles in a ``rows x cols`` matrix, or a ValueError."""
    grid_cols = math.isqrt(n - 1) + 1  # ceil(sqrt(n)) without float rounding
    documented = -(-n // grid_cols)
    if grid_cols > cols or cols % grid_cols:
        raise ValueError(
            f"UIH (0065,1050) claims {n} slices per volume: {grid_cols} tile columns do not divide the "
            f"{cols} image columns"
        )
    for grid_rows in dict.fromkeys((documented, grid_cols)):
        if grid_rows <= rows and rows % grid_rows == 0:
            return grid_rows, grid_cols
    tried = f"neither {documented} nor {grid_cols} tile rows divide" if documented != grid_cols else (
        f"{grid_cols} tile rows do not divide")
    raise ValueError(f"UIH (0065,1050) claims {n} slices per volume: {tried} the {rows} image rows")


def uih_vframe_grid(ds: Any, time_of: Callable[[Any], float | None] | None = None) -> UihGrid | None:
    """Layout and per-tile positions of a UIH VFRAME file, or ``None`` when ``ds`` is not one (no
    ``VFRAME`` in ImageType, or neither private tag present).

    Args:
        ds: a parsed header (``pydicom.Dataset``; pixel data not needed).
        time_of: seconds of acquisition from one sequence item (``None``: times are not read).

    Raises:
        ValueError: the private tags contradict each other or the pixel matrix (one line, naming the tag):
            a slice count that is not a whole number, that the matrix cannot hold as a grid, or that
            differs from the number of sequence items; an item without a valid position; several slices
            without the position sequence.
    """
    if not is_vframe(ds):
        return None
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    except (TypeError, ValueError):
        return None
    if rows < 1 or cols < 1:
        return None
    n = _slice_count(ds)
    if n is not None and n > rows * cols:
        raise ValueError(f"UIH (0065,1050) claims {n} slices per volume, more than the {cols}x{rows} image has pixels")
    if n is not None:
        _layout(n, rows, cols)  # the claim must fit the matrix before the sequence is even looked at
    items = _items(ds, rows * cols)
    if n is None and items is None:
        return None
    if n is None:
        n = len(items or [])
        if n < 1:
            raise ValueError("UIH (0065,1051) VFrame sequence is empty")
    if items is None:
        if n == 1:
            return None  # one slice: the classic top-level position (if any) places it
        raise ValueError(
            f"UIH VFRAME grid of {n} slices without the (0065,1051) VFrame sequence that positions them"
        )
    if len(items) != n:
        raise ValueError(
            f"UIH (0065,1050) claims {n} slices per volume but the (0065,1051) VFrame sequence has {len(items)} items"
        )
    grid_rows, grid_cols = _layout(n, rows, cols)
    positions = tuple(_position(item, t) for t, item in enumerate(items))
    times = tuple(_time(item, time_of) for item in items)
    return UihGrid(n, grid_rows, grid_cols, rows // grid_rows, cols // grid_cols, positions, times)
