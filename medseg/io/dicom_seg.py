"""DICOM Segmentation (SEG) objects: write a label map as a SEG referencing its source series
(highdicom), and read a SEG back onto its referenced series' grid.

The label map must lie on exactly the grid :func:`medseg.io.read` gives for the source series (which
is what :mod:`medseg.pipeline` produces). Classic single-frame series and enhanced multi-frame files
are supported; the SEG references each source instance (and frame), carries the label names,
colours, SNOMED CT codes (:mod:`medseg.io.anatomy`) and the algorithm (model, version, weights
sha256), and holds frames only where a segment is present.

>>> seg = build_seg(labels, load_source("ct_folder/"), AlgorithmInfo("spleen-ct", "0.1.0"))  # doctest: +SKIP
>>> read_seg("seg.dcm", reference="ct_folder/").array.max()                              # doctest: +SKIP
1
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from enum import Enum
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ReadError, SeriesSelectionError, WriteError
from medseg.types import Geometry, Label, SourceInfo, Volume

__all__ = [
    "AlgorithmInfo",
    "SegType",
    "SourceSeries",
    "load_source",
    "build_seg",
    "write_seg",
    "read_seg",
    "present_labels",
    "SEG_SOP_CLASS",
]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

#: Memory bound of the per-segment float planes a FRACTIONAL SEG is built from.
FRACTIONAL_MAX_BYTES = 2 * 2**30

#: Type 2 attributes a SEG copies from its source; anonymisers often drop them (empty values are valid).
_TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


class SegType(str, Enum):
    """Segmentation type of a written SEG."""

    BINARY = "binary"
    FRACTIONAL = "fractional"


@dataclass(frozen=True)
class AlgorithmInfo:
    """Who made the segmentation: model name, medseg version, weights sha256 (written into the SEG)."""

    name: str
    version: str
    weights_sha256: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class SourceSeries:
    """Source headers aligned with a volume's slices.

    ``datasets`` are the source instances (headers only, pixel data not loaded); ``slices[k]`` is
    ``(index into datasets, 0-based frame number or None)`` of slice ``k`` of the volume.
    """

    path: str
    datasets: tuple[Any, ...]
    slices: tuple[tuple[int, int | None], ...]
    multiframe: bool


def load_source(path: str | PathLike[str], series: str | int | None = None) -> SourceSeries:
    """Read the headers of the DICOM series at ``path`` (file, folder, zip) in the volume's slice order.

    Raises:
        ReadError: not DICOM, several series without ``series``, a 4D series, an irregular grid.
    """
    import pydicom

    from medseg.io.dicom import series_frames
    from medseg.io.dicom_files import open_sources

    grid = series_frames(path, series)
    if any(len(row) != 1 for row in grid):
        raise ReadError("DICOM SEG/RTSTRUCT output needs a 3D series; this one has several volumes (4D)", path)
    frames = [row[0] for row in grid]
    if any(f.tile is not None for f in frames):
        raise ReadError("DICOM SEG/RTSTRUCT output from a Siemens mosaic is not supported", path)
    by_file: dict[tuple[str, str | None], int] = {}
    datasets: list[Any] = []
    slices: list[tuple[int, int | None]] = []
    with open_sources() as opener:
        for f in frames:
            key = (f.source.path, f.source.member)
            if key not in by_file:
                with opener.open(f.source) as fh:
                    ds = pydicom.dcmread(fh, stop_before_pixels=True)
                by_file[key] = len(datasets)
                datasets.append(ds)
            slices.append((by_file[key], f.frame if f.n_frames_in_file > 1 else None))
    multiframe = any(fr is not None for _, fr in slices)
    if multiframe and len(datasets) != 1:
        raise ReadError("DICOM SEG output from a series of several multi-frame files is not supported", path)
    return SourceSeries(str(path), tuple(datasets), tuple(slices), multiframe)


def present_labels(labels: Volume) -> list[Label]:
    """The labels of ``labels.labels`` that have at least one voxel, in id order."""
    counts = np.bincount(np.asarray(labels.array).ravel().astype(np.int64))
    return [lab for lab in sorted(labels.labels, key=lambda lab: lab.id) if lab.id < len(counts) and counts[lab.id] > 0]


def _frame_position(ds: Any, frame: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ImagePositionPatient, ImageOrientationPatient) of a frame, LPS."""
    if frame is None:
        return np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float)
    per = ds.PerFrameFunctionalGroupsSequence[frame]
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    ipp = per.PlanePositionSequence[0].ImagePositionPatient
    owner = per if "PlaneOrientationSequence" in per else shared
    iop = owner.PlaneOrientationSequence[0].ImageOrientationPatient
    return np.asarray(ipp, float), np.asarray(iop, float)


def check_alignment(labels: Volume, source: SourceSeries) -> None:
    """Raise ``WriteError`` unless slice ``k`` of ``labels`` is exactly the source frame ``slices[k]``."""
    from medseg.geometry import LPS_TO_RAS, world_to_voxel

    g = labels.geometry
    if len(source.slices) != g.shape[2]:
        raise WriteError(f"label map has {g.shape[2]} slices, the source series {len(source.slices)}", source.path)
    rows, cols = int(source.datasets[0].Rows), int(source.datasets[0].Columns)
    if (g.shape[0], g.shape[1]) != (cols, rows):
        raise WriteError(f"label map is {g.shape[0]}x{g.shape[1]} in-plane, the source {cols}x{rows}", source.path)
    direction = g.direction
    for k, (d, fr) in enumerate(source.slices):
        ipp, iop = _frame_position(source.datasets[d], fr)
        ras = (LPS_TO_RAS[:3, :3] @ ipp)
        ijk = world_to_voxel(g.affine, ras)
        tol = 1e-2
        if not np.allclose(ijk, (0, 0, k), atol=tol):
            raise WriteError(
                f"label map does not lie on the source series grid (slice {k} starts at voxel "
                f"{np.round(ijk, 3).tolist()})", source.path)
        row_cos = LPS_TO_RAS[:3, :3] @ iop[:3]
        col_cos = LPS_TO_RAS[:3, :3] @ iop[3:]
        if not (np.allclose(row_cos, direction[:, 0], atol=1e-3) and np.allclose(col_cos, direction[:, 1], atol=1e-3)):
            raise WriteError("label map axes differ from the source series' orientation", source.path)


def _concept(code: tuple[str, str, str]) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=code[1], scheme_designator=code[0], meaning=code[2])


def _share_functional_groups(ds: Any) -> None:
    """Enhanced files (e.g. Siemens XA) may give pixel measures and orientation per frame although they
    are the same for all frames; highdicom looks for them in the shared groups. Move identical ones there
    (on a copy used only to reference the source)."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if not per:
        return
    if "SharedFunctionalGroupsSequence" not in ds or not ds.SharedFunctionalGroupsSequence:
        from pydicom.dataset import Dataset

        ds.SharedFunctionalGroupsSequence = [Dataset()]
    shared = ds.SharedFunctionalGroupsSequence[0]
    for kw in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if kw in shared or not all(kw in item for item in per):
            continue
        values = {repr(item[kw].value[0]) for item in per}
        if len(values) == 1:
            setattr(shared, kw, copy.deepcopy(per[0][kw].value))
            for item in per:
                del item[kw]


def prepare_sources(datasets: tuple[Any, ...] | list[Any]) -> tuple[list[Any], list[str]]:
    """Copies of source headers that highdicom can reference, and notes on what was repaired.

    Anonymisers often drop type 2 attributes (patient name, study date, ...): they are added empty,
    which is valid. Some also blank type 1 UIDs: SOP Class/Instance UIDs are then taken from the file
    meta header; a blank Study/Series Instance UID is replaced by one derived deterministically from
    the Frame of Reference and the instances (the same source always gives the same UID).
    """
    from pydicom.uid import generate_uid

    out, notes = [], []
    for ds in datasets:
        c = copy.deepcopy(ds)
        if "SpecificCharacterSet" in c and not str(c.SpecificCharacterSet or "").strip("\\ "):
            del c.SpecificCharacterSet  # an empty value means the default repertoire
        for kw in _TYPE2_PATIENT_STUDY:
            if kw not in c:
                setattr(c, kw, "")
        meta = getattr(c, "file_meta", None)
        for kw, meta_kw in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(c.get(kw, "") or "").strip():
                value = str(meta.get(meta_kw, "") or "") if meta is not None else ""
                if not value:
                    raise WriteError(f"source instance lacks the type 1 attribute {kw}: cannot reference it", None)
                setattr(c, kw, value)
                notes.append(f"{kw} taken from the file meta header")
        _share_functional_groups(c)
        out.append(c)
    seeds = [str(c.get("FrameOfReferenceUID", "")) for c in out[:1]] + sorted(str(c.SOPInstanceUID) for c in out)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID"):
        if any(not str(c.get(kw, "") or "").strip() for c in out):
            uid = generate_uid(entropy_srcs=[kw, *seeds])
            for c in out:
                if not str(c.get(kw, "") or "").strip():
                    setattr(c, kw, uid)
            notes.append(f"source has no {kw}: derived {uid} from its instances")
    if any(not str(c.get("FrameOfReferenceUID", "") or "").strip() for c in out):
        raise WriteError("source instance lacks FrameOfReferenceUID: a SEG/RTSTRUCT cannot be placed", None)
    return out, list(dict.fromkeys(notes))


def segment_descriptions(present: list[Label], algorithm: AlgorithmInfo) -> list[Any]:
    """highdicom SegmentDescriptions for ``present`` (numbered 1..N in that order), coded from the
    anatomy mapping; generic codes carry a note in the segment's description."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    from medseg.io.anatomy import code_for

    params = {"medseg_version": algorithm.version}
    if algorithm.weights_sha256:
        params["weights_sha256"] = algorithm.weights_sha256
    if algorithm.fingerprint:
        params["fingerprint"] = algorithm.fingerprint
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64], family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version[:64], source="medseg", parameters=params,
    )
    out = []
    for n, lab in enumerate(present, start=1):
        coding = code_for(lab.name)
        desc = hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=lab.name[:64],
            segmented_property_category=_concept(coding.category),
            segmented_property_type=_concept(coding.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            anatomic_regions=[_concept(coding.region)] if coding.region else None,
            display_color=hd.color.CIELabColor.from_rgb(*[int(c) for c in lab.color]),
            tracking_id=f"label {lab.id}",
            tracking_uid=hd.UID(),
        )
        if coding.type_modifier:
            item = desc.SegmentedPropertyTypeCodeSequence[0]
            mod = Dataset()
            mod.CodeValue, mod.CodingSchemeDesignator, mod.CodeMeaning = coding.type_modifier[1], coding.type_modifier[0], coding.type_modifier[2]
            item.SegmentedPropertyTypeModifierCodeSequence = [mod]
        if coding.region_modifier and "AnatomicRegionSequence" in desc:
            mod = Dataset()
            mod.CodeValue, mod.CodingSchemeDesignator, mod.CodeMeaning = coding.region_modifier[1], coding.region_modifier[0], coding.region_modifier[2]
            desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [mod]
        if coding.generic:
            desc.SegmentDescription = coding.note[:64]
        out.append(desc)
    return out


def build_seg(
    labels: Volume,
    source: SourceSeries,
    algorithm: AlgorithmInfo,
    seg_type: SegType | str = SegType.BINARY,
    series_number: int = 900,
) -> Any:
    """A highdicom ``Segmentation`` of ``labels`` referencing ``source`` (not yet written).

    Segments are the labels present in the map, numbered 1..N in id order (the SEG's TrackingID says
    ``label <id>``, so :func:`read_seg` restores the original ids). ``FRACTIONAL`` stores each segment's
    mask as fractions 0/1 (``max_fractional_value`` 255).

    Raises:
        WriteError: the label map is not on the source grid, or the source cannot be referenced.
        ValueError: unknown ``seg_type``.
    """
    import highdicom as hd

    from medseg import __version__

    try:
        seg_type = SegType(str(getattr(seg_type, "value", seg_type)).lower())
    except ValueError:
        raise ValueError(f"seg_type must be one of {[t.value for t in SegType]}, got {seg_type!r}.") from None
    check_alignment(labels, source)
    present = present_labels(labels)
    arr = np.asarray(labels.array)
    lut = np.zeros(int(arr.max()) + 1, dtype=np.uint16)
    for n, lab in enumerate(present, start=1):
        lut[lab.id] = n
    first = source.datasets[0]
    rows, cols = int(first.Rows), int(first.Columns)
    if source.multiframe:
        n_frames = int(first.get("NumberOfFrames", 1))
        planes = np.zeros((n_frames, rows, cols), dtype=np.uint16)
        for k, (_, fr) in enumerate(source.slices):
            planes[fr] = lut[arr[:, :, k]].T
    else:
        planes = np.stack([lut[arr[:, :, k]].T for k in range(arr.shape[2])]) if arr.shape[2] else np.zeros((0, rows, cols), np.uint16)
    descriptions = segment_descriptions(present, algorithm)
    sources, _notes = prepare_sources(source.datasets)
    if not present:
        raise WriteError("no label is present in the label map: a DICOM SEG needs at least one segment", None)
    if seg_type is SegType.FRACTIONAL:
        need = planes.size * len(present) * 4
        if need > FRACTIONAL_MAX_BYTES:
            raise WriteError(f"a FRACTIONAL SEG of {len(present)} segments needs {need / 2**30:.1f} GiB in memory "
                             "(one float plane per segment and frame); use --seg-type binary", source.path)
        pixel = np.stack([(planes == n) for n in range(1, len(present) + 1)], axis=-1).astype(np.float32)
    else:
        pixel = planes.astype(np.uint8 if len(present) < 256 else np.uint16)
    kwargs = dict(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues[seg_type.value.upper()],
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=algorithm.name[:64],
        software_versions=f"medseg {__version__}",
        device_serial_number="0",
        series_description=f"medseg {algorithm.name}"[:64],
        content_label="MEDSEG",
        content_description=f"{algorithm.name} segmentation"[:64],
        omit_empty_frames=True,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        try:
            seg = hd.seg.Segmentation(**kwargs)
        except (ValueError, AttributeError, TypeError) as err:
            raise WriteError(f"cannot build a DICOM SEG from this series: {err}", source.path) from err
    seg.ContentCreatorName = ""  # type 2: present, empty
    return seg


def write_seg(dataset: Any, path: str | PathLike[str], overwrite: bool = False) -> Path:
    """Write a built SEG (or RTSTRUCT) dataset atomically to ``path``."""
    from medseg.io.atomic import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return Path(path)


# ---------------------------------------------------------------------------------------------------
# reading


def _rgb(desc: Any) -> tuple[int, int, int]:
    import highdicom as hd

    value = desc.get("RecommendedDisplayCIELabValue")
    if value is None:
        return (255, 0, 0)
    rgb = hd.color.CIELabColor.from_dicom_value(list(value)).to_rgb()
    return tuple(int(c) for c in rgb)  # type: ignore[return-value]


def _label_id(desc: Any, number: int) -> int:
    tid = str(desc.get("TrackingID", "") or "")
    if tid.startswith("label ") and tid[6:].isdigit():
        return int(tid[6:])
    return number


def referenced_series_uid(ds: Any) -> str | None:
    """SeriesInstanceUID a SEG/RTSTRUCT refers to, if stated."""
    ref = ds.get("ReferencedSeriesSequence")
    if ref:
        return str(ref[0].SeriesInstanceUID)
    for study in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for st in study.get("RTReferencedStudySequence", []) or []:
            for se in st.get("RTReferencedSeriesSequence", []) or []:
                return str(se.SeriesInstanceUID)
    return None


def _reference_volume(path: Path, ds: Any, reference: str | PathLike[str] | None) -> Volume:
    from medseg.io import read

    uid = referenced_series_uid(ds)
    where = Path(reference) if reference is not None else path.parent
    try:
        if uid and where.is_dir():
            try:
                return read(where, series=uid)
            except SeriesSelectionError:  # UID blanked in the source: the folder's only image series
                pass
        return read(where)
    except ReadError as err:
        hint = "" if reference is not None else " (pass --reference/reference= with the source series)"
        raise ReadError(f"cannot read the referenced series {uid or ''}: {err.message}{hint}", where) from err


def read_seg(path: str | PathLike[str], reference: str | PathLike[str] | None = None) -> Volume:
    """Read a DICOM SEG as a label :class:`Volume` on the grid of its referenced series.

    Args:
        path: the SEG file.
        reference: the source series (file, folder, zip); default: the SEG's folder, where the series
            named by the SEG's ReferencedSeriesSequence is picked.

    Label ids are the segment numbers, or the ids medseg recorded (TrackingID ``label <id>``); names
    and colours come from the segment descriptions. Overlapping segments: the higher number wins.
    FRACTIONAL segments are thresholded at one half.

    Raises:
        ReadError: not a SEG, the reference cannot be read, or the SEG does not lie on its grid.
    """
    import pydicom

    from medseg.geometry import LPS_TO_RAS, world_to_voxel

    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except (OSError, pydicom.errors.InvalidDicomError) as err:
        raise ReadError(f"cannot read DICOM: {err}", p) from err
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise ReadError("not a DICOM SEG (Segmentation Storage) object", p)
    ref = _reference_volume(p, ds, reference)
    g = ref.geometry
    descs = {int(d.SegmentNumber): d for d in ds.SegmentSequence}
    ids = {n: _label_id(d, n) for n, d in descs.items()}
    max_id = max(ids.values(), default=0)
    out = np.zeros(g.shape, dtype=np.uint8 if max_id < 256 else np.uint16)
    frames = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1))
    frames = frames.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    fractional = str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    thresh = float(ds.get("MaximumFractionalValue", 1)) / 2.0 if fractional else 0
    shared = ds.SharedFunctionalGroupsSequence[0]
    spacing = None
    for fg in (shared,):
        if "PixelMeasuresSequence" in fg:
            spacing = [float(v) for v in fg.PixelMeasuresSequence[0].PixelSpacing]
    order = []
    for f, per in enumerate(ds.PerFrameFunctionalGroupsSequence):
        owner = per if "SegmentIdentificationSequence" in per else shared
        number = int(owner.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        order.append((number, f, per))
    order.sort(key=lambda t: t[0])
    for number, f, per in order:
        pos = per.PlanePositionSequence[0].ImagePositionPatient if "PlanePositionSequence" in per else None
        orient_fg = per if "PlaneOrientationSequence" in per else shared
        iop = np.asarray(orient_fg.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        if pos is None:
            raise ReadError(f"SEG frame {f + 1} has no plane position", p)
        ijk = world_to_voxel(g.affine, LPS_TO_RAS[:3, :3] @ np.asarray(pos, float))
        k = int(round(ijk[2]))
        if not (np.allclose(ijk[:2], 0, atol=1e-2) and abs(ijk[2] - k) < 1e-2 and 0 <= k < g.shape[2]):
            raise ReadError(f"SEG frame {f + 1} does not lie on the referenced series' grid", p)
        row_cos, col_cos = LPS_TO_RAS[:3, :3] @ iop[:3], LPS_TO_RAS[:3, :3] @ iop[3:]
        if not (np.allclose(row_cos, g.direction[:, 0], atol=1e-3) and np.allclose(col_cos, g.direction[:, 1], atol=1e-3)):
            raise ReadError("SEG orientation differs from the referenced series'", p)
        if spacing is not None and not np.allclose(spacing, (g.spacing[1], g.spacing[0]), atol=1e-3):
            raise ReadError("SEG pixel spacing differs from the referenced series'", p)
        mask = frames[f].T > thresh
        if mask.shape != g.shape[:2]:
            raise ReadError("SEG frame size differs from the referenced series'", p)
        out[:, :, k][mask] = ids[number]
    labels = tuple(
        Label(ids[n], str(d.get("SegmentLabel", f"segment {n}")), _rgb(d)) for n, d in sorted(descs.items())
    )
    source = SourceInfo(path=str(p), format="dicom-seg", modality="SEG", series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
                        series_description=str(ds.get("SeriesDescription", "")) or None,
                        extra={"referenced_series_uid": referenced_series_uid(ds)})
    return Volume(out, Geometry(g.affine, g.shape), source, is_label=True, labels=labels)


def is_seg(path: str | PathLike[str]) -> bool:
    """True when ``path`` is a DICOM file of the Segmentation Storage class (header only)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS
