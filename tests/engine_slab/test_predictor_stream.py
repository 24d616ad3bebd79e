"""The predictor's streamed (bounded-memory) path gives the same label map as its full path, on real CT."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _spec(tmp_path, invert="labels"):
    from monai.networks.nets import BasicUNet

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 4, "features": [4, 4, 8, 8, 16, 4]}
    torch.manual_seed(0)
    w = tmp_path / "tiny.pt"
    torch.save(BasicUNet(**args).state_dict(), w)
    return {
        "name": "tiny-stream",
        "network": {"class": "BasicUNet", "args": args},
        "weights": {"source": str(w)},
        "input": {
            "modality": "CT", "orientation": "RAS", "spacing": [3.5, 4.0, 4.5],
            "normalize": [{"type": "window", "a_min": -200, "a_max": 300, "b_min": 0, "b_max": 1, "clip": True}],
        },
        "inferer": {"mode": "sliding", "roi_size": [32, 32, 32], "overlap": 0.5, "blend": "gaussian",
                    "sw_batch_size": 2, "padding_mode": "replicate"},
        "output": {"activation": "softmax", "decision": "argmax", "invert": invert},
        "labels": [{"id": i, "name": f"l{i}", "color": [255, 0, 0]} for i in (1, 2, 3)],
    }


def example_ct(shared_data):
    """TotalSegmentator's real ``example_ct.nii.gz`` as a float32 Volume (skips when the data is absent)."""
    from medseg.types import Geometry, Volume

    nib = pytest.importorskip("nibabel")
    path = shared_data / "TotalSegmentator" / "tests" / "reference_files" / "example_ct.nii.gz"
    if not path.is_file():
        pytest.skip(f"real test data not found: {path}")
    img = nib.load(str(path))
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    return Volume(arr, Geometry(img.affine, arr.shape[:3]))


@pytest.mark.parametrize("invert", ["labels", "probabilities"])
def test_streamed_predict_equals_full_predict(tmp_path, shared_data, invert):
    """Both inversions: labels decided per cell, or probabilities resampled per cell to the source grid."""
    from medseg.config import load_spec
    from medseg.predictor import load_predictor
    vol = example_ct(shared_data)

    pred = load_predictor(load_spec(_spec(tmp_path, invert)), device="cpu", precision="float32")
    from dataclasses import replace

    from medseg.engine.plan import Stitch, WayBack

    pre = pred.preprocess(vol)
    assert pred.plan(pre).stitch is Stitch.FULL  # small: the full path
    full = pred.predict(vol)
    seen = []
    pred.options = replace(pred.options, stream_bytes=1)  # force cells (MONAI order exceeds it: along an axis)
    plan = pred.plan(pre)
    assert plan.stitch is Stitch.CELLS and plan.order != "monai"
    streamed = pred.predict(vol, progress=lambda d, t: seen.append((d, t)))
    assert streamed.geometry == full.geometry and streamed.labels == full.labels
    assert np.array_equal(streamed.array, full.array)
    assert seen and seen[-1][0] == seen[-1][1]
    assert len(np.unique(full.array)) > 1
    if invert == "probabilities":  # the linear inverter, not MONAI's inverse, on both paths
        assert plan.way_back is WayBack.AXIS_MAPS and plan.result == "source_labels"


def test_cropping_specs_keep_the_full_path(tmp_path):
    """A foreground crop is inverted by zero padding (MONAI), not by border clamping: never streamed."""
    from medseg.config import load_spec
    from medseg.predictor import load_predictor
    from medseg.types import Geometry, Volume

    d = _spec(tmp_path, "probabilities")
    d["input"]["crop_foreground"] = {"threshold": -500, "margin": 2}
    pred = load_predictor(load_spec(d), device="cpu", precision="float32")
    arr = np.full((40, 40, 30), -1000.0, np.float32)
    arr[10:30, 8:32, 5:25] = 40.0
    pre = pred.preprocess(Volume(arr, Geometry(np.diag([2.0, 2.0, 3.0, 1.0]), arr.shape)))
    from dataclasses import replace

    from medseg.engine.plan import Stitch, WayBack

    pred.options = replace(pred.options, stream_bytes=1)
    plan = pred.plan(pre)
    assert plan.way_back is WayBack.INVERSE and plan.stitch is Stitch.FULL
