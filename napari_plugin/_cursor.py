"""Cursor readout in scanner coordinates: ``RAS (x, y, z) mm``, ``LPS``, the voxel value (``HU`` for CT) and
the label name under the cursor, shown in the canvas' text overlay.

napari's own status bar shows world coordinates in medseg's ``(I, P, L)`` display frame (see
:mod:`._layers`), which no scanner uses; :func:`cursor_readout` converts them back to RAS+ (and LPS, the
DICOM frame). :func:`install_cursor_readout` is idempotent and is called by the medseg dock widgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._layers import IS_CT_KEY, LABELS_KEY, RAS_TO_WORLD

__all__ = ["cursor_readout", "install_cursor_readout", "layer_value"]

_INSTALLED = "_medseg_cursor_readout"


def layer_value(layer: Any, world: Sequence[float]) -> tuple[float | int, tuple[int, ...]] | None:
    """``(value, data index)`` of ``layer`` at a world point (nearest voxel), or ``None`` outside the data."""
    pos = np.asarray(world, dtype=float)
    if pos.size != layer.ndim:
        return None
    idx = np.round(np.asarray(layer.world_to_data(pos), dtype=float)).astype(int)
    shape = np.asarray(layer.data.shape)
    if np.any(idx < 0) or np.any(idx >= shape):
        return None
    value = np.asarray(layer.data[tuple(idx)])
    return value.item(), tuple(int(i) for i in idx)


def _label_name(layer: Any, value: int) -> str:
    for lab in layer.metadata.get(LABELS_KEY, ()) or ():
        if int(lab.id) == int(value):
            return str(lab.name)
    return f"label {value}"


def cursor_readout(layers: Sequence[Any], world: Sequence[float]) -> str:
    """One line for the cursor at napari world point ``world`` (``(I, P, L)`` mm, optionally with a leading
    time axis): RAS and LPS scanner coordinates, then, for the top visible image, its value (``HU`` when it
    is CT) and, for the top visible labels layer, the label under the cursor.

    >>> cursor_readout([], [-10.0, 20.0, -30.0])
    'RAS (30.0, -20.0, 10.0) mm  LPS (-30.0, 20.0, 10.0) mm'
    """
    from napari.layers import Image, Labels

    pos = np.asarray(world, dtype=float)
    ras = RAS_TO_WORLD @ pos[-3:]  # the frame change is its own inverse
    lps = ras * np.array([-1.0, -1.0, 1.0])
    parts = [
        "RAS ({:.1f}, {:.1f}, {:.1f}) mm".format(*ras),
        "LPS ({:.1f}, {:.1f}, {:.1f}) mm".format(*lps),
    ]
    image_done = labels_done = False
    for layer in reversed(list(layers)):
        if not layer.visible:
            continue
        if isinstance(layer, Labels) and not labels_done:
            got = layer_value(layer, pos)
            if got is not None:
                labels_done = True
                if got[0]:
                    parts.append(f"{_label_name(layer, int(got[0]))} ({int(got[0])})")
        elif isinstance(layer, Image) and not image_done:
            got = layer_value(layer, pos)
            if got is not None:
                image_done = True
                value = got[0]
                unit = "HU" if layer.metadata.get(IS_CT_KEY) else "intensity"
                text = f"{value:.0f}" if unit == "HU" else f"{value:.4g}"
                parts.append(f"{unit} {text}")
    return "  ".join(parts)


def install_cursor_readout(viewer: Any) -> None:
    """Show :func:`cursor_readout` in the viewer's text overlay (bottom left) as the mouse moves; once per viewer."""
    if any(getattr(cb, _INSTALLED, False) for cb in viewer.mouse_move_callbacks):
        return

    def on_move(viewer_: Any, event: Any) -> None:
        try:
            text = cursor_readout(list(viewer_.layers), viewer_.cursor.position)
        except Exception:  # a readout must never break mouse handling (e.g. a layer being removed)
            return
        viewer_.text_overlay.text = text

    setattr(on_move, _INSTALLED, True)
    viewer.mouse_move_callbacks.append(on_move)
    overlay = viewer.text_overlay
    overlay.visible = True
    overlay.font_size = 10
    overlay.color = "yellow"
    try:
        overlay.position = "bottom_left"
    except (ValueError, TypeError):  # older napari names
        pass
