"""medseg.sam on real data: TotalSegmentator's example CT (3 mm) and its multi-label organ map."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.sam import EmbeddingCache, SamSession, SlicePrompt, StopRule, propagate, write_label
from medseg.geometry import take_slice

from perfkit.measure import dice

from .test_propagate import OracleSlicePredictor, centre_click

REF = "TotalSegmentator/tests/reference_files"


@pytest.fixture(scope="module")
def ct_and_labels(shared_data):
    from medseg import io

    ct = io.read(shared_data / REF / "example_ct_sm.nii.gz")
    seg = io.read(shared_data / REF / "example_seg_fast.nii.gz")
    liver = io.read(shared_data / REF / "example_seg_fast" / "liver.nii.gz").array > 0
    assert seg.geometry.allclose(ct.geometry) and liver.any()
    return ct, seg, liver


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_oracle_propagation_recovers_the_real_liver(ct_and_labels, axis):
    """The propagation logic on a real organ shape: one click on its largest slice finds it all."""
    ct, _, liver = ct_and_labels
    areas = liver.sum(axis=tuple(a for a in range(3) if a != axis))
    mid = int(np.argmax(areas))
    res = propagate(OracleSlicePredictor(liver, ct), axis, {mid: centre_click(liver, axis, mid)})
    assert dice(res.mask, liver) >= 0.95, dice(res.mask, liver)


def test_tiny_sam_on_real_ct_written_into_the_organ_map(ct_and_labels, tiny_sam):
    ct, seg, liver = ct_and_labels
    s = SamSession(tiny_sam, ct, window="ct_soft_tissue", cache=EmbeddingCache())
    k = int(np.argmax(liver.sum(axis=(0, 1))))
    sl = take_slice(liver, 2, k)
    rr, cc = np.nonzero(sl)
    prompt = SlicePrompt(points=[(rr.mean(), cc.mean())], labels=[1], box=(rr.min(), cc.min(), rr.max(), cc.max()))
    r = s.segment(2, k, prompt)
    assert r.mask.shape == (122, 101) and np.isfinite(r.score)
    res = propagate(s, 2, {k: prompt}, StopRule(min_score=-np.inf, min_area_ratio=0.0, max_slices=4))
    assert res.mask.shape == ct.shape and res.geometry == ct.geometry
    new_id = int(seg.array.max()) + 1
    out = write_label(seg.replace(is_label=True), res.mask, new_id)
    other = seg.array != 0
    np.testing.assert_array_equal(out.array[other], seg.array[other])  # every organ label untouched
    assert ((out.array == new_id) == (res.mask & ~other)).all()
