"""**Save** dock widget: a Labels layer → NIfTI (+ label sidecars), in the last folder saved to, next to the
scan when that folder is writable and outside the package, else ``~/medseg-labels`` (see :mod:`._save_folder`).

Wiring only: :func:`._writer.save_labels` writes through :func:`medseg.pipeline.write_segmentation` (all or
nothing, source geometry).
An existing file is replaced only when *Overwrite* is ticked. Shortcut: ``Alt-S`` saves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._qt import bind_shortcut, fill_combo, on_layers_changed, status_label
from ._layers import SOURCE_KEY, layer_volume

if TYPE_CHECKING:
    import napari

__all__ = ["SaveWidget", "SHORTCUTS", "default_output_path"]

SHORTCUTS = {"save": "Alt-S"}


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def default_output_path(layer: Any) -> Path:
    """``<folder>/<scan stem>_<layer name>.nii.gz``; the folder is chosen by :func:`._save_folder.choose_dir`:
    the last folder saved to, else the scan's folder (a DICOM folder's parent) when it is writable and not
    inside the installed package, else ``~/medseg-labels``."""
    from ._save_folder import choose_dir

    source = layer.metadata.get(SOURCE_KEY)
    src = Path(source.path) if source is not None and getattr(source, "path", None) else None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", layer.name).strip("_") or "labels"
    folder = choose_dir(src.parent if src is not None else None)
    if src is None:
        return folder / f"{safe}.nii.gz"
    stem = _stem(src)
    return folder / (f"{safe}.nii.gz" if safe.startswith(stem) else f"{stem}_{safe}.nii.gz")


class SaveWidget(QWidget):
    """Save a Labels layer as NIfTI in its source geometry.

    Args:
        napari_viewer: the viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.labels_combo = QComboBox()
        self.labels_combo.currentIndexChanged.connect(self._suggest_path)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("last folder used, or next to the scan")
        browse = QPushButton("…")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._browse)
        self.overwrite = QCheckBox("Overwrite an existing file")
        self.save_button = QPushButton(f"Save NIfTI  [{SHORTCUTS['save']}]")
        self.save_button.clicked.connect(self.save)
        self.status = status_label()

        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit)
        path_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Labels", self.labels_combo)
        form.addRow("File", path_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.overwrite)
        layout.addWidget(self.save_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        on_layers_changed(self.viewer, self._refresh)
        bind_shortcut(self.viewer, self, SHORTCUTS["save"], self.save)

    def _refresh(self, *_: Any) -> None:
        from napari.layers import Labels

        if not fill_combo(self.labels_combo, [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]):
            self._suggest_path()

    def layer(self) -> Any:
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _suggest_path(self, *_: Any) -> None:
        layer = self.layer()
        self.path_edit.setText(str(default_output_path(layer)) if layer is not None else "")

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save labels", self.path_edit.text(), "NIfTI (*.nii.gz *.nii)", options=QFileDialog.DontConfirmOverwrite
        )
        if path:
            self.path_edit.setText(path)

    def save(self) -> list[str]:
        """Write the chosen layer; returns the written paths (empty on error, which shows in the widget)."""
        from medseg.errors import MedsegError

        from ._writer import save_labels

        layer = self.layer()
        if layer is None:
            self.status.setText("no labels layer to save")
            return []
        from ._save_folder import fallback_dir, remember_dir

        path = self.path_edit.text().strip() or str(default_output_path(layer))
        try:
            if Path(path).parent == fallback_dir():
                fallback_dir().mkdir(parents=True, exist_ok=True)
            written = save_labels(layer_volume(layer), path, overwrite=self.overwrite.isChecked())
        except (MedsegError, OSError, TypeError, ValueError) as exc:
            self.status.setText(f"not saved: {exc}")
            return []
        remember_dir(Path(written[0]).parent)  # the next save proposes this folder
        self.status.setText("saved " + ", ".join(Path(p).name for p in written) + f" in {Path(written[0]).parent}")
        return written
