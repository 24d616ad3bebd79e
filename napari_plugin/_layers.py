"""The only conversion between :class:`medseg.Volume` and napari layer data.

Conventions (all other plugin modules go through these functions):

* **napari world axes** are ``(I, P, L)`` in millimetres, i.e. world point ``(w0, w1, w2) =
  (-z, -y, -x)`` of the RAS+ point ``(x, y, z)``. napari shows the last two world axes as screen rows
  (downwards) and columns (rightwards), so with this frame the three standard views come out in
  radiological orientation without camera flips: axial = anterior up, patient right on screen left;
  coronal (``dims.order = (1, 0, 2)``) = superior up; sagittal (``(2, 0, 1)``) = superior up, anterior left.
  The frame is a proper rotation of RAS (determinant +1), so 3D views are not mirrored.
* **layer data axes** are a permutation of the Volume's ``(i, j, k)`` axes (a transposed *view*, never a
  flipped copy) chosen so data axis ``d`` is the voxel axis closest to world axis ``d``; for a canonical RAS
  volume that is ``(k, j, i)``. 4D volumes ``(i, j, k, t)`` become ``(t, ...)`` with a time step of 1.
* **placement**: ``scale`` is the voxel spacing (mm) per data axis; ``affine`` is the 4x4 (5x5 for 4D)
  world matrix holding the direction cosines (signs, and obliquity) and the origin. napari composes
  ``affine @ scale``, which equals the Volume's voxel → RAS affine expressed in the ``(I, P, L)`` frame,
  so an image and its labels (same geometry) line up exactly, oblique or not.
* ``metadata["medseg_geometry"]`` keeps the original :class:`~medseg.types.Geometry`, ``metadata["medseg_axes"]``
  the permutation, ``metadata["medseg_source"]`` the :class:`~medseg.types.SourceInfo` and, for label maps,
  ``metadata["medseg_labels"]`` the :class:`~medseg.types.Label` tuple; the writer uses them to save in the
  source geometry. Labels also get a ``features`` table (``index``, ``name``) so napari's status bar shows
  the label name under the cursor, and a direct colormap with the model's colours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from nibabel import orientations as nio

from medseg.types import Geometry, Label, SourceInfo, Volume
from medseg.modality import default_window

__all__ = [
    "RAS_TO_WORLD",
    "CT_WINDOW",
    "data_axes",
    "world_affine",
    "volume_to_layer_data",
    "layer_geometry",
    "layer_to_volume",
    "layer_labels",
    "label_colormap",
    "LABELS_OPACITY",
    "data_to_ijk",
    "ijk_to_data",
    "layer_ijk",
    "set_label_voxels",
    "set_layer_labels",
]

#: 3x3 RAS+ → napari world ``(I, P, L)``: ``(x, y, z) -> (-z, -y, -x)``. Its own inverse.
RAS_TO_WORLD = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])

#: Default CT display window (HU): soft tissue, width 400, level 40 (:func:`medseg.modality.default_window`).
CT_WINDOW = (-160.0, 240.0)

GEOMETRY_KEY = "medseg_geometry"
AXES_KEY = "medseg_axes"
SOURCE_KEY = "medseg_source"
LABELS_KEY = "medseg_labels"
IS_CT_KEY = "medseg_is_ct"
HIDDEN_KEY = "medseg_hidden_labels"

#: Labels layer opacity: the anatomy under a label stays readable (napari's default is 0.7).
LABELS_OPACITY = 0.35


def world_affine(geometry: Geometry) -> np.ndarray:
    """4x4 voxel ``(i, j, k)`` → napari world ``(I, P, L)`` mm matrix (columns still in ijk order)."""
    out = np.eye(4)
    out[:3, :3] = RAS_TO_WORLD @ geometry.affine[:3, :3]
    out[:3, 3] = RAS_TO_WORLD @ geometry.affine[:3, 3]
    return out


def data_axes(geometry: Geometry) -> tuple[int, int, int]:
    """Permutation ``p`` with layer data axis ``d`` = voxel axis ``p[d]`` (closest to world axis ``d``).

    >>> data_axes(Geometry(np.diag([1.0, 1.0, 2.0, 1.0]), (4, 5, 6)))
    (2, 1, 0)
    """
    ornt = nio.io_orientation(world_affine(geometry))  # row = voxel axis: (world axis, flip)
    perm = [0, 0, 0]
    for voxel_axis, (world_axis, _flip) in enumerate(ornt):
        perm[int(world_axis)] = voxel_axis
    return tuple(perm)  # type: ignore[return-value]


def ijk_to_data(ijk: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Voxel indices ``(..., 3)`` in ``(i, j, k)`` order → layer data order ``(..., 3)``."""
    return np.asarray(ijk)[..., list(data_axes(geometry))]


def data_to_ijk(data_index: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Layer data indices ``(..., 3)`` → voxel indices in ``(i, j, k)`` order."""
    return np.asarray(data_index)[..., list(np.argsort(data_axes(geometry)))]


def _placement(geometry: Geometry, n_time: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, affine)`` napari arguments for a geometry, optionally with a leading time axis."""
    perm = list(data_axes(geometry))
    linear = world_affine(geometry)[:3, :3][:, perm]  # columns in data-axis order
    spacing = np.linalg.norm(linear, axis=0)
    aff = np.eye(4)
    aff[:3, :3] = linear / spacing
    aff[:3, 3] = world_affine(geometry)[:3, 3]
    if n_time is None:
        return spacing, aff
    aff5 = np.eye(5)
    aff5[1:, 1:] = aff
    return np.concatenate([[1.0], spacing]), aff5


def label_colormap(labels: Sequence[Label], hidden: Sequence[int] = ()) -> dict[int | None, np.ndarray]:
    """Colour dict for napari's ``DirectLabelColormap``: background transparent, unknown ids grey, the ids
    in ``hidden`` transparent (per-label visibility)."""
    colors: dict[int | None, np.ndarray] = {None: np.array([0.6, 0.6, 0.6, 1.0]), 0: np.zeros(4)}
    hide = {int(h) for h in hidden}
    for lab in labels:
        colors[int(lab.id)] = np.array([*(c / 255.0 for c in lab.color), 0.0 if int(lab.id) in hide else 1.0])
    return colors


def _label_features(labels: Sequence[Label]) -> dict[str, list]:
    return {"index": [0, *(int(lab.id) for lab in labels)], "name": ["background", *(lab.name for lab in labels)]}


def volume_to_layer_data(volume: Volume, name: str | None = None) -> tuple[Any, dict[str, Any], str]:
    """A napari ``LayerData`` tuple ``(data, kwargs, "image" | "labels")`` for a Volume.

    Args:
        volume: ``(I, J, K[, T])`` image or label map.
        name: layer name (default: the source file's name, or ``"labels"``/``"image"``).

    Returns:
        ``data`` is a transposed view of ``volume.array`` (no copy), ``(D0, D1, D2)`` or ``(T, D0, D1, D2)``.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a medseg Volume, got {type(volume).__name__}.")
    geometry = volume.geometry
    perm = list(data_axes(geometry))
    arr = volume.array
    n_time = arr.shape[3] if arr.ndim == 4 else None
    data = arr.transpose(perm) if n_time is None else arr.transpose([3, *perm])
    scale, affine = _placement(geometry, n_time)
    metadata = {GEOMETRY_KEY: geometry, AXES_KEY: tuple(perm), SOURCE_KEY: volume.source}
    if name is None:
        from pathlib import Path

        base = Path(volume.source.path).name if volume.source.path else ("labels" if volume.is_label else "image")
        name = (volume.source.series_description if volume.source.format == "dicom" else None) or base
    kwargs: dict[str, Any] = {"name": name, "scale": tuple(scale), "affine": affine, "metadata": metadata}
    if volume.is_label:
        if not np.issubdtype(data.dtype, np.integer):
            data = data.astype(np.int32)
        elif not data.flags.writeable:
            data = data.copy()  # labels are edited in place (paint, SAM accept)
        metadata[LABELS_KEY] = tuple(volume.labels)
        kwargs["features"] = _label_features(volume.labels)
        from napari.utils.colormaps import DirectLabelColormap

        kwargs["colormap"] = DirectLabelColormap(color_dict=label_colormap(volume.labels))
        kwargs["opacity"] = LABELS_OPACITY
        return data, kwargs, "labels"
    if np.issubdtype(arr.dtype, np.number):
        # the same window SAM's model input uses (medseg.modality.default_window): the model sees what you see
        window = default_window(volume)
        metadata[IS_CT_KEY] = window.decision.is_ct  # the cursor readout says "HU" for CT
        if window.high > window.low:
            kwargs["contrast_limits"] = (window.low, window.high)
    else:
        metadata[IS_CT_KEY] = False
    return data, kwargs, "image"


def layer_geometry(
    data_shape: Sequence[int],
    scale: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    translate: Sequence[float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Geometry, tuple[int, int, int]]:
    """Geometry and data→ijk permutation of a layer.

    Uses ``metadata["medseg_geometry"]`` when present and its shape matches; otherwise rebuilds the geometry
    from napari's placement (``affine @ translate @ scale``, last three axes only), with the data axes taken
    as the voxel axes (a layer drawn by hand in napari is saved on its own grid; it still lines up).
    """
    spatial = tuple(int(s) for s in data_shape[-3:])
    if len(data_shape) < 3:
        raise ValueError(f"need a 3D or 4D layer, got data shape {tuple(data_shape)}.")
    meta = metadata or {}
    geom = meta.get(GEOMETRY_KEY)
    perm = meta.get(AXES_KEY)
    if isinstance(geom, Geometry) and perm is not None:
        if tuple(geom.shape[p] for p in perm) == spatial:
            return geom, tuple(perm)  # type: ignore[return-value]
    nd = len(data_shape)
    full = np.eye(nd + 1)
    if affine is not None:
        a = np.asarray(getattr(affine, "affine_matrix", affine), dtype=np.float64)
        if a.shape != (nd + 1, nd + 1):
            raise ValueError(f"affine must be {nd + 1}x{nd + 1} for a {nd}D layer, got {a.shape}.")
        full = a
    s = np.ones(nd) if scale is None else np.asarray(scale, dtype=np.float64)
    t = np.zeros(nd) if translate is None else np.asarray(translate, dtype=np.float64)
    st = np.eye(nd + 1)
    st[:nd, :nd] = np.diag(s)
    st[:nd, nd] = t
    full = full @ st
    world3 = np.eye(4)
    world3[:3, :3] = full[nd - 3 : nd, nd - 3 : nd]
    world3[:3, 3] = full[nd - 3 : nd, nd]
    ras = np.eye(4)
    ras[:3, :3] = RAS_TO_WORLD @ world3[:3, :3]
    ras[:3, 3] = RAS_TO_WORLD @ world3[:3, 3]
    return Geometry(ras, spatial), (0, 1, 2)


def layer_labels(metadata: Mapping[str, Any] | None, features: Any = None) -> tuple[Label, ...]:
    """Label names/colours of a layer: from ``metadata["medseg_labels"]``, else the ``features`` names."""
    meta = metadata or {}
    labels = meta.get(LABELS_KEY)
    if labels:
        return tuple(labels)
    if features is not None and len(features) and "name" in features and "index" in features:
        out = []
        for idx, name in zip(list(features["index"]), list(features["name"])):
            if int(idx) != 0:
                out.append(Label(int(idx), str(name)))
        return tuple(out)
    return ()


def layer_to_volume(
    data: Any,
    *,
    scale: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    translate: Sequence[float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    features: Any = None,
    is_label: bool = False,
) -> Volume:
    """A Volume ``(I, J, K[, T])`` back from layer data and its attributes (inverse of :func:`volume_to_layer_data`).

    Accepts either napari layer attributes or the ``meta`` dict napari passes to writers.
    """
    arr = np.asarray(data)
    if arr.ndim not in (3, 4):
        raise ValueError(f"layer data must be 3D or 4D, got shape {arr.shape}.")
    geometry, perm = layer_geometry(arr.shape, scale, affine, translate, metadata)
    inv = list(np.argsort(perm))
    vol_arr = arr.transpose(inv) if arr.ndim == 3 else arr.transpose([*(1 + i for i in inv), 0])
    meta = metadata or {}
    source = meta.get(SOURCE_KEY)
    labels = layer_labels(meta, features) if is_label else ()
    return Volume(
        vol_arr,
        geometry,
        source=source if isinstance(source, SourceInfo) else SourceInfo(),
        is_label=is_label,
        labels=labels,
    )


def layer_volume(layer: Any) -> Volume:
    """:func:`layer_to_volume` for a napari Image or Labels layer object."""
    from napari.layers import Labels

    return layer_to_volume(
        layer.data,
        scale=layer.scale,
        affine=layer.affine.affine_matrix,
        translate=layer.translate,
        metadata=layer.metadata,
        features=getattr(layer, "features", None),
        is_label=isinstance(layer, Labels),
    )


def layer_ijk(layer: Any) -> np.ndarray:
    """A 3D layer's data as an ``(I, J, K)`` *view* (writes go to the layer's data; call ``refresh()``)."""
    geometry, perm = layer_geometry(np.shape(layer.data), layer.scale, layer.affine.affine_matrix, layer.translate,
                                    layer.metadata)
    if np.ndim(layer.data) != 3:
        raise ValueError(f"layer {layer.name!r} must be 3D, got {np.ndim(layer.data)}D.")
    return np.asarray(layer.data).transpose(list(np.argsort(perm)))


def set_label_voxels(layer: Any, index_ijk: tuple[np.ndarray, np.ndarray, np.ndarray], values: np.ndarray) -> int:
    """Write ``values`` at voxel indices ``(i, j, k)`` of a 3D Labels layer as ONE step of its undo history
    (Ctrl+Z on the layer reverts it). The one way widgets write label voxels; returns the voxels written."""
    n = int(np.size(values))
    if n:
        _, perm = layer_geometry(np.shape(layer.data), layer.scale, layer.affine.affine_matrix, layer.translate,
                                 layer.metadata)
        with layer.block_history():
            layer.data_setitem(tuple(np.asarray(index_ijk[p]) for p in perm), np.asarray(values))
    return n


def set_layer_labels(layer: Any, labels: Sequence[Label], hidden: set[int] | None = None) -> None:
    """Give a Labels layer new label names/colours (and hidden ids): metadata, features and colormap."""
    from napari.utils.colormaps import DirectLabelColormap

    hidden = set(layer.metadata.get(HIDDEN_KEY, ())) if hidden is None else {int(h) for h in hidden}
    labels = tuple(sorted(labels, key=lambda lab: lab.id))
    layer.metadata = {**layer.metadata, LABELS_KEY: labels, HIDDEN_KEY: tuple(sorted(hidden))}
    layer.features = _label_features(labels)
    layer.colormap = DirectLabelColormap(color_dict=label_colormap(labels, hidden))
