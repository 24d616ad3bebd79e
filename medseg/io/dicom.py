"""DICOM series discovery and reading: file, folder (recursive) or zip → :class:`~medseg.types.Volume`.

Public entry points: :func:`is_dicom_file`, :func:`scan_dicom` and :func:`read_dicom`.

How a series is built:

* **Grouping.** Frames are grouped by SeriesInstanceUID (by SeriesNumber + description when the UID is
  empty). One UID that mixes orientations, matrix sizes, pixel spacings, SeriesNumbers, echoes
  (EchoNumbers, EchoTime or per-frame EffectiveEchoTime), image kinds (magnitude/phase/real/imaginary/
  field map, from ImageType/FrameType) or acquisitions that overlap in part is split, as dcm2niix writes
  separate volumes, into sub-series with ids ``<UID>.s1``, ``<UID>.s2``, ... (ordered by their lowest
  InstanceNumber, then frame number); each is read on its own and ``extra["part"]`` says what sets it
  apart. Acquisitions repeating the same positions stay one 4D series; disjoint ones, one volume.
* **Slice order** is the position along the slice normal (row cosine × column cosine), never
  InstanceNumber or file name. **Spacing** comes from those positions, never from SliceThickness.
* **4D.** When every slice position holds the same number ``T > 1`` of frames, the series is
  ``(i, j, k, t)``; frames at one position are ordered by AcquisitionNumber, TemporalPositionIdentifier
  (TemporalPositionIndex), acquisition time, InstanceNumber, then frame number. Unequal counts are an
  error (duplicate slice positions that are not a clean 4D split); exact copies of one SOP instance
  are dropped with a warning.
* **Irregular grids.** Non-uniform spacing, missing slices and gantry tilt (slices shifted in-plane
  along the stack) are detected with a tolerance of ``max(0.01 mm, 1e-3 × slice spacing)``, so
  rounding jitter is not flagged. ``irregular="error"`` raises :class:`~medseg.errors.GeometryError`;
  ``"resample"`` shifts tilted slices back in-plane and linearly interpolates along the slice normal
  onto a regular grid (float32 output), with a warning in ``SourceInfo.warnings``.
* **Intensities.** RescaleSlope/Intercept (per frame for enhanced files) are applied. Without scaling
  (slope 1, intercept 0) the stored type is kept (e.g. uint16); integer slopes and intercepts give the
  smallest of uint8, int8, int16, uint16, int32, uint32, int64 that holds the scaled values (CT: int16);
  any non-integer slope or intercept gives float32. Vendor-private scalings (e.g. Philips "precise"
  floating-point values, which dcm2niix applies by default) are *not* applied.
* **Storage.** Enhanced multi-frame (per-frame functional groups), Siemens mosaics (CSA header), UIH
  VFRAME grids (:mod:`medseg.io.dicom_uih`) and
  every transfer syntax pydicom has a decoder for (the pylibjpeg plugins add JPEG, JPEG-LS, JPEG 2000);
  a missing decoder is an error naming the package to install.
* **Selection.** ``series=`` is an exact series id, else a SeriesNumber (digits only), else
  ``NUMBER.sK`` / ``.sK`` (part ``K`` of a split UID with that SeriesNumber / the only split UID), else a
  unique prefix of a series id.

Arrays are ``(i=column, j=row, k=slice[, t])``; affines map them to RAS mm (:func:`medseg.geometry.dicom_affine`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from medseg.errors import GeometryError, ReadError, SeriesSelectionError
from medseg.geometry import dicom_affine, orientation_code
from medseg.io.base import Irregular, SeriesInfo
from medseg.io.dicom_files import DicomSource, list_sources, looks_like_dicom, open_sources
from medseg.io.dicom_frames import (
    Frame,
    claimed_frames,
    decode_frames,
    decoder_problem,
    frames_from_dataset,
    native_bytes,
    pixel_dataset,
    pixel_module_of,
    raw_dtype,
)
from medseg.io.limits import check_inflate, check_voxel_bytes
from medseg.types import Geometry, SourceInfo, Volume

__all__ = ["is_dicom_file", "scan_dicom", "read_dicom", "series_frames"]

#: Frames closer than this (mm) along the slice normal share a slice position.
POSITION_TOL_MM = 0.01
#: Relative tolerance on slice steps (fraction of the mean spacing); the absolute floor is POSITION_TOL_MM.
SPACING_REL_TOL = 1e-3
#: "resample" refuses to build more slices than this (a typo'd stack 2 m long at 0.5 mm, say).
MAX_RESAMPLED_SLICES = 4096

_INT_TYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64]


# --------------------------------------------------------------------------------------------------
# cheap check
# --------------------------------------------------------------------------------------------------


def is_dicom_file(path: str | PathLike[str]) -> bool:
    """``True`` if ``path`` is a DICOM file: ``DICM`` preamble, or a headerless dataset that parses
    with a SOPClassUID (or image rows/columns). Never raises.

    >>> is_dicom_file("/no/such/file")
    False
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        if len(head) >= 132 and head[128:132] == b"DICM":
            return True
        if not looks_like_dicom(head):
            return False
        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                 defer_size=max(os.path.getsize(path), 1 << 20))
        return bool(ds.get("SOPClassUID")) or ("Rows" in ds and "Columns" in ds)
    except Exception:  # noqa: BLE001 - a cheap probe must never raise
        return False


# --------------------------------------------------------------------------------------------------
# collecting frames
# --------------------------------------------------------------------------------------------------


@dataclass
class _Collected:
    frames: list[Frame]
    warnings: list[str]
    truncated: dict[str, str]
    n_sources: int
    n_dicom: int
    is_archive: bool


def _parse_header(fh: Any, size: int = 0) -> Any:
    """Header of a DICOM file (no pixel data). An element claiming more bytes than the whole file
    holds is skipped (pydicom's ``defer_size``) instead of being allocated at its claimed length."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(fh, stop_before_pixels=True, force=True, defer_size=max(size, 1 << 20))


def _collect(path: str) -> _Collected:
    listed = list_sources(path)
    single = len(listed.sources) == 1 and not listed.is_archive and listed.sources[0].path == path
    frames: list[Frame] = []
    notes = list(listed.warnings)
    truncated: dict[str, str] = {}
    n_dicom = 0
    with open_sources() as opener:
        for src in listed.sources:
            try:
                head = opener.read_head(src)
            except Exception as err:  # noqa: BLE001 - unreadable member/file: skip, say so
                notes.append(f"skipped {src.name}: cannot read ({err})")
                continue
            if not looks_like_dicom(head):
                if single:
                    raise ReadError("not a DICOM file (no DICM marker and no DICOM header)", src.name)
                continue
            has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
            try:
                with opener.open_header(src) as fh:
                    ds = _parse_header(fh, src.size)
                    pixel_offset = fh.tell()  # stop_before_pixels leaves the file at the pixel data tag
            except Exception as err:  # noqa: BLE001 - pydicom raises many types for corrupt input
                if single:
                    raise ReadError(f"truncated or corrupt DICOM header ({type(err).__name__}: {err})",
                                    src.name) from err
                if has_preamble:
                    notes.append(f"skipped {src.name}: truncated or corrupt DICOM header ({err})")
                continue
            if not has_preamble and not (ds.get("SOPClassUID") or ("Rows" in ds and "Columns" in ds)):
                if single:
                    raise ReadError("not a DICOM file (no DICM marker and no DICOM header)", src.name)
                continue
            n_dicom += 1
            budget = _frame_budget(ds, src, pixel_offset)
            if budget is not None and claimed_frames(ds) > max(budget, 1):
                truncated[src.name] = (
                    f"NumberOfFrames is {claimed_frames(ds)} but the {max(src.size - pixel_offset, 0)} bytes of pixel "
                    f"data hold at most {budget} frames: truncated file or corrupt header"
                )
            try:
                got = frames_from_dataset(ds, src, max_frames=budget)
                module = pixel_module_of(ds)
                for f in got:
                    f.pixel_offset, f.pixel_module = pixel_offset, module
            except Exception as err:  # noqa: BLE001 - malformed values
                if single:
                    raise ReadError(f"unusable DICOM header ({type(err).__name__}: {err})", src.name) from err
                notes.append(f"skipped {src.name}: unusable DICOM header ({err})")
                continue
            first = got[0]
            if first.sop_class == "1.2.840.10008.1.3.10":  # a DICOMDIR only indexes the other files
                continue
            if first.non_image is None and _is_native(first.transfer_syntax) and src.size:
                need = native_bytes(first)
                element_header = 8 if first.transfer_syntax == "1.2.840.10008.1.2" else 12
                available = src.size - pixel_offset - element_header
                if available < need:
                    truncated[src.name] = (
                        f"file is truncated or lacks pixel data: the pixel data needs {need} bytes, "
                        f"{max(available, 0)} remain in the file"
                    )
            frames.extend(got)
    return _Collected(frames, notes, truncated, len(listed.sources), n_dicom, listed.is_archive)


#: ImageOrientationPatient vectors within this of unit length and orthogonality are used as stored
IOP_EXACT_TOL = 1e-4
#: ... within this they are normalised with a warning (dcm2niix also accepts rounded DS values);
#: beyond it the orientation is refused
IOP_NORMALISE_TOL = 1e-2


def normalized_orientation(iop: tuple[float, ...]) -> tuple[tuple[float, ...], str | None]:
    """``(row cosines + column cosines, warning or None)`` for an ImageOrientationPatient.

    Vectors off unit length or orthogonality by at most :data:`IOP_EXACT_TOL` are kept; up to
    :data:`IOP_NORMALISE_TOL` they are made orthonormal (Gram-Schmidt) with a warning.

    Raises:
        ValueError: a vector is not unit length, or the two are not orthogonal, beyond the tolerance.
    """
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:6], dtype=np.float64)
    n_row, n_col = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    dot = float(row @ col) / max(n_row * n_col, 1e-12)
    worst = max(abs(n_row - 1), abs(n_col - 1), abs(dot))
    shown = "\\".join(f"{v:g}" for v in iop)
    if worst > IOP_NORMALISE_TOL or n_row < 1e-6 or n_col < 1e-6:
        raise ValueError(
            f"impossible ImageOrientationPatient {shown}: the row and column cosines must be orthogonal unit "
            f"vectors (lengths {n_row:.4g} and {n_col:.4g}, cosine between them {dot:.4g})"
        )
    if worst <= IOP_EXACT_TOL:
        return tuple(float(v) for v in iop), None
    row = row / n_row
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    note = (
        f"ImageOrientationPatient {shown} is off unit length/orthogonality by {worst:.2g}: normalised "
        f"(tolerance {IOP_NORMALISE_TOL:g})"
    )
    return tuple(float(v) for v in np.concatenate([row, col])), note


def _frame_budget(ds: Any, src: DicomSource, pixel_offset: int) -> int | None:
    """Most frames the bytes after the header can hold (native: a full frame each; encapsulated: an
    8-byte item header each), or ``None`` when the size is unknown."""
    if not src.size:
        return None
    available = max(src.size - pixel_offset, 0)
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        bits = int(ds.get("BitsAllocated") or 16) * int(ds.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError):
        return None
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    per_frame = max((rows * cols * max(bits, 1) + 7) // 8, 1) if (not ts or _is_native(ts)) else 8
    return available // per_frame


def _is_native(ts: str) -> bool:
    return ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


# --------------------------------------------------------------------------------------------------
# grouping and planning
# --------------------------------------------------------------------------------------------------


@dataclass
class _Series:
    """One (sub-)series and how its frames form a grid."""

    id: str | None
    uid: str
    frames: list[Frame]
    warnings: list[str] = field(default_factory=list)
    non_image: str | None = None
    fatal: str | None = None  # cannot be read at all (duplicates, truncated file, no geometry, ...)
    fatal_is_geometry: bool = False  # GeometryError (slice layout) rather than ReadError (file content)
    fatal_path: str | None = None  # the file the fatal problem is about, when it is one file
    problems: list[str] = field(default_factory=list)  # irregular grid: error or resample
    grid: list[list[Frame]] = field(default_factory=list)  # [k][t]
    affine: np.ndarray | None = None
    positions: np.ndarray | None = None  # (K,) mm along the normal
    offsets: np.ndarray | None = None  # (K, 3) in-plane shift of each slice origin vs slice 0 (LPS mm)
    regular_step: float | None = None  # mm between resampled slices when problems exist
    part: str | None = None  # what sets this part of a split SeriesInstanceUID apart (echo, image type, ...)

    @property
    def first(self) -> Frame:
        return self.frames[0]

    @property
    def shape(self) -> tuple[int, ...]:
        if self.non_image or not self.grid:
            return ()
        k, t = len(self.grid), len(self.grid[0])
        base = (self.first.cols, self.first.rows, k)
        return base + ((t,) if t > 1 else ())

    @property
    def n_files(self) -> int:
        return len({f.source.name for f in self.frames})


def _orientation_close(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.max(np.abs(np.subtract(a, b))) < 1e-3)


def _split_key_matches(f: Frame, rep: Frame) -> bool:
    """``f`` can be stacked with ``rep``: same matrix, orientation, pixel spacing, SeriesNumber, echo and
    image kind (magnitude/phase/field map)."""
    if (f.rows, f.cols, f.mosaic_grid > 0) != (rep.rows, rep.cols, rep.mosaic_grid > 0):
        return False
    if not _orientation_close(f.iop, rep.iop):
        return False
    if (f.pixel_spacing is None) != (rep.pixel_spacing is None):
        return False
    if f.pixel_spacing is not None and rep.pixel_spacing is not None:
        if np.max(np.abs(np.subtract(f.pixel_spacing, rep.pixel_spacing))) > 1e-4:
            return False
    if (f.series_number, f.echo_number, f.image_kind) != (rep.series_number, rep.echo_number, rep.image_kind):
        return False
    if (f.echo_time is None) != (rep.echo_time is None):
        return False
    return f.echo_time is None or rep.echo_time is None or abs(f.echo_time - rep.echo_time) <= 1e-3


def _acquisition_parts(frames: list[Frame]) -> list[list[Frame]] | None:
    """Frames split by AcquisitionNumber when the acquisitions cannot be stacked together, else ``None``.

    Acquisitions that repeat the same slice positions are the volumes of a 4D series, and acquisitions
    at disjoint positions are chunks of one volume (step-and-shoot CT), so both stay together; only
    acquisitions that overlap in part (e.g. a re-acquired half of a volume) are split. An acquisition of a
    single frame (some CT number every slice) never is.
    """
    parts: dict[int, list[Frame]] = defaultdict(list)
    for f in frames:
        if f.acquisition is None or f.ipp is None or f.iop is None:
            return None
        parts[f.acquisition].append(f)
    if len(parts) < 2 or min(len(p) for p in parts.values()) < 2:
        return None
    iop = np.asarray(frames[0].iop, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    if np.linalg.norm(normal) < 1e-6:
        return None
    normal /= np.linalg.norm(normal)
    sets = [
        frozenset(int(v) for v in np.round(np.array([f.ipp for f in p], dtype=np.float64) @ normal / POSITION_TOL_MM))
        for p in parts.values()
    ]
    if all(x == sets[0] for x in sets):
        return None
    if sum(len(x) for x in sets) == len(frozenset().union(*sets)):
        return None
    return [parts[a] for a in sorted(parts)]


def _split_reasons(groups: list[list[Frame]]) -> str:
    """What differs between the representatives of the parts of one SeriesInstanceUID."""
    reps = [g[0] for g in groups]
    checks = [
        ("orientations", lambda f: tuple(round(v, 3) for v in f.iop) if f.iop else None),
        ("matrix sizes", lambda f: (f.rows, f.cols)),
        ("pixel spacings", lambda f: tuple(round(v, 4) for v in f.pixel_spacing) if f.pixel_spacing else None),
        ("series numbers", lambda f: f.series_number),
        ("echoes", lambda f: (f.echo_number, None if f.echo_time is None else round(f.echo_time, 3))),
        ("image types", lambda f: f.image_kind),
        ("acquisitions", lambda f: f.acquisition),
    ]
    found = [name for name, key in checks if len({key(f) for f in reps}) > 1]
    return ", ".join(found) or "acquisitions"


def _part_label(f: Frame, reasons: str) -> str:
    """Short text naming what sets one part of a split SeriesInstanceUID apart (only what differs)."""
    bits = []
    if "echoes" in reasons:
        if f.echo_number is not None:
            bits.append(f"echo {f.echo_number}")
        if f.echo_time is not None:
            bits.append(f"TE {f.echo_time:g} ms")
    if "image types" in reasons and f.image_kind:
        bits.append(f.image_kind.lower().replace("_", " "))
    if "acquisitions" in reasons and f.acquisition is not None:
        bits.append(f"acquisition {f.acquisition}")
    return ", ".join(bits)


def _group(frames: list[Frame]) -> list[_Series]:
    by_uid: dict[Any, list[Frame]] = defaultdict(list)
    for f in frames:
        key = f.series_uid if f.series_uid else ("", f.series_number, f.description)
        by_uid[key].append(f)
    out: list[_Series] = []
    for key, members in by_uid.items():
        uid = key if isinstance(key, str) else ""
        non_image = [f for f in members if f.non_image]
        images = [f for f in members if not f.non_image]
        if non_image:
            out.append(_Series(uid or None, uid, non_image, non_image=non_image[0].non_image))
        groups: list[list[Frame]] = []
        for f in images:
            for g in groups:
                if _split_key_matches(f, g[0]):
                    g.append(f)
                    break
            else:
                groups.append([f])
        groups = [part for g in groups for part in (_acquisition_parts(g) or [g])]
        groups.sort(key=lambda g: (
            min((f.instance for f in g if f.instance is not None), default=0),
            min((f.frame for f in g if f.frame is not None), default=0),
            -len(g),
        ))
        if len(groups) == 1:
            out.append(_Series(uid or None, uid, groups[0]))
        elif groups:
            reasons = _split_reasons(groups)
            note = (
                f"SeriesInstanceUID {uid or '(none)'} mixes {reasons}: "
                f"split into {len(groups)} sub-series {uid}.s1 ... {uid}.s{len(groups)}"
            )
            for n, g in enumerate(groups, start=1):
                sub = _Series(f"{uid}.s{n}" if uid else f"s{n}", uid, g, warnings=[note])
                sub.part = _part_label(g[0], reasons) or None
                out.append(sub)
    out.sort(key=lambda s: (s.non_image is not None, s.first.series_number if s.first.series_number is not None
                            else 1 << 30, s.id or ""))
    return out


def _fail(s: _Series, message: str, geometry: bool = True, path: str | None = None) -> None:
    """Record the first reason the series cannot be read (GeometryError if ``geometry``, else ReadError),
    and the one file it is about, if any."""
    if s.fatal is None:
        s.fatal, s.fatal_is_geometry, s.fatal_path = message, geometry, path


def _plan(s: _Series, truncated: dict[str, str]) -> None:
    """Fill in the grid, affine and any problems of an image series (headers only, no pixels); an
    affine that is not finite or has a zero axis (absurd spacings or positions) is a failure."""
    _plan_grid(s, truncated)
    if s.non_image or s.affine is None:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        cols = np.linalg.norm(s.affine[:3, :3], axis=0) if np.all(np.isfinite(s.affine)) else None
    bad_positions = s.positions is not None and not np.all(np.isfinite(s.positions))
    if cols is None or not np.all(np.isfinite(cols)) or cols.min() < 1e-6 or cols.max() > 1e6 or bad_positions:
        _fail(
            s,
            "impossible geometry: voxel sizes or slice positions are zero, not finite or absurd "
            f"(PixelSpacing {_first_spacing(s)}, slice step from ImagePositionPatient/SpacingBetweenSlices)",
            geometry=False,
            path=s.first.source.name,
        )
        s.affine = None
        s.grid = []


def _first_spacing(s: _Series) -> str:
    sp = s.first.pixel_spacing
    return "\\".join(f"{v:g}" for v in sp) if sp else "absent"


def _plan_grid(s: _Series, truncated: dict[str, str]) -> None:
    """Impossible values, orientation, slice order, spacing and irregularities of one series."""
    if s.non_image:
        return
    bad = sorted({f.source.name for f in s.frames if f.source.name in truncated})
    if bad:
        _fail(s, truncated[bad[0]], geometry=False, path=bad[0])
        s.warnings.append(f"{bad[0]}: {truncated[bad[0]]}")
    first = s.first
    if first.samples != 1:
        _fail(s, f"colour DICOM images ({first.samples} samples per pixel) are not supported",
              geometry=False, path=first.source.name)
        return
    photometric = first.pixel_module.get("PhotometricInterpretation") if first.pixel_module is not None else None
    if photometric == "MONOCHROME1":
        s.warnings.append("MONOCHROME1: viewers show these values inverted; medseg keeps the (rescaled) stored values")
    # drop exact duplicates of one SOP instance (the same file copied twice)
    seen: set[tuple] = set()
    unique: list[Frame] = []
    for f in s.frames:
        key = (f.sop_instance, f.frame, f.tile)
        if f.sop_instance and key in seen:
            continue
        seen.add(key)
        unique.append(f)
    if len(unique) < len(s.frames):
        s.warnings.append(f"ignored {len(s.frames) - len(unique)} duplicate copies of the same SOP instance")
        s.frames = unique
        first = s.first
    bad_values = [f for f in s.frames if f.problem]
    if bad_values:
        _fail(s, bad_values[0].problem or "", geometry=False, path=bad_values[0].source.name)
        return
    if first.iop is not None:
        try:
            iop, note = normalized_orientation(first.iop)
        except ValueError as err:
            _fail(s, str(err), geometry=False, path=first.source.name)
            return
        if note:
            s.warnings.append(note)
        for f in s.frames:
            f.iop = iop
        first = s.first
    spacing_in_plane = first.pixel_spacing
    if spacing_in_plane is None:
        spacing_in_plane = (1.0, 1.0)
        s.warnings.append("no PixelSpacing: assuming 1 mm pixels")
    missing = [f for f in s.frames if f.iop is None or f.ipp is None]
    if missing:
        if len(s.frames) == 1:
            s.warnings.append("no ImagePositionPatient/ImageOrientationPatient: using an identity orientation")
            s.grid = [[first]]
            s.positions = np.zeros(1)
            s.offsets = np.zeros((1, 3))
            s.affine = dicom_affine((0, 0, 0), (1, 0, 0, 0, 1, 0), spacing_in_plane, (0, 0, first.slice_gap or 1.0))
            return
        _fail(
            s,
            f"{len(missing)} of {len(s.frames)} frames have no ImagePositionPatient/ImageOrientationPatient "
            f"(e.g. {missing[0].source.name}): slices cannot be ordered"
        )
        return
    iop = np.asarray(first.iop, dtype=np.float64)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        _fail(s, f"invalid ImageOrientationPatient {first.iop}")
        return
    normal /= norm
    ipps = np.array([f.ipp for f in s.frames], dtype=np.float64)
    d = ipps @ normal
    order = np.argsort(d, kind="stable")
    clusters: list[list[int]] = []
    for idx in order:
        if clusters and d[idx] - d[clusters[-1][0]] <= POSITION_TOL_MM:
            clusters[-1].append(int(idx))
        else:
            clusters.append([int(idx)])
    counts = [len(c) for c in clusters]
    if len(set(counts)) > 1:
        many = [c for c in clusters if len(c) > min(counts)]
        example = ", ".join(s.frames[i].source.name for i in many[0][:3])
        _fail(
            s,
            f"duplicate slice positions: {len(many)} of {len(clusters)} positions hold {max(counts)} frames, "
            f"others {min(counts)} (not a clean 4D series); e.g. at {d[many[0][0]]:.3f} mm along the normal: "
            f"{example}"
        )
        return
    for c in clusters:
        spread = np.max(np.linalg.norm(ipps[c] - ipps[c[0]], axis=1))
        if spread > max(POSITION_TOL_MM, 1e-3):
            _fail(
                s,
                f"frames at the same slice position have different in-plane origins (up to {spread:.3f} mm apart), "
                f"e.g. {s.frames[c[0]].source.name}"
            )
            return
    s.grid = [sorted((s.frames[i] for i in c), key=Frame.sort_key) for c in clusters]
    origins = np.array([ipps[c[0]] for c in clusters])
    pos = origins @ normal
    s.positions = pos
    rel = origins - origins[0]
    s.offsets = rel - np.outer(rel @ normal, normal)
    k = len(clusters)
    if k == 1:
        gap = abs(first.slice_gap or 0.0)
        if not gap:
            gap = 1.0
            s.warnings.append("single slice without SliceThickness/SpacingBetweenSlices: assuming 1 mm")
        s.affine = dicom_affine(origins[0], first.iop, spacing_in_plane, normal * gap)
        return
    steps = np.diff(pos)
    mean = (pos[-1] - pos[0]) / (k - 1)
    tol = max(POSITION_TOL_MM, SPACING_REL_TOL * mean)
    median = float(np.median(steps))
    if np.max(np.abs(steps - mean)) > tol:
        ratio = steps / median
        gaps = np.round(ratio)
        is_missing = (gaps >= 2) & (np.abs(ratio - gaps) * median <= max(tol, 0.05 * median))
        others = np.abs(steps - median) > tol
        if np.all(~others | is_missing) and np.any(is_missing):
            n_missing = int(np.sum(gaps[is_missing] - 1))
            where = ", ".join(f"{pos[i]:.2f}–{pos[i + 1]:.2f} mm" for i in np.flatnonzero(is_missing)[:3])
            s.problems.append(
                f"missing slices: about {n_missing} missing (gaps at {where} along the normal; "
                f"usual step {median:.4g} mm)"
            )
        else:
            s.problems.append(
                f"irregular slice spacing: steps from {steps.min():.4g} to {steps.max():.4g} mm "
                f"(median {median:.4g} mm)"
            )
    shift = np.linalg.norm(s.offsets, axis=1)
    extent = pos[-1] - pos[0]
    if shift.max() > max(POSITION_TOL_MM, SPACING_REL_TOL * extent):
        angle = math.degrees(math.atan2(shift[-1], extent))
        tag = f"; GantryDetectorTilt {first.gantry_tilt:g}°" if first.gantry_tilt else ""
        s.problems.append(
            f"gantry tilt / sheared stack: slice origins drift {shift.max():.3g} mm in-plane over "
            f"{extent:.4g} mm (about {angle:.2f}°{tag})"
        )
    if s.problems:
        step = median if median > tol else mean
        n_out = int(round(extent / step)) + 1
        s.regular_step = extent / (n_out - 1)
        s.affine = dicom_affine(origins[0], first.iop, spacing_in_plane, normal * s.regular_step)
        s.warnings.extend(s.problems)
    else:
        s.affine = dicom_affine(origins[0], first.iop, spacing_in_plane, normal * mean)


def _info(s: _Series, path: str, extra_warnings: list[str]) -> SeriesInfo:
    first = s.first
    shape = s.shape
    spacing: tuple[float, ...] = ()
    orient = None
    if s.affine is not None and shape:
        spacing = tuple(float(x) for x in np.linalg.norm(s.affine[:3, :3], axis=0))
        if s.problems and s.positions is not None and len(s.positions) > 1:
            steps = np.diff(s.positions)
            spacing = spacing[:2] + (float(np.median(steps)),)
        orient = orientation_code(s.affine)
    warn = list(s.warnings)
    if s.non_image:
        warn.append(f"{s.non_image}: not an image volume")
    elif s.fatal:
        msg = f"{s.fatal_path}: {s.fatal}" if s.fatal_path else s.fatal
        if msg not in warn:
            warn.append(msg)
    elif not s.non_image:
        problem = decoder_problem(first.transfer_syntax)
        if problem:
            warn.append(problem)
    warn.extend(extra_warnings)
    extra = {
        "series_uid": s.uid or None,
        "sop_class": first.sop_class or None,
        "transfer_syntaxes": sorted({f.transfer_syntax for f in s.frames}),
        "manufacturer": first.manufacturer,
        "n_frames": len(s.frames),
        "readable": s.non_image is None and s.fatal is None,
        "irregular": bool(s.problems),
        "mosaic": any(f.tile is not None for f in s.frames),
        "multiframe": any(f.n_frames_in_file > 1 for f in s.frames),
        "uih_grid": any(f.mosaic_rows > 0 for f in s.frames),
    }
    if s.part:
        extra["part"] = s.part
    if s.non_image:
        extra["kind"] = s.non_image
    return SeriesInfo(
        path=path,
        format="dicom",
        uid=s.id,
        number=first.series_number,
        description=first.description,
        modality=first.modality,
        shape=shape,
        spacing=spacing,
        orientation=orient,
        n_files=s.n_files,
        warnings=tuple(dict.fromkeys(warn)),
        extra=extra,
    )


def _discover(path: str | PathLike[str]) -> tuple[str, list[_Series], _Collected]:
    p = str(path)
    col = _collect(p)
    if col.n_sources == 0:
        where = "zip archive" if col.is_archive else "folder"
        detail = f" ({'; '.join(col.warnings)})" if col.warnings else ""
        raise ReadError(f"empty {where}: no files found{detail}", p)
    if not col.frames:
        detail = f"; {'; '.join(col.warnings[:5])}" if col.warnings else ""
        raise ReadError(f"no DICOM files found ({col.n_sources} files checked){detail}", p)
    series = _group(col.frames)
    for s in series:
        _plan(s, col.truncated)
    return p, series, col


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def scan_dicom(path: str | PathLike[str]) -> list[SeriesInfo]:
    """List every DICOM series under ``path`` (file, folder searched recursively, or ``.zip``).

    Only headers are read (``stop_before_pixels``). Non-DICOM files are skipped. Non-image objects
    (SEG, RTSTRUCT, ...) are listed too, with ``extra["readable"] = False`` and a warning saying what they
    are. ``shape`` is ``(i, j, k[, t])`` as stacked; ``warnings`` name irregular spacing, missing slices,
    gantry tilt, truncated files, missing decoders and skipped unsafe zip members.

    Raises:
        ReadError: the path does not exist, is empty, or holds no DICOM file.

    >>> [s.one_line() for s in scan_dicom("ct_folder")]  # doctest: +SKIP
    ["1.2.840...  #3  'CT abdomen'  CT  512x512x120  0.78x0.78x1.25 mm"]
    """
    p, series, col = _discover(path)
    return [_info(s, p, col.warnings) for s in series]


def _line(s: _Series, p: str) -> str:
    """One series for a listing in an error message (with what sets a split part apart)."""
    text = _info(s, p, []).one_line()
    return f"{text}  ({s.part})" if s.part else text


def _select(p: str, series: list[_Series], col: _Collected, wanted: str | int | None) -> _Series:
    images = [s for s in series if not s.non_image]
    listing = "\n  " + "\n  ".join(_line(s, p) for s in series)
    if wanted is None:
        if len(images) == 1:
            return images[0]
        if not images:
            kinds = sorted({s.non_image for s in series if s.non_image})
            raise ReadError(f"this is {' and '.join(kinds)}, not an image that can be read as a volume", p)
        raise SeriesSelectionError(
            f"{len(images)} image series found; choose one with --series (a UID, a unique UID prefix, a series "
            f"number, or NUMBER.sK for part K of a split series):{listing}",
            p,
            series=[_info(s, p, col.warnings) for s in images],
        )
    key = str(wanted).strip()
    exact = [s for s in series if s.id is not None and s.id == key]
    if not exact and key.lstrip("-").isdigit():  # before prefixes: "1" is a prefix of most UIDs
        exact = [s for s in series if s.first.series_number == int(key)]
    part = re.fullmatch(r"(-?\d+)?(\.s\d+)", key)
    if not exact and part:  # "801.s2": part 2 of series number 801; ".s2": part 2 of the only split UID
        number, suffix = part.groups()
        exact = [s for s in series if s.id is not None and s.id.endswith(suffix)
                 and (number is None or s.first.series_number == int(number))]
    if not exact:
        exact = [s for s in series if s.id is not None and s.id.startswith(key)]
    if len(exact) == 1:
        chosen = exact[0]
        if chosen.non_image:
            raise ReadError(f"series {key} is {chosen.non_image}, not an image that can be read as a volume", p)
        return chosen
    if not exact:
        raise SeriesSelectionError(f"no series matches {key!r}; available:{listing}", p,
                                   series=[_info(s, p, col.warnings) for s in series])
    sub = "\n  " + "\n  ".join(_line(s, p) for s in exact)
    raise SeriesSelectionError(f"{len(exact)} series match {key!r}; give the full id:{sub}", p,
                               series=[_info(s, p, col.warnings) for s in exact])


def _target_dtype(frames: list[Frame], raw_min: dict[int, float], raw_max: dict[int, float]) -> np.dtype:
    """Output type: raw type for identity scaling, else the smallest integer type holding the scaled
    values when every slope and intercept is an integer, else float32."""
    slopes = {f.slope for f in frames}
    inters = {f.intercept for f in frames}
    if slopes == {1.0} and inters == {0.0}:
        return np.result_type(*{raw_dtype(f) for f in frames})
    if all(float(v).is_integer() for v in slopes | inters):
        ends = [e * f.slope + f.intercept for f in frames for e in (raw_min[id(f)], raw_max[id(f)])]
        return _smallest_int(min(ends), max(ends))
    return np.dtype(np.float32)


def _smallest_int(lo: float, hi: float) -> np.dtype:
    for t in _INT_TYPES:
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return np.dtype(t)
    return np.dtype(np.float64)


def _check_pixel_budget(s: _Series, path: str) -> None:
    """Refuse before decoding when the series' voxels exceed the voxel limit, or when compressed pixel
    data would have to inflate beyond the inflate-ratio limit."""
    k, t = len(s.grid), len(s.grid[0])
    frames = [f for row in s.grid for f in row]
    itemsize = max(raw_dtype(f).itemsize for f in frames)
    nbytes = k * t * s.first.rows * s.first.cols * max(itemsize, 4 if any(f.slope != 1 or f.intercept != 0 for f in frames) else 1)
    what = f"a {s.first.cols}x{s.first.rows}x{k}" + (f"x{t}" if t > 1 else "") + " DICOM series"
    if all(_is_native(f.transfer_syntax) for f in frames):
        problem = check_voxel_bytes(nbytes, what)
    else:
        stored = sum({f.source: f.source.size for f in frames}.values())
        problem = check_inflate(nbytes, stored, what)
    if problem:
        raise ReadError(problem, path)


def _load(s: _Series) -> np.ndarray:
    """Decode every frame once into ``(i, j, k, t)``, then rescale.

    Each file is opened once and read from its PixelData element on (its header was parsed by the scan).
    Slices are filled into a ``(t, k, rows, cols)`` C-order buffer (each slice contiguous) whose
    transpose is returned: an F-contiguous ``(i, j, k, t)`` array, the memory order NIfTI uses.
    """
    k, t = len(s.grid), len(s.grid[0])
    where: dict[int, tuple[int, int]] = {}
    by_file: dict[DicomSource, list[Frame]] = defaultdict(list)
    for kk, row in enumerate(s.grid):
        for tt, f in enumerate(row):
            where[id(f)] = (kk, tt)
            by_file[f.source].append(f)
    frames = [f for row in s.grid for f in row]
    buf = np.empty((t, k, s.first.rows, s.first.cols), dtype=np.result_type(*{raw_dtype(f) for f in frames}))
    raw_min: dict[int, float] = {}
    raw_max: dict[int, float] = {}
    with open_sources() as opener:
        for src, fr in by_file.items():
            problem = decoder_problem(fr[0].transfer_syntax)
            if problem:
                raise ReadError(problem, src.name)
            try:
                with opener.open(src) as fh:
                    ds = pixel_dataset(fh, fr[0])
            except Exception as err:  # noqa: BLE001
                raise ReadError(f"truncated or corrupt DICOM file ({type(err).__name__}: {err})", src.name) from err
            for f, img in zip(fr, decode_frames(ds, fr)):
                if img.dtype != buf.dtype and np.result_type(img.dtype, buf.dtype) != buf.dtype:
                    buf = buf.astype(np.result_type(img.dtype, buf.dtype))
                kk, tt = where[id(f)]
                buf[tt, kk] = img
                raw_min[id(f)] = float(img.min()) if img.size else 0.0
                raw_max[id(f)] = float(img.max()) if img.size else 0.0
    dtype = _target_dtype(frames, raw_min, raw_max)
    if all(f.slope == 1.0 and f.intercept == 0.0 for f in frames):
        out = buf if buf.dtype == dtype else buf.astype(dtype)
    else:
        out = buf if buf.dtype == dtype else np.empty(buf.shape, dtype=dtype)
        for f in frames:
            kk, tt = where[id(f)]
            if np.issubdtype(dtype, np.integer):
                out[tt, kk] = buf[tt, kk].astype(np.int64) * int(f.slope) + int(f.intercept)
            else:
                out[tt, kk] = buf[tt, kk].astype(np.float64) * f.slope + f.intercept
    return out.transpose(3, 2, 1, 0)


def _resample(s: _Series, data: np.ndarray) -> np.ndarray:
    """Undo in-plane drift (tilt) per slice, then interpolate linearly along the normal."""
    from scipy import ndimage

    if s.positions is None or s.offsets is None or s.regular_step is None:  # pragma: no cover - _plan sets them
        raise RuntimeError("internal error: resampling a series without a resampling plan")
    first = s.first
    iop = np.asarray(first.iop, dtype=np.float64)
    row_sp, col_sp = first.pixel_spacing or (1.0, 1.0)
    data = data.astype(np.float32)
    fill = float(data.min()) if data.size else 0.0
    for kk in range(data.shape[2]):
        di = float(s.offsets[kk] @ iop[:3]) / col_sp
        dj = float(s.offsets[kk] @ iop[3:]) / row_sp
        if abs(di) > 1e-6 or abs(dj) > 1e-6:
            for tt in range(data.shape[3]):
                data[:, :, kk, tt] = ndimage.shift(data[:, :, kk, tt], (di, dj), order=1,
                                                   mode="grid-constant", cval=fill)
    pos = s.positions - s.positions[0]
    n_out = int(round(pos[-1] / s.regular_step)) + 1
    if n_out > MAX_RESAMPLED_SLICES:
        raise GeometryError(
            f"resampling would create {n_out} slices (limit {MAX_RESAMPLED_SLICES}); the series is too irregular"
        )
    out = np.empty(data.shape[:2] + (n_out, data.shape[3]), dtype=np.float32, order="F")
    for m in range(n_out):
        z = min(m * s.regular_step, pos[-1])
        hi = int(np.searchsorted(pos, z, side="left"))
        if hi == 0:
            out[:, :, m] = data[:, :, 0]
            continue
        lo = hi - 1
        w = (z - pos[lo]) / (pos[hi] - pos[lo])
        out[:, :, m] = (1 - w) * data[:, :, lo] + w * data[:, :, hi]
    return out


def _per_volume(s: _Series, attr: str) -> list[float] | None:
    """One value of ``attr`` per volume ``t`` when it is constant within each volume, else ``None``."""
    out = []
    for tt in range(len(s.grid[0])):
        vals = {getattr(row[tt], attr) for row in s.grid}
        if len(vals) != 1 or None in vals:
            return None
        out.append(float(vals.pop()))
    return out


def read_dicom(
    path: str | PathLike[str],
    series: str | int | None = None,
    irregular: Irregular | str = "error",
) -> Volume:
    """Read one DICOM series as a :class:`~medseg.types.Volume` ``(i, j, k[, t])`` with a RAS affine.

    Args:
        path: a DICOM file, a folder (searched recursively; non-DICOM files skipped) or a ``.zip``
            (read in memory, never extracted).
        series: which series when ``path`` holds several, tried in this order: an exact id as
            :func:`scan_dicom` lists it (SeriesInstanceUID, or ``<UID>.s<n>`` for a sub-series of a UID
            that mixed orientations or matrix sizes), a SeriesNumber (digits only), a unique prefix of
            an id; ``"801.s2"`` is part 2 of series number 801 when its UID was split. ``None`` requires a
            single image series.
        irregular: ``"error"`` (default) raises :class:`~medseg.errors.GeometryError` for non-uniform
            spacing, missing slices or gantry tilt; ``"resample"`` resamples onto a regular grid (float32)
            and records a warning in ``SourceInfo.warnings``.

    Returns:
        Volume (its array is usually F-contiguous, NIfTI's memory order) whose ``source`` has format ``"dicom"``, modality, series UID/number/description, the
        rescale slope/intercept applied (``None`` when they vary per frame) and warnings.

    Raises:
        ReadError: missing path, no DICOM, truncated/corrupt file, missing decoder, non-image object.
        SeriesSelectionError: several series and none (or an ambiguous one) chosen; lists them.
        GeometryError: irregular slices with ``irregular="error"``, or duplicate slice positions.

    >>> vol = read_dicom("ct_folder", series="3")  # doctest: +SKIP
    >>> vol.shape, vol.source.modality  # doctest: +SKIP
    ((512, 512, 120), 'CT')
    """
    try:
        mode = Irregular(irregular.value if isinstance(irregular, Irregular) else str(irregular).lower())
    except ValueError:
        raise ValueError(
            f"irregular must be one of {[m.value for m in Irregular]}, got {irregular!r}."
        ) from None
    p, all_series, col = _discover(path)
    s = _select(p, all_series, col, series)
    if s.fatal:
        raise (GeometryError if s.fatal_is_geometry else ReadError)(s.fatal, s.fatal_path or p)
    if s.problems and mode is Irregular.ERROR:
        raise GeometryError(
            f"slices do not form a regular grid: {'; '.join(s.problems)}. "
            "Pass --irregular resample to resample onto a regular grid.",
            p,
        )
    _check_pixel_budget(s, p)
    data = _load(s)
    notes = [w for w in s.warnings if w not in s.problems]
    if s.problems:
        data = _resample(s, data)
        notes.append(
            "resampled onto a regular grid of "
            f"{s.regular_step:.4g} mm slices (linear interpolation) because: {'; '.join(s.problems)}"
        )
    if data.shape[3] == 1:
        data = data[:, :, :, 0]
    if s.affine is None:  # pragma: no cover - _plan sets it for every readable series
        raise RuntimeError("internal error: readable series without an affine")
    frames = [f for row in s.grid for f in row]
    slopes = {f.slope for f in frames}
    inters = {f.intercept for f in frames}
    source = SourceInfo(
        path=p,
        format="dicom",
        modality=s.first.modality,
        series_uid=s.uid or None,
        series_number=s.first.series_number,
        series_description=s.first.description,
        rescale_slope=slopes.pop() if len(slopes) == 1 else None,
        rescale_intercept=inters.pop() if len(inters) == 1 else None,
        warnings=tuple(dict.fromkeys(notes + col.warnings)),
        extra={
            "series_id": s.id,
            "n_files": s.n_files,
            "transfer_syntaxes": sorted({f.transfer_syntax for f in frames}),
            "manufacturer": s.first.manufacturer,
            "per_frame_rescale": len({f.slope for f in frames}) > 1 or len({f.intercept for f in frames}) > 1,
            "rescale_slope_per_volume": _per_volume(s, "slope"),
            "rescale_intercept_per_volume": _per_volume(s, "intercept"),
            # Philips private MR Scale Slope per volume t (not applied; "precise" value = value / (slope * this))
            "philips_scale_slope": _per_volume(s, "philips_scale_slope"),
            # one part of a split SeriesInstanceUID: what sets it apart (echo, image type, ...)
            **({"part": s.part} if s.part else {}),
        },
    )
    return Volume(data, Geometry(s.affine, data.shape[:3]), source)


def series_frames(path: str | PathLike[str], series: str | int | None = None) -> list[list[Frame]]:
    """The source frames of the series :func:`read_dicom` would read, as ``[k][t]`` in the volume's
    slice order (headers only). DICOM SEG/RTSTRUCT writers use it to reference the source instances.

    Raises:
        ReadError/SeriesSelectionError/GeometryError: as :func:`read_dicom`; also for a series that
            :func:`read_dicom` would have to resample (its slices are not the volume's).
    """
    p, all_series, col = _discover(path)
    s = _select(p, all_series, col, series)
    if s.fatal:
        raise (GeometryError if s.fatal_is_geometry else ReadError)(s.fatal, s.fatal_path or p)
    if s.problems:
        raise GeometryError(f"slices do not form a regular grid: {'; '.join(s.problems)}", p)
    return [list(row) for row in s.grid]
