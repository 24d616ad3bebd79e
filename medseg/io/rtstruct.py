"""DICOM RT Structure Set (RTSTRUCT) output: one ROI per label, closed planar contours per slice.

Written with pydicom directly rather than rt-utils: rt-utils loads the series itself from a folder of
single-frame files (no zips, no enhanced multi-frame, no anonymised UIDs), needs OpenCV, and encodes
holes by cutting a "pin hole" channel into the mask. Here the contours come from the very frames
:mod:`medseg.io.dicom_seg` references (:class:`~medseg.io.dicom_seg.SourceSeries`), every island and
every hole is its own contour, and readers fill them with the even-odd rule (the convention of
Eclipse, 3D Slicer, plastimatch and pydicom-based tools): a hole contour inside an outer one is cut out.

>>> ds = build_rtstruct(labels, load_source("ct_folder/"), AlgorithmInfo("spleen-ct", "0.1.0"))  # doctest: +SKIP
>>> masks = rasterize_rtstruct(ds, labels.geometry)                                             # doctest: +SKIP
"""

from __future__ import annotations

import datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ReadError, WriteError
from medseg.io.dicom_seg import AlgorithmInfo, SourceSeries, check_alignment, prepare_sources, present_labels
from medseg.types import Geometry, Volume

__all__ = ["RTSTRUCT_SOP_CLASS", "build_rtstruct", "rasterize_rtstruct", "read_rtstruct", "mask_contours"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def _drop_collinear(c: np.ndarray) -> np.ndarray:
    """A closed polygon without the points inside straight runs (same polygon, fewer points)."""
    prev, nxt = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
    d1, d2 = c - prev, nxt - c
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    straight = (np.abs(cross) < 1e-9) & ((d1 * d2).sum(axis=1) > 0)
    return c[~straight]


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours ``(N, 2)`` in ``(i, j)`` voxel coordinates of a 2D mask: outer boundaries of
    every island and boundaries of every hole (iso-line 0.5 between inside and outside pixel centres)."""
    from skimage.measure import find_contours

    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}.")
    padded = np.pad(mask.astype(np.float32), 1)
    out = []
    for c in find_contours(padded, 0.5):
        c = c - 1.0  # undo the padding
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]  # DICOM closes CLOSED_PLANAR contours implicitly
        if len(c) >= 3:
            c = _drop_collinear(c)
        if len(c) >= 3:
            out.append(c)
    return out


def _code_item(code: tuple[str, str, str]) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code[1], code[0], code[2]
    return item


def build_rtstruct(labels: Volume, source: SourceSeries, algorithm: AlgorithmInfo, series_number: int = 901) -> Any:
    """An RTSTRUCT ``pydicom.Dataset`` with one ROI per present label of ``labels`` (on ``source``'s grid).

    Raises:
        WriteError: the label map is not on the source grid, or the source cannot be referenced.
    """
    from pydicom import config as pydicom_config
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ImplicitVRLittleEndian, generate_uid

    from medseg import __version__
    from medseg.geometry import LPS_TO_RAS, voxel_to_world
    from medseg.io.anatomy import code_for

    check_alignment(labels, source)
    sources, _notes = prepare_sources(source.datasets)
    first = sources[0]
    now = datetime.datetime.now()
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    # implicit VR: long ContourData (over 64 kB) stays DS; every RT system reads this syntax
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription"):
        setattr(ds, kw, first.get(kw, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"medseg {algorithm.name}"[:64]
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.Manufacturer = "medseg"
    ds.ManufacturerModelName = algorithm.name[:64]
    ds.SoftwareVersions = f"medseg {__version__}"
    ds.OperatorsName = ""
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "MEDSEG"
    ds.StructureSetName = algorithm.name[:64]
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.StructureSetDate, ds.StructureSetTime

    def image_ref(k: int) -> Any:
        d, fr = source.slices[k]
        item = Dataset()
        item.ReferencedSOPClassUID = sources[d].SOPClassUID
        item.ReferencedSOPInstanceUID = sources[d].SOPInstanceUID
        if fr is not None:
            item.ReferencedFrameNumber = fr + 1
        return item

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = [image_ref(k) for k in range(len(source.slices))]
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (as the standard's examples)
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = [series_ref]
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = first.FrameOfReferenceUID
    for_ref.RTReferencedStudySequence = [study_ref]
    ds.ReferencedFrameOfReferenceSequence = [for_ref]

    from scipy import ndimage

    arr = np.asarray(labels.array)
    boxes = ndimage.find_objects(arr.astype(np.int64, copy=False)) if arr.max() > 0 else []
    affine = labels.affine
    rois, contours_seq, observations = [], [], []
    params = f"model {algorithm.name}; medseg {algorithm.version}"
    if algorithm.weights_sha256:
        params += f"; weights sha256 {algorithm.weights_sha256}"
    for n, lab in enumerate(present_labels(labels), start=1):
        coding = code_for(lab.name)
        roi = Dataset()
        roi.ROINumber = n
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = lab.name[:64]
        roi.ROIDescription = (coding.note if coding.generic else f"label {lab.id}")[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = params[:64]
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = n
        rc.ROIDisplayColor = [int(c) for c in lab.color]
        items = []
        box = boxes[lab.id - 1] if lab.id <= len(boxes) else None
        sub = arr[box] == lab.id if box is not None else np.zeros((0, 0, 0), bool)
        i0, j0, k0 = (s.start for s in box) if box is not None else (0, 0, 0)
        for dk in np.flatnonzero(np.any(sub, axis=(0, 1))):
            k = k0 + int(dk)
            for c in mask_contours(sub[:, :, dk]):
                ijk = np.column_stack([c + (i0, j0), np.full(len(c), float(k))])
                lps = voxel_to_world(affine, ijk) @ LPS_TO_RAS[:3, :3].T
                item = Dataset()
                item.ContourImageSequence = [image_ref(int(k))]
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(lps)
                with pydicom_config.disable_value_validation():  # values formatted right here (<= 16 chars)
                    item.ContourData = [f"{v:.4f}".rstrip("0").rstrip(".") for v in lps.ravel()]
                items.append(item)
        rc.ContourSequence = items
        contours_seq.append(rc)
        obs = Dataset()
        obs.ObservationNumber = n
        obs.ReferencedROINumber = n
        obs.RTROIInterpretedType = "ORGAN" if coding.category[1] == "123037004" else ""
        obs.ROIInterpreter = ""
        obs.RTROIIdentificationCodeSequence = [_code_item(coding.type)]
        observations.append(obs)
    if not rois:
        raise WriteError("no label is present in the label map: an RTSTRUCT needs at least one ROI", None)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours_seq
    ds.RTROIObservationsSequence = observations
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def rasterize_rtstruct(ds: Any, geometry: Geometry) -> dict[str, np.ndarray]:
    """``{ROI name: boolean (I, J, K) mask}`` of an RTSTRUCT on ``geometry`` (pixel centres inside a
    contour, contours of one slice combined with the even-odd rule: holes are cut out).

    Raises:
        ReadError: a contour is not in one of the grid's slice planes.
    """
    from pydicom import config as pydicom_config
    from skimage.draw import polygon

    from medseg.geometry import LPS_TO_RAS

    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    # RTSTRUCT points are LPS: voxel = inverse(affine) @ (LPS -> RAS) @ point
    to_voxel = np.linalg.inv(np.asarray(geometry.affine, dtype=np.float64)) @ LPS_TO_RAS
    out: dict[str, np.ndarray] = {}
    shape = geometry.shape
    for rc in ds.ROIContourSequence:
        name = names.get(int(rc.ReferencedROINumber), f"roi {rc.ReferencedROINumber}")
        planes: dict[int, np.ndarray] = {}
        for item in rc.get("ContourSequence", []) or []:
            with pydicom_config.disable_value_validation():
                pts = np.asarray(item.ContourData, dtype=np.float64).reshape(-1, 3)
            ijk = pts @ to_voxel[:3, :3].T + to_voxel[:3, 3]
            k = int(round(float(np.mean(ijk[:, 2]))))
            if np.max(np.abs(ijk[:, 2] - k)) > 1e-2 or not 0 <= k < shape[2]:
                raise ReadError(f"ROI {name!r}: a contour does not lie in a slice of the grid")
            rr, cc = polygon(ijk[:, 0], ijk[:, 1], shape=shape[:2])
            plane = planes.setdefault(k, np.zeros(shape[:2], dtype=bool))
            plane[rr, cc] ^= True  # even-odd rule: a contour inside another cuts a hole
        mask = np.zeros(shape, dtype=bool)
        for k, plane in planes.items():
            mask[:, :, k] = plane
        out[name] = mask
    return out


def read_rtstruct(path: str | PathLike[str]) -> Any:
    """The RTSTRUCT dataset at ``path``.

    Raises:
        ReadError: not readable or not an RT Structure Set.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(Path(path))
    except (OSError, pydicom.errors.InvalidDicomError) as err:
        raise ReadError(f"cannot read DICOM: {err}", path) from err
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS:
        raise ReadError("not a DICOM RT Structure Set", path)
    return ds
