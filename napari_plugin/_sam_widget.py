"""**SAM prompt** dock widget: click points or draw a box on any slice, get a mask, propagate, accept/undo.

Three layers, as napari-nninteractive splits its widget: the layout (:mod:`._sam_layout`, Qt controls
only) -> these controls (napari events and Qt signals wired to library calls) -> the session
(:class:`medseg.sam.AnnotationSession`, plain Python: the prompts per slice, the pending candidate,
accept/undo). The widget stores no prompts and computes no masks; voxel <-> layer conversion and every
label write go through :mod:`._layers` (:func:`~._layers.set_label_voxels`, one undo step of the layer).

How it works:

* The slice is the one shown: the voxel axis normal to the two displayed axes (axial, coronal or
  sagittal: roll the dims to switch) and the current slider position. When a slice is shown its embedding
  (and a few neighbours') is computed in the background; the *Embedding* line says when it is ready.
* With *Click to prompt* on, a left click adds a positive point and a Shift+click a negative one
  (shown in the ``SAM prompts`` points layer, green/red). A rectangle in the ``SAM box`` shapes layer is a
  box prompt. Every change re-segments the slice; the candidate shows in the ``SAM preview`` layer.
* *Propagate* follows the object from every prompted slice (on the current axis) through the volume
  (SAM 2's video propagation, or slice-by-slice prompting for SAM). With LiteMedSAM (the default model,
  offline) it is a 3D box: the box drawn on a slice plus the *3D box slices* range (``auto``: the whole
  volume, stopping where the object ends), propagated as the CVPR 2024 challenge's reference inference does
  it (:class:`medseg.sam.lite_session.LiteSession`, the same planes, intensities and rules as
  ``medseg prompt``). Points on the box's slice refine it.
* *Runtime* (``auto`` | ``torch`` | ``openvino``, default ``auto`` or ``$MEDSEG_RUNTIME``, as ``medseg
  prompt --runtime``) runs LiteMedSAM's image encoder; the model line says which one runs. SAM / SAM 2 run on
  torch (``openvino`` is then an error, never a silent fallback).
* Embeddings live in one :class:`medseg.sam.EmbeddingCache` of the widget, shared by every image, window
  and model (keyed by content, plane, intensities and model): going back to a window or image reuses them.
* The model sees the contrast the image opens with: the *Window* ``auto`` is
  :func:`medseg.modality.default_window`, the display contrast of the reader.
* *Accept* writes the candidate into the target Labels layer as the chosen label id (never over other
  labels; *Refine* replaces that label on the slice instead, and also feeds the existing label to SAM as
  a mask prompt). Accepting is one step in the layer's own undo history: *Undo* (or Ctrl+Z on the layer)
  reverts it.

Shortcuts (viewer-wide, also listed in the widget): see :data:`SHORTCUTS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QWidget

from ._layers import (
    AXES_KEY,
    GEOMETRY_KEY,
    data_axes,
    data_to_ijk,
    layer_ijk,
    layer_labels,
    layer_volume,
    set_label_voxels,
    set_layer_labels,
    volume_to_layer_data,
)
from ._qt import bind_shortcut, fill_combo
from ._sam_layout import BROWSE, NEW_LABELS, SHORTCUTS, SamLayout
from ._sam_overlays import BOX_NAME, PREVIEW_NAME, SamOverlays
from ._workers import Job, docked

if TYPE_CHECKING:
    import napari

__all__ = ["SamWidget", "SHORTCUTS", "PALETTE"]

#: colours given to new label ids (RGB 0-255), cycled by id.
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
]


def apply_runtime(model: Any, runtime: str, tracker: Any = None) -> None:
    """Run ``model``'s image encoder on ``runtime`` as ``medseg prompt --runtime`` does (LiteMedSAM:
    :meth:`medseg.sam.protocol.LiteMedSAM.use_runtime`; SAM / SAM 2 run on torch, so ``openvino`` is an error).

    Raises:
        ModelError: ``openvino`` asked for and not possible (not installed, no conversion, a SAM / SAM 2 model).
    """
    from medseg.errors import ModelError
    from medseg.sam.registry import Family

    if model.family is Family.LITEMEDSAM:
        if tracker is not None:
            tracker.stage(f"image encoder runtime: {runtime}")
        model.use_runtime(runtime)
    elif runtime == "openvino":
        raise ModelError(f"runtime openvino: only LiteMedSAM's image encoder runs on OpenVINO; {model.family.value} "
                         "runs on torch (choose auto or torch)")


def runtime_text(model: Any) -> str:
    """What runs the image encoder, for the model line: ``encoder: openvino 2026.4.1 (cache hit)``,
    ``encoder: torch`` (+ why ``auto`` did not pick OpenVINO)."""
    info = getattr(model, "runtime_info", None)
    if info is None:
        return "encoder: torch"
    version = (info.version or "").split("-")[0]
    text = f"encoder: {info.name}" + (f" {version}" if version and info.name != "torch" else "")
    if info.cache:
        text += f" (compiled cache {info.cache})"
    return text + (f" — {info.note}" if info.note else "")


class SamWidget(SamLayout):
    """Interactive SAM segmentation of an image layer.

    Args:
        napari_viewer: the viewer (injected by napari).

    ``session`` is the :class:`medseg.sam.AnnotationSession` of the chosen image (``None`` without an
    image); its ``segmenter`` is the model's session for the chosen window (``None`` without a model).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        from medseg.sam.image import WindowPreset
        from medseg.sam.registry import list_checkpoints

        super().__init__(list(list_checkpoints()), [w.value for w in WindowPreset], parent)
        self.viewer = napari_viewer
        self.model = None  # medseg.sam.SamModel / LiteMedSAM
        self.session = None  # medseg.sam.AnnotationSession of the chosen image
        self._image_key: tuple | None = None
        self._segmenter_key: tuple | None = None
        self._accepted_into: list[str] = []  # target layer (unique id) of each accept, for Undo
        self.job: Job | None = None
        self._precompute = None
        self._precompute_key: tuple | None = None
        self.overlays = SamOverlays(self.viewer, self._on_box_drawn)
        from medseg.sam.embed import EmbeddingCache

        self.cache = EmbeddingCache()  # the one embedding cache of every session this widget builds

        self.load_button.clicked.connect(self.load_selected_model)
        self.runtime_combo.currentTextChanged.connect(self._on_runtime_changed)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.window_combo.currentIndexChanged.connect(self._on_image_changed)
        self.label_id.valueChanged.connect(self._on_label_id_changed)
        self.labels_combo.currentIndexChanged.connect(self._on_label_id_changed)
        self.box_button.clicked.connect(self.box_mode)
        self.propagate_button.clicked.connect(self.propagate)
        self.accept_button.clicked.connect(self.accept)
        self.undo_button.clicked.connect(self.undo)
        self.clear_button.clicked.connect(self.clear_prompts)
        self.cancel_button.clicked.connect(self.cancel)

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
            bind_shortcut(self.viewer, self, key, actions[action])

    # ---- choices ---------------------------------------------------------------------------------------
    @staticmethod
    def _checkpoint_names() -> list[str]:
        from medseg.sam.registry import list_checkpoints

        return list(list_checkpoints())

    def _refresh_layer_combos(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        images = [ly.name for ly in self.viewer.layers if isinstance(ly, Image)]
        labels = [ly.name for ly in self.viewer.layers if isinstance(ly, Labels) and ly.name != PREVIEW_NAME]
        fill_combo(self.image_combo, images, last=False)
        fill_combo(self.labels_combo, [*labels, NEW_LABELS], default=labels[-1] if labels else None, last=False)
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
        if name == BROWSE:
            path, _ = QFileDialog.getOpenFileName(self, "SAM checkpoint", "", "Checkpoint (*.pth *.pt)")
            if not path:
                return None
            checkpoint = path
            name = next((n for n in self._checkpoint_names() if Path(path).name.startswith(n)), None)
            if name is None:
                self.status.setText(f"{Path(path).name}: pick the registry model it belongs to, then Browse")
                return None
        device = self.device_combo.currentText()
        runtime = self.runtime_combo.currentText()

        def body(tracker):
            from medseg.sam import load_model

            tracker.stage(f"loading {name}")
            model = load_model(name, checkpoint=checkpoint, device=device)
            apply_runtime(model, runtime, tracker)
            return model

        return self._start(body, self.use_model, f"loading {name}…")

    def _on_runtime_changed(self, runtime: str) -> Job | None:
        """A new *Runtime* for the loaded model: re-select its image encoder in the background."""
        model = self.model
        if model is None or (self.job is not None and self.job.running):
            return None  # applied by the next Load model

        def body(tracker):
            apply_runtime(model, runtime, tracker)
            return model

        return self._start(body, self.use_model, f"image encoder runtime {runtime}…")

    def use_model(self, model: Any) -> None:
        """Use an already loaded :class:`medseg.sam.SamModel` (also what *Load model* ends with)."""
        self.model = model
        self._segmenter_key = None
        self.model_label.setText(f"{model.family.value}, {model.image_size} px, {model.model_id or 'unnamed'}; "
                                 f"{runtime_text(model)}")
        self.status.setText("model ready: click on the image")
        self._on_slice_changed()

    def ensure_session(self) -> Any:
        """The :class:`~medseg.sam.AnnotationSession` of the chosen image, its segmenter (SamSession, or
        LiteSession for LiteMedSAM) built for the current model and window; ``None`` without both."""
        from medseg.sam import AnnotationSession, SamSession
        from medseg.sam.registry import Family

        layer = self.image_layer()
        if layer is None or GEOMETRY_KEY not in layer.metadata:
            return None
        if self.session is None:
            self.session = AnnotationSession(None, layer.metadata[GEOMETRY_KEY].shape)
        if self.model is None:
            return None
        key = (*self._current_key(), id(self.model))
        if self.session.segmenter is None or self._segmenter_key != key:
            volume, window = layer_volume(layer), self.window_combo.currentText()
            if self.model.family is Family.LITEMEDSAM:
                from medseg.sam.lite_session import LiteSession

                self.session.segmenter = LiteSession(self.model, volume, window=window, cache=self.cache)
            else:
                self.session.segmenter = SamSession(self.model, volume, window=window, cache=self.cache)
            self._segmenter_key = key
        return self.session

    @property
    def segmenter(self) -> Any:
        """The model's session on the chosen image (``None`` before a model and an image)."""
        return None if self.session is None else self.session.segmenter

    def _current_key(self) -> tuple | None:
        layer = self.image_layer()
        # napari hands plugins proxies of its objects (a new one per access): compare layers by unique_id
        return None if layer is None else (layer.unique_id, id(layer.data), self.window_combo.currentText())

    def _on_image_changed(self, *_: Any) -> None:
        """A different image (or window) was chosen: a new session, without the old image's prompts."""
        key = self._current_key()
        if key == self._image_key:
            return
        self._image_key = key
        self.session = None
        self._segmenter_key = None
        self._show_candidate()
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
        dims = self.viewer.dims
        hidden = [d for d in range(dims.ndim) if d not in dims.displayed]
        found = None
        # search with this widget's slice handler blocked: the slices passed on the way are not embedded
        with dims.events.current_step.blocker(self._on_slice_changed):
            first = tuple(dims.current_step)
            for dim in reversed(hidden):
                for step in range(int(dims.nsteps[dim])):
                    cur = list(first)
                    cur[dim] = step
                    dims.current_step = tuple(cur)
                    if self.current_slice() == (axis, index):
                        found = tuple(cur)
                        break
                if found is not None:
                    break
            dims.current_step = first
        if found is None:
            raise ValueError(f"slice {index} along axis {'ijk'[axis]} is not reachable in this view")
        dims.current_step = found  # one change, seen by every listener (and this widget's embedding)

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
        segmenter = None if session is None else session.segmenter
        if segmenter is None or segmenter.is_cached(*where):
            return
        key = (self._segmenter_key, where)
        if self._precompute is not None and not self._precompute.done and self._precompute_key == key:
            return
        if self._precompute is not None:
            self._precompute.cancel()
        self._precompute = segmenter.precompute(where[0], where[1], radius=2)
        self._precompute_key = key

    def embedding_ready(self) -> bool:
        where = self.current_slice()
        return bool(where is not None and self.segmenter is not None and self.segmenter.is_cached(*where))

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
        session = self.ensure_session()
        if where is None or session is None:
            self.status.setText("prompting works in the 2D view" if where is None else "choose an image")
            return None
        session.add_point(*where, self._world_to_ijk(world_position), positive=positive)
        self._sync_prompt_layers()
        return self.segment_slice(*where)

    def _on_box_drawn(self, event: Any = None) -> None:
        if self.overlays.updating or BOX_NAME not in self.viewer.layers:
            return
        action = getattr(event, "action", None)
        if action is not None and str(action) != "added":
            return
        shapes = self.viewer.layers[BOX_NAME]
        where = self.current_slice()
        session = self.ensure_session()
        if where is None or session is None or not len(shapes.data):
            return
        corners = np.asarray(shapes.data[-1], dtype=float)[:, -3:]
        session.set_box(*where, data_to_ijk(corners, self.image_layer().metadata[GEOMETRY_KEY]))
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
        if self.session is not None:
            self.session.clear_prompts()
        self._show_candidate()
        self._sync_prompt_layers()
        self.status.setText("prompts cleared")

    def _refine_mask(self, axis: int, index: int) -> np.ndarray | None:
        """With *Refine* on: the target's label on that slice (a mask prompt), else ``None``."""
        from medseg.sam.annotate import label_slice_mask

        target = self.target_layer(create=False) if self.refine.isChecked() else None
        return None if target is None else label_slice_mask(layer_ijk(target), axis, index, self.label_id.value())

    def slice_prompt(self, axis: int, index: int) -> Any:
        """The :class:`medseg.sam.SlicePrompt` of one slice (the session's points/box, + the refine mask)."""
        return self.session.slice_prompt(axis, index, self._refine_mask(axis, index))

    # ---- layers (owned by ._sam_overlays) -----------------------------------------------------------------
    def _prompt_layers(self) -> tuple[Any, Any]:
        """The points and box layers on the image's grid (created on first use)."""
        return self.overlays.prompt_layers(self.image_layer())

    def _sync_prompt_layers(self) -> None:
        """Show the session's prompts in the points and box layers."""
        self.overlays.sync_prompts(self.image_layer(), None if self.session is None else self.session.prompts)

    def _show_candidate(self) -> None:
        """Show the session's pending candidate in the preview layer (empty it when there is none)."""
        self.overlays.show_candidate(self.image_layer(), None if self.session is None else self.session.pending)

    def target_layer(self, create: bool = True) -> Any:
        """The chosen Labels layer; a new one on the image's grid if ``<new labels layer>`` is chosen."""
        name = self.labels_combo.currentText()
        if name and name != NEW_LABELS and name in self.viewer.layers:
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
        if session is None or session.segmenter is None:
            self.status.setText("load a SAM model first")
            return None
        if not session.has_prompts(axis, index):
            session.propose(None)
            self._show_candidate()
            return None
        try:
            prompt = self.slice_prompt(axis, index)
        except ValueError as exc:
            self.status.setText(f"prompt: {exc}")
            return None

        def body(tracker):
            tracker.stage("segmenting slice")
            return session.run_segment(axis, index, prompt)

        def done(cand):
            session.propose(cand)
            self._show_candidate()
            iou = f", predicted IoU {cand.score:.2f}" if np.isfinite(cand.score) else ""
            self.status.setText(
                f"slice {index} ({'ijk'[axis]}): {cand.voxels} px{iou} — "
                f"accept ({SHORTCUTS['accept']}) or propagate ({SHORTCUTS['propagate']})"
            )

        return self._start(body, done, f"segmenting slice {index}…")

    def propagate(self) -> Job | None:
        """Follow the object from the prompted slices on the current axis through the volume."""
        session = self.ensure_session()
        where = self.current_slice()
        if session is None or session.segmenter is None or where is None:
            self.status.setText("load a model and prompt a slice in the 2D view first")
            return None
        axis = where[0]
        seeds = session.seeds(axis, lambda index: self._refine_mask(axis, index))
        if not seeds:
            self.status.setText(f"no prompts on axis {'ijk'[axis]}: click on a slice first")
            return None

        from medseg.sam.registry import Family

        options: dict[str, Any] = {}
        if self.model.family is Family.LITEMEDSAM:
            z0, z1 = self.z_from.value(), self.z_to.value()
            if z0 >= 0 or z1 >= 0:
                options["z_range"] = (max(z0, 0), z1 if z1 >= 0 else session.segmenter.num_slices(axis) - 1)

        def body(tracker):
            tracker.stage("propagating")
            # LiteMedSAM: 3D box protocol; SAM 2: video (memory) propagation; SAM: slice-by-slice prompting
            return session.run_propagate(axis, seeds, progress=tracker, cancel=tracker.cancel_event, **options)

        def done(cand):
            session.propose(cand)
            self._show_candidate()
            ext = cand.extent()
            span = f"slices {ext[0]}–{ext[1]}" if ext else "nothing"
            self.status.setText(f"propagated along {'ijk'[axis]}: {span}, {cand.voxels} voxels — accept?")

        return self._start(body, done, "propagating…")

    # ---- accept / undo ------------------------------------------------------------------------------------------
    def accept(self) -> int:
        """Write the candidate into the target labels (one undo step); returns the number of changed voxels."""
        from medseg.types import Label

        session = self.session
        if session is None or session.pending is None:
            self.status.setText("nothing to accept")
            return 0
        target = self.target_layer(create=True)
        geom = self.image_layer().metadata[GEOMETRY_KEY]
        tgeom = target.metadata.get(GEOMETRY_KEY)
        if tgeom is None or not tgeom.allclose(geom) or np.ndim(target.data) != 3:
            self.status.setText(f"target {target.name!r} is not on the image's grid; choose another")
            return 0
        label_id = self.label_id.value()
        change = session.accept(layer_ijk(target), label_id, replace=self.refine.isChecked())
        set_label_voxels(target, change.index, change.after)
        if change.size:
            self._accepted_into.append(target.unique_id)
        labels = list(layer_labels(target.metadata, target.features))
        if all(lab.id != label_id for lab in labels):
            labels.append(Label(label_id, self.label_name.text().strip() or f"label {label_id}",
                                PALETTE[(label_id - 1) % len(PALETTE)]))
            set_layer_labels(target, tuple(labels))
        self._show_candidate()
        self._sync_prompt_layers()
        self.status.setText(f"accepted: {change.size} voxels set to label {label_id} in {target.name!r}")
        return change.size

    def undo(self) -> int:
        """Revert the last accept in the layer it went into (voxels edited since are kept); returns the
        number of voxels reverted. Ctrl+Z on the labels layer also reverts an accept (one history step)."""
        session = self.session
        if session is None or not session.can_undo or not self._accepted_into:
            self.status.setText("nothing to undo")
            return 0
        uid = self._accepted_into[-1]
        target = next((ly for ly in self.viewer.layers if ly.unique_id == uid), None)
        if target is None:
            self.status.setText("the layer of the last accept is gone")
            return 0
        self._accepted_into.pop()
        change = session.undo(layer_ijk(target))
        set_label_voxels(target, change.index, change.after)
        self.status.setText(f"undone in {target.name!r}: {change.size} voxels")
        return change.size
