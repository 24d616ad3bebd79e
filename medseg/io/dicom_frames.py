"""DICOM headers → one :class:`Frame` record per 2D image, and pixel decoding for those frames.

A *frame* is one 2D slice wherever it is stored: a classic single-frame file, one frame of an enhanced
multi-frame file (geometry and rescale from the per-frame / shared functional groups), or one tile of
a Siemens mosaic (geometry rebuilt from the CSA header, as nibabel and dcm2niix do), or one tile of a
United Imaging (UIH) "VFRAME" grid (:func:`uih_vframe_grid`: tile count from the private (0065,1050),
per-tile positions from the private (0065,1051) sequence, as dcm2niix reads them). Series assembly
(:mod:`medseg.io.dicom`) only sees frames, so all storage variants are stacked by the same code.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from medseg.errors import ReadError
from medseg.io.dicom_files import DicomSource
from medseg.io.dicom_uih import UihGrid, uih_vframe_grid

__all__ = [
    "Frame",
    "PIXEL_MODULE_TAGS",
    "claimed_frames",
    "pixel_dataset",
    "frames_from_dataset",
    "non_image_kind",
    "image_kind",
    "decoder_problem",
    "decode_frames",
    "raw_dtype",
    "native_bytes",
]

# SOP classes that hold no image to stack, with the name used in error messages.
_NON_IMAGE_EXACT = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a DICOM SEG (Segmentation Storage)",
    "1.2.840.10008.5.1.4.1.1.66.7": "a DICOM label-map segmentation (Label Map Segmentation Storage)",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RTSTRUCT (RT Structure Set Storage)",
    "1.2.840.10008.5.1.4.1.1.481.2": "an RTDOSE (RT Dose Storage, not supported as an image)",
    "1.2.840.10008.1.3.10": "a DICOMDIR (Media Storage Directory)",
}
_NON_IMAGE_PREFIX = {
    "1.2.840.10008.5.1.4.1.1.481.": "an RT object",
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform",
    "1.2.840.10008.5.1.4.1.1.66": "a raw-data/registration/fiducials object",
}

# Transfer syntax → PyPI package(s) that give pydicom a decoder for it.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg and pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg and pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg and pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg and pylibjpeg-libjpeg (or pyjpegls)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",
}


@dataclass
class Frame:
    """One 2D image (rows × columns) with everything needed to place and scale it.

    Positions and orientations are DICOM LPS. ``pixel_spacing`` is ``(row spacing, column spacing)``
    in mm. ``frame`` indexes a multi-frame pixel array (0-based); ``tile``/``mosaic_grid`` locate a
    tile in a Siemens mosaic (``mosaic_grid`` tiles per mosaic row).
    """

    source: DicomSource
    series_uid: str
    series_number: int | None
    description: str | None
    modality: str | None
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    rows: int
    cols: int
    iop: tuple[float, ...] | None
    ipp: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    acquisition: int | None = None
    temporal: int | None = None
    time: float | None = None
    instance: int | None = None
    frame: int | None = None
    tile: int | None = None
    mosaic_grid: int = 0
    mosaic_rows: int = 0  # tile rows of the mosaic when not square (UIH grids); 0: as many as mosaic_grid
    bits_allocated: int = 16
    bits_stored: int = 16
    signed: bool = False
    samples: int = 1
    n_frames_in_file: int = 1
    slice_gap: float | None = None  # SpacingBetweenSlices or SliceThickness, for single-slice series
    gantry_tilt: float | None = None
    non_image: str | None = None  # what the object is, when it is not an image
    problem: str | None = None  # an impossible value (NaN rescale, spacing <= 0, ...): the series cannot be read
    manufacturer: str | None = None
    philips_scale_slope: float | None = None  # private (2005,100E) "MR Scale Slope", reported only
    echo_number: int | None = None  # EchoNumbers (classic files)
    echo_time: float | None = None  # EchoTime, or the per-frame EffectiveEchoTime of enhanced MR (ms)
    image_kind: str | None = None  # magnitude/phase/real/imaginary/field map, from ImageType or FrameType
    pixel_offset: int | None = None  # file offset of the PixelData element (from the header scan)
    pixel_module: Any = None  # small Dataset: the attributes pixel decoding needs (shared per file)

    def sort_key(self) -> tuple:
        """Order of frames at the same position: acquisition, temporal index, time, instance, frame."""

        def k(v: Any) -> tuple:
            return (v is None, v if v is not None else 0)

        return (
            k(self.acquisition),
            k(self.temporal),
            k(self.time),
            k(self.instance),
            k(self.frame),
            k(self.tile),
            self.source.name,
        )


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _first(v: Any) -> Any:
    """The first value of a multi-valued attribute (EchoNumbers may hold several), else ``v``."""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return v[0] if len(v) else None
    return v


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    if v is None:
        return None
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    if len(vals) != n or not all(math.isfinite(x) for x in vals):
        return None
    return vals


def _present(v: Any) -> bool:
    """The attribute holds a value (not absent, not empty)."""
    if v is None:
        return False
    try:
        return len(v) > 0 if not isinstance(v, (int, float)) else True
    except TypeError:
        return True


def _value_problems(ds: Any, owner: Any = None) -> list[str]:
    """Impossible values in the attributes that place and scale a frame (``owner``: functional groups
    already resolved, as ``{keyword: value}``)."""
    got = dict(owner or {})
    for kw in ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "RescaleSlope", "RescaleIntercept"):
        if kw not in got:
            got[kw] = ds.get(kw)
    problems = []
    n = {"PixelSpacing": 2, "ImageOrientationPatient": 6, "ImagePositionPatient": 3}
    for kw, count in n.items():
        v = got.get(kw)
        if not _present(v):
            continue
        vals = _floats(v, count)
        if vals is None:
            problems.append(f"invalid {kw} {_show(v)}: expected {count} finite numbers")
        elif kw == "PixelSpacing" and min(vals) <= 0:
            problems.append(f"impossible PixelSpacing {_show(v)}: spacings must be > 0")
    for kw in ("RescaleSlope", "RescaleIntercept"):
        v = got.get(kw)
        if not _present(v):
            continue
        f = _float(v)
        if f is None:
            problems.append(f"invalid {kw} {_show(v)}: must be a finite number")
        elif kw == "RescaleSlope" and f == 0:
            problems.append("RescaleSlope is 0: every voxel would get the intercept")
    return problems


def _show(v: Any) -> str:
    text = "\\".join(str(x) for x in v) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else str(v)
    return repr(text[:60])


def _str(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _seconds(date: Any, time: Any) -> float | None:
    """DICOM DA + TM (or a DT in ``date`` with ``time=None``) → seconds; ``None`` if absent/garbled."""
    d = _str(date)
    t = _str(time)
    try:
        if d and t is None and len(d) >= 14:  # DT: YYYYMMDDHHMMSS[.ffffff][&zzzz]
            d = d.split("+")[0].split("-")[0]
            whole, _, frac = d.partition(".")
            dt = datetime.strptime(whole[:14], "%Y%m%d%H%M%S")
            return dt.timestamp() + (float("0." + frac) if frac else 0.0)
        if t:
            t = t.replace(":", "")
            whole, _, frac = t.partition(".")
            whole = whole.ljust(6, "0")
            secs = int(whole[0:2]) * 3600 + int(whole[2:4]) * 60 + int(whole[4:6])
            secs += float("0." + frac) if frac else 0.0
            if d and len(d) >= 8:
                day = datetime.strptime(d[:8], "%Y%m%d").timestamp()
                return day + secs
            return float(secs)
    except (ValueError, OverflowError):
        return None
    return None


def non_image_kind(sop_class: str) -> str | None:
    """What a non-image SOP class is (e.g. ``"a DICOM SEG (Segmentation Storage)"``), else ``None``."""
    if sop_class in _NON_IMAGE_EXACT:
        return _NON_IMAGE_EXACT[sop_class]
    for prefix, what in _NON_IMAGE_PREFIX.items():
        if sop_class.startswith(prefix):
            from pydicom.uid import UID

            name = UID(sop_class).name
            return f"{what} ({name})" if name and name != sop_class else what
    return None


def _item(seq_owner: Any, keyword: str) -> Any:
    seq = getattr(seq_owner, keyword, None) if seq_owner is not None else None
    if seq is None:
        return None
    try:
        return seq[0] if len(seq) else None
    except TypeError:
        return None


def _fg(per: Any, shared: Any, seq: str, attr: str) -> Any:
    """Attribute ``attr`` of functional group ``seq``: per-frame first, then shared."""
    for owner in (per, shared):
        item = _item(owner, seq)
        if item is not None and attr in item:
            val = item.get(attr)
            if val is not None and val != "":
                return val
    return None


_PHILIPS_SS = 0x2005100E


def _philips_ss(owner: Any, depth: int = 2) -> float | None:
    """Philips private MR Scale Slope (2005,100E) in ``owner`` or its nested sequences (bounded depth)."""
    if owner is None:
        return None
    el = owner.get(_PHILIPS_SS) if hasattr(owner, "get") else None
    if el is not None:
        val = el.value
        if isinstance(val, (bytes, bytearray)) and len(val) == 4:
            return float(np.frombuffer(val, "<f4")[0])
        return _float(val[0] if isinstance(val, (list, tuple)) else val)
    if depth <= 0:
        return None
    for elem in owner:
        if elem.VR == "SQ":
            for item in elem.value:
                got = _philips_ss(item, depth - 1)
                if got is not None:
                    return got
    return None


#: ImageType / FrameType values that say which component of a complex MR signal (or which map) a frame is
_KIND_TOKENS = {
    "M": "MAGNITUDE", "MAG": "MAGNITUDE", "MAGNITUDE": "MAGNITUDE", "P": "PHASE", "PHASE": "PHASE",
    "PHASE MAP": "PHASE", "R": "REAL", "REAL": "REAL", "I": "IMAGINARY", "IMAGINARY": "IMAGINARY",
    "FIELD_MAP": "FIELD_MAP", "B0 MAP": "FIELD_MAP", "B0_MAP": "FIELD_MAP",
}


def image_kind(image_type: Any, complex_component: Any = None) -> str | None:
    """``"MAGNITUDE"``, ``"PHASE"``, ``"REAL"``, ``"IMAGINARY"`` or ``"FIELD_MAP"`` (several joined by
    ``+``) from ImageType/FrameType values 3 on and ComplexImageComponent; ``None`` when neither says."""
    found: list[str] = []
    try:
        values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    except TypeError:
        values = []
    for v in values[2:]:
        kind = _KIND_TOKENS.get(str(v).strip().upper())
        if kind and kind not in found:
            found.append(kind)
    if "FIELD_MAP" in found:  # a field map is stored as REAL (Philips): the map is what matters
        found = ["FIELD_MAP"]
    cc = _str(complex_component)
    if cc and not found:
        found = [_KIND_TOKENS.get(cc.upper(), cc.upper())]
    return "+".join(found) if found else None


def ensure_transfer_syntax(ds: Any) -> str:
    """The dataset's transfer syntax UID; for a file without meta header, the encoding pydicom detected
    is recorded in ``file_meta`` so that pixel decoding works."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if ts:
        return ts
    implicit, little = getattr(ds, "original_encoding", (True, True))
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = uid
    return str(uid)


def _mosaic_info(ds: Any) -> tuple[int, np.ndarray | None] | None:
    """``(number of images, CSA slice normal)`` for a Siemens mosaic, else ``None``."""
    image_type = [str(x).upper() for x in (ds.get("ImageType") or [])]
    if "MOSAIC" not in image_type:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that its readers are experimental
            from nibabel.nicom import csareader

        csa = csareader.get_csa_header(ds, "image")
        if csa is None:
            return None
        n = csareader.get_n_mosaic(csa)
        normal = csareader.get_slice_normal(csa)
    except Exception:  # noqa: BLE001 - a broken private header just means "not a usable mosaic"
        return None
    try:
        n = int(n)
    except (TypeError, ValueError, OverflowError):
        return None
    side = min(_int(ds.get("Rows")) or 0, _int(ds.get("Columns")) or 0)
    if n < 1 or math.ceil(math.sqrt(n)) > side:  # more tiles than pixels: not a usable mosaic
        return None
    return n, (None if normal is None else np.asarray(normal, dtype=np.float64))


def claimed_frames(ds: Any) -> int:
    """NumberOfFrames as the header states it (1 when absent, unreadable or below 1)."""
    n = _int(ds.get("NumberOfFrames"))
    return n if n is not None and n > 1 else 1


def frames_from_dataset(ds: Any, source: DicomSource, max_frames: int | None = None) -> list[Frame]:
    """All frames a parsed header (``stop_before_pixels`` is enough) describes.

    Args:
        ds: a ``pydicom.Dataset``.
        source: where it came from (for messages and to re-open the file for pixels).
        max_frames: at most this many frames are built, whatever NumberOfFrames claims (the caller
            checks the claim against the pixel data present).
    """
    ts = ensure_transfer_syntax(ds)
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")
    base = dict(
        source=source,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "").strip(),
        series_number=_int(ds.get("SeriesNumber")),
        description=_str(ds.get("SeriesDescription")) or _str(ds.get("ProtocolName")),
        modality=_str(ds.get("Modality")),
        sop_class=sop_class,
        sop_instance=str(ds.get("SOPInstanceUID", "") or ""),
        transfer_syntax=ts,
        rows=_int(ds.get("Rows")) or 0,
        cols=_int(ds.get("Columns")) or 0,
        bits_allocated=_int(ds.get("BitsAllocated")) or 16,
        bits_stored=_int(ds.get("BitsStored")) or _int(ds.get("BitsAllocated")) or 16,
        signed=_int(ds.get("PixelRepresentation")) == 1,
        samples=_int(ds.get("SamplesPerPixel")) or 1,
        instance=_int(ds.get("InstanceNumber")),
        acquisition=_int(ds.get("AcquisitionNumber")),
        gantry_tilt=_float(ds.get("GantryDetectorTilt")),
        manufacturer=_str(ds.get("Manufacturer")),
        echo_number=_int(_first(ds.get("EchoNumbers"))),
        echo_time=_float(ds.get("EchoTime")),
        image_kind=image_kind(ds.get("ImageType"), ds.get("ComplexImageComponent")),
    )
    is_philips = "PHILIPS" in (base["manufacturer"] or "").upper()
    kind = non_image_kind(sop_class)
    if kind is None and (not base["rows"] or not base["cols"]):
        kind = "a DICOM object without pixel data"
    if kind is not None:
        return [Frame(**base, iop=None, ipp=None, pixel_spacing=None, non_image=kind)]

    n_frames = claimed_frames(ds)
    if max_frames is not None:
        n_frames = max(1, min(n_frames, max_frames))
    gap = _float(ds.get("SpacingBetweenSlices")) or _float(ds.get("SliceThickness"))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) > 0:
        shared = _item(ds, "SharedFunctionalGroupsSequence")
        frames = []
        for f in range(min(n_frames, len(per_frame))):
            per = per_frame[f]
            slope = _float(_fg(per, shared, "PixelValueTransformationSequence", "RescaleSlope"))
            inter = _float(_fg(per, shared, "PixelValueTransformationSequence", "RescaleIntercept"))
            if slope is None:
                slope = _float(ds.get("RescaleSlope"))
                inter = _float(ds.get("RescaleIntercept")) if inter is None else inter
            fgap = _float(_fg(per, shared, "PixelMeasuresSequence", "SpacingBetweenSlices")) or _float(
                _fg(per, shared, "PixelMeasuresSequence", "SliceThickness")
            )
            acq = _int(_fg(per, None, "FrameContentSequence", "FrameAcquisitionNumber"))
            te = _float(_fg(per, shared, "MREchoSequence", "EffectiveEchoTime"))
            kind = image_kind(
                _fg(per, shared, "MRImageFrameTypeSequence", "FrameType")
                or _fg(per, shared, "CTImageFrameTypeSequence", "FrameType"),
                _fg(per, shared, "MRImageFrameTypeSequence", "ComplexImageComponent"),
            )
            resolved = {
                "PixelSpacing": _fg(per, shared, "PixelMeasuresSequence", "PixelSpacing") or ds.get("PixelSpacing"),
                "ImageOrientationPatient": _fg(per, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
                or ds.get("ImageOrientationPatient"),
                "ImagePositionPatient": _fg(per, shared, "PlanePositionSequence", "ImagePositionPatient"),
                "RescaleSlope": _fg(per, shared, "PixelValueTransformationSequence", "RescaleSlope")
                or ds.get("RescaleSlope"),
                "RescaleIntercept": _fg(per, shared, "PixelValueTransformationSequence", "RescaleIntercept")
                or ds.get("RescaleIntercept"),
            }
            problems = _value_problems(ds, resolved)
            frames.append(
                Frame(
                    **{
                        **base,
                        "acquisition": base["acquisition"] if acq is None else acq,
                        "echo_time": base["echo_time"] if te is None else te,
                        "image_kind": kind or base["image_kind"],
                    },
                    iop=_floats(_fg(per, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
                    or _floats(ds.get("ImageOrientationPatient"), 6),
                    ipp=_floats(_fg(per, shared, "PlanePositionSequence", "ImagePositionPatient"), 3),
                    pixel_spacing=_floats(_fg(per, shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
                    or _floats(ds.get("PixelSpacing"), 2),
                    slope=1.0 if slope is None else slope,
                    intercept=0.0 if inter is None else inter,
                    temporal=_int(_fg(per, None, "FrameContentSequence", "TemporalPositionIndex")),
                    time=_seconds(_fg(per, None, "FrameContentSequence", "FrameAcquisitionDateTime"), None),
                    frame=f,
                    n_frames_in_file=n_frames,
                    slice_gap=fgap or gap,
                    philips_scale_slope=_philips_ss(per) if is_philips else None,
                    problem=problems[0] if problems else None,
                )
            )
        return frames

    slope = _float(ds.get("RescaleSlope"))
    inter = _float(ds.get("RescaleIntercept"))
    common = dict(
        base,
        iop=_floats(ds.get("ImageOrientationPatient"), 6),
        ipp=_floats(ds.get("ImagePositionPatient"), 3),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2) or _floats(ds.get("ImagerPixelSpacing"), 2),
        slope=1.0 if slope is None else slope,
        intercept=0.0 if inter is None else inter,
        temporal=_int(ds.get("TemporalPositionIdentifier")),
        time=_seconds(ds.get("AcquisitionDate") or ds.get("ContentDate"), ds.get("AcquisitionTime"))
        if _str(ds.get("AcquisitionTime"))
        else _seconds(ds.get("ContentDate"), ds.get("ContentTime")),
        n_frames_in_file=n_frames,
        slice_gap=gap,
        philips_scale_slope=_philips_ss(ds, 0) if is_philips else None,
        problem=(_value_problems(ds) or [None])[0],
    )
    if n_frames == 1:
        try:
            grid = uih_vframe_grid(ds, _item_seconds)
        except ValueError as err:
            return [Frame(**{**common, "problem": common["problem"] or str(err)})]
        if grid is not None:
            return _uih_frames(common, grid)
    mosaic = _mosaic_info(ds) if n_frames == 1 else None
    if mosaic is not None and common["iop"] and common["ipp"] and common["pixel_spacing"]:
        return _mosaic_frames(common, *mosaic)
    if n_frames > 1:
        # A classic multi-frame object without functional groups (e.g. old NM/US): frames share geometry.
        return [Frame(**common, frame=f) for f in range(n_frames)]
    return [Frame(**common)]


def _item_seconds(item: Any) -> float | None:
    """Acquisition time (s) of a sequence item: AcquisitionDateTime, else AcquisitionDate + Time."""
    dt = _str(item.get("AcquisitionDateTime"))
    if dt:
        return _seconds(dt, None)
    if _str(item.get("AcquisitionTime")):
        return _seconds(item.get("AcquisitionDate"), item.get("AcquisitionTime"))
    return None


def _uih_frames(common: dict[str, Any], grid: UihGrid) -> list[Frame]:
    """The tiles of a UIH VFRAME grid, each placed by its own VFrame sequence item (no mosaic shift)."""
    return [
        Frame(
            **{
                **common,
                "rows": grid.tile_rows,
                "cols": grid.tile_cols,
                "ipp": grid.positions[t],
                "time": grid.times[t] if grid.times[t] is not None else common["time"],
            },
            tile=t,
            mosaic_grid=grid.grid_cols,
            mosaic_rows=grid.grid_rows,
        )
        for t in range(grid.n)
    ]


def _mosaic_frames(common: dict[str, Any], n_images: int, csa_normal: np.ndarray | None) -> list[Frame]:
    """Split a Siemens mosaic into its tiles, each with its own ImagePositionPatient.

    The mosaic's ImagePositionPatient is that of the whole mosaic image; the first tile's position is
    shifted by half the difference between mosaic and tile size (nibabel ``MosaicWrapper``). Tile ``n``
    lies ``n × SpacingBetweenSlices`` mm further along the CSA ``SliceNormalVector`` (which may point
    against row × column).
    """
    grid = int(math.ceil(math.sqrt(n_images)))
    rows, cols = common["rows"] // grid, common["cols"] // grid
    iop = np.asarray(common["iop"], dtype=np.float64).reshape(2, 3)
    row_cos, col_cos = iop[0], iop[1]
    row_sp, col_sp = common["pixel_spacing"]
    shift_rows = (common["rows"] - rows) / 2.0
    shift_cols = (common["cols"] - cols) / 2.0
    first = np.asarray(common["ipp"]) + col_cos * row_sp * shift_rows + row_cos * col_sp * shift_cols
    normal = np.cross(row_cos, col_cos)
    if csa_normal is not None and np.linalg.norm(csa_normal) > 0:
        normal = csa_normal / np.linalg.norm(csa_normal)
    gap = common["slice_gap"] or 1.0
    out = []
    for n in range(n_images):
        pos = first + normal * gap * n
        out.append(
            Frame(
                **{**common, "rows": rows, "cols": cols, "ipp": tuple(float(x) for x in pos)},
                tile=n,
                mosaic_grid=grid,
            )
        )
    return out


def decoder_problem(transfer_syntax: str) -> str | None:
    """``None`` when pydicom can decode this transfer syntax, else a message naming what to install."""
    try:
        from pydicom.pixels import get_decoder
        from pydicom.uid import UID
    except ImportError:  # pragma: no cover - pydicom < 3
        return None
    uid = UID(transfer_syntax)
    try:
        dec = get_decoder(uid)
    except NotImplementedError:
        return f"pixel data in transfer syntax {uid.name or uid} ({uid}) is not supported by pydicom"
    if dec.is_available:
        return None
    pkg = _DECODER_PACKAGES.get(str(uid), "a pydicom pixel-data plugin (pylibjpeg, pylibjpeg-libjpeg, "
                                          "pylibjpeg-openjpeg)")
    return (
        f"no decoder for {uid.name or uid} ({uid}) pixel data is installed: "
        f"install {pkg} (pip install {pkg.split(' (')[0].replace(' and ', ' ')})"
    )


def raw_dtype(frame: Frame) -> np.dtype:
    """Numpy type of the stored values of a frame (before rescale)."""
    bits = frame.bits_allocated
    if bits <= 8:
        return np.dtype(np.int8 if frame.signed else np.uint8)
    if bits <= 16:
        return np.dtype(np.int16 if frame.signed else np.uint16)
    if bits <= 32:
        return np.dtype(np.int32 if frame.signed else np.uint32)
    return np.dtype(np.float64)


def native_bytes(frame: Frame) -> int:
    """Bytes the pixel data of the file holding ``frame`` takes when stored uncompressed."""
    bits = frame.bits_allocated * frame.samples
    full_rows = frame.rows * (frame.mosaic_rows or frame.mosaic_grid) if frame.mosaic_grid else frame.rows
    full_cols = frame.cols * frame.mosaic_grid if frame.mosaic_grid else frame.cols
    n = full_rows * full_cols * frame.n_frames_in_file
    return (n * bits + 7) // 8


#: Attributes pydicom needs (besides the transfer syntax) to decode PixelData.
PIXEL_MODULE_TAGS = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)

_DEFLATED = "1.2.840.10008.1.2.1.99"


def pixel_module_of(ds: Any) -> Any:
    """A small Dataset holding only the pixel-module attributes of ``ds``."""
    from pydicom.dataset import Dataset

    out = Dataset()
    for kw in PIXEL_MODULE_TAGS:
        if kw in ds:
            out[kw] = ds[kw]
    return out


def pixel_dataset(fh: Any, frame: Frame) -> Any:
    """Dataset with just what decoding ``frame``'s file needs, reading from the PixelData element on.

    The header was parsed once already (``stop_before_pixels``); this avoids parsing it a second time:
    the file is read from :attr:`Frame.pixel_offset` (the PixelData element) to its end. Deflated files
    (no byte offset into the deflated stream) and frames without an offset are parsed whole.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filereader import read_dataset

    ts = frame.transfer_syntax
    if frame.pixel_offset is None or frame.pixel_module is None or ts == _DEFLATED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(fh, force=True)
    fh.seek(frame.pixel_offset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tail = read_dataset(fh, ts == "1.2.840.10008.1.2", ts != "1.2.840.10008.1.2.2")
    ds = frame.pixel_module.copy()
    ds.update(tail)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    return ds


def decode_frames(ds: Any, frames: list[Frame]) -> list[np.ndarray]:
    """Decoded 2D ``(rows, cols)`` stored-value arrays (native byte order) for ``frames`` of one file.

    Raises:
        ReadError: missing decoder (names the package to install), truncated or corrupt pixel data.
    """
    first = frames[0]
    name = first.source.name
    ensure_transfer_syntax(ds)
    problem = decoder_problem(first.transfer_syntax)
    if problem:
        raise ReadError(problem, name)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ReadError("the pixel data is missing or cut short (the file may be truncated)", name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom/plugins raise many types; re-raised with the file
        raise ReadError(
            f"cannot decode the pixel data ({type(err).__name__}: {err}); the file may be truncated or corrupt",
            name,
        ) from err
    arr = np.asarray(arr)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if first.samples != 1:
        raise ReadError(f"colour DICOM images ({first.samples} samples per pixel) are not supported", name)
    n_frames = first.n_frames_in_file
    if n_frames > 1 and arr.ndim == 2 and n_frames != arr.shape[0]:
        arr = arr[None]
    out = []
    for fr in frames:
        if fr.frame is not None and arr.ndim == 3:
            img = arr[fr.frame]
        else:
            img = arr if arr.ndim == 2 else arr[0]
        if fr.tile is not None:
            g = fr.mosaic_grid
            r0, c0 = (fr.tile // g) * fr.rows, (fr.tile % g) * fr.cols
            img = img[r0 : r0 + fr.rows, c0 : c0 + fr.cols]
        if img.shape != (fr.rows, fr.cols):
            raise ReadError(
                f"pixel data has shape {img.shape}, the header says {(fr.rows, fr.cols)}", name
            )
        out.append(img)
    return out
