"""**Segment** dock widget: pick an image layer and a model, run it in the background, get a Labels layer.

Wiring only: :func:`medseg.predictor.load_predictor` and ``Predictor.predict`` do the work (in a
:class:`~._workers.Job`), :mod:`._layers` converts, :func:`medseg.labels.label_volumes_ml` fills the
per-label volume table, which follows edits of the shown Labels layer (painting, fill, erase, undo).

Shortcuts (viewer-wide; also listed in the widget): ``Shift+R`` run, ``Shift+C`` cancel.
"""

from __future__ import annotations

import os

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._qt import bind_shortcut, fill_combo, on_layers_changed, progress_bar, status_label
from ._layers import layer_volume, volume_to_layer_data
from ._workers import Job

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentWidget", "SHORTCUTS"]

#: action -> napari key binding (shown in the widget).
SHORTCUTS = {"run": "Shift-R", "cancel": "Shift-C"}

_BROWSE_DIR = "Browse: model folder (MONAI bundle / nnU-Net)…"
_BROWSE_FILE = "Browse: model spec file (.yaml)…"
_BROWSE = (_BROWSE_DIR, _BROWSE_FILE)
_DEVICES = ("auto", "cpu", "cuda")
_RUNTIMES = ("auto", "torch", "openvino")
_TTA = {"model default": None, "on": True, "off": False}


#: shown when "Trust model code" is ticked (and as its tooltip)
TRUST_WARNING = (
    "Warning: a TorchScript model file is a program. Loading it runs code its author put in it, with your "
    "permissions. Tick this only for a model from an author you trust; models whose sha256 medseg or you "
    "have pinned load without it."
)


def _model_names() -> list[str]:
    from medseg.models.registry import list_models

    try:
        return [m.name for m in list_models()]
    except Exception:  # a broken user spec must not break the widget; the error shows on Run
        return []


class SegmentWidget(QWidget):
    """Automatic segmentation of an image layer with a medseg model.

    Args:
        napari_viewer: the viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.job: Job | None = None
        self._predictors: dict[tuple, Any] = {}
        self.last_labels_layer = None
        self._table_layer = None
        self._table_signature: tuple | None = None
        self._table_timer = QTimer(self)
        self._table_timer.setSingleShot(True)
        self._table_timer.setInterval(250)
        self._table_timer.timeout.connect(self.refresh_table)

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)  # a registry name, a spec path or a model folder
        self.model_combo.addItems(_model_names())
        self.model_combo.addItems(list(_BROWSE))
        self.model_combo.activated.connect(self._on_model_activated)
        self.device_combo = QComboBox()
        self.device_combo.addItems(_DEVICES)
        self.runtime_combo = QComboBox()  # medseg.engine.backends: auto = OpenVINO on the CPU when it converts
        self.runtime_combo.addItems(_RUNTIMES)
        self.runtime_combo.setCurrentText(os.environ.get("MEDSEG_RUNTIME", "auto"))  # as the CLI's --runtime
        self.overlap_spin = QDoubleSpinBox()
        self.overlap_spin.setRange(-0.05, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        self.overlap_spin.setSpecialValueText("model default")
        self.overlap_spin.setValue(-0.05)
        self.tta_combo = QComboBox()
        self.tta_combo.addItems(list(_TTA))
        self.trust_check = QCheckBox("Trust model code (TorchScript)")
        self.trust_check.setToolTip(TRUST_WARNING)
        self.trust_warning = QLabel(TRUST_WARNING)
        self.trust_warning.setWordWrap(True)
        self.trust_warning.setStyleSheet("color: #d08000")
        self.trust_warning.setVisible(False)
        self.trust_check.toggled.connect(self.trust_warning.setVisible)
        self.run_button = QPushButton(f"Run  [{SHORTCUTS['run']}]")
        self.cancel_button = QPushButton(f"Cancel  [{SHORTCUTS['cancel']}]")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = progress_bar()
        self.status = status_label("ready")
        self.labels_combo = QComboBox()
        self.labels_combo.currentIndexChanged.connect(self._on_table_layer_changed)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["id", "name", "volume (mL)"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Runtime", self.runtime_combo)
        form.addRow("Overlap", self.overlap_spin)
        form.addRow("TTA (flips)", self.tta_combo)
        form.addRow("", self.trust_check)
        form.addRow("", self.trust_warning)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        table_form = QFormLayout()
        table_form.addRow("Volumes of", self.labels_combo)
        layout.addLayout(table_form)
        layout.addWidget(self.table)
        shortcut_text = "   ".join(f"{k}: {a}" for a, k in SHORTCUTS.items())
        hint = QLabel(f"Shortcuts — {shortcut_text}")
        hint.setStyleSheet("color: gray")
        layout.addWidget(hint)

        on_layers_changed(self.viewer, self._refresh_layer_combos)
        from ._cursor import install_cursor_readout

        install_cursor_readout(self.viewer)  # RAS/LPS + HU under the cursor
        # shortcuts act only while the widget is shown (a closed dock widget is hidden, not deleted)
        bind_shortcut(self.viewer, self, SHORTCUTS["run"], self.run)
        self.viewer.bind_key(SHORTCUTS["cancel"], lambda _v: self.cancel(), overwrite=True)

    # ---- layer lists -------------------------------------------------------------------------
    def _refresh_layer_combos(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        # the image defaults to the selected image layer, else the top one; the labels keep theirs or none
        active = self.viewer.layers.selection.active
        fill_combo(self.image_combo, [layer.name for layer in self.viewer.layers if isinstance(layer, Image)],
                   default=active.name if isinstance(active, Image) else None)
        fill_combo(self.labels_combo, [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)], last=False)
        self._on_table_layer_changed()

    def _on_model_activated(self, index: int) -> None:
        choice = self.model_combo.itemText(index)
        if choice == _BROWSE_DIR:
            path = QFileDialog.getExistingDirectory(self, "Model folder (MONAI bundle / nnU-Net results)")
        elif choice == _BROWSE_FILE:
            path = QFileDialog.getOpenFileName(self, "Model spec", "", "Model spec (*.yaml *.yml)")[0]
        else:
            return
        if path:
            self.model_combo.insertItem(0, path)
            self.model_combo.setCurrentIndex(0)
        else:
            self.model_combo.setCurrentIndex(0)

    # ---- settings -------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The load_predictor arguments chosen in the widget."""
        overlap = self.overlap_spin.value()
        return {
            "model": self.model_combo.currentText().strip(),
            "device": self.device_combo.currentText(),
            "runtime": self.runtime_combo.currentText(),
            "overlap": None if overlap < 0 else round(overlap, 4),
            "tta": _TTA[self.tta_combo.currentText()],
            "trust_model_code": self.trust_check.isChecked(),
        }

    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # ---- run / cancel -----------------------------------------------------------------------------
    def run(self) -> Job | None:
        """Start segmenting the chosen image; returns the background job (``None`` if nothing to do)."""
        if self.job is not None and self.job.running:
            self.status.setText("already running; cancel first")
            return None
        layer = self.image_layer()
        settings = self.settings()
        if layer is None:
            self.status.setText("open an image first")
            return None
        if not settings["model"] or settings["model"] in _BROWSE:
            self.status.setText("choose a model")
            return None
        try:
            volume = layer_volume(layer)
        except (TypeError, ValueError) as exc:
            self.status.setText(f"cannot use layer {layer.name!r}: {exc}")
            return None
        key = tuple(sorted(settings.items()))
        cache = self._predictors

        def body(tracker):
            from medseg.predictor import load_predictor

            predictor = cache.get(key)
            if predictor is None:
                tracker.stage("loading model")  # shown as a busy bar + "loading model…" until it is ready
                predictor = load_predictor(
                    settings["model"], device=settings["device"], overlap=settings["overlap"], tta=settings["tta"],
                    trust_model_code=settings["trust_model_code"], runtime=settings["runtime"],
                )
                cache.clear()  # keep one model in memory
                cache[key] = predictor
            tracker.stage("segmenting")
            return predictor.predict(volume, progress=tracker)

        job = Job(body, parent=self)
        job.progress.connect(self._on_progress)
        job.finished.connect(lambda result: self._on_result(result, layer.name, settings["model"]))
        job.failed.connect(self._on_failed)
        job.cancelled.connect(lambda: self.status.setText("cancelled"))
        job.done.connect(self._on_done)
        self.job = job
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.status.setText(f"running {settings['model']} on {layer.name!r}…")
        return job.start()

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.status.setText("cancelling…")

    def _on_progress(self, done: int, total: int, stage: str) -> None:
        """Busy bar while loading the model or for a one-pass model; windows done / total otherwise."""
        if stage == "segmenting" and total > 1:
            self.progress.setTextVisible(True)
            self.progress.setFormat("%v / %m windows")
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            self.status.setText(f"segmenting… {done}/{total} windows")
        elif stage:
            self.progress.setRange(0, 0)  # busy: model loading, or a whole-volume pass with no steps
            self.progress.setTextVisible(False)
            if stage == "segmenting":
                self.status.setText("segmenting (whole volume in one pass)…" if total == 1 and done == 0
                                    else "segmenting…")
            else:
                self.status.setText(f"{stage}…")

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"failed: {message}")

    def _on_done(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self.status.text().startswith("done") else 0)
        self.progress.setTextVisible(False)
        self.progress.setFormat("%p%")

    def _on_result(self, labels_volume: Any, image_name: str, model: str) -> None:
        from pathlib import Path

        model_name = labels_volume.source.extra.get("model") or Path(model).stem
        name = f"{image_name} — {model_name}"
        data, kwargs, _ = volume_to_layer_data(labels_volume, name=name)
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_labels(data, **kwargs)
        self.last_labels_layer = layer
        self.labels_combo.setCurrentText(layer.name)
        n = int(np.count_nonzero(labels_volume.array))
        secs = self.job.elapsed_s if self.job is not None else 0.0
        self.status.setText(f"done in {secs:.1f} s: {n} labelled voxels → layer {layer.name!r}")

    # ---- per-label volumes ----------------------------------------------------------------------------
    def _on_table_layer_changed(self, *_: Any) -> None:
        name = self.labels_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        # napari hands plugins proxies of its objects (a new one per access): compare by unique_id
        if getattr(layer, "unique_id", None) == getattr(self._table_layer, "unique_id", None):
            return
        if self._table_layer is not None:
            for ev in self._table_events(self._table_layer):
                ev.disconnect(self._schedule_table)
            self._table_layer.events.set_data.disconnect(self._on_set_data)
        self._table_layer = layer
        if layer is not None:
            for ev in self._table_events(layer):
                ev.connect(self._schedule_table)
            layer.events.set_data.connect(self._on_set_data)
        self.refresh_table()

    @staticmethod
    def _table_events(layer: Any) -> list:
        return [layer.events.paint, layer.events.data, layer.events.labels_update, layer.events.features]

    def _on_set_data(self, *_: Any) -> None:
        """Undo/redo emit only set_data (as does every re-slice): recount when the edit history moved."""
        from ._labels_widget import history_signature

        sig = history_signature(self._table_layer) if self._table_layer is not None else None
        if sig is None or sig != self._table_signature:
            self._table_timer.start()

    def _schedule_table(self, *_: Any) -> None:
        self._table_timer.start()

    def volumes(self) -> list[tuple[int, str, float, tuple[int, int, int]]]:
        """``(id, name, mL, rgb)`` rows for the Labels layer shown in the table."""
        from medseg.labels import label_volumes_ml

        layer = self._table_layer
        if layer is None:
            return []
        volume = layer_volume(layer)
        ml = label_volumes_ml(volume)
        rows = []
        for lab in volume.labels:
            rows.append((lab.id, lab.name, float(ml.get(lab.name, 0.0)), tuple(lab.color)))
        return rows

    def refresh_table(self) -> None:
        from ._labels_widget import history_signature

        self._table_signature = history_signature(self._table_layer) if self._table_layer is not None else None
        rows = self.volumes()
        self.table.setRowCount(len(rows))
        for r, (lid, name, ml, rgb) in enumerate(rows):
            id_item = QTableWidgetItem(str(lid))
            id_item.setBackground(QColor(*rgb))
            id_item.setForeground(QColor(0, 0, 0) if sum(rgb) > 380 else QColor(255, 255, 255))
            id_item.setTextAlignment(Qt.AlignCenter)
            vol_item = QTableWidgetItem(f"{ml:.2f}")
            vol_item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.table.setItem(r, 0, id_item)
            self.table.setItem(r, 1, QTableWidgetItem(name))
            self.table.setItem(r, 2, vol_item)
        self.table.resizeColumnsToContents()
