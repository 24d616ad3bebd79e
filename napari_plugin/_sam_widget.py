"""**SAM prompt** dock widget: click points or draw a box on any slice, get a mask, propagate, accept/undo.

Wiring only. :class:`medseg.sam.SamSession` segments slices and caches embeddings,
:func:`medseg.sam.propagate` follows the object through the volume, :func:`medseg.sam.write_label_array`
writes it without touching other labels; :mod:`._layers` converts napari positions to voxel ``(i, j, k)``.

How it works:

* The slice is the one shown: the voxel axis normal to the two displayed axes (axial, coronal or
  sagittal: roll the dims to switch) and the current slider position. When a slice is shown its embedding
  (and a few neighbours') is computed in the background; the *Embedding* line says when it is ready.
* With *Click to prompt* on, a left click adds a positive point and a Shift+click a negative one
  (shown in the ``SAM prompts`` points layer, green/red). A rectangle in the ``SAM box`` shapes layer is a
  box prompt. Every change re-segments the slice; the candidate shows in the ``SAM preview`` layer.
* *Propagate* follows the object from every prompted slice (on the current axis) through the volume
  (:meth:`medseg.sam.SamSession.propagate`: SAM 2's video propagation, or slice-by-slice prompting for SAM).
  With LiteMedSAM (the default model, offline) it is a 3D box: the box drawn on a slice plus the *3D box
  slices* range (``auto``: the whole volume, stopping where the object ends), propagated as the CVPR 2024
  challenge's reference inference does it (:class:`medseg.sam.lite_session.LiteSession`, the same planes,
  intensities and rules as ``medseg prompt``). Points on the box's slice refine it.
* *Accept* writes the candidate into the target Labels layer as the chosen label id (never over other
  labels; *Refine* replaces that label on the slice instead, and also feeds the existing label to SAM as
  a mask prompt). Accepting is one step in the layer's own undo history: *Undo* (or Ctrl+Z on the layer)
  reverts it.

Shortcuts (viewer-wide, also listed in the widget): see :data:`SHORTCUTS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._workers import docked
from ._layers import (
    AXES_KEY,
    GEOMETRY_KEY,
    LABELS_KEY,
    data_axes,
    data_to_ijk,
    label_colormap,
    layer_labels,
    layer_volume,
    volume_to_layer_data,
)
from ._workers import Job

if TYPE_CHECKING:
    import napari

__all__ = ["SamWidget", "SHORTCUTS", "PALETTE"]

#: action -> napari key binding (shown in the widget).
SHORTCUTS = {
    "click to prompt on/off": "Shift-Q",
    "box mode": "Shift-B",
    "propagate": "Shift-G",
    "accept": "Shift-Enter",
    "undo accept": "Shift-Z",
    "clear prompts": "Shift-X",
    "next label id": "Shift-N",
}

#: colours given to new label ids (RGB 0-255), cycled by id.
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
]

_BROWSE = "Checkpoint file…"
_NEW_LABELS = "<new labels layer>"
PROMPTS_NAME, BOX_NAME, PREVIEW_NAME = "SAM prompts", "SAM box", "SAM preview"


@dataclass
class _Prompts:
    """Prompts of the current object, by (voxel axis, slice index)."""

    points: dict[tuple[int, int], list[tuple[np.ndarray, int]]] = field(default_factory=dict)
    boxes: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (2, 3) ijk corners

    def slices(self, axis: int) -> list[int]:
        return sorted({i for (a, i) in [*self.points, *self.boxes] if a == axis})

    def clear(self) -> None:
        self.points.clear()
        self.boxes.clear()


class SamWidget(QWidget):
    """Interactive SAM segmentation of an image layer.

    Args:
        napari_viewer: the viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model = None  # medseg.sam.SamModel
        self.session = None  # medseg.sam.SamSession for (image layer, window)
        self._session_key: tuple | None = None
        self._current_image_key: tuple | None = None
        self.prompts = _Prompts()
        self.pending: tuple | None = None  # ("slice", axis, index, mask2d) or ("volume", mask3d)
        self.job: Job | None = None
        self._precompute = None
        self._precompute_key: tuple | None = None
        self._updating_shapes = False

        # --- model ---
        self.model_combo = QComboBox()
        self.model_combo.addItems(self._checkpoint_names())
        self.model_combo.addItem(_BROWSE)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["cpu", "cuda"])
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_selected_model)
        self.model_label = QLabel("no model loaded")
        self.model_label.setWordWrap(True)
        # --- data ---
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.window_combo = QComboBox()
        self.window_combo.addItems(self._window_names())
        self.window_combo.currentIndexChanged.connect(self._on_image_changed)
        self.labels_combo = QComboBox()
        self.label_id = QSpinBox()
        self.label_id.setRange(1, 65535)
        self.label_id.setValue(1)
        self.label_name = QLineEdit("object")
        self.label_id.valueChanged.connect(self._on_label_id_changed)
        self.z_from, self.z_to = QSpinBox(), QSpinBox()
        for sb in (self.z_from, self.z_to):
            sb.setRange(-1, 99999)
            sb.setValue(-1)
            sb.setSpecialValueText("auto")
        self.labels_combo.currentIndexChanged.connect(self._on_label_id_changed)
        # --- prompting ---
        self.click_mode = QCheckBox(f"Click to prompt (Shift+click: negative)  [{SHORTCUTS['click to prompt on/off']}]")
        self.click_mode.setChecked(True)
        self.refine = QCheckBox("Refine the existing label on the slice")
        self.embed_label = QLabel("Embedding: —")
        self.box_button = QPushButton(f"Box  [{SHORTCUTS['box mode']}]")
        self.box_button.clicked.connect(self.box_mode)
        self.propagate_button = QPushButton(f"Propagate  [{SHORTCUTS['propagate']}]")
        self.propagate_button.clicked.connect(self.propagate)
        self.accept_button = QPushButton(f"Accept  [{SHORTCUTS['accept']}]")
        self.accept_button.clicked.connect(self.accept)
        self.undo_button = QPushButton(f"Undo  [{SHORTCUTS['undo accept']}]")
        self.undo_button.clicked.connect(self.undo)
        self.clear_button = QPushButton(f"Clear  [{SHORTCUTS['clear prompts']}]")
        self.clear_button.clicked.connect(self.clear_prompts)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setTextVisible(False)
        self.status = QLabel("load a model, then click on the image")
        self.status.setWordWrap(True)

        form = QFormLayout()
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.device_combo)
        model_row.addWidget(self.load_button)
        form.addRow("SAM model", model_row)
        form.addRow("", self.model_label)
        form.addRow("Image", self.image_combo)
        form.addRow("Window", self.window_combo)
        form.addRow("Target labels", self.labels_combo)
        id_row = QHBoxLayout()
        id_row.addWidget(self.label_id)
        id_row.addWidget(self.label_name, 1)
        form.addRow(f"Label id / name  [{SHORTCUTS['next label id']}: next]", id_row)
        z_row = QHBoxLayout()
        z_row.addWidget(self.z_from)
        z_row.addWidget(QLabel("to"))
        z_row.addWidget(self.z_to)
        form.addRow("3D box slices", z_row)
        grid = QGridLayout()
        grid.addWidget(self.box_button, 0, 0)
        grid.addWidget(self.propagate_button, 0, 1)
        grid.addWidget(self.accept_button, 1, 0)
        grid.addWidget(self.undo_button, 1, 1)
        grid.addWidget(self.clear_button, 2, 0)
        grid.addWidget(self.cancel_button, 2, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.click_mode)
        layout.addWidget(self.refine)
        layout.addWidget(self.embed_label)
        layout.addLayout(grid)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        hint = QLabel("Shortcuts — " + ";  ".join(f"{k}: {a}" for a, k in SHORTCUTS.items()))
        hint.setWordWrap(True)
        hint.setStyleSheet("color: gray")
        layout.addWidget(hint)
        layout.addStretch(1)

        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self._refresh_layer_combos)
        self._refresh_layer_combos()
        self.viewer.dims.events.current_step.connect(self._on_slice_changed)
        self.viewer.dims.events.order.connect(self._on_slice_changed)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self._embed_timer = QTimer(self)
        self._embed_timer.setInterval(200)
        self._embed_timer.timeout.connect(self._update_embed_label)
        self._embed_timer.start()
        actions = {
            "click to prompt on/off": lambda: self.click_mode.setChecked(not self.click_mode.isChecked()),
            "box mode": self.box_mode,
            "propagate": self.propagate,
            "accept": self.accept,
            "undo accept": self.undo,
            "clear prompts": self.clear_prompts,
            "next label id": lambda: self.label_id.setValue(self.label_id.value() + 1),
        }
        for action, key in SHORTCUTS.items():
            fn = actions[action]
            self.viewer.bind_key(key, lambda _v, fn=fn: fn() if docked(self) else None, overwrite=True)

    # ---- choices ---------------------------------------------------------------------------------------
    @staticmethod
    def _checkpoint_names() -> list[str]:
        from medseg.sam.registry import list_checkpoints

        return list(list_checkpoints())

    @staticmethod
    def _window_names() -> list[str]:
        from medseg.sam.image import WindowPreset

        return [w.value for w in WindowPreset]

    def _refresh_layer_combos(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        own = {PREVIEW_NAME}
        images = [ly.name for ly in self.viewer.layers if isinstance(ly, Image)]
        labels = [ly.name for ly in self.viewer.layers if isinstance(ly, Labels) and ly.name not in own]
        for combo, names in ((self.image_combo, images), (self.labels_combo, [*labels, _NEW_LABELS])):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif combo is self.labels_combo and labels:
                combo.setCurrentText(labels[-1])
            combo.blockSignals(False)
        self._on_image_changed()

    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # ---- model / session ---------------------------------------------------------------------------------
    def load_selected_model(self) -> Job | None:
        """Load the chosen registry checkpoint (or a file) in the background."""
        from pathlib import Path

        name = self.model_combo.currentText()
        checkpoint = None
        if name == _BROWSE:
            path, _ = QFileDialog.getOpenFileName(self, "SAM checkpoint", "", "Checkpoint (*.pth *.pt)")
            if not path:
                return None
            checkpoint = path
            name = next((n for n in self._checkpoint_names() if Path(path).name.startswith(n)), None)
            if name is None:
                self.status.setText(f"{Path(path).name}: pick the registry model it belongs to, then Browse")
                return None
        device = self.device_combo.currentText()

        def body(tracker):
            from medseg.sam import load_model

            tracker.stage(f"loading {name}")
            return load_model(name, checkpoint=checkpoint, device=device)

        return self._start(body, self.use_model, f"loading {name}…")

    def use_model(self, model: Any) -> None:
        """Use an already loaded :class:`medseg.sam.SamModel` (also what *Load model* ends with)."""
        self.model = model
        self.session = None
        self._session_key = None
        self.model_label.setText(f"{model.family.value}, {model.image_size} px, {model.model_id or 'unnamed'}")
        self.status.setText("model ready: click on the image")
        self._on_slice_changed()

    def ensure_session(self) -> Any:
        """The SamSession (LiteSession for LiteMedSAM) for the chosen image and window (rebuilt when either changes)."""
        from medseg.sam import SamSession
        from medseg.sam.registry import Family

        layer = self.image_layer()
        if self.model is None or layer is None:
            return None
        key = (*self._image_key(), id(self.model))
        if self.session is None or self._session_key != key:
            if self.model.family is Family.LITEMEDSAM:
                from medseg.sam.lite_session import LiteSession

                self.session = LiteSession(self.model, layer_volume(layer), window=self.window_combo.currentText())
            else:
                self.session = SamSession(self.model, layer_volume(layer), window=self.window_combo.currentText())
            self._session_key = key
        return self.session

    def _image_key(self) -> tuple | None:
        layer = self.image_layer()
        # napari hands plugins proxies of its objects (a new one per access): compare layers by unique_id
        return None if layer is None else (layer.unique_id, id(layer.data), self.window_combo.currentText())

    def _on_image_changed(self, *_: Any) -> None:
        """A different image (or window) was chosen: drop the session and the prompts made on the old one."""
        key = self._image_key()
        if key == self._current_image_key:
            return
        self._current_image_key = key
        self.session = None
        self._session_key = None
        self.prompts.clear()
        self._set_pending(None)
        self._sync_prompt_layers()

    # ---- where am I -----------------------------------------------------------------------------------------
    def current_slice(self) -> tuple[int, int] | None:
        """``(voxel axis, slice index)`` of the slice shown for the chosen image, or ``None`` (3D view)."""
        layer = self.image_layer()
        if layer is None or self.viewer.dims.ndisplay != 2 or GEOMETRY_KEY not in layer.metadata:
            return None
        offset = self.viewer.dims.ndim - layer.ndim
        spatial0 = layer.ndim - 3
        displayed_data = {d - offset for d in self.viewer.dims.displayed}
        hidden = [s for s in range(3) if spatial0 + s not in displayed_data]
        if len(hidden) != 1:
            return None
        s_axis = hidden[0]
        geom = layer.metadata[GEOMETRY_KEY]
        perm = layer.metadata.get(AXES_KEY, data_axes(geom))
        axis = int(perm[s_axis])
        pos = np.asarray(layer.world_to_data(self.viewer.dims.point), dtype=float)[-3:]
        index = int(np.clip(np.round(data_to_ijk(pos, geom)[axis]), 0, geom.shape[axis] - 1))
        return axis, index

    def show_slice(self, axis: int, index: int) -> None:
        """Move the viewer's slider until slice ``index`` along voxel ``axis`` is shown (2D view).

        Raises:
            ValueError: that slice cannot be reached with the current displayed axes.
        """
        hidden = [d for d in range(self.viewer.dims.ndim) if d not in self.viewer.dims.displayed]
        for dim in reversed(hidden):
            start = list(self.viewer.dims.current_step)
            for step in range(int(self.viewer.dims.nsteps[dim])):
                cur = list(start)
                cur[dim] = step
                self.viewer.dims.current_step = tuple(cur)
                if self.current_slice() == (axis, index):
                    return
            self.viewer.dims.current_step = tuple(start)
        raise ValueError(f"slice {index} along axis {'ijk'[axis]} is not reachable in this view")

    def _world_to_ijk(self, world: Any) -> np.ndarray:
        layer = self.image_layer()
        pos = np.asarray(layer.world_to_data(world), dtype=float)[-3:]
        return data_to_ijk(pos, layer.metadata[GEOMETRY_KEY])

    # ---- background embeddings ------------------------------------------------------------------------------
    def _on_slice_changed(self, *_: Any) -> None:
        where = self.current_slice()
        if where is None or self.model is None:
            return
        session = self.ensure_session()
        if session is None or session.is_cached(*where):
            return
        key = (self._session_key, where)
        if self._precompute is not None and not self._precompute.done and self._precompute_key == key:
            return
        if self._precompute is not None:
            self._precompute.cancel()
        self._precompute = session.precompute(where[0], where[1], radius=2)
        self._precompute_key = key

    def embedding_ready(self) -> bool:
        where = self.current_slice()
        return bool(where is not None and self.session is not None and self.session.is_cached(*where))

    def _update_embed_label(self) -> None:
        where = self.current_slice()
        if self.model is None or where is None:
            text = "Embedding: —" if self.model is None else "Embedding: — (2D view only)"
        elif self.embedding_ready():
            text = f"Embedding: ready (axis {'ijk'[where[0]]}, slice {where[1]})"
        else:
            text = f"Embedding: computing (axis {'ijk'[where[0]]}, slice {where[1]})…"
        if self.embed_label.text() != text:
            self.embed_label.setText(text)

    # ---- prompts ------------------------------------------------------------------------------------------
    def _on_mouse(self, viewer: Any, event: Any):
        """Click (press + release without moving) → a point prompt; drags still pan."""
        if not docked(self) or not self.click_mode.isChecked() or self.model is None or event.button != 1:
            return  # a closed (hidden) widget no longer takes clicks
        active = viewer.layers.selection.active
        if active is not None and str(getattr(active, "mode", "pan_zoom")) != "pan_zoom":
            return  # painting, drawing a box, ...: not ours
        press = np.asarray(event.position, dtype=float)
        moved = False
        yield
        while event.type == "mouse_move":
            moved = True
            yield
        if moved and np.linalg.norm(np.asarray(event.position, dtype=float) - press) > 1e-6:
            return
        negative = "Shift" in {str(getattr(m, "name", m)) for m in event.modifiers}
        self.add_point(press, positive=not negative)

    def add_point(self, world_position: Any, positive: bool = True) -> Job | None:
        """Add a point at a napari world position on the shown slice and re-segment it."""
        where = self.current_slice()
        if where is None:
            self.status.setText("prompting works in the 2D view")
            return None
        axis, index = where
        ijk = self._world_to_ijk(world_position)
        ijk[axis] = index  # on the shown slice (an oblique layer's plane is shown without tilt)
        self.prompts.points.setdefault(where, []).append((ijk, 1 if positive else 0))
        self._sync_prompt_layers()
        return self.segment_slice(axis, index)

    def _on_box_drawn(self, event: Any = None) -> None:
        if self._updating_shapes or BOX_NAME not in self.viewer.layers:
            return
        action = getattr(event, "action", None)
        if action is not None and str(action) != "added":
            return
        shapes = self.viewer.layers[BOX_NAME]
        where = self.current_slice()
        if where is None or not len(shapes.data):
            return
        layer = self.image_layer()
        geom = layer.metadata[GEOMETRY_KEY]
        corners = np.asarray(shapes.data[-1], dtype=float)[:, -3:]
        ijk = data_to_ijk(corners, geom)
        ijk[:, where[0]] = where[1]
        self.prompts.boxes[where] = np.stack([ijk.min(axis=0), ijk.max(axis=0)])
        self._sync_prompt_layers()
        self.segment_slice(*where)

    def box_mode(self) -> None:
        """Select the box layer in rectangle mode (draw one box per slice; a new box replaces it)."""
        layer = self._prompt_layers()[1]
        if layer is None:
            return
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"

    def clear_prompts(self) -> None:
        self.prompts.clear()
        self._set_pending(None)
        self._sync_prompt_layers()
        self.status.setText("prompts cleared")

    def slice_prompt(self, axis: int, index: int) -> Any:
        """The :class:`medseg.sam.SlicePrompt` of one slice from the stored points/box (+ refine mask)."""
        from medseg.sam import SlicePrompt

        pts = self.prompts.points.get((axis, index), [])
        box = self.prompts.boxes.get((axis, index))
        mask = None
        if self.refine.isChecked():
            target = self.target_layer(create=False)
            if target is not None:
                labels = layer_volume(target).array
                m = np.take(labels, index, axis=axis) == self.label_id.value()
                mask = m if m.any() else None
        return SlicePrompt.from_voxels(
            axis,
            index,
            np.array([p for p, _ in pts]).reshape(-1, 3),
            [lab for _, lab in pts],
            box_ijk=box,
            mask=mask,
        )

    # ---- layers -------------------------------------------------------------------------------------------
    def _prompt_layers(self) -> tuple[Any, Any]:
        """The points and box layers on the image's grid (created on first use)."""
        layer = self.image_layer()
        if layer is None:
            return None, None
        spatial = layer.ndim - 3
        scale = tuple(layer.scale)[spatial:]
        aff = np.asarray(layer.affine.affine_matrix)
        affine3 = np.eye(4)
        affine3[:3, :3] = aff[spatial:-1, spatial:-1]
        affine3[:3, 3] = aff[spatial:-1, -1]
        if PROMPTS_NAME not in self.viewer.layers:
            self.viewer.add_points(
                np.zeros((0, 3)), name=PROMPTS_NAME, scale=scale, affine=affine3, size=6, border_width=0.1,
                face_color="lime", border_color="white",
            )
        if BOX_NAME not in self.viewer.layers:
            shapes = self.viewer.add_shapes(
                name=BOX_NAME, ndim=3, scale=scale, affine=affine3, edge_color="yellow", face_color="transparent",
                edge_width=1.0,
            )
            shapes.events.data.connect(self._on_box_drawn)
        return self.viewer.layers[PROMPTS_NAME], self.viewer.layers[BOX_NAME]

    def _sync_prompt_layers(self) -> None:
        layer = self.image_layer()
        if layer is None or GEOMETRY_KEY not in layer.metadata:
            return
        if not self.prompts.points and not self.prompts.boxes:
            # nothing to show: empty the prompt layers if they exist, never create them here
            self._updating_shapes = True
            try:
                if PROMPTS_NAME in self.viewer.layers and len(self.viewer.layers[PROMPTS_NAME].data):
                    self.viewer.layers[PROMPTS_NAME].data = np.zeros((0, 3))
                if BOX_NAME in self.viewer.layers and len(self.viewer.layers[BOX_NAME].data):
                    self.viewer.layers[BOX_NAME].data = []
            finally:
                self._updating_shapes = False
            return
        geom = layer.metadata[GEOMETRY_KEY]
        perm = list(layer.metadata.get(AXES_KEY, data_axes(geom)))
        points, shapes = self._prompt_layers()
        pts = [(p, lab) for lst in self.prompts.points.values() for p, lab in lst]
        data = np.array([p[perm] for p, _ in pts]).reshape(-1, 3)
        points.data = data
        if len(data):
            points.face_color = np.array([[0.2, 1, 0.2, 1] if lab else [1, 0.2, 0.2, 1] for _, lab in pts])
        self._updating_shapes = True
        try:
            rects = []
            for (axis, _index), box in self.prompts.boxes.items():
                lo, hi = box
                r_ax, c_ax = [a for a in range(3) if a != axis]
                corners = []
                for r, c in ((lo[r_ax], lo[c_ax]), (lo[r_ax], hi[c_ax]), (hi[r_ax], hi[c_ax]), (hi[r_ax], lo[c_ax])):
                    v = lo.copy()
                    v[r_ax], v[c_ax] = r, c
                    corners.append(v[perm])
                rects.append(np.array(corners))
            shapes.data = []
            if rects:
                shapes.add_rectangles(rects, edge_color="yellow", face_color="transparent")
        finally:
            self._updating_shapes = False

    def _preview_layer(self) -> Any:
        layer = self.image_layer()
        geom = layer.metadata[GEOMETRY_KEY]
        perm = list(layer.metadata.get(AXES_KEY, data_axes(geom)))
        shape = tuple(geom.shape[p] for p in perm)
        if PREVIEW_NAME in self.viewer.layers:
            prev = self.viewer.layers[PREVIEW_NAME]
            if prev.data.shape == shape:
                return prev
            self.viewer.layers.remove(PREVIEW_NAME)
        from medseg.types import Label, Volume

        vol = Volume(np.zeros(geom.shape, np.uint8), geom, is_label=True, labels=(Label(1, "SAM candidate", (255, 255, 0)),))
        data, kwargs, _ = volume_to_layer_data(vol, name=PREVIEW_NAME)
        kwargs["opacity"] = 0.55
        return self.viewer.add_labels(np.ascontiguousarray(data), **kwargs)

    def _set_pending(self, pending: tuple | None) -> None:
        self.pending = pending
        layer = self.image_layer()
        if pending is None:
            # clear the preview in place; never create or replace layers here (runs inside layer events)
            if PREVIEW_NAME in self.viewer.layers:
                prev = self.viewer.layers[PREVIEW_NAME]
                if np.any(prev.data):
                    prev.data[...] = 0
                    prev.refresh()
            return
        if layer is None:
            return
        prev = self._preview_layer()
        geom = layer.metadata[GEOMETRY_KEY]
        perm = list(layer.metadata.get(AXES_KEY, data_axes(geom)))
        ijk = prev.data.transpose(list(np.argsort(perm)))  # a view of the layer data in (i, j, k)
        ijk[...] = 0
        if pending is not None and pending[0] == "slice":
            _, axis, index, mask2d = pending
            sl = [slice(None)] * 3
            sl[axis] = index
            ijk[tuple(sl)] = mask2d
        elif pending is not None:
            ijk[...] = pending[1]
        prev.refresh()

    def target_layer(self, create: bool = True) -> Any:
        """The chosen Labels layer; a new one on the image's grid if ``<new labels layer>`` is chosen."""
        name = self.labels_combo.currentText()
        if name and name != _NEW_LABELS and name in self.viewer.layers:
            return self.viewer.layers[name]
        if not create:
            return None
        image = self.image_layer()
        from medseg.types import Volume

        geom = image.metadata[GEOMETRY_KEY]
        vol = Volume(np.zeros(geom.shape, np.uint16), geom, source=layer_volume(image).source, is_label=True)
        data, kwargs, _ = volume_to_layer_data(vol, name=f"{image.name} labels")
        layer = self.viewer.add_labels(np.ascontiguousarray(data), **kwargs)
        self.labels_combo.setCurrentText(layer.name)
        return layer

    def _on_label_id_changed(self, *_: Any) -> None:
        target = self.target_layer(create=False)
        if target is None:
            return
        for lab in layer_labels(target.metadata, target.features):
            if lab.id == self.label_id.value():
                self.label_name.setText(lab.name)
                return

    # ---- segment / propagate --------------------------------------------------------------------------------
    def _start(self, body: Any, on_result: Any, text: str) -> Job | None:
        if self.job is not None and self.job.running:
            self.status.setText("busy: wait or cancel")
            return None
        job = Job(body, parent=self)
        job.progress.connect(self._on_progress)
        job.finished.connect(on_result)
        job.failed.connect(lambda msg: self.status.setText(f"failed: {msg}"))
        job.cancelled.connect(lambda: self.status.setText("cancelled"))
        job.done.connect(self._on_done)
        self.job = job
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(text)
        return job.start()

    def _on_progress(self, done: int, total: int, stage: str) -> None:
        if total > 0:
            self.progress.setTextVisible(True)
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))

    def _on_done(self) -> None:
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()

    def segment_slice(self, axis: int, index: int) -> Job | None:
        """Segment one slice from its prompts (background); the candidate appears in ``SAM preview``."""
        session = self.ensure_session()
        if session is None:
            self.status.setText("load a SAM model first")
            return None
        if not self.prompts.points.get((axis, index)) and (axis, index) not in self.prompts.boxes:
            self._set_pending(None)
            return None
        try:
            prompt = self.slice_prompt(axis, index)
        except ValueError as exc:
            self.status.setText(f"prompt: {exc}")
            return None

        def body(tracker):
            tracker.stage("segmenting slice")
            return session.segment(axis, index, prompt)

        def done(result):
            self._set_pending(("slice", axis, index, result.mask))
            self.status.setText(
                f"slice {index} ({'ijk'[axis]}): {result.area} px, predicted IoU {result.score:.2f} — "
                f"accept ({SHORTCUTS['accept']}) or propagate ({SHORTCUTS['propagate']})"
            )

        return self._start(body, done, f"segmenting slice {index}…")

    def propagate(self) -> Job | None:
        """Follow the object from the prompted slices on the current axis through the volume."""
        session = self.ensure_session()
        where = self.current_slice()
        if session is None or where is None:
            self.status.setText("load a model and prompt a slice in the 2D view first")
            return None
        axis = where[0]
        seeds = {}
        for index in self.prompts.slices(axis):
            try:
                seeds[index] = self.slice_prompt(axis, index)
            except ValueError:
                continue
        if not seeds:
            self.status.setText(f"no prompts on axis {'ijk'[axis]}: click on a slice first")
            return None

        from medseg.sam.registry import Family

        kwargs: dict[str, Any] = {}
        if self.model.family is Family.LITEMEDSAM:
            z0, z1 = self.z_from.value(), self.z_to.value()
            if z0 >= 0 or z1 >= 0:
                kwargs["z_range"] = (max(z0, 0), z1 if z1 >= 0 else session.num_slices(axis) - 1)

        def body(tracker):
            tracker.stage("propagating")
            # LiteMedSAM: 3D box protocol; SAM 2: video (memory) propagation; SAM: slice-by-slice prompting
            return session.propagate(axis, seeds, progress=tracker, cancel=tracker.cancel_event, **kwargs)

        def done(result):
            self._set_pending(("volume", result.mask))
            ext = result.extent
            span = f"slices {ext[0]}–{ext[1]}" if ext else "nothing"
            self.status.setText(f"propagated along {'ijk'[axis]}: {span}, {int(result.mask.sum())} voxels — accept?")

        return self._start(body, done, "propagating…")

    # ---- accept / undo ------------------------------------------------------------------------------------------
    def accept(self) -> int:
        """Write the candidate into the target labels (one undo step); returns the number of changed voxels."""
        from medseg.sam import write_label_array
        from medseg.types import Label

        if self.pending is None:
            self.status.setText("nothing to accept")
            return 0
        target = self.target_layer(create=True)
        image = self.image_layer()
        geom = image.metadata[GEOMETRY_KEY]
        tgeom = target.metadata.get(GEOMETRY_KEY)
        if tgeom is None or not tgeom.allclose(geom):
            self.status.setText(f"target {target.name!r} is not on the image's grid; choose another")
            return 0
        tperm = list(target.metadata.get(AXES_KEY, data_axes(tgeom)))
        label_id = self.label_id.value()
        current = np.asarray(target.data).transpose(list(np.argsort(tperm)))  # (i, j, k) view
        new = np.array(current, copy=True)
        mask = np.zeros(geom.shape, bool)
        replace = self.refine.isChecked()
        if self.pending[0] == "slice":
            _, axis, index, mask2d = self.pending
            sl = [slice(None)] * 3
            sl[axis] = slice(index, index + 1)
            mask[tuple(sl)] = np.expand_dims(mask2d, axis)
            view = new[tuple(sl)]  # replace only on this slice
            write_label_array(view, mask[tuple(sl)], label_id, replace=replace)
        else:
            write_label_array(new, self.pending[1], label_id, replace=replace)
        changed = np.nonzero(new != current)
        if changed[0].size:
            data_idx = tuple(changed[p] for p in tperm)
            target.data_setitem(data_idx, new[changed])
        labels = list(layer_labels(target.metadata, target.features))
        if all(lab.id != label_id for lab in labels):
            labels.append(Label(label_id, self.label_name.text().strip() or f"label {label_id}",
                                PALETTE[(label_id - 1) % len(PALETTE)]))
            self._set_layer_labels(target, tuple(labels))
        self.prompts.clear()
        self._set_pending(None)
        self._sync_prompt_layers()
        self.status.setText(f"accepted: {changed[0].size} voxels set to label {label_id} in {target.name!r}")
        return int(changed[0].size)

    @staticmethod
    def _set_layer_labels(layer: Any, labels: tuple) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        layer.metadata[LABELS_KEY] = labels
        layer.features = {"index": [0, *(lab.id for lab in labels)], "name": ["background", *(lab.name for lab in labels)]}
        layer.colormap = DirectLabelColormap(color_dict=label_colormap(labels))

    def undo(self) -> None:
        """Undo the last change of the target labels layer (the accept, as one step)."""
        target = self.target_layer(create=False)
        if target is not None:
            target.undo()
            self.status.setText(f"undone in {target.name!r}")
