"""A reviewer's session on real files: a TotalSegmentator label map opens as labels with its names, the label
table follows edits, undo and redo, names/colours/visibility are editable, slices are interpolated, the save
goes to a sensible folder (remembered) and reopens with the edited names; NRRD labels open as labels; the
reader does not claim PNGs; the cursor readout is in scanner coordinates with HU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

TS = "TotalSegmentator/tests/reference_files"


def test_reader_claims_only_what_it_reads(tmp_path):
    from fnmatch import fnmatch

    import npe2

    from medseg_napari._reader import get_reader

    manifest = npe2.PluginManifest.from_file(Path(__file__).resolve().parents[2] / "napari_plugin" / "napari.yaml")
    patterns = manifest.contributions.readers[0].filename_patterns
    assert "*" not in patterns
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert not any(fnmatch(png.name, p) for p in patterns)  # napari never offers medseg for a PNG
    assert get_reader(str(png)) is None
    for name in ("ct.nii.gz", "seg.nrrd", "IM0001.dcm", "1.2.840.113619.2.55.3.604688119.969.1.7"):
        assert any(fnmatch(name, p) for p in patterns), name


def test_nrrd_label_map_opens_as_labels(make_napari_viewer, shared_data):
    from napari.layers import Image, Labels

    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(shared_data / "pyradiomics/data/brain1_label.nrrd"), plugin="medseg")
    (image,) = viewer.open(str(shared_data / "pyradiomics/data/brain1_image.nrrd"), plugin="medseg")
    assert isinstance(labels, Labels) and isinstance(image, Image)
    assert list(labels.features["name"]) == ["background", "brain1_label"]  # one-label mask: named after its file
    assert labels.opacity < 0.7  # the MR under it stays readable
    np.testing.assert_allclose(labels.data_to_world([3, 100, 120]), image.data_to_world([3, 100, 120]), atol=1e-4)


def test_cursor_readout_in_scanner_coordinates_with_hu(make_napari_viewer, shared_data):
    import nibabel as nib

    from medseg_napari._cursor import cursor_readout, install_cursor_readout
    from medseg_napari._layers import RAS_TO_WORLD

    path = shared_data / TS / "example_ct_sm.nii.gz"
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(path), plugin="medseg")
    (seg,) = viewer.open(str(shared_data / TS / "example_seg.nii.gz"), plugin="medseg")
    img = nib.load(str(path))
    ref = np.asarray(img.dataobj)
    ijk = np.array([30, 25, 20])
    ras = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    text = cursor_readout(list(viewer.layers), RAS_TO_WORLD @ ras)
    assert "RAS ({:.1f}, {:.1f}, {:.1f}) mm".format(*ras) in text
    assert "LPS ({:.1f}, {:.1f}, {:.1f}) mm".format(-ras[0], -ras[1], ras[2]) in text
    assert f"HU {float(ref[tuple(ijk)]):.0f}" in text
    seg_ref = np.asarray(nib.load(str(shared_data / TS / "example_seg.nii.gz")).dataobj)
    # the label under the cursor, by name (example_seg shares example_ct_sm's grid)
    inside = np.argwhere(seg_ref == 5)[len(np.argwhere(seg_ref == 5)) // 2]
    seg_aff = nib.load(str(shared_data / TS / "example_seg.nii.gz")).affine
    liver_ras = seg_aff[:3, :3] @ inside + seg_aff[:3, 3]
    assert "liver (5)" in cursor_readout(list(viewer.layers), RAS_TO_WORLD @ liver_ras)
    install_cursor_readout(viewer)
    install_cursor_readout(viewer)  # idempotent
    assert sum(getattr(cb, "_medseg_cursor_readout", False) for cb in viewer.mouse_move_callbacks) == 1
    assert viewer.text_overlay.visible


def test_totalsegmentator_session_edit_undo_redo_interpolate_save(make_napari_viewer, qtbot, shared_data, tmp_path):
    import nibabel as nib
    from napari.layers import Labels

    from medseg_napari._labels_widget import LabelsWidget
    from medseg_napari._save_widget import SaveWidget

    seg_path = shared_data / TS / "example_seg.nii.gz"
    truth = np.asarray(nib.load(str(seg_path)).dataobj)
    viewer = make_napari_viewer()
    viewer.open(str(shared_data / TS / "example_ct.nii.gz"), plugin="medseg")
    (layer,) = viewer.open(str(seg_path), plugin="medseg")
    assert isinstance(layer, Labels)
    names = dict(zip(layer.features["index"], layer.features["name"]))
    assert names[1] == "spleen" and names[5] == "liver" and names[117] == "costal_cartilages"
    np.testing.assert_allclose(layer.colormap.map(1)[:3], [0, 1, 0])  # TotalSegmentator's own spleen colour

    _, widget = viewer.window.add_plugin_dock_widget("medseg", "Labels")
    assert isinstance(widget, LabelsWidget)
    assert widget.labels_combo.currentText() == layer.name
    vox_ml = float(np.prod(layer.scale)) / 1000.0
    liver0 = np.count_nonzero(truth == 5) * vox_ml
    assert widget.volumes()[5] == pytest.approx(liver0, abs=1e-4)
    assert widget.table.rowCount() == 117

    # an edit (one brush-like step), then undo and redo: the table follows each
    block = np.zeros(layer.data.shape, bool)
    block[:20, :20, :5] = True
    idx = np.nonzero(block & (np.asarray(layer.data) == 0))
    layer.data_setitem(idx, 5)
    after = liver0 + idx[0].size * vox_ml
    qtbot.waitUntil(lambda: widget.volumes()[5] == pytest.approx(after, abs=1e-4), timeout=5000)
    assert widget.table.item(widget._row_of(5), 3).text() == f"{after:.2f}"
    layer.undo()
    qtbot.waitUntil(lambda: widget.volumes()[5] == pytest.approx(liver0, abs=1e-4), timeout=5000)
    layer.redo()
    qtbot.waitUntil(lambda: widget.volumes()[5] == pytest.approx(after, abs=1e-4), timeout=5000)
    layer.undo()
    qtbot.waitUntil(lambda: widget.volumes()[5] == pytest.approx(liver0, abs=1e-4), timeout=5000)
    qtbot.wait(300)
    viewer.dims.set_point(0, viewer.dims.point[0] + 3.0)  # scrolling re-slices (set_data) but edits nothing
    assert not widget._timer.isActive()  # ... so the volumes are not recounted

    # editable table: rename, recolour, hide
    widget.set_label_name(5, "liver (edited)")
    assert dict(zip(layer.features["index"], layer.features["name"]))[5] == "liver (edited)"
    widget.set_label_color(1, (255, 128, 0))
    np.testing.assert_allclose(layer.colormap.map(1), [1.0, 128 / 255, 0.0, 1.0], atol=1e-6)
    widget.set_label_visible(2, False)
    assert layer.colormap.map(2)[3] == 0.0 and layer.colormap.map(3)[3] == 1.0
    widget.set_label_visible(2, True)
    new_id = widget.add_label()
    assert new_id == 118 and layer.selected_label == 118

    # fill between slices: draw label 118 on two axial slices of the current view, fill, undo in one step
    viewer.dims.ndisplay = 2
    axis = widget.slice_axis()
    assert axis == int(viewer.dims.order[-3])
    sl = [slice(None)] * 3
    drawn = np.zeros(layer.data.shape, bool)
    for k, (a, b) in ((5, (30, 50)), (13, (34, 46))):
        sl[axis] = k
        region = drawn[tuple(sl)]
        region[a:b, a:b] = True
    drawn &= np.asarray(layer.data) == 0
    layer.data_setitem(np.nonzero(drawn), 118)
    before = np.asarray(layer.data).copy()
    n = widget.fill_between_slices()
    assert n > 0 and "filled" in widget.status.text()
    sl[axis] = 9
    middle = np.asarray(layer.data)[tuple(sl)]
    assert np.count_nonzero(middle == 118) > 0.5 * 14 * 14  # a square between 20x20 and 12x12
    for k in range(6, 13):
        sl[axis] = k
        assert np.count_nonzero(np.asarray(layer.data)[tuple(sl)] == 118) > 0
    sl[axis] = 14
    assert np.count_nonzero(np.asarray(layer.data)[tuple(sl)] == 118) == 0
    layer.undo()
    np.testing.assert_array_equal(np.asarray(layer.data), before)  # one Ctrl-Z removes the whole fill
    layer.redo()

    # save: the default is not beside the scan (read-only data) nor in the package; the folder is remembered
    _, saver = viewer.window.add_plugin_dock_widget("medseg", "Save labels")
    assert isinstance(saver, SaveWidget)
    saver.labels_combo.setCurrentText(layer.name)
    saver._suggest_path()
    proposed = Path(saver.path_edit.text())
    assert proposed.parent == Path.home() / "medseg-labels", proposed  # HOME: see conftest
    out_dir = tmp_path / "reviewed"
    out_dir.mkdir()
    saver.path_edit.setText(str(out_dir / "case1_seg.nii.gz"))
    written = saver.save()
    assert written, saver.status.text()
    saver._suggest_path()
    assert Path(saver.path_edit.text()).parent == out_dir  # remembered ...
    from medseg_napari._save_widget import default_output_path

    assert default_output_path(layer).parent == out_dir  # ... also for a new widget / session
    saved = np.asarray(nib.load(written[0]).dataobj)
    np.testing.assert_array_equal(saved, np.asarray(layer.data).transpose(np.argsort(layer.metadata["medseg_axes"])))
    (reopened,) = viewer.open(written[0], plugin="medseg")
    assert isinstance(reopened, Labels)
    renamed = dict(zip(reopened.features["index"], reopened.features["name"]))
    assert renamed[5] == "liver (edited)" and renamed[118] == "label 118"
    np.testing.assert_allclose(reopened.colormap.map(1)[:3], [1.0, 128 / 255, 0.0], atol=1e-6)


def test_save_folder_rules(tmp_path):
    """Remembered folder > scan folder (writable, outside the installation) > ~/medseg-labels."""
    import os
    from types import SimpleNamespace

    from medseg.data import sample_path
    from medseg.types import SourceInfo
    from medseg_napari._save_folder import choose_dir, is_install_dir, remember_dir
    from medseg_napari._save_widget import default_output_path

    def layer(path):
        return SimpleNamespace(name="brain seg", metadata={"medseg_source": SourceInfo(path=str(path))})

    fallback = Path.home() / "medseg-labels"
    assert is_install_dir(sample_path().parent)
    assert default_output_path(layer(sample_path())) == fallback / "sample_brain_t1_brain_seg.nii.gz"
    scans = tmp_path / "scans"
    scans.mkdir()
    assert default_output_path(layer(scans / "ct.nii.gz")) == scans / "ct_brain_seg.nii.gz"
    read_only = tmp_path / "cd"
    read_only.mkdir()
    os.chmod(read_only, 0o555)
    try:
        assert choose_dir(read_only) == fallback  # even root does not write into a read-only input folder
    finally:
        os.chmod(read_only, 0o755)
    elsewhere = tmp_path / "reviewed"
    elsewhere.mkdir()
    remember_dir(elsewhere)
    assert default_output_path(layer(scans / "ct.nii.gz")) == elsewhere / "ct_brain_seg.nii.gz"
    elsewhere.rmdir()  # a remembered folder that is gone is forgotten
    assert default_output_path(layer(scans / "ct.nii.gz")) == scans / "ct_brain_seg.nii.gz"
