"""The slab (cell-streamed) sliding window equals MONAI's unbounded one, bit for bit, and so do the labels.

Real small seeded MONAI networks (UNet, SegResNet), odd volume sizes (some smaller than the ROI, so MONAI
pads), overlaps 0 / 0.25 / 0.5 / 0.8, constant and gaussian blending, sw_batch_size 1 and > 1.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai = pytest.importorskip("monai")

from monai.inferers import sliding_window_inference  # noqa: E402
from monai.networks.nets import SegResNet, UNet  # noqa: E402

from medseg.infer.resample import AxisMap, LinearInverter, axis_maps_from_affines, invert_and_argmax, resample_labels_nearest  # noqa: E402
from medseg.config import Decision as Rule  # noqa: E402
from medseg.engine.decision import Decision  # noqa: E402
from medseg.infer.slab import estimate_peak_bytes, plan_windows, slab_sliding_window  # noqa: E402


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(3, 1, 5, channels=(4, 8), strides=(2,), num_res_units=1).eval()


@pytest.fixture(scope="module")
def segresnet():
    torch.manual_seed(1)
    return SegResNet(3, init_filters=8, in_channels=1, out_channels=6, blocks_down=(1, 1), blocks_up=(1,)).eval()


CASES = [
    # shape, roi, overlap, mode, sw_batch_size, padding
    ((23, 17, 30), (16, 16, 16), 0.5, "constant", 1, "constant"),
    ((23, 17, 30), (16, 12, 16), 0.25, "gaussian", 3, "replicate"),
    ((9, 21, 13), (16, 16, 16), 0.8, "gaussian", 2, "constant"),  # x, z smaller than the ROI: padded
    ((20, 19, 21), (8, 8, 8), 0.0, "constant", 4, "constant"),
    ((11, 7, 33), (8, 8, 16), 0.5, "gaussian", 1, "reflect"),  # y smaller than the ROI
]


@pytest.mark.parametrize("shape, roi, overlap, mode, bs, pad", CASES)
@pytest.mark.parametrize("net_name", ["unet", "segresnet"])
def test_bitwise_equal_to_monai(request, net_name, shape, roi, overlap, mode, bs, pad):
    net = request.getfixturevalue(net_name)
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    x = torch.randn(1, 1, *shape, generator=g)
    if net_name == "segresnet" and any(r % 2 for r in roi):
        pytest.skip("SegResNet needs even ROI sizes")
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, bs, net, overlap, mode, padding_mode=pad)[0]
        probs = slab_sliding_window(
            x, roi, net, overlap, sw_batch_size=bs, mode=mode, padding_mode=pad, finalize=lambda p: p.clone()
        )
        labels = slab_sliding_window(x, roi, net, overlap, sw_batch_size=bs, mode=mode, padding_mode=pad)
    assert probs.shape == ref.shape
    assert torch.equal(probs, ref)  # same arithmetic in the same order: bitwise
    assert labels.dtype == torch.uint8
    assert torch.equal(labels, torch.argmax(ref, dim=0).to(torch.uint8))


def test_bf16_autocast_matches_monai_under_same_precision(unet):
    x = torch.randn(1, 1, 19, 26, 17, generator=torch.Generator().manual_seed(3))

    def run(w):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return unet(w)

    with torch.no_grad():
        ref = sliding_window_inference(x, 16, 2, run, 0.5, "gaussian")[0]
        labels = slab_sliding_window(x, 16, run, 0.5, sw_batch_size=2, mode="gaussian")
    assert torch.equal(labels, torch.argmax(ref, dim=0).to(torch.uint8))


def test_decision_finalizers_and_uint16(unet):
    x = torch.randn(1, 1, 18, 18, 18, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = sliding_window_inference(x, 16, 1, unet, 0.25)[0]
        n = ref.shape[0]
        thr = Decision(Rule.THRESHOLD, max_id=n, channel_labels=tuple((c, c + 1) for c in range(n)))
        got = slab_sliding_window(x, 16, unet, 0.25, finalize=lambda p: thr.labels(torch.sigmoid(p)))
        wide = Decision(max_id=300)  # ids above 255: uint16 labels
        big = slab_sliding_window(x, 16, unet, 0.25, finalize=lambda p: wide.labels(torch.softmax(p, 0)))
    expect = torch.zeros(ref.shape[1:], dtype=torch.uint8)
    for c in range(ref.shape[0]):
        expect[torch.sigmoid(ref[c]) > 0.5] = c + 1
    assert torch.equal(got, expect)
    assert big.dtype == torch.uint16
    assert torch.equal(big, torch.argmax(torch.softmax(ref, 0), 0).to(torch.uint16))


def test_memory_bound_is_far_below_the_full_volume():
    plan = plan_windows((273, 273, 667), 96, 0.25)  # whole-body CT at 1.5 mm
    assert plan.n_windows == 4 * 4 * 9
    full = 105 * 273 * 273 * 667 * 4
    assert estimate_peak_bytes(plan, 105) < full / 3  # MONAI order
    assert estimate_peak_bytes(plan, 105, order=2) < full / 12  # streamed along the long axis


@pytest.mark.parametrize("shape, roi, overlap, mode, bs, pad", CASES[:3])
def test_streamed_along_an_axis_gives_the_same_labels(unet, shape, roi, overlap, mode, bs, pad):
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, bs, unet, overlap, mode, padding_mode=pad)[0]
        for axis in (2, 1):
            probs = slab_sliding_window(
                x, roi, unet, overlap, sw_batch_size=bs, mode=mode, padding_mode=pad, order=axis,
                finalize=lambda p: p.clone(),
            )
            torch.testing.assert_close(probs, ref, rtol=1e-6, atol=1e-6)  # same terms, other order
            assert torch.equal(torch.argmax(probs, 0), torch.argmax(ref, 0))


def test_bad_inputs_name_the_value(unet):
    x = torch.zeros(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="overlap"):
        slab_sliding_window(x, 8, unet, 1.0)
    with pytest.raises(ValueError, match="mode"):
        slab_sliding_window(x, 8, unet, 0.5, mode="cosine")
    with pytest.raises(ValueError, match="batch size 1"):
        slab_sliding_window(torch.zeros(2, 1, 8, 8, 8), 8, unet, 0.5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        slab_sliding_window(np.zeros((1, 1, 8, 8, 8)), 8, unet, 0.5)


# ---------------------------------------------------------------------------------------------------------
# inversion to the source grid


def _source_grid(work_shape):
    """A source grid (LPS-like, finer, axes permuted) and its map to the working grid."""
    maps = (AxisMap(2, -0.7, work_shape[0] - 0.8), AxisMap(0, 0.55, 0.2), AxisMap(1, 1.3, -0.4))
    src = (int(work_shape[1] / 0.55) + 2, int(work_shape[2] / 1.3) + 1, int(work_shape[0] / 0.7))
    return maps, src


@pytest.mark.parametrize("shape, roi, overlap, mode, bs, pad", CASES[:3])
def test_bounded_inversion_equals_resample_all_then_argmax(unet, shape, roi, overlap, mode, bs, pad):
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(5))
    maps, src = _source_grid(shape)
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, bs, unet, overlap, mode, padding_mode=pad)[0]
        inv = LinearInverter(plan_windows(shape, roi, overlap), maps, src, max_chunk_bytes=5000)
        slab_sliding_window(
            x, roi, unet, overlap, sw_batch_size=bs, mode=mode, padding_mode=pad,
            finalize=lambda p: torch.softmax(p, 0), consumer=inv,
        )
    full = invert_and_argmax(torch.softmax(ref, 0), maps, src)
    assert inv.labels.shape == src
    assert torch.equal(inv.labels, full)
    assert not inv.faces  # every kept face was released


def test_linear_resampling_agrees_with_scipy():
    from scipy.ndimage import map_coordinates

    g = torch.Generator().manual_seed(6)
    probs = torch.rand(3, 7, 9, 5, generator=g)
    maps, src = _source_grid((7, 9, 5))
    labels = invert_and_argmax(probs, maps, src)
    # scipy reference in float64: coordinates of every source voxel in the working grid
    idx = np.indices(src).reshape(3, -1).astype(np.float64)
    coords = np.stack([m.scale * idx[m.src_axis] + m.offset for m in maps])
    vals = np.stack([map_coordinates(probs[c].double().numpy(), coords, order=1, mode="nearest") for c in range(3)])
    expect = vals.argmax(0).reshape(src)
    top2 = np.sort(vals, axis=0)[-2:]
    clear = (top2[1] - top2[0]).reshape(src) > 1e-5  # float32 vs float64: ignore near-ties
    assert clear.mean() > 0.99
    assert np.array_equal(labels.numpy()[clear], expect[clear])


def test_axis_maps_and_nearest_labels():
    src_aff = np.diag([-0.8, -0.8, 1.0, 1.0])  # LPS-ish source
    src_aff[:3, 3] = [200.0, 180.0, -50.0]
    work_aff = np.array([[0, 0, 1.5, 0], [1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1.0]])
    work_aff[:3, 3] = [-100.0, 10.0, -60.0]
    maps = axis_maps_from_affines(src_aff, work_aff)
    assert [m.src_axis for m in maps] == [1, 2, 0]
    labels = torch.randint(0, 4, (10, 12, 11), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    out = resample_labels_nearest(labels, maps, (25, 23, 14), max_chunk_voxels=100)
    ijk = np.indices((25, 23, 14)).reshape(3, -1)
    w = np.linalg.inv(work_aff) @ src_aff @ np.vstack([ijk, np.ones(ijk.shape[1])])
    w = np.clip(np.floor(w[:3] + 0.5), 0, np.array([[9], [11], [10]])).astype(int)
    assert np.array_equal(out.numpy().ravel(), labels.numpy()[w[0], w[1], w[2]])
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]
    with pytest.raises(ValueError, match="axis-aligned"):
        axis_maps_from_affines(rot, np.eye(4))


@pytest.mark.parametrize("decision", ["argmax", "threshold"])
def test_stream_decide_equals_the_engine_path(unet, decision):
    from medseg.config import Activation, BlendMode, InferMode, InfererSpec, OutputSpec
    from medseg.infer.sliding import sliding_window_predict
    from medseg.types import Label

    from medseg.infer.slab import stream_decide

    inferer = InfererSpec(
        mode=InferMode.SLIDING, roi_size=(16, 16, 16), overlap=0.5, blend=BlendMode.GAUSSIAN, sw_batch_size=2,
        padding_mode="replicate",
    )
    if decision == "argmax":
        output = OutputSpec(activation=Activation.SOFTMAX, decision=Rule.ARGMAX)
    else:
        output = OutputSpec(activation=Activation.SIGMOID, decision=Rule.THRESHOLD, channel_labels=((1, 1), (3, 2)))
    labels = tuple(Label(i, f"l{i}") for i in range(1, 5))
    x = torch.randn(1, 1, 21, 13, 30, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        y = sliding_window_predict(
            x, unet, roi_size=inferer.roi_size, overlap=inferer.overlap, sw_batch_size=inferer.sw_batch_size,
            blend=inferer.blend.value, padding_mode=inferer.padding_mode,
        )[0]
    y = torch.softmax(y, 0) if decision == "argmax" else torch.sigmoid(y)
    decision = Decision.for_output(output, labels)
    expect = decision(y)
    got = stream_decide(x, unet, inferer, output.activation, decision)
    assert got.dtype == expect.dtype
    assert np.array_equal(got, expect)
