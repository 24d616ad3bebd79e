"""The SAM widget's overlay layers, on the image's grid: prompt points, box outlines and the candidate preview.

UI wiring only: the prompts and the candidate come from :class:`medseg.sam.AnnotationSession`; voxel <->
layer conversion goes through :mod:`._layers`. The layers are created on first use and found again by name,
so a user who deletes one gets a fresh one on the next prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._layers import GEOMETRY_KEY, data_axes, ijk_to_data, layer_ijk, volume_to_layer_data

__all__ = ["BOX_NAME", "PREVIEW_NAME", "PROMPTS_NAME", "SamOverlays"]

PROMPTS_NAME, BOX_NAME, PREVIEW_NAME = "SAM prompts", "SAM box", "SAM preview"


def _spatial_affine(layer: Any) -> tuple[tuple[float, ...], np.ndarray]:
    """``(scale, 4x4 affine)`` of ``layer``'s last three (spatial) dimensions."""
    spatial = layer.ndim - 3
    aff = np.asarray(layer.affine.affine_matrix)
    affine3 = np.eye(4)
    affine3[:3, :3] = aff[spatial:-1, spatial:-1]
    affine3[:3, 3] = aff[spatial:-1, -1]
    return tuple(layer.scale)[spatial:], affine3


class SamOverlays:
    """The ``SAM prompts`` points, ``SAM box`` shapes and ``SAM preview`` labels layers of one viewer.

    Args:
        viewer: the napari viewer.
        on_box_drawn: connected to the box layer's ``data`` event (a rectangle drawn by the user).

    ``updating`` is true while :meth:`sync_prompts` rewrites the layers, so ``on_box_drawn`` can tell the
    user's rectangles from the widget's own.
    """

    def __init__(self, viewer: Any, on_box_drawn: Callable[..., None]) -> None:
        self.viewer = viewer
        self._on_box_drawn = on_box_drawn
        self.updating = False

    def prompt_layers(self, image: Any) -> tuple[Any, Any]:
        """The points and box layers on ``image``'s grid (created on first use); ``(None, None)`` without an image."""
        if image is None:
            return None, None
        scale, affine3 = _spatial_affine(image)
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

    def sync_prompts(self, image: Any, prompts: Any) -> None:
        """Show ``prompts`` (a :class:`medseg.sam.annotate` prompt set, or ``None``) in the points and box layers:
        positive points green, negative red, boxes as yellow rectangles."""
        if image is None or GEOMETRY_KEY not in image.metadata:
            return
        self.updating = True
        try:
            if not prompts:
                # nothing to show: empty the prompt layers if they exist, never create them here
                if PROMPTS_NAME in self.viewer.layers and len(self.viewer.layers[PROMPTS_NAME].data):
                    self.viewer.layers[PROMPTS_NAME].data = np.zeros((0, 3))
                if BOX_NAME in self.viewer.layers and len(self.viewer.layers[BOX_NAME].data):
                    self.viewer.layers[BOX_NAME].data = []
                return
            geom = image.metadata[GEOMETRY_KEY]
            points, shapes = self.prompt_layers(image)
            pts = prompts.all_points()
            data = ijk_to_data(np.array([p for p, _ in pts]).reshape(-1, 3), geom)
            points.data = data
            if len(data):
                points.face_color = np.array([[0.2, 1, 0.2, 1] if lab else [1, 0.2, 0.2, 1] for _, lab in pts])
            shapes.data = []
            rects = [ijk_to_data(c, geom) for c in prompts.box_outlines()]
            if rects:
                shapes.add_rectangles(rects, edge_color="yellow", face_color="transparent")
        finally:
            self.updating = False

    def preview_layer(self, image: Any) -> Any:
        """The candidate's Labels layer on ``image``'s grid (made again when the grid changed)."""
        geom = image.metadata[GEOMETRY_KEY]
        shape = tuple(geom.shape[p] for p in data_axes(geom))
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

    def show_candidate(self, image: Any, candidate: Any) -> None:
        """Show ``candidate`` (the session's pending slice mask, or ``None``) in the preview layer; ``None``
        empties it in place (this runs inside layer events: no layer is created or replaced then)."""
        if candidate is None:
            if PREVIEW_NAME in self.viewer.layers:
                prev = self.viewer.layers[PREVIEW_NAME]
                if np.any(prev.data):
                    prev.data[...] = 0
                    prev.refresh()
            return
        if image is None:
            return
        prev = self.preview_layer(image)
        ijk = layer_ijk(prev)
        ijk[...] = 0
        ijk[candidate.region()] = candidate.region_mask()
        prev.refresh()
