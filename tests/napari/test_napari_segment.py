"""Segment widget: a tiny seeded model on a real MRI gives a Labels layer identical to the library's output,
with the model's names and colours; the per-label volume table follows edits; the result saves and reloads."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("napari")
torch = pytest.importorskip("torch")

LABELS = [{"id": 1, "name": "left thing", "color": [255, 0, 0]}, {"id": 2, "name": "right thing", "color": [0, 90, 255]}]


@pytest.fixture
def tiny_spec(tmp_path):
    """A 3-class MONAI UNet with seeded random weights, as a spec YAML (no download, ~10k parameters)."""
    from monai.networks.nets import UNet

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
            "num_res_units": 0}
    torch.manual_seed(0)
    torch.save(UNet(**args).state_dict(), tmp_path / "tiny.pt")
    spec = {
        "name": "tiny-test", "description": "seeded random 3D UNet for tests",
        "network": {"class": "UNet", "args": args},
        "weights": {"source": "tiny.pt"},
        "input": {"modality": "MR", "channels": 1, "orientation": "RAS", "spacing": None,
                  "normalize": [{"type": "zscore"}]},
        "inferer": {"mode": "sliding", "roi_size": [32, 32, 16], "overlap": 0.25, "blend": "constant",
                    "sw_batch_size": 2},
        "output": {"activation": "softmax", "decision": "argmax", "invert": "probabilities"},
        "labels": LABELS,
    }
    path = tmp_path / "tiny-test.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_segment_widget_end_to_end(make_napari_viewer, qtbot, shared_data, tiny_spec, tmp_path):
    from pathlib import Path

    import nibabel as nib
    from napari.layers import Labels

    from medseg.io import read
    from medseg.predictor import load_predictor
    from medseg_napari._layers import GEOMETRY_KEY, layer_volume
    from medseg_napari._save_widget import SaveWidget
    from medseg_napari._segment_widget import SegmentWidget

    scan = shared_data / "MONAI/tests/testing_data/anatomical.nii"
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(scan), plugin="medseg")
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Segment")  # as napari builds it
    assert isinstance(widget, SegmentWidget)
    assert widget.image_combo.currentText() == image.name
    widget.model_combo.setEditText(str(tiny_spec))
    widget.device_combo.setCurrentText("cpu")
    progress_seen = []
    job = widget.run()
    job.progress.connect(lambda d, t, s: progress_seen.append((d, t, s)))
    with qtbot.waitSignal(job.done, timeout=60_000):
        pass
    assert widget.status.text().startswith("done"), widget.status.text()
    # real progress: the model-loading state, then sliding windows done / total
    assert progress_seen[0][2] in ("loading model", "segmenting"), progress_seen
    done, total, stage = progress_seen[-1]
    assert stage == "segmenting" and total > 1 and done == total, progress_seen
    labels = widget.last_labels_layer
    assert labels is not None and labels.data.shape == image.data.shape
    # the same as the library's own prediction on the same file, voxel for voxel
    volume = read(scan)
    expected = load_predictor(str(tiny_spec), device="cpu").predict(volume)
    got = layer_volume(labels)
    assert got.geometry.allclose(volume.geometry)
    np.testing.assert_array_equal(got.array, expected.array)
    assert set(np.unique(got.array)) <= {0, 1, 2} and len(np.unique(got.array)) > 1
    # names and colours from the spec
    assert list(labels.features["name"]) == ["background", "left thing", "right thing"]
    np.testing.assert_allclose(labels.colormap.map(2)[:3], np.array([0, 90, 255]) / 255, atol=1e-6)
    np.testing.assert_allclose(image.data_to_world([3, 4, 5]), labels.data_to_world([3, 4, 5]))
    # volume table: one row per label, in mL
    vox_ml = volume.geometry.voxel_volume_ml
    rows = widget.volumes()
    assert [r[1] for r in rows] == ["left thing", "right thing"]
    assert rows[0][2] == pytest.approx(np.count_nonzero(got.array == 1) * vox_ml, abs=1e-6)
    n1 = int(np.count_nonzero(labels.data == 1))
    # ... and it follows an edit: paint a block of label 1 (one undoable step, like a brush stroke)
    idx = np.nonzero(labels.data[:, :6, :6] != 1)
    labels.data_setitem(idx, 1)
    qtbot.waitUntil(lambda: widget.table.item(0, 2).text() == f"{(n1 + idx[0].size) * vox_ml:.2f}", timeout=5000)
    labels.undo()  # napari reports undo/redo only as set_data: the table must follow those too
    qtbot.waitUntil(lambda: widget.table.item(0, 2).text() == f"{n1 * vox_ml:.2f}", timeout=5000)
    labels.redo()
    qtbot.waitUntil(lambda: widget.table.item(0, 2).text() == f"{(n1 + idx[0].size) * vox_ml:.2f}", timeout=5000)

    # save next to a copy of the scan with the Save widget, reload, compare with the layer
    _, saver = viewer.window.add_plugin_dock_widget("medseg", "Save labels")
    assert isinstance(saver, SaveWidget)
    saver.labels_combo.setCurrentText(labels.name)
    # the suggested file is named after the scan and the layer; the scan's folder is read-only data, so it is
    # proposed in ~/medseg-labels (HOME is the test's own, see conftest)
    assert saver.path_edit.text() == str(Path.home() / "medseg-labels" / "anatomical_tiny-test.nii.gz")
    out = tmp_path / "seg.nii.gz"
    saver.path_edit.setText(str(out))
    written = saver.save()
    assert written and written[0] == str(out), saver.status.text()
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, image.metadata[GEOMETRY_KEY].affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), layer_volume(labels).array)
    assert saver.save() == [] and "exist" in saver.status.text()  # no silent overwrite
    saver.overwrite.setChecked(True)
    written = saver.save()
    assert written, saver.status.text()
    assert sorted(Path(p).name for p in written[1:]) == ["seg.ctbl", "seg.json", "seg.txt"]
    # napari's own File > Save path (the npe2 writer) writes the same file
    viewer.layers.selection = {labels}
    viewer.layers.save(str(tmp_path / "via_writer.nii.gz"), selected=True, plugin="medseg")
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "via_writer.nii.gz")).dataobj),
                                  np.asarray(img.dataobj))
    assert (tmp_path / "via_writer.json").is_file()
    # the reader reopens it as labels (names and colours from the sidecar) on the scan's grid
    (reloaded,) = viewer.open(str(out), plugin="medseg")
    assert isinstance(reloaded, Labels)
    assert list(reloaded.features["name"]) == ["background", "left thing", "right thing"]
    np.testing.assert_array_equal(np.asarray(reloaded.data), np.asarray(labels.data))
    np.testing.assert_allclose(reloaded.data_to_world([1, 2, 3]), labels.data_to_world([1, 2, 3]), atol=1e-5)


def test_segment_widget_cancel(make_napari_viewer, qtbot, shared_data, tiny_spec):
    from medseg_napari._segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    viewer.open(str(shared_data / "MONAI/tests/testing_data/anatomical.nii"), plugin="medseg")
    widget = SegmentWidget(viewer)
    widget.model_combo.setEditText(str(tiny_spec))
    job = widget.run()
    with qtbot.waitSignal(job.done, timeout=60_000):
        widget.cancel()
    assert widget.status.text() == "cancelled"
    assert widget.last_labels_layer is None
    assert widget.run_button.isEnabled()
