"""Predictor geometry and behaviour with a tiny seeded network on real CT data.

The label map must have exactly the input's shape and affine, for NIfTI and DICOM inputs in any
orientation, and map to the same world positions (compared after reorienting to canonical RAS).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.errors import ModelError
from medseg.geometry import reorient_to_canonical
from medseg.types import Geometry, Volume
from tests.engine._util import SHARED, nifti_volume

CT = SHARED / "TotalSegmentator" / "tests" / "reference_files" / "example_ct.nii.gz"
CT_DICOM = SHARED / "TotalSegmentator" / "tests" / "reference_files" / "example_ct_dicom"
SEG_DICOM = SHARED / "TotalSegmentator" / "tests" / "reference_files" / "example_seg_dicom.nii.gz"


def tiny_spec(tmp_path, *, sha256=None, mode="sliding", tta=(), seed=0) -> dict:
    import torch
    from monai.networks.nets import BasicUNet

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "features": [4, 4, 8, 8, 16, 4]}
    torch.manual_seed(seed)
    net = BasicUNet(**args)
    w = tmp_path / f"tiny_{seed}.pt"
    torch.save(net.state_dict(), w)
    return {
        "name": "tiny-ct",
        "network": {"class": "BasicUNet", "args": args},
        "weights": {"source": str(w), "sha256": sha256},
        "input": {
            "modality": "CT",
            "orientation": "RAS",
            "spacing": [4.0, 4.5, 5.0],
            "normalize": [{"type": "window", "a_min": -200, "a_max": 300, "b_min": 0, "b_max": 1, "clip": True}],
        },
        "inferer": {"mode": mode, "roi_size": [32, 32, 32], "overlap": 0.25, "blend": "gaussian", "sw_batch_size": 2,
                    "tta_flips": [list(t) for t in tta]},
        "output": {"activation": "softmax", "decision": "argmax", "postprocess": {"min_size_mm3": 500.0}},
        "labels": [{"id": 1, "name": "a", "color": [255, 0, 0]}, {"id": 2, "name": "b", "color": [0, 255, 0]}],
    }


@pytest.fixture(scope="module")
def ct():
    if not CT.is_file():
        pytest.skip(f"real test data not found: {CT}")
    return nifti_volume(CT)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from medseg.config import load_spec
    from medseg.predictor import load_predictor

    return load_predictor(load_spec(tiny_spec(tmp_path_factory.mktemp("w"))), device="cpu", precision="float32")


def _variants(vol: Volume):
    """Flipped, permuted and mixed copies of ``vol`` (same world positions, different voxel order)."""
    import nibabel as nib

    a, aff = vol.array, vol.affine
    out = {}
    for name, ornt in {
        "flip_i": [[0, -1], [1, 1], [2, 1]],
        "LPS": [[0, -1], [1, -1], [2, 1]],
        "permute_kij": [[2, 1], [0, 1], [1, 1]],
        "permute_flip": [[1, -1], [2, 1], [0, -1]],
    }.items():
        ornt = np.array(ornt, float)
        arr = nib.orientations.apply_orientation(a, ornt)
        new_aff = aff @ nib.orientations.inv_ornt_aff(ornt, a.shape)
        out[name] = Volume(np.ascontiguousarray(arr), Geometry(new_aff, arr.shape))
    return out


def test_labels_have_input_geometry_and_world_positions_in_any_orientation(ct, predictor):
    base = predictor.predict(ct)
    assert base.is_label and base.geometry == ct.geometry and base.array.shape == ct.shape
    assert base.labels == predictor.spec.labels
    counts = np.bincount(base.array.ravel(), minlength=3)
    assert (counts > 0).sum() >= 2, f"degenerate test network: {counts}"
    ref, ref_aff = reorient_to_canonical(base.array, base.affine)
    for name, vol in _variants(ct).items():
        lab = predictor.predict(vol)
        assert lab.geometry == vol.geometry, name  # exactly the input's shape and affine
        arr, aff = reorient_to_canonical(lab.array, lab.affine)
        assert np.allclose(aff, ref_aff, atol=1e-6), name
        assert np.array_equal(arr, ref), f"{name}: labels moved ({(arr != ref).sum()} voxels differ)"


def test_dicom_input_keeps_the_series_geometry(tmp_path, predictor):
    if not CT_DICOM.is_dir():
        pytest.skip(f"real test data not found: {CT_DICOM}")
    import nibabel as nib

    from medseg.io import read
    from medseg.pipeline import segment_file

    vol = read(CT_DICOM)
    res = segment_file(CT_DICOM, tmp_path / "seg.nii.gz", predictor)
    out = nib.load(str(res.output))
    assert out.shape == vol.shape and np.allclose(out.affine, vol.affine, atol=1e-5)
    # dcm2niix's conversion of the same series (TotalSegmentator's reference) covers the same world grid
    ref = nib.load(str(SEG_DICOM))
    a1 = reorient_to_canonical(np.zeros(out.shape), out.affine)[1]
    a2 = reorient_to_canonical(np.zeros(ref.shape), ref.affine)[1]
    assert np.allclose(a1, a2, atol=1e-3)
    side = json.loads(res.sidecars["json"].read_text())
    assert side["series_uid"] == vol.source.series_uid and side["model"] == "tiny-ct"
    assert set(side["volumes_ml"]) == {"a", "b"}


def test_tta_and_whole_mode(ct, tmp_path):
    from medseg.config import load_spec
    from medseg.predictor import load_predictor

    small = Volume(np.ascontiguousarray(ct.array[30:90, 20:80, 40:100]), ct.geometry.with_shape((60, 60, 60)))
    small = Volume(small.array, Geometry(ct.affine, (60, 60, 60)))
    spec = load_spec(tiny_spec(tmp_path, mode="whole"))
    p = load_predictor(spec, device="cpu", precision="float32")
    calls = []
    lab = p.predict(small, progress=lambda d, t: calls.append((d, t)))
    assert lab.geometry == small.geometry and calls[-1] == (1, 1)
    p_tta = load_predictor(spec, device="cpu", precision="float32", tta=True)
    assert p_tta.spec.inferer.tta_flips == ((0,), (1,), (2,))
    calls.clear()
    lab_tta = p_tta.predict(small, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4, 4) and lab_tta.geometry == small.geometry
    assert p_tta.fingerprint != p.fingerprint or p_tta.spec.inferer != p.spec.inferer
    # the TTA scores are the mean of the plain scores of flipped inputs, flipped back
    import torch

    x = p.preprocess(small).x
    manual = p.predict_scores(x)
    for axis in (2, 3, 4):
        manual += torch.flip(p.predict_scores(torch.flip(x, [axis])), [axis - 1])
    assert torch.allclose(p_tta.predict_scores(x), manual / 4, atol=1e-6)


def test_sliding_progress_counts_windows(ct, predictor):
    seen = []
    predictor.predict(ct, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] and all(d <= t for d, t in seen)


def test_weights_checks(tmp_path):
    import torch

    from medseg.config import load_spec
    from medseg.predictor import load_predictor

    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_predictor(load_spec(tiny_spec(tmp_path, sha256="0" * 64)), device="cpu")
    spec = tiny_spec(tmp_path)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "optimizer": object.__new__(Geometry)}, spec["weights"]["source"])
    with pytest.raises(ModelError, match="weights_only=True"):
        load_predictor(load_spec(spec), device="cpu")
    spec = tiny_spec(tmp_path)
    spec["network"]["args"]["out_channels"] = 5
    with pytest.raises(ModelError, match="does not fit BasicUNet"):
        load_predictor(load_spec(spec), device="cpu")


def test_devices_and_options(tmp_path):
    import torch

    from medseg.config import load_spec
    from medseg.engine.runtime import resolve_device, torch_settings
    from medseg.predictor import load_predictor

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu9")
    spec = load_spec(tiny_spec(tmp_path))
    with pytest.raises(ValueError, match="overlap must be >= 0 and < 1, got 1.5"):
        load_predictor(spec, device="cpu", overlap=1.5)
    with pytest.raises(ModelError, match="float16 is not supported on the CPU"):
        load_predictor(spec, device="cpu", precision="float16")
    before = torch.get_num_threads(), torch.backends.cudnn.benchmark
    with torch_settings(torch.device("cpu"), threads=1):
        assert torch.get_num_threads() == 1
    assert (torch.get_num_threads(), torch.backends.cudnn.benchmark) == before
    with pytest.raises(ModelError, match="expects 1 channel"):
        load_predictor(spec, device="cpu").predict(Volume(np.zeros((8, 8, 8, 2), np.float32), Geometry(np.eye(4), (8, 8, 8))))


def test_invert_labels_mode_keeps_geometry(ct, tmp_path):
    """``output.invert: labels`` (argmax on the model grid, nearest back, as the whole-body bundle does)."""
    import nibabel as nib

    from medseg.config import load_spec
    from medseg.predictor import load_predictor

    d = tiny_spec(tmp_path, mode="whole")
    d["output"]["invert"] = "labels"
    p = load_predictor(load_spec(d), device="cpu", precision="float32")
    arr = np.ascontiguousarray(ct.array[30:90, 20:80, 40:100])
    ornt = np.array([[1, -1], [0, 1], [2, -1]], float)  # permuted and flipped copy
    vol = Volume(np.ascontiguousarray(nib.orientations.apply_orientation(arr, ornt)),
                 Geometry(ct.affine @ nib.orientations.inv_ornt_aff(ornt, arr.shape), (60, 60, 60)))
    lab = p.predict(vol)
    assert lab.geometry == vol.geometry and lab.array.dtype == np.uint8
    ref = p.predict(Volume(arr, Geometry(ct.affine, arr.shape)))
    assert np.array_equal(reorient_to_canonical(lab.array, lab.affine)[0], reorient_to_canonical(ref.array, ref.affine)[0])
