"""Prompt types on one slice with a small seeded SAM and SAM 2 (random weights: properties, not masks)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.sam import EmbeddingCache, SamSession, SlicePrompt, wrap_network


@pytest.fixture(scope="module")
def session(tiny_sam, ellipsoid):
    vol, _ = ellipsoid
    return SamSession(tiny_sam, vol, window="ct_soft_tissue", cache=EmbeddingCache())


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_single_point_gives_three_candidates_best_by_iou(session, axis):
    shape = session.slice_shape(axis)
    idx = session.num_slices(axis) // 2
    r = session.segment(axis, idx, SlicePrompt(points=[(shape[0] // 2, shape[1] // 2)], labels=[1]))
    assert r.mask.shape == shape and r.mask.dtype == bool
    assert r.candidates.shape == (3, *shape) and r.scores.shape == (3,) and r.logits.shape == (3, *shape)
    assert r.best == int(np.argmax(r.scores)) and r.score == pytest.approx(r.scores.max())
    np.testing.assert_array_equal(r.mask, r.candidates[r.best])
    np.testing.assert_array_equal(r.candidates, r.logits > 0)
    assert (r.axis, r.index) == (axis, idx)


def test_each_prompt_type_reaches_the_decoder(session):
    shape = session.slice_shape(2)
    pos = SlicePrompt(points=[(20, 14)], labels=[1])
    posneg = SlicePrompt(points=[(20, 14), (5, 5)], labels=[1, 0])
    negpos = SlicePrompt(points=[(20, 14), (5, 5)], labels=[1, 1])
    box = SlicePrompt(box=(10, 6, 30, 22))
    box2 = SlicePrompt(box=(2, 2, 12, 10))
    m = np.zeros(shape, bool)
    m[12:28, 8:20] = True
    mask = SlicePrompt(mask=m)
    mask2 = SlicePrompt(mask=~m)
    combo = SlicePrompt(points=[(20, 14)], labels=[1], box=(10, 6, 30, 22), mask=m)
    out = {k: session.segment(2, 7, p) for k, p in dict(
        pos=pos, posneg=posneg, negpos=negpos, box=box, box2=box2, mask=mask, mask2=mask2, combo=combo).items()}
    for k, r in out.items():
        assert r.mask.shape == shape, k
        n = 3 if k == "pos" else 1  # ambiguous single point -> multimask; otherwise one mask
        assert r.candidates.shape[0] == n, k
    # each input changes the output: a point's label, the box position, the mask content
    assert not np.allclose(out["posneg"].logits, out["negpos"].logits)
    assert not np.allclose(out["box"].logits, out["box2"].logits)
    assert not np.allclose(out["mask"].logits, out["mask2"].logits)
    assert not np.allclose(out["combo"].logits, out["box"].logits)
    # explicit multimask on a multi-prompt gives three candidates
    assert session.segment(2, 7, posneg, multimask=True).candidates.shape[0] == 3


def test_deterministic_with_seed(tiny_sam, ellipsoid):
    from tests.sam.conftest import tiny_sam_network

    vol, _ = ellipsoid
    p = SlicePrompt(points=[(20, 14)], labels=[1], box=(10, 6, 30, 22))
    a = SamSession(wrap_network(tiny_sam_network(0), "a"), vol).segment(2, 7, p)
    b = SamSession(tiny_sam, vol).segment(2, 7, p)
    c = SamSession(wrap_network(tiny_sam_network(1), "c"), vol).segment(2, 7, p)
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)
    assert not np.allclose(a.logits, c.logits)


def test_prompt_from_voxels_and_validation(session):
    p = SlicePrompt.from_voxels(1, 9, points_ijk=[(20, 9, 5), (3, 9, 1)], labels=[1, 0], box_ijk=[(2, 9, 1), (30, 9, 10)])
    np.testing.assert_array_equal(p.points, [[20, 5], [3, 1]])  # axis j: rows are i, cols are k
    assert p.box == (2, 1, 30, 10)
    with pytest.raises(ValueError, match="not on slice 9"):
        SlicePrompt.from_voxels(1, 9, points_ijk=[(20, 7, 5)], labels=[1])
    with pytest.raises(ValueError, match="labels"):
        SlicePrompt(points=[(1, 2)], labels=[1, 0])
    with pytest.raises(ValueError, match="1 \\(object\\) or 0"):
        SlicePrompt(points=[(1, 2)], labels=[2])
    with pytest.raises(ValueError, match="at least one"):
        SlicePrompt()
    with pytest.raises(ValueError, match="mask shape"):
        session.segment(2, 7, SlicePrompt(mask=np.ones((3, 3), bool)))
    with pytest.raises(IndexError):
        session.segment(2, 99, SlicePrompt(points=[(1, 2)], labels=[1]))


def test_sam2_prompts(tiny_sam2, ellipsoid):
    vol, _ = ellipsoid
    s = SamSession(tiny_sam2, vol, window="ct_soft_tissue")
    shape = s.slice_shape(0)
    m = np.zeros(shape, bool)
    m[8:20, 4:10] = True
    rs = [
        s.segment(0, 20, SlicePrompt(points=[(14, 7)], labels=[1])),
        s.segment(0, 20, SlicePrompt(points=[(14, 7), (2, 2)], labels=[1, 0], box=(6, 3, 22, 12))),
        s.segment(0, 20, SlicePrompt(mask=m)),
    ]
    assert [r.candidates.shape[0] for r in rs] == [3, 1, 1]
    assert all(r.mask.shape == shape for r in rs)
    emb = s.encoder.get(vol, 0, 20, s.window)
    assert set(emb.features) == {"image_embed", "high_res_0", "high_res_1"}
