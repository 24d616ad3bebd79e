"""brain1 (pyradiomics MR with its tumour label) in a napari viewer with medseg's SAM dock, for the SAM tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def open_brain1_with_sam(make_napari_viewer: Any, shared_data: Path) -> tuple[Any, np.ndarray, Any, Any, Any]:
    """``(volume, tumour mask, viewer, image layer, SAM widget)``: brain1 read by medseg, shown through the
    plugin's layer conversion, the "SAM prompt" dock added."""
    from medseg.io import read
    from medseg_napari._layers import volume_to_layer_data

    data = shared_data / "pyradiomics" / "data"
    vol = read(data / "brain1_image.nrrd")
    lab = read(data / "brain1_label.nrrd").array > 0
    viewer = make_napari_viewer()
    layer_data, kwargs, _ = volume_to_layer_data(vol, name="brain1")
    image = viewer.add_image(layer_data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("medseg", "SAM prompt")
    return vol, lab, viewer, image, widget


def tumour_box(lab: np.ndarray, k: int) -> tuple[int, int, int, int]:
    """The tumour's bounding box ``(x0, y0, x1, y1)`` on slice ``k`` along axis 2 (x along i, y along j)."""
    from medseg.sam.protocol import plane

    ys, xs = np.nonzero(plane(lab.astype(np.uint8), 2, k))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def draw_box(widget: Any, image: Any, box: tuple[int, int, int, int], k: int) -> None:
    """Add ``box`` on slice ``k`` to the widget's box layer, as a user drawing a rectangle does."""
    from medseg_napari._layers import GEOMETRY_KEY, ijk_to_data

    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, k], [x0, y1, k], [x1, y1, k], [x1, y0, k]], dtype=float)
    _, shapes = widget._prompt_layers()
    shapes.add_rectangles([ijk_to_data(corners, image.metadata[GEOMETRY_KEY])])
