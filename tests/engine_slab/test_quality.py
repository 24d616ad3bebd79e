"""The quality score (mean decision margin per structure): its definition, and the same value whether the
scores are decided whole or cell by cell (bounded memory)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medseg.config import Decision as Rule  # noqa: E402
from medseg.engine.decision import Decision, Margins  # noqa: E402


def test_margins_of_argmax_and_threshold():
    p = torch.tensor([[0.1, 0.5, 0.0], [0.7, 0.3, 0.0], [0.2, 0.2, 1.0]])  # (C=3, 3 voxels)
    d = Decision(Rule.ARGMAX, max_id=2)
    assert np.allclose(d.margins(p).numpy(), [0.5, 0.2, 1.0])
    m = Margins()
    d.tally(p, m)
    assert m.mean() == {1: 0.5, 2: 1.0}  # voxel 1 is background (label 0): not scored
    t = Decision(Rule.THRESHOLD, max_id=2, threshold=0.5, channel_labels=((0, 1), (1, 2)))
    q = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.95, 0.3]])
    m = Margins()
    t.tally(q, m)
    assert m.mean() == pytest.approx({1: 0.8, 2: 0.9})  # |p - 0.5| * 2 of the channel that painted
    logits = Margins()
    d.tally(p * 10 - 3, logits)  # not probabilities: no score rather than a wrong one
    assert logits.mean() == {}


@pytest.mark.parametrize("invert", ["labels", "probabilities"])
def test_streamed_quality_equals_full_quality(tmp_path, shared_data, invert):
    from medseg.config import load_spec
    from medseg.predictor import load_predictor
    from tests.engine_slab.test_predictor_stream import _spec, example_ct

    vol = example_ct(shared_data)
    pred = load_predictor(load_spec(_spec(tmp_path, invert)), device="cpu", precision="float32")
    full_labels = pred.predict(vol)
    full = dict(pred.last_quality)
    pred.options = replace(pred.options, stream_bytes=1)  # force the cells
    streamed_labels = pred.predict(vol)
    assert np.array_equal(streamed_labels.array, full_labels.array)
    assert full and set(full) <= {1, 2, 3} and all(0.0 <= q <= 1.0 for q in full.values())
    assert pred.last_quality.keys() == full.keys()
    for lid, q in full.items():
        assert pred.last_quality[lid] == pytest.approx(q, abs=1e-5)
