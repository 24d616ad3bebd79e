"""The engine's contract: RunOptions validated once, one Decision on every path, the plan chosen explicitly,
and every predictor kind satisfying the Predictor protocol with the same provenance shape."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest

from medseg.config import Decision as Rule
from medseg.config import InvertMode, load_spec
from medseg.engine import Predictor, RunOptions
from medseg.engine.decision import Decision
from medseg.engine.plan import InferencePlan, Stitch, WayBack
from medseg.engine.runtime import Precision
from medseg.labels import label_dtype, torch_label_dtype
from medseg.types import Geometry, Volume
from tests.engine.test_predictor import tiny_spec


def test_run_options_validate_once_and_freeze():
    o = RunOptions(device="CPU", precision="Float32", overlap=0, threads=2)
    assert (o.device, o.precision, o.overlap, o.threads) == ("cpu", Precision.FLOAT32, 0.0, 2)
    with pytest.raises(FrozenInstanceError):
        o.overlap = 0.5  # type: ignore[misc]
    for bad, match in [({"overlap": 1.0}, "overlap must be >= 0 and < 1, got 1.0"),
                       ({"overlap": True}, "overlap"), ({"threads": 0}, "threads must be a positive integer"),
                       ({"precision": "fp8"}, "precision must be one of auto, float32, bfloat16, float16"),
                       ({"sw_batch_size": 1.5}, "sw_batch_size"), ({"tta": "yes"}, "tta"),
                       ({"stream_bytes": 0}, "stream_bytes")]:
        with pytest.raises(ValueError, match=match):
            RunOptions(**bad)
    assert RunOptions.build(o) is o
    with pytest.raises(TypeError, match="either options= or keyword"):
        RunOptions.build(o, threads=1)
    with pytest.raises(TypeError, match="unknown run option"):
        RunOptions.build(None, overlapp=0.5)


def test_label_dtype_is_one_rule():
    import torch

    assert [label_dtype(i) for i in (0, 255, 256, 65535, 65536)] == [np.uint8, np.uint8, np.uint16, np.uint16, np.uint32]
    assert [torch_label_dtype(i) for i in (255, 256, 70000)] == [torch.uint8, torch.uint16, torch.int32]


@pytest.mark.parametrize("rule", [Rule.ARGMAX, Rule.THRESHOLD])
def test_decision_whole_equals_decision_over_channels(rule):
    """The whole-volume decision and the channel-at-a-time one (nnU-Net's export) give the same labels."""
    import torch

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(5, 9, 8, 7, generator=g)
    scores[2, 0, 0, 0] = scores[3, 0, 0, 0] = 2.0  # a tie: the first maximum wins on both paths
    pairs = ((1, 1), (2, 2), (2, 4), (4, 3)) if rule is Rule.THRESHOLD else ()
    d = Decision(rule, max_id=4, threshold=0.6, channel_labels=pairs)
    whole = d(scores)
    streamed = d.over_channels(((c, scores[c].numpy()) for c in range(5)), tuple(scores.shape[1:]))
    assert whole.dtype == streamed.dtype == np.uint8
    assert np.array_equal(whole, streamed)
    if rule is Rule.ARGMAX:
        assert whole[0, 0, 0] == 2 and np.array_equal(whole, scores.argmax(0).numpy())
    else:
        with pytest.raises(ValueError, match="channel order"):
            Decision(rule, max_id=4, channel_labels=((4, 3), (1, 1))).over_channels(iter(()), (2, 2, 2))


def test_plan_is_explicit_and_consistent():
    assert InferencePlan(Stitch.CELLS, WayBack.INVERSE, InvertMode.LABELS).result == "working_labels"
    with pytest.raises(ValueError, match="axis maps"):
        InferencePlan(Stitch.FULL, WayBack.AXIS_MAPS, InvertMode.LABELS)
    with pytest.raises(ValueError, match="only along axis maps"):
        InferencePlan(Stitch.CELLS, WayBack.INVERSE, InvertMode.PROBABILITIES)


def test_predictor_protocol_and_provenance(tmp_path):
    from medseg.predictor import load_predictor

    spec = load_spec(tiny_spec(tmp_path))
    pred = load_predictor(spec, options=RunOptions(device="cpu", overlap=0.5))
    assert isinstance(pred, Predictor) and pred.spec.inferer.overlap == 0.5
    arr = np.random.default_rng(0).normal(0, 300, (20, 18, 16)).astype(np.float32)
    vol = Volume(arr, Geometry(np.diag([3.0, 3.0, 4.0, 1.0]), arr.shape))
    pre = pred.preprocess(vol)
    plan = pred.plan(pre)
    assert plan.stitch is Stitch.FULL and plan.way_back is WayBack.AXIS_MAPS
    pred.options = replace(pred.options, stream_bytes=1)
    assert pred.plan(pre).stitch is Stitch.CELLS
    out = pred.predict(vol)
    assert out.geometry == vol.geometry and out.is_label and out.labels == spec.labels
    assert out.source.extra == {"model": spec.name, "fingerprint": pred.fingerprint}
