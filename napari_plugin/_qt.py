"""Small Qt helpers every dock widget uses: status/hint labels, an idle progress bar, layer-list combos
that keep their choice, and shortcuts that act only while the widget is shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtWidgets import QComboBox, QLabel, QProgressBar

from ._workers import docked

__all__ = ["status_label", "hint_label", "progress_bar", "fill_combo", "on_layers_changed", "bind_shortcut"]


def status_label(text: str = "") -> QLabel:
    """A word-wrapped label for a widget's status line."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def hint_label(text: str) -> QLabel:
    """A word-wrapped grey hint (shortcuts, how-to)."""
    label = status_label(text)
    label.setStyleSheet("color: gray")
    return label


def progress_bar() -> QProgressBar:
    """An idle progress bar (0..1, no text) as widgets show between jobs."""
    bar = QProgressBar()
    bar.setRange(0, 1)
    bar.setValue(0)
    bar.setTextVisible(False)
    return bar


def fill_combo(combo: QComboBox, names: Sequence[str], default: str | None = None, last: bool = True) -> bool:
    """Refill ``combo`` with ``names`` without emitting signals, keeping the current choice when it is still
    there, else choosing ``default`` (if given and present), else the last name (``last=False``: the first).
    Returns whether the choice was kept."""
    current = combo.currentText()
    combo.blockSignals(True)
    try:
        combo.clear()
        combo.addItems(list(names))
        if current in names:
            combo.setCurrentText(current)
        elif default is not None and default in names:
            combo.setCurrentText(default)
        elif names and last:
            combo.setCurrentIndex(len(names) - 1)
    finally:
        combo.blockSignals(False)
    return current in names


def on_layers_changed(viewer: Any, callback: Callable[..., Any]) -> None:
    """Call ``callback`` whenever a layer is added, removed or moved (and once now)."""
    events = viewer.layers.events
    for ev in (events.inserted, events.removed, events.reordered):
        ev.connect(callback)
    callback()


def bind_shortcut(viewer: Any, widget: Any, key: str, action: Callable[[], Any]) -> None:
    """Bind ``key`` on the viewer to ``action``, which runs only while ``widget`` is docked and shown
    (napari's close button hides a dock widget without deleting it)."""
    viewer.bind_key(key, lambda _v: action() if docked(widget) else None, overwrite=True)
