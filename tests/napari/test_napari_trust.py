"""Segment widget: an unpinned TorchScript model runs only after ticking "Trust model code" (with a warning)."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("torch")


def test_trust_checkbox_gates_torchscript(make_napari_viewer, qtbot, tmp_path):
    import numpy as np

    from medseg_napari._segment_widget import SegmentWidget
    from tests.security._models import evil_torchscript, spec_text

    marker = tmp_path / "pwned.txt"
    ts = evil_torchscript(tmp_path / "evil.ts", marker)
    spec = tmp_path / "evil.yaml"
    spec.write_text(spec_text(ts))
    viewer = make_napari_viewer()
    arr = np.zeros((12, 12, 12), np.float32)
    arr[3:9, 3:9, 3:9] = 5
    viewer.add_image(arr, name="img")
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.model_combo.setEditText(str(spec))
    widget.device_combo.setCurrentText("cpu")
    assert not widget.trust_check.isChecked() and not widget.trust_warning.isVisibleTo(widget)
    job = widget.run()
    with qtbot.waitSignal(job.done, timeout=120_000):
        pass
    assert "--trust-model-code" in widget.status.text() or "not pinned" in widget.status.text(), widget.status.text()
    assert not marker.exists() and widget.last_labels_layer is None
    widget.trust_check.setChecked(True)
    assert widget.trust_warning.isVisibleTo(widget) and "runs code" in widget.trust_warning.text()
    job = widget.run()
    with qtbot.waitSignal(job.done, timeout=120_000):
        pass
    assert widget.status.text().startswith("done"), widget.status.text()
    assert marker.exists() and widget.last_labels_layer is not None
