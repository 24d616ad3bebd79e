"""nnU-Net folders on the OpenVINO runtime, and the bounded-memory path (row slabs) against the full one.

The folder and the CT are the nnU-Net tests' real case (``conftest.py``): two folds, mirroring TTA, a real CT
crop in a non-canonical orientation with a zero border, transposed plans, 3 mm -> (3.5, 4, 4) mm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from perfkit.nnunet_folder import RESENC_ARCH, ct_intensity_properties, make_results_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = {"load", "read", "preprocess", "network", "export", "write"}


# ----------------------------------------------------------------------------------------------- OpenVINO


def test_converted_fold_networks_match_torch(case, tmp_path, monkeypatch):
    """Each fold's converted network against torch on the real preprocessed CT (the 8 mirrored copies of the
    first tile, the batch the sliding window sends), then the label maps of both runtimes."""
    pytest.importorskip("openvino")
    import torch

    from medseg.nnunet import NnUNetPredictor
    from medseg.nnunet.sliding import _pad_to_tile, mirror_combinations

    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    folder, _, vol = case
    ref = NnUNetPredictor(folder, device="cpu", runtime="torch")
    ov = NnUNetPredictor(folder, device="cpu", runtime="openvino", threads=1)
    assert ref.fold_networks is None and ref.runtime_info.name == "torch"
    assert ov.runtime_info.name == "openvino" and ov.runtime_info.cache == "miss"
    assert ov.runtime_info.precision == "float32" and len(ov.fold_networks) == 2 and ov.mirror_batch == 8
    assert ov.fingerprint != ref.fingerprint  # other kernels: its labels may differ at near-ties

    x, _ = ref.preprocess(vol)
    tile = _pad_to_tile(x, (32, 32, 32))[0][:, :32, :32, :32][None]
    views = torch.cat([tile] + [torch.flip(tile, d) for d in mirror_combinations((0, 1, 2))])
    assert views.shape == (8, 1, 32, 32, 32)
    for state, net in zip(ref.weights, ov.fold_networks):
        ref.network.load_state_dict(state)
        with torch.inference_mode():
            want = ref.network(views)
        got = net(views)
        agree = float((got.argmax(1) == want.argmax(1)).double().mean())
        diff = (got - want).abs()
        print(f"max abs {float(diff.max()):.3g} mean abs {float(diff.mean()):.3g} argmax {agree:.6f}")
        # instance norm over the tile's zero-padded part amplifies rounding: max 5.2e-4 for outputs of ~1
        assert float(diff.max()) < 2e-3 and float(diff.mean()) < 5e-5 and agree >= 0.9999, agree

    a, b = ref.predict(vol).array, ov.predict(vol).array
    assert ov.last_stitch == "full" and set(ov.timings) == {"load", "preprocess", "network", "export"}
    assert float((a == b).mean()) >= 0.9999  # measured 99.9956 % (4 of 90,000 voxels, random weights' near-ties)


def _segment(tmp_path, name, path, folder, runtime, cache):
    env = {**os.environ, "PYTHONPATH": REPO, "MEDSEG_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("MEDSEG_RUNTIME", None)
    out = tmp_path / f"{name}.nii.gz"
    r = subprocess.run([sys.executable, "-m", "medseg", "segment", str(path), "-m", str(folder), "--runtime", runtime,
                        "--threads", "1", "--no-progress", "-o", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    import nibabel as nib

    return r, json.loads((tmp_path / f"{name}.json").read_text()), np.asarray(nib.load(out).dataobj)


def test_segment_runtime_openvino_end_to_end_and_cache(case, tmp_path):
    """``medseg segment CT -m <results folder> --runtime openvino``: OpenVINO in the sidecar, a compiled-model
    cache hit on the second run with the same labels, >= 99.99 % equal to torch's."""
    pytest.importorskip("openvino")
    from medseg.nnunet import NnUNetPredictor

    folder, path, vol = case
    cache = tmp_path / "cache"
    r1, doc1, lab1 = _segment(tmp_path, "first", path, folder, "openvino", cache)
    assert doc1["runtime"]["name"] == "openvino" and doc1["runtime"]["cache"] == "miss"
    assert doc1["runtime"]["requested"] == "openvino" and doc1["runtime"]["precision"] == "float32"
    assert set(doc1["timings"]) == STAGES and r1.stderr.count("runtime: openvino") == 1
    assert len(list(cache.glob("openvino/*/model.xml"))) == 2  # one converted network per fold
    r2, doc2, lab2 = _segment(tmp_path, "second", path, folder, "openvino", cache)
    assert doc2["runtime"]["cache"] == "hit" and "compiled-model cache hit" in r2.stderr
    assert doc2["timings"]["load"] < doc1["timings"]["load"]  # no conversion, no agreement check
    # a miss compiles the IR it wrote to the cache, as a hit does (the freshly converted model compiled to other
    # kernels: 1 voxel of 90,000 once differed between a miss and a hit), so both runs agree exactly
    np.testing.assert_array_equal(lab1, lab2)
    torch_labels = NnUNetPredictor(folder, device="cpu").predict(vol).array
    assert float((lab1 == torch_labels).mean()) >= 0.9999


# ------------------------------------------------------------------------------------------- bounded memory


def test_bounded_rows_give_the_full_paths_labels(case):
    """stream_bytes below the full path's need: row slabs (two folds averaged, mirroring TTA, resampling 3 mm ->
    (3.5, 4, 4) mm, crop and transposition undone) give bitwise the same labels."""
    from medseg.nnunet import NnUNetPredictor

    folder, _, vol = case
    full = NnUNetPredictor(folder, device="cpu")
    rows = NnUNetPredictor(folder, device="cpu", stream_bytes=1)
    x, meta = full.preprocess(vol)
    assert not full.streams(x, meta) and rows.streams(x, meta)
    a, b = full.predict(vol), rows.predict(vol)
    assert (full.last_stitch, rows.last_stitch) == ("full", "rows")
    assert b.geometry == vol.geometry and len(np.unique(a.array)) > 2
    np.testing.assert_array_equal(a.array, b.array)


def test_bounded_rows_regions_and_separate_z(tmp_path, case):
    """Region-based model (sigmoid thresholds) with anisotropic target spacing: the logits come back with
    nnU-Net's separate-z resampling along axis 0 (in-plane linear, nearest along z), slab by slab."""
    from medseg.nnunet import NnUNetPredictor
    from medseg.nnunet.resample import separate_z_axis

    _, _, vol = case
    arr = np.asarray(vol.array)
    folder = make_results_folder(tmp_path, labels={"background": 0, "wt": [1, 2, 3], "tc": [2, 3], "et": [3]},
                                 intensity_properties=ct_intensity_properties(arr[arr > -300]),
                                 spacing=(9.0, 2.5, 2.5), transpose_forward=(2, 0, 1), regions_class_order=[1, 2, 3],
                                 architecture=RESENC_ARCH((4, 8, 16)), folds=(0,))
    full = NnUNetPredictor(folder, device="cpu", tta=False)
    rows = NnUNetPredictor(folder, device="cpu", tta=False, stream_bytes=1)
    assert separate_z_axis((3.0, 3.0, 3.0), full.model.config.spacing) == 0
    a, b = full.predict(vol).array, rows.predict(vol).array
    assert rows.last_stitch == "rows" and len(np.unique(a)) > 2
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape, new_shape, spacing, new_spacing, order_z", [
    ((13, 11, 9), (29, 8, 12), (1.0, 1.0, 1.0), (0.45, 1.2, 0.75), 0),  # up along the rows, zoom's path
    ((31, 10, 12), (9, 14, 7), (1.0, 1.2, 1.0), (2.0, 0.86, 1.7), 0),  # down along the rows
    ((7, 16, 14), (17, 10, 9), (4.0, 1.0, 1.0), (1.6, 1.5, 1.5), 0),  # separate axis 0, nearest along it
    ((7, 16, 14), (17, 10, 9), (4.0, 1.0, 1.0), (1.6, 1.5, 1.5), 1),  # separate axis 0, linear along it
    ((12, 9, 8), (12, 9, 8), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0),  # same shape: passed through
])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_row_resampler_is_bitwise_resample_to_shape(shape, new_shape, spacing, new_spacing, order_z, dtype):
    from medseg.nnunet.plans import Resampling
    from medseg.nnunet.resample import RowResampler, resample_to_shape, separate_z_axis

    rng = np.random.default_rng(7)
    data = (rng.normal(size=(3, *shape)) * 20).astype(dtype)
    how = Resampling(order=1, order_z=order_z)
    want = np.stack([resample_to_shape(data[c:c + 1], new_shape, spacing, new_spacing, how)[0] for c in range(3)])
    axis = separate_z_axis(spacing, new_spacing)
    assert axis == (0 if spacing[0] == 4.0 else None)  # the cases cover zoom's path and a separate axis 0
    rs = RowResampler(shape, new_shape, spacing, new_spacing, how, dtype)
    got = np.zeros_like(want)
    r = 0
    while r < shape[0]:  # blocks of uneven sizes, as row slabs arrive
        n = int(rng.integers(1, 5))
        for o0, o1, channels in rs.push(data[:, r:r + n]):
            for c, ch in channels:
                got[c, o0:o1] = ch
        r += n
    assert rs.emitted == new_shape[0]
    np.testing.assert_array_equal(got, want)


def test_row_resampler_refuses_what_does_not_stream():
    from medseg.nnunet.plans import Resampling
    from medseg.nnunet.resample import RowResampler

    assert not RowResampler.supports((10, 10, 10), (12, 12, 12), (1, 1, 1), (0.8, 0.8, 0.8), Resampling(order=3))
    # separate axis 1 (the rows would cross the in-plane 2D zoom)
    assert not RowResampler.supports((16, 5, 14), (10, 11, 9), (1.0, 4.0, 1.0), (1.5, 2.0, 1.5), Resampling(order=1))
    with pytest.raises(ValueError, match="cannot stream"):
        RowResampler((10, 10, 10), (12, 12, 12), (1, 1, 1), (0.8, 0.8, 0.8), Resampling(order=3), np.float16)


def test_stream_sliding_window_is_bitwise_the_full_stitching():
    """Two 'folds' (different seeded conv nets), Gaussian, mirroring in batches, an image smaller than the tile
    along one axis (padding): the row blocks concatenate to the fold-averaged full result, bit for bit."""
    import torch

    from medseg.nnunet.sliding import predict_sliding_window, stream_sliding_window

    torch.manual_seed(3)
    nets = [torch.nn.Conv3d(2, 4, 3, padding=1).eval() for _ in range(2)]
    image = torch.randn(2, 45, 14, 37)
    kw = dict(step_size=0.5, gaussian=True, mirror_axes=(0, 2), logits_dtype=torch.float16, mirror_batch=2)
    full = None
    with torch.inference_mode():  # as NnUNetPredictor averages its folds
        for net in nets:
            full = predict_sliding_window(net, image, 4, (16, 16, 16), out=full, **kw)
        full /= 2
    blocks = []
    stream_sliding_window(lambda i: nets[i], 2, image, 4, (16, 16, 16), lambda b: blocks.append(b.clone()), **kw)
    got = torch.cat(blocks, dim=1)
    assert len(blocks) > 2 and got.shape == full.shape
    assert torch.equal(got, full)
