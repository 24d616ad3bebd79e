"""The class-pruned linear inversion gives the labels of interpolating every class, and MONAI's inverse's."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medseg.infer import resample  # noqa: E402
from medseg.infer.resample import AxisMap, interp_argmax, invert_and_argmax, linear_tables  # noqa: E402

from .test_predictor_stream import _spec  # noqa: E402


def _scores(n_classes: int, shape: tuple[int, int, int], peak: float, seed: int) -> torch.Tensor:
    """Smooth class scores like a trained network's: a few classes dominate each region."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, n_classes, *(max(2, s // 5) for s in shape), generator=g) * peak
    return torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0]


def _tables(maps, src, work):
    return [linear_tables(m, src[m.src_axis], work[a]) for a, m in enumerate(maps)]


MAPS = (AxisMap(1, -0.55, 20.3), AxisMap(2, 0.7, 0.1), AxisMap(0, 0.45, -0.2))  # flipped, permuted, finer


@pytest.mark.parametrize("kind", ["softmax", "logits", "near_ties", "flat"])
@pytest.mark.parametrize("tile", [2, 5, 12])
def test_pruned_argmax_equals_every_class(kind, tile, monkeypatch):
    work = (21, 17, 19)
    src = (int(19 / 0.45) + 1, int(21 / 0.55), int(17 / 0.7))
    s = _scores(24, work, 6.0, seed=1)
    if kind == "softmax":
        s = torch.softmax(s, 0)
    elif kind == "near_ties":  # classes 3 and 9 equal or 1 ulp apart over a slab: ties must resolve the same
        s = torch.softmax(s, 0)
        s[9, :, :8] = s[3, :, :8]
        s[9, :, 8:] = torch.nextafter(s[3, :, 8:], torch.tensor(1.0))
        s[[3, 9]] = s[[3, 9]].clamp(min=s.amax(0, keepdim=True)[0, :, :, :] * 0.999)
    elif kind == "flat":  # a random network's near-uniform probabilities: little to prune
        s = torch.softmax(s * 0.01, 0)
    tables = _tables(MAPS, src, work)
    sel = [np.arange(src[m.src_axis]) for m in MAPS]
    full = interp_argmax(s, (0, 0, 0), tables, sel, tile=None)

    kept = []
    real = resample.lerp_block
    monkeypatch.setattr(
        resample, "lerp_block", lambda e, o, t, sl: kept.append(e.shape[0] * np.prod([len(i) for i in sl])) or real(e, o, t, sl)
    )
    pruned = interp_argmax(s, (0, 0, 0), tables, sel, tile=tile)
    assert torch.equal(pruned, full)
    assert len(np.unique(full.numpy())) > 3
    if kind in ("softmax", "logits") and tile == 2:  # fraction of class x voxel interpolations done
        assert sum(kept) / (s.shape[0] * np.prod(src)) < 0.5, "pruning should drop most classes of peaked scores"


def test_chunked_inversion_equals_one_block():
    work = (13, 11, 9)
    maps = (AxisMap(0, 0.5, 0.0), AxisMap(1, 0.6, 0.0), AxisMap(2, 0.35, 0.3))
    src = (26, 19, 26)
    s = torch.softmax(_scores(9, work, 4.0, seed=2), 0)
    one = invert_and_argmax(s, maps, src, tile=None, max_chunk_bytes=2**30)
    for tile, chunk in [(None, 3000), (4, 3000), (12, 1)]:
        assert torch.equal(invert_and_argmax(s, maps, src, tile=tile, max_chunk_bytes=chunk), one)


def test_linear_inversion_matches_monai_inverse_on_real_ct(tmp_path, shared_data):
    """medseg's separable inverter and MONAI's ``Compose.inverse`` + argmax agree voxel for voxel."""
    nib = pytest.importorskip("nibabel")
    from medseg.config import load_spec
    from medseg.predictor import load_predictor
    from medseg.transforms import invert
    from medseg.types import Geometry, Volume

    path = shared_data / "TotalSegmentator" / "tests" / "reference_files" / "example_ct_sm.nii.gz"
    if not path.is_file():
        pytest.skip(f"real test data not found: {path}")
    img = nib.load(str(path))
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    vol = Volume(arr, Geometry(img.affine, arr.shape[:3]))
    pred = load_predictor(load_spec(_spec(tmp_path, "probabilities")), device="cpu", precision="float32")
    pre = pred.preprocess(vol)
    from medseg.engine.plan import WayBack

    assert pred.plan(pre).way_back is WayBack.AXIS_MAPS
    scores = pred.predict_scores(pre.x)
    ours = pred.postprocess(scores, pre).array
    monai = pred.decision(torch.as_tensor(invert(scores, pre.image, pre.transforms)))
    assert ours.shape == arr.shape and len(np.unique(ours)) > 2
    assert np.array_equal(ours, monai)
