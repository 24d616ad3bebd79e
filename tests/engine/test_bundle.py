"""A MONAI bundle (real spleen_ct_segmentation definition, seeded random weights) runs through medseg's
engine with labels EQUAL to those of MONAI's own bundle workflow on the same input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.engine._util import SHARED

# The model zoo's published configs/inference.json of spleen_ct_segmentation (network, transforms, inferer
# and postprocessing verbatim; dataset paths are overridden at run time).
SPLEEN_INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32",
    "output_postfix": "trans",
    "separate_folder": True,
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {
        "_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
        "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch",
    },
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0, "b_max": 1, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 4},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4, "overlap": 0.5},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_ext": "@output_ext",
             "output_dtype": "@output_dtype", "output_postfix": "@output_postfix", "separate_folder": "@separate_folder"},
        ],
    },
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {
        "_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader", "network": "@network",
        "inferer": "@inferer", "postprocessing": "@postprocessing", "val_handlers": "@handlers", "amp": True,
    },
    "checkpointloader": {
        "_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'", "load_dict": {"model": "@network"},
    },
    "initialize": ["$monai.utils.set_determinism(seed=123)", "$@checkpointloader(@evaluator)"],
    "run": ["$@evaluator.run()"],
}
SPLEEN_METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.5.3",
    "name": "Spleen CT segmentation",
    "task": "Decathlon spleen segmentation",
    "description": "A pre-trained model for volumetric (3D) segmentation of the spleen from CT image",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                             "spatial_shape": [96, 96, 96], "dtype": "float32", "value_range": [0, 1],
                             "is_patch_data": True, "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "spatial_shape": [96, 96, 96], "dtype": "float32", "value_range": [0, 1],
                             "is_patch_data": True, "channel_def": {"0": "background", "1": "spleen"}}},
    },
}


def make_bundle(root: Path, seed: int = 2) -> Path:
    import torch
    from monai.networks.nets import UNet

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(SPLEEN_INFERENCE, indent=2))
    (root / "configs" / "metadata.json").write_text(json.dumps(SPLEEN_METADATA, indent=2))
    torch.manual_seed(seed)
    args = {k: v for k, v in SPLEEN_INFERENCE["network_def"].items() if k != "_target_"}
    net = UNet(**args)  # seed 2 labels about 45% of the test crop "spleen": a non-trivial comparison
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory):
    import nibabel as nib

    src = SHARED / "TotalSegmentator" / "tests" / "reference_files" / "example_ct_sm.nii.gz"
    if not src.is_file():
        pytest.skip(f"real test data not found: {src}")
    img = nib.load(str(src))
    crop = img.slicer[30:86, 20:72, 6:26]  # 56 x 52 x 20 voxels of 3 mm: 4 windows of 96^3 at 1.5 mm
    out = tmp_path_factory.mktemp("ct") / "ct_crop.nii.gz"
    nib.save(crop, str(out))
    return out


def run_monai_bundle(bundle: Path, image: Path, out_dir: Path) -> np.ndarray:
    import nibabel as nib
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        **{"bundle_root": str(bundle), "datalist": [str(image)], "output_dir": str(out_dir), "dataloader#num_workers": 0},
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    files = sorted(out_dir.rglob("*.nii.gz"))
    assert len(files) == 1, files
    return np.asarray(nib.load(str(files[0])).dataobj), nib.load(str(files[0])).affine


def test_bundle_matches_monai_workflow(tmp_path, small_ct):
    import nibabel as nib

    from medseg.predictor import load_predictor
    from tests.engine._util import nifti_volume

    bundle = make_bundle(tmp_path / "spleen_ct_segmentation")
    ref, ref_affine = run_monai_bundle(bundle, small_ct, tmp_path / "eval")

    pred = load_predictor(bundle, device="cpu", precision="float32")
    assert pred.spec.labels[0].name == "spleen" and pred.spec.inferer.roi_size == (96, 96, 96)
    assert pred.spec.input.spacing == (1.5, 1.5, 2.0) and pred.spec.inferer.overlap == 0.5
    vol = nifti_volume(small_ct)
    labels = pred.predict(vol)

    ref = ref.reshape(labels.shape)
    assert labels.geometry == vol.geometry
    assert np.allclose(ref_affine, nib.load(str(small_ct)).affine, atol=1e-5)
    frac = float((labels.array == 1).mean())
    assert 0.01 < frac < 0.99, f"degenerate test network: spleen fraction {frac}"
    assert np.array_equal(labels.array, ref.astype(labels.array.dtype))


def test_bundle_unsupported_transform_is_a_clear_error(tmp_path):
    from medseg.models.bundle import spec_from_bundle
    from medseg.errors import ModelError

    bundle = make_bundle(tmp_path / "b")
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg["preprocessing"]["transforms"].insert(3, {"_target_": "RandAffined", "keys": "image", "prob": 1.0})
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"inference\.json: preprocessing\[3\] RandAffined: transform not supported"):
        spec_from_bundle(bundle)
    with pytest.raises(ModelError, match="not a MONAI bundle"):
        spec_from_bundle(tmp_path)
