"""**Labels** dock widget: an editable label table (show, colour, name, volume) that follows every edit,
undo and redo, and *Fill between slices* (shape-based interpolation of the drawn slices).

Wiring only: names/colours live in the layer's ``metadata["medseg_labels"]`` (what the writer saves in the
sidecars), hidden labels get a transparent colour, the interpolation is
:func:`medseg.slice_interpolation.interpolate_slices`, applied as ONE undoable step. The widget also turns
on the scanner-coordinate cursor readout (:mod:`._cursor`).

napari reports painting/filling through ``events.paint`` and undo/redo only through ``events.set_data``:
the table listens to both (debounced), so it is never stale.

Shortcut: ``Shift-I`` fills between slices (for the selected label) while the widget is shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QColorDialog,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._cursor import install_cursor_readout
from ._layers import HIDDEN_KEY, layer_geometry, layer_labels, set_layer_labels
from ._qt import bind_shortcut, fill_combo, hint_label, on_layers_changed, status_label

if TYPE_CHECKING:
    import napari

__all__ = ["LabelsWidget", "SHORTCUTS", "layer_label_rows", "history_signature"]

SHORTCUTS = {"fill between slices": "Shift-I"}
_COLS = ("show", "colour", "id", "mL", "name")
_SHOW, _COLOUR, _ID, _ML, _NAME = range(5)
_SCOPES = ("selected label", "all labels")


def history_signature(layer: Any) -> tuple[int, int, int] | None:
    """``(id of data, undo steps, redo steps)`` of a Labels layer, or ``None`` if napari does not expose them.

    napari emits ``set_data`` for undo/redo but also whenever the view is re-sliced (every scroll); volumes
    only need recounting when this signature changed. ``None`` (another napari version) means: always recount.
    """
    undo = getattr(layer, "_undo_history", None)
    redo = getattr(layer, "_redo_history", None)
    if undo is None or redo is None:
        return None
    try:
        return id(layer.data), len(undo), len(redo)
    except TypeError:
        return None


def layer_label_rows(layer: Any) -> list[tuple[Any, bool, float]]:
    """``(Label, visible, mL)`` for every label of a Labels layer: its named labels plus any id painted
    without a name (``"label N"``), sorted by id."""
    from medseg.labels import label_color
    from medseg.types import Label

    labels = {lab.id: lab for lab in layer_labels(layer.metadata, getattr(layer, "features", None))}
    data = np.asarray(layer.data)
    counts = np.bincount(data.ravel().astype(np.int64, copy=False), minlength=1) if data.size else np.zeros(1)
    for lid in np.flatnonzero(counts[1:]) + 1:
        if int(lid) not in labels:
            labels[int(lid)] = Label(int(lid), f"label {int(lid)}", label_color(int(lid)))
    geometry, _ = layer_geometry(
        data.shape, layer.scale, layer.affine.affine_matrix, layer.translate, layer.metadata
    )
    vox_ml = geometry.voxel_volume_ml
    hidden = set(layer.metadata.get(HIDDEN_KEY, ()))
    rows = []
    for lid in sorted(labels):
        n = int(counts[lid]) if lid < len(counts) else 0
        rows.append((labels[lid], lid not in hidden, round(n * vox_ml, 6)))
    return rows


class LabelsWidget(QWidget):
    """Editable label table and slice interpolation for a Labels layer.

    Args:
        napari_viewer: the viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._layer = None
        self._signature: tuple | None = None
        self._rows: list = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.refresh)

        self.labels_combo = QComboBox()
        self.labels_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.table = QTableWidget(0, len(_COLS))
        self.table.setHorizontalHeaderLabels(list(_COLS))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setSelectionMode(QTableWidget.SingleSelection)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        self.table.currentCellChanged.connect(self._on_current_row)
        self.add_button = QPushButton("Add label")
        self.add_button.clicked.connect(self.add_label)
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(list(_SCOPES))
        self.fill_button = QPushButton(f"Fill between slices  [{SHORTCUTS['fill between slices']}]")
        self.fill_button.setToolTip(
            "Draw a structure on two (or more) slices of the current view; the slices in between are filled "
            "by shape-based interpolation, label by label. One undo step (Ctrl-Z)."
        )
        self.fill_button.clicked.connect(self.fill_between_slices)
        self.status = status_label()

        form = QFormLayout()
        form.addRow("Labels layer", self.labels_combo)
        fill_row = QHBoxLayout()
        fill_row.addWidget(self.scope_combo)
        fill_row.addWidget(self.fill_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addWidget(self.add_button)
        layout.addLayout(fill_row)
        layout.addWidget(self.status)
        layout.addWidget(hint_label("Double-click a colour to change it; edit names in place; untick 'show' to hide a label."))

        on_layers_changed(self.viewer, self._refresh_combo)
        install_cursor_readout(self.viewer)
        bind_shortcut(self.viewer, self, SHORTCUTS["fill between slices"], self.fill_between_slices)

    # ---- layer choice -------------------------------------------------------------------------------
    def _refresh_combo(self, *_: Any) -> None:
        from napari.layers import Labels

        fill_combo(self.labels_combo, [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)])
        self._on_layer_changed()

    def layer(self) -> Any:
        """The Labels layer shown in the table (``None`` if there is none)."""
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @staticmethod
    def _events(layer: Any) -> list:
        # paint/labels_update: brush, fill, data_setitem; data: data replaced. (set_data: see _on_set_data)
        return [layer.events.paint, layer.events.labels_update, layer.events.data]

    def _on_layer_changed(self, *_: Any) -> None:
        layer = self.layer()
        # napari hands plugins proxies of its objects (a new one per access): compare by unique_id
        if getattr(layer, "unique_id", None) == getattr(self._layer, "unique_id", None):
            return
        if self._layer is not None:
            for ev in self._events(self._layer):
                ev.disconnect(self._schedule)
            self._layer.events.set_data.disconnect(self._on_set_data)
        self._layer = layer
        if layer is not None:
            for ev in self._events(layer):
                ev.connect(self._schedule)
            layer.events.set_data.connect(self._on_set_data)
        self.refresh()

    def _schedule(self, *_: Any) -> None:
        self._timer.start()

    def _on_set_data(self, *_: Any) -> None:
        """Undo/redo (and every re-slice) emit set_data: recount only when the edit history moved."""
        sig = history_signature(self._layer) if self._layer is not None else None
        if sig is None or sig != self._signature:
            self._timer.start()

    # ---- table --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the table from the layer (names, colours, visibility, volumes)."""
        layer = self._layer
        self._signature = history_signature(layer) if layer is not None else None
        self._rows = layer_label_rows(layer) if layer is not None else []
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._rows))
        for r, (lab, visible, ml) in enumerate(self._rows):
            show = QTableWidgetItem("")
            show.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled | Qt.ItemIsSelectable)
            show.setCheckState(Qt.Checked if visible else Qt.Unchecked)
            colour = QTableWidgetItem("")
            colour.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
            colour.setBackground(QColor(*lab.color))
            colour.setToolTip("double-click to change the colour")
            id_item = QTableWidgetItem(str(lab.id))
            id_item.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
            id_item.setTextAlignment(Qt.AlignCenter)
            name = QTableWidgetItem(lab.name)
            name.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable | Qt.ItemIsEditable)
            vol = QTableWidgetItem(f"{ml:.2f}")
            vol.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
            vol.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            for c, item in ((_SHOW, show), (_COLOUR, colour), (_ID, id_item), (_ML, vol), (_NAME, name)):
                self.table.setItem(r, c, item)
        self.table.blockSignals(False)
        self.table.resizeColumnsToContents()

    def volumes(self) -> dict[int, float]:
        """``{label id: mL}`` as the table shows it."""
        return {lab.id: ml for lab, _visible, ml in self._rows}

    def _labels_from_rows(self) -> tuple:
        return tuple(lab for lab, _v, _ml in self._rows)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        from dataclasses import replace

        layer = self._layer
        r = item.row()
        if layer is None or r >= len(self._rows):
            return
        lab, visible, ml = self._rows[r]
        if item.column() == _NAME:
            new_name = item.text().strip()
            if not new_name:
                self.refresh()
                return
            self._rows[r] = (replace(lab, name=new_name), visible, ml)
        elif item.column() == _SHOW:
            self._rows[r] = (lab, item.checkState() == Qt.Checked, ml)
        else:
            return
        self._apply()

    def _apply(self) -> None:
        hidden = {lab.id for lab, visible, _ml in self._rows if not visible}
        set_layer_labels(self._layer, self._labels_from_rows(), hidden)

    def set_label_name(self, label_id: int, name: str) -> None:
        """Rename a label (as editing its name cell does)."""
        self.table.item(self._row_of(label_id), _NAME).setText(name)

    def set_label_visible(self, label_id: int, visible: bool) -> None:
        """Show or hide a label (as its 'show' tick box does)."""
        self.table.item(self._row_of(label_id), _SHOW).setCheckState(Qt.Checked if visible else Qt.Unchecked)

    def set_label_color(self, label_id: int, rgb: tuple[int, int, int]) -> None:
        """Recolour a label (as the colour dialog does)."""
        from dataclasses import replace

        r = self._row_of(label_id)
        lab, visible, ml = self._rows[r]
        self._rows[r] = (replace(lab, color=tuple(int(c) for c in rgb)), visible, ml)
        self._apply()
        self.refresh()

    def _row_of(self, label_id: int) -> int:
        for r, (lab, _v, _ml) in enumerate(self._rows):
            if lab.id == int(label_id):
                return r
        raise ValueError(f"no label {label_id} in layer {self.labels_combo.currentText()!r}.")

    def _on_double_click(self, row: int, column: int) -> None:
        if column != _COLOUR or row >= len(self._rows):
            return
        lab = self._rows[row][0]
        colour = QColorDialog.getColor(QColor(*lab.color), self, f"Colour of {lab.name}")
        if colour.isValid():
            self.set_label_color(lab.id, (colour.red(), colour.green(), colour.blue()))

    def _on_current_row(self, row: int, *_: Any) -> None:
        if self._layer is not None and 0 <= row < len(self._rows):
            self._layer.selected_label = int(self._rows[row][0].id)

    def add_label(self) -> int:
        """Add a new named label (next free id, palette colour) and select it for painting; returns its id."""
        from medseg.labels import label_color
        from medseg.types import Label

        if self._layer is None:
            self.status.setText("no labels layer")
            return 0
        new_id = max([lab.id for lab, _v, _ml in self._rows], default=0) + 1
        self._rows.append((Label(new_id, f"label {new_id}", label_color(new_id)), True, 0.0))
        self._apply()
        self._layer.selected_label = new_id
        self.refresh()
        return new_id

    # ---- interpolation ------------------------------------------------------------------------------
    def slice_axis(self) -> int:
        """Data axis of the layer that the current 2D view slices through (the axis the user scrolls)."""
        layer = self._layer
        world_axis = int(self.viewer.dims.order[-3]) if self.viewer.dims.ndim >= 3 else 0
        return world_axis - (self.viewer.dims.ndim - layer.ndim)

    def fill_between_slices(self) -> int:
        """Interpolate between the drawn slices of the current view; one undo step. Returns voxels filled."""
        from medseg.slice_interpolation import annotated_slices, interpolate_slices

        layer = self._layer
        if layer is None:
            self.status.setText("no labels layer")
            return 0
        if layer.ndim != 3:
            self.status.setText(f"fill between slices needs a 3D labels layer, {layer.name!r} is {layer.ndim}D")
            return 0
        axis = self.slice_axis()
        if not 0 <= axis < 3:
            self.status.setText("switch to a 2D view of the labels layer first")
            return 0
        data = np.asarray(layer.data)
        ids = [int(layer.selected_label)] if self.scope_combo.currentText() == _SCOPES[0] else None
        gaps = annotated_slices(data, axis, ids)
        if not gaps:
            what = f"label {ids[0]}" if ids else "any label"
            self.status.setText(f"nothing to fill: draw {what} on two slices with empty slices between them")
            return 0
        filled = interpolate_slices(data, axis=axis, label_ids=ids, spacing=tuple(layer.scale[-3:]))
        changed = np.nonzero(filled != data)
        if changed[0].size:
            with layer.block_history():  # one Ctrl-Z undoes the whole fill
                layer.data_setitem(changed, filled[changed])
        n_slices = sum(g.k2 - g.k1 - 1 for g in gaps)
        self.status.setText(f"filled {changed[0].size} voxels in {n_slices} slices (axis {axis}); Ctrl-Z undoes it")
        return int(changed[0].size)
