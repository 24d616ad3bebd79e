"""Reader: real DICOM folders and NIfTI files land in napari's world where their headers say.

Each check is independent of medseg's reader: voxel positions come from the DICOM headers (pydicom) or
from dcm2niix's reference NIfTI (nibabel); the layer must hold the same value at that world point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from medseg_napari._layers import CT_WINDOW, GEOMETRY_KEY, RAS_TO_WORLD  # noqa: E402
from medseg_napari._reader import get_reader  # noqa: E402


def _value_at_world(layer, world) -> tuple[float, np.ndarray]:
    idx = np.asarray(layer.world_to_data(world), dtype=float)
    rounded = np.round(idx)
    np.testing.assert_allclose(idx, rounded, atol=2e-3)  # the world point is a voxel centre of the layer
    return float(layer.data[tuple(rounded.astype(int))]), rounded


def _check_against_nifti(layer, ref_path: Path, n: int = 40, rtol: float = 1e-4, up_to_scale: bool = False) -> None:
    """``n`` random voxels of the reference NIfTI (nibabel) have the same value at the same world point.

    ``up_to_scale``: values may differ by one common positive factor. For Philips, medseg applies the DICOM
    rescale while dcm2niix applies Philips' private "precise" scaling (value / (RescaleSlope x MR Scale
    Slope)); tests/io checks that relation, this test is about placement.
    """
    import nibabel as nib

    img = nib.load(str(ref_path))
    ref = np.asarray(img.get_fdata(dtype=np.float64))
    rng = np.random.default_rng(1)
    ijk = np.stack([rng.integers(0, s, n) for s in ref.shape[:3]], axis=1)
    ras = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    world = ras @ RAS_TO_WORLD.T
    got, want = [], []
    for v, w in zip(ijk, world):
        point = w if layer.ndim == 3 else np.concatenate([[0.0], w])
        got.append(_value_at_world(layer, point)[0])
        want.append(ref[tuple(v)] if ref.ndim == 3 else ref[(*v, 0)])
    got_a, want_a = np.asarray(got), np.asarray(want)
    assert np.ptp(want_a) > 0  # the sample is not all background
    if up_to_scale:
        factor = float(np.dot(got_a, want_a) / np.dot(want_a, want_a))
        assert factor > 0
        want_a = want_a * factor
    np.testing.assert_allclose(got_a, want_a, rtol=rtol, atol=1e-3)


def test_get_reader_is_cheap_and_never_raises(tmp_path, shared_data):
    (tmp_path / "notes.txt").write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(empty)) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert get_reader(12345) is None  # type: ignore[arg-type]
    assert get_reader(str(shared_data / "MONAI/tests/testing_data/anatomical.nii")) is not None
    assert get_reader(str(shared_data / "dcmqi/data/segmentations/ct-3slice")) is not None
    # extensionless DICOM files are recognised by their DICM marker
    ts_dir = shared_data / "TotalSegmentator/tests/reference_files/example_ct_dicom"
    if ts_dir.is_dir():
        first = sorted(p for p in ts_dir.rglob("*") if p.is_file())[0]
        assert get_reader(str(first)) is not None


def test_dicom_ct_folder_matches_headers(make_napari_viewer, shared_data):
    import pydicom

    folder = shared_data / "dcmqi/data/segmentations/ct-3slice"
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin="medseg")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.contrast_limits == list(CT_WINDOW)  # CT opens with a soft-tissue window
    geom = layer.metadata[GEOMETRY_KEY]
    assert sorted(np.round(layer.scale, 4)) == sorted(np.round(geom.spacing, 4))
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
        drow, dcol = (float(x) for x in ds.PixelSpacing)
        pixels = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for r, c in [(0, 0), (100, 300), (511, 7), (256, 256)]:
            lps = ipp + c * dcol * iop[0] + r * drow * iop[1]
            world = np.array([-lps[2], lps[1], lps[0]])  # (I, P, L)
            got, _ = _value_at_world(layer, world)
            assert got == pixels[r, c]


def test_nifti_matches_nibabel(make_napari_viewer, shared_data):
    import nibabel as nib

    path = shared_data / "MONAI/tests/testing_data/anatomical.nii"
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="medseg")
    img = nib.load(str(path))
    np.testing.assert_allclose(sorted(layer.scale), sorted(img.header.get_zooms()[:3]), atol=1e-6)
    _check_against_nifti(layer, path)


def test_oblique_philips_4d_matches_dcm2niix(make_napari_viewer, shared_data):
    folder = shared_data / "dcm_qa_philips/In"
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(folder), plugin="medseg")
    assert layer.ndim == 4  # (t, ...) time series
    lin = np.asarray(layer.affine.affine_matrix)[1:4, 1:4]
    assert not np.allclose(np.abs(lin), np.round(np.abs(lin)), atol=1e-3)  # oblique: off-diagonal direction
    _check_against_nifti(layer, shared_data / "dcm_qa_philips/Ref/EPI_asc_CLEAR_201.nii", up_to_scale=True)


def test_folder_with_several_series_opens_each(make_napari_viewer, shared_data):
    folder = shared_data / "dcm_qa/In/Orientation"
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin="medseg")
    names = sorted(layer.name for layer in layers)
    assert len(layers) == 6
    assert "#22 sag_asc_35sl" in names and "#16 cor_asc_35sl" in names
    by_name = {layer.name: layer for layer in layers}
    # sagittal and oblique-coronal series are placed as dcm2niix places them
    _check_against_nifti(by_name["#22 sag_asc_35sl"], shared_data / "dcm_qa/Ref/sag_asc_35sl_22.nii", n=20)
    _check_against_nifti(by_name["#16 cor_asc_35sl"], shared_data / "dcm_qa/Ref/cor_asc_35sl_16.nii", n=20)


def test_nrrd_labels_line_up_with_their_dicom_ct(make_napari_viewer, shared_data):
    """dcmqi's liver label (NRRD) was drawn on the 3-slice CT: every label voxel sits on a CT voxel centre."""
    seg_dir = shared_data / "dcmqi/data/segmentations"
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(seg_dir / "ct-3slice"), plugin="medseg")
    (liver,) = viewer.open(str(seg_dir / "liver_seg.nrrd"), plugin="medseg")
    idx = np.argwhere(np.asarray(liver.data) > 0)
    assert len(idx) > 100
    sample = idx[:: max(1, len(idx) // 50)]
    for d in sample:
        ct_idx = np.asarray(ct.world_to_data(liver.data_to_world(d)), float)
        np.testing.assert_allclose(ct_idx, np.round(ct_idx), atol=1e-3)
        assert all(0 <= c < s for c, s in zip(np.round(ct_idx), ct.data.shape))


def test_dicom_seg_opens_as_labels_on_its_series(make_napari_viewer, shared_data, tmp_path):
    """dcmqi's liver SEG next to its CT: an image layer and, on top, a Labels layer named and coloured from
    the SEG, whose voxels are dcmqi's NRRD label and sit on CT voxel centres."""
    import shutil

    import medseg.io
    from medseg_napari._layers import LABELS_KEY

    seg_dir = shared_data / "dcmqi/data/segmentations"
    if not seg_dir.exists():
        pytest.skip("dcmqi data not in ../shared/data")
    folder = tmp_path / "study"
    shutil.copytree(seg_dir / "ct-3slice", folder)
    shutil.copy(seg_dir / "liver.dcm", folder / "liver.dcm")
    assert get_reader(str(folder / "liver.dcm")) is not None
    viewer = make_napari_viewer()
    ct, liver = viewer.open(str(folder / "liver.dcm"), plugin="medseg")
    assert liver.__class__.__name__ == "Labels" and ct.__class__.__name__ == "Image"
    assert [lab.name for lab in liver.metadata[LABELS_KEY]] == ["Liver"]
    assert "Liver" in list(liver.features["name"])
    ref = np.asarray(medseg.io.read(seg_dir / "liver_seg.nrrd").array) > 0
    assert int((np.asarray(liver.data) > 0).sum()) == int(ref.sum())
    d = np.argwhere(np.asarray(liver.data) > 0)[0]
    ct_idx = np.asarray(ct.world_to_data(liver.data_to_world(d)), float)
    np.testing.assert_allclose(ct_idx, np.round(ct_idx), atol=1e-3)
