"""DICOM SEG and RTSTRUCT out, SEG in, on real series from ../shared/data, checked against dcmqi.

Every SEG/RTSTRUCT here is written by :func:`medseg.pipeline.write_segmentation`, the code behind
``medseg segment --format``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medseg.io
from medseg.errors import WriteError
from medseg.io.dicom_seg import AlgorithmInfo, read_seg
from medseg.io.rtstruct import rasterize_rtstruct, read_rtstruct
from medseg.pipeline import OutputFormat, plan_outputs, write_segmentation
from medseg.types import Label
from perfkit.measure import dice
from tests.interop._util import DCMQI, ENHANCED, TS_DICOM, reference_labels

ALGO = AlgorithmInfo("test-model", "0.1.0", "ab" * 32, "f" * 32)
BOTH = (OutputFormat.NIFTI, OutputFormat.DICOM_SEG, OutputFormat.RTSTRUCT)


def _segimage2itkimage() -> str:
    exe = Path(sys.executable).parent / "segimage2itkimage"
    if exe.is_file():
        return str(exe)
    found = shutil.which("segimage2itkimage")
    if not found:
        pytest.skip("dcmqi is not installed (pip install dcmqi)")
    return found


def _need(shared: Path, rel: str) -> Path:
    p = shared / rel
    if not p.exists():
        pytest.skip(f"{rel} not in ../shared/data")
    return p


def _dcmqi_read(seg_file: Path, out_dir: Path) -> dict[int, medseg.io.Volume]:
    """dcmqi's own reading of a SEG: one label file per segment number."""
    out_dir.mkdir()
    run = subprocess.run([_segimage2itkimage(), "--inputDICOM", str(seg_file), "--outputDirectory", str(out_dir),
                          "-t", "nifti"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return {int(p.name.split(".")[0]): medseg.io.read(p) for p in out_dir.glob("*.nii.gz")}


@pytest.fixture(scope="module")
def ts_written(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """TotalSegmentator's labels of the 20-slice Siemens CT written as NIfTI + SEG + RTSTRUCT."""
    _need(shared_data, TS_DICOM)
    ct, labels = reference_labels(shared_data)
    out = tmp_path_factory.mktemp("ts") / "case.nii.gz"
    plan = plan_outputs(out, formats=BOTH)
    written = write_segmentation(labels, out, formats=BOTH, source=shared_data / TS_DICOM, algorithm=ALGO)
    return ct, labels, plan, written


def test_seg_round_trip_is_voxel_exact_on_the_source_grid(ts_written, shared_data: Path) -> None:
    ct, labels, plan, written = ts_written
    assert set(written) >= {"label_map", "json", "ctbl", "txt", "seg", "rtstruct"}
    back = read_seg(plan.seg, reference=shared_data / TS_DICOM)
    assert back.geometry.allclose(ct.geometry, atol=1e-4)
    np.testing.assert_array_equal(back.array, labels.array)
    assert [(lab.id, lab.name) for lab in back.labels] == [(lab.id, lab.name) for lab in labels.labels]
    nifti = medseg.io.read(plan.label_map)
    np.testing.assert_array_equal(nifti.array, back.array)


def test_seg_header_codes_algorithm_and_references(ts_written) -> None:
    _, labels, plan, _ = ts_written
    ds = pydicom.dcmread(plan.seg)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    by_name = {s.SegmentLabel: s for s in ds.SegmentSequence}
    liver = by_name["liver"]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT Liver
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    sided = [n for n in by_name if n.endswith("_left")]
    assert sided, "the reference labels hold left/right structures"
    left = by_name[sided[0]].SegmentedPropertyTypeCodeSequence[0]
    assert left.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"  # SNOMED CT Left
    assert all(s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning != "Tissue" for s in ds.SegmentSequence)
    algo = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "test-model"
    assert "ab" * 32 in algo.AlgorithmParameters
    # every source slice is referenced; frames only where a segment is present
    refs = {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert len(refs) == 20
    arr = np.asarray(labels.array)
    present_frames = sum(int(np.any(arr[:, :, k] == lab.id)) for lab in labels.labels for k in range(arr.shape[2]))
    assert int(ds.NumberOfFrames) == present_frames


def test_dcmqi_reads_medseg_seg_to_the_same_label_map(ts_written, tmp_path: Path) -> None:
    ct, labels, plan, _ = ts_written
    per_segment = _dcmqi_read(plan.seg, tmp_path / "dcmqi")
    ds = pydicom.dcmread(plan.seg, stop_before_pixels=True)
    ids = {int(s.SegmentNumber): int(str(s.TrackingID).split()[1]) for s in ds.SegmentSequence}
    assert len(per_segment) == len(labels.labels)
    arr = np.asarray(labels.array)
    for number, vol in per_segment.items():
        # dcmqi writes each segment on the extent of its frames: place it by world coordinates
        from medseg.geometry import world_to_voxel

        origin = np.round(world_to_voxel(ct.affine, vol.affine[:3, 3])).astype(int)
        assert np.allclose(vol.affine[:3, :3], ct.affine[:3, :3], atol=1e-3)
        full = np.zeros(ct.shape, dtype=bool)
        sl = tuple(slice(o, o + s) for o, s in zip(origin, vol.shape))
        full[sl] = np.asarray(vol.array) > 0
        np.testing.assert_array_equal(full, arr == ids[number])


def test_rtstruct_rasterises_back_with_dice_at_least_098(ts_written) -> None:
    ct, labels, plan, _ = ts_written
    ds = read_rtstruct(plan.rtstruct)
    assert ds.Modality == "RTSTRUCT"
    masks = rasterize_rtstruct(ds, ct.geometry)
    arr = np.asarray(labels.array)
    scores = {lab.name: dice(masks[lab.name], arr == lab.id) for lab in labels.labels}
    assert min(scores.values()) >= 0.98, scores
    codes = {o.ReferencedROINumber: o.RTROIIdentificationCodeSequence[0].CodeValue for o in ds.RTROIObservationsSequence}
    names = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
    assert codes[[n for n, name in names.items() if name == "liver"][0]] == "10200004"


def test_rtstruct_holes_and_islands(shared_data: Path, tmp_path: Path) -> None:
    ct_dir = _need(shared_data, f"{DCMQI}/ct-3slice")
    ct = medseg.io.read(ct_dir)
    a = np.zeros(ct.shape, np.uint8)
    a[100:200, 100:200, :] = 1
    a[130:170, 130:170, :] = 0  # a hole
    a[140:160, 140:160, 1] = 1  # an island inside the hole
    a[300:320, 50:60, 0] = 1  # a second island
    a[400:450, 400:420, 2] = 2
    labels = ct.replace(array=a, is_label=True, labels=(Label(1, "liver", (200, 0, 0)), Label(2, "spleen", (0, 200, 0))))
    plan = plan_outputs(tmp_path / "ring.nii.gz", formats=BOTH)
    write_segmentation(labels, tmp_path / "ring.nii.gz", formats=BOTH, source=ct_dir, algorithm=ALGO)
    masks = rasterize_rtstruct(read_rtstruct(plan.rtstruct), ct.geometry)
    np.testing.assert_array_equal(masks["liver"], a == 1)
    np.testing.assert_array_equal(masks["spleen"], a == 2)
    np.testing.assert_array_equal(read_seg(plan.seg, reference=ct_dir).array, a)


def test_dcmqi_liver_seg_reads_to_its_nrrd_and_rewrites_identically(shared_data: Path, tmp_path: Path) -> None:
    base = _need(shared_data, DCMQI)
    nrrd = medseg.io.read(base / "liver_seg.nrrd")
    seg = read_seg(base / "liver.dcm", reference=base / "ct-3slice")
    assert seg.geometry.allclose(nrrd.geometry, atol=1e-3)
    np.testing.assert_array_equal(seg.array > 0, np.asarray(nrrd.array) > 0)
    assert seg.labels[0].name == "Liver"
    plan = plan_outputs(tmp_path / "liver.nii.gz", formats=(OutputFormat.NIFTI, OutputFormat.DICOM_SEG))
    write_segmentation(seg, tmp_path / "liver.nii.gz", formats=(OutputFormat.NIFTI, OutputFormat.DICOM_SEG),
                       source=base / "ct-3slice", algorithm=ALGO)
    np.testing.assert_array_equal(read_seg(plan.seg, reference=base / "ct-3slice").array, seg.array)
    dq = _dcmqi_read(plan.seg, tmp_path / "dq")
    np.testing.assert_array_equal(np.asarray(dq[1].array) > 0, np.asarray(nrrd.array) > 0)


def test_enhanced_multiframe_seg_references_frames(shared_data: Path, tmp_path: Path) -> None:
    src = _need(shared_data, ENHANCED)
    mr = medseg.io.read(src)
    a = np.zeros(mr.shape, np.uint8)
    a[10:30, 20:40, 1:4] = 1
    a[40:50, 5:15, 3:6] = 2
    labels = mr.replace(array=a, is_label=True, labels=(Label(1, "brain", (1, 2, 3)), Label(2, "tumour", (4, 5, 6))))
    plan = plan_outputs(tmp_path / "mf.nii.gz", formats=(OutputFormat.NIFTI, OutputFormat.DICOM_SEG, OutputFormat.RTSTRUCT), stats=True)
    write_segmentation(labels, tmp_path / "mf.nii.gz", formats=(OutputFormat.NIFTI, OutputFormat.DICOM_SEG,
                       OutputFormat.RTSTRUCT), stats=True, source=src, algorithm=ALGO, image=mr, seg_type="fractional")
    ds = pydicom.dcmread(plan.seg)
    assert ds.SegmentationType == "FRACTIONAL"
    ref = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert "ReferencedFrameNumber" in ref
    np.testing.assert_array_equal(read_seg(plan.seg, reference=src).array, a)
    masks = rasterize_rtstruct(read_rtstruct(plan.rtstruct), mr.geometry)
    np.testing.assert_array_equal(masks["tumour"], a == 2)


def test_anonymised_source_without_type2_attributes(shared_data: Path, tmp_path: Path) -> None:
    base = _need(shared_data, f"{DCMQI}/ct-3slice")
    anon = tmp_path / "anon"
    anon.mkdir()
    for f in sorted(base.iterdir()):
        ds = pydicom.dcmread(f)
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber"):
            if kw in ds:
                delattr(ds, kw)
        ds.save_as(anon / f.name, enforce_file_format=True)
    ct = medseg.io.read(anon)
    a = np.zeros(ct.shape, np.uint8)
    a[200:260, 200:300, :] = 1
    labels = ct.replace(array=a, is_label=True, labels=(Label(1, "liver", (200, 0, 0)),))
    plan = plan_outputs(tmp_path / "anon_seg.nii.gz", formats=BOTH)
    write_segmentation(labels, tmp_path / "anon_seg.nii.gz", formats=BOTH, source=anon, algorithm=ALGO)
    ds = pydicom.dcmread(plan.seg)
    assert ds.PatientName == "" and ds.PatientID == ""  # type 2: present and empty
    np.testing.assert_array_equal(read_seg(plan.seg, reference=anon).array, a)


def test_a_failing_output_leaves_no_output_of_the_case(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    base = _need(shared_data, f"{DCMQI}/ct-3slice")
    ct = medseg.io.read(base)
    a = np.zeros(ct.shape, np.uint8)
    a[10:20, 10:20, :] = 1
    labels = ct.replace(array=a, is_label=True, labels=(Label(1, "liver", (200, 0, 0)),))
    from medseg import pipeline

    def plan_then_race(*args, **kwargs):  # another process wins the race for one output after the check
        plan = plan_outputs(*args, **kwargs)
        plan.rtstruct.write_text("appeared after the check")
        return plan

    monkeypatch.setattr(pipeline, "plan_outputs", plan_then_race)
    with pytest.raises(WriteError, match="already exists"):
        write_segmentation(labels, tmp_path / "case.nii.gz", formats=BOTH, stats=True, split=True, source=base,
                           algorithm=ALGO, image=ct)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.rtstruct.dcm"]  # nothing else, no temporaries
    # a label map that is not on the source grid is refused before anything is written
    (tmp_path / "case.rtstruct.dcm").unlink()
    shifted = labels.replace(array=a[:-1], geometry=ct.geometry.with_shape((511, 512, 3)))
    with pytest.raises(WriteError, match="in-plane"):
        write_segmentation(shifted, tmp_path / "case.nii.gz", formats=BOTH, source=base, algorithm=ALGO)
    assert list(tmp_path.iterdir()) == []


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    v = np.asarray(axis, float)
    return Rotation.from_rotvec(np.radians(degrees) * v / np.linalg.norm(v)).as_matrix()


@pytest.mark.parametrize(("name", "rotation"), [
    ("sagittal", _rotation((0, 1, 0), 90) @ _rotation((0, 0, 1), 90)),
    ("coronal", _rotation((1, 0, 0), 90)),
    ("oblique", _rotation((1, 2, 0.5), 23)),
])
def test_any_orientation(shared_data: Path, tmp_path: Path, name: str, rotation: np.ndarray) -> None:
    """dcmqi's real CT slices, the whole series rigidly rotated in patient space (positions and orientations;
    pixels unchanged): SEG and RTSTRUCT round trips stay exact."""
    from pydicom.uid import generate_uid

    base = _need(shared_data, f"{DCMQI}/ct-3slice")
    folder = tmp_path / name
    folder.mkdir()
    series = generate_uid()
    for f in sorted(base.iterdir()):
        ds = pydicom.dcmread(f)
        iop = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (rotation @ iop.T).T.ravel()]
        ds.ImagePositionPatient = [round(float(v), 5) for v in rotation @ np.asarray(ds.ImagePositionPatient, float)]
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f.name, enforce_file_format=True)
    vol = medseg.io.read(folder)
    assert vol.geometry.orientation[2] in {"sagittal": "LR", "coronal": "AP", "oblique": "LRAPSI"}[name]
    a = np.zeros(vol.shape, np.uint8)
    a[100:300, 150:260, :] = 1
    a[120:180, 170:200, 1] = 0
    a[350:420, 300:330, 0:2] = 2
    labels = vol.replace(array=a, is_label=True, labels=(Label(1, "liver", (200, 0, 0)), Label(2, "spleen", (0, 200, 0))))
    plan = plan_outputs(tmp_path / "o.nii.gz", formats=BOTH)
    write_segmentation(labels, tmp_path / "o.nii.gz", formats=BOTH, source=folder, algorithm=ALGO)
    np.testing.assert_array_equal(read_seg(plan.seg, reference=folder).array, a)
    masks = rasterize_rtstruct(read_rtstruct(plan.rtstruct), vol.geometry)
    np.testing.assert_array_equal(masks["liver"], a == 1)
    np.testing.assert_array_equal(masks["spleen"], a == 2)


def test_mosaic_or_4d_source_is_a_clear_error(shared_data: Path, tmp_path: Path) -> None:
    from medseg.errors import ReadError
    from medseg.io.dicom_seg import load_source

    base = _need(shared_data, "dcm_qa/In")
    info = medseg.io.scan(base)[0]
    with pytest.raises(ReadError, match="4D|mosaic"):
        load_source(base, info.uid)
