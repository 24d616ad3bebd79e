"""The SAM widget's layout: its Qt controls and where they sit, nothing else (no viewer, no model).

:class:`SamLayout` builds every control as an attribute (``model_combo``, ``label_id``, ``refine``,
``accept_button``, ...) so the wiring in :mod:`._sam_widget` and the tests can reach them.
"""

from __future__ import annotations

import os

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._qt import progress_bar, status_label

__all__ = ["SamLayout", "SHORTCUTS", "BROWSE", "NEW_LABELS", "RUNTIMES"]

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

BROWSE = "Checkpoint file…"
#: image-encoder runtimes (medseg.engine.backends), as the CLI's ``--runtime``.
RUNTIMES = ("auto", "torch", "openvino")
NEW_LABELS = "<new labels layer>"


class SamLayout(QWidget):
    """The SAM widget's controls, laid out.

    Args:
        checkpoints: model names for the model combo (a *Checkpoint file…* entry is appended).
        windows: intensity window choices.
        parent: Qt parent.
    """

    def __init__(self, checkpoints: list[str], windows: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # --- model ---
        self.model_combo = QComboBox()
        self.model_combo.addItems(checkpoints)
        self.model_combo.addItem(BROWSE)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["cpu", "cuda"])
        self.runtime_combo = QComboBox()  # LiteMedSAM's image encoder: auto = OpenVINO on the CPU when it converts
        self.runtime_combo.addItems(RUNTIMES)
        self.runtime_combo.setCurrentText(os.environ.get("MEDSEG_RUNTIME", "auto"))  # as `medseg prompt --runtime`
        self.runtime_combo.setToolTip("image encoder runtime: auto = OpenVINO on the CPU when installed and the "
                                      "encoder converts, else torch; openvino = OpenVINO or an error; torch")
        self.load_button = QPushButton("Load model")
        self.model_label = QLabel("no model loaded")
        self.model_label.setWordWrap(True)
        # --- data ---
        self.image_combo = QComboBox()
        self.window_combo = QComboBox()
        self.window_combo.addItems(windows)
        self.labels_combo = QComboBox()
        self.label_id = QSpinBox()
        self.label_id.setRange(1, 65535)
        self.label_id.setValue(1)
        self.label_name = QLineEdit("object")
        self.z_from, self.z_to = QSpinBox(), QSpinBox()
        for sb in (self.z_from, self.z_to):
            sb.setRange(-1, 99999)
            sb.setValue(-1)
            sb.setSpecialValueText("auto")
        # --- prompting ---
        self.click_mode = QCheckBox(f"Click to prompt (Shift+click: negative)  [{SHORTCUTS['click to prompt on/off']}]")
        self.click_mode.setChecked(True)
        self.refine = QCheckBox("Refine the existing label on the slice")
        self.embed_label = QLabel("Embedding: —")
        self.box_button = QPushButton(f"Box  [{SHORTCUTS['box mode']}]")
        self.propagate_button = QPushButton(f"Propagate  [{SHORTCUTS['propagate']}]")
        self.accept_button = QPushButton(f"Accept  [{SHORTCUTS['accept']}]")
        self.undo_button = QPushButton(f"Undo  [{SHORTCUTS['undo accept']}]")
        self.clear_button = QPushButton(f"Clear  [{SHORTCUTS['clear prompts']}]")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = progress_bar()
        self.status = status_label("load a model, then click on the image")

        form = QFormLayout()
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.device_combo)
        model_row.addWidget(self.load_button)
        form.addRow("SAM model", model_row)
        form.addRow("Runtime", self.runtime_combo)
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
