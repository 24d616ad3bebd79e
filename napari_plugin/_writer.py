"""napari writer: a Labels layer → NIfTI in its source geometry, plus the label-names sidecars.

The geometry comes from ``metadata["medseg_geometry"]`` (layers made by medseg's reader or widgets), so the
file has exactly the scan's affine and voxel order and lines up with it in any viewer. A labels layer made
by hand in napari is saved on its own grid, built from its ``scale``/``translate``/``affine``; it lines up
too. The label map and its sidecars (``<stem>.json`` with ids, names, colours, volumes in mL and provenance,
plus the colour tables) are written, all or nothing, by :func:`medseg.pipeline.write_segmentation`.

napari's *File > Save Layers* dialog asks before replacing an existing file, so :func:`write_labels`
(called after that confirmation) overwrites; :func:`save_labels` itself refuses unless ``overwrite=True``.
The dialog only asked about the label map itself: a sidecar name that is taken by a file medseg did not
write for this label map (``report.json``, ``report.txt`` next to ``report.nii.gz``) is never replaced,
with or without ``overwrite``; the save stops before writing anything and names that file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_labels", "save_labels", "labels_volume"]


def labels_volume(data: Any, meta: dict[str, Any]) -> Any:
    """A label-map :class:`~medseg.types.Volume` from layer data and napari's layer-state dict."""
    from ._layers import layer_to_volume

    arr = np.asarray(data)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {arr.dtype}.")
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {arr.min()}.")
    return layer_to_volume(
        arr,
        scale=meta.get("scale"),
        affine=meta.get("affine"),
        translate=meta.get("translate"),
        metadata=meta.get("metadata"),
        features=meta.get("features"),
        is_label=True,
    )


def _nifti_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz")):
        p = p.with_name(p.name + ".nii.gz")
    return p


def save_labels(volume: Any, path: str | os.PathLike[str], overwrite: bool = False) -> list[str]:
    """Write ``volume`` (``is_label=True``) to ``path`` (``.nii``/``.nii.gz`` added if missing) + sidecars,
    all or nothing, through :func:`medseg.pipeline.write_segmentation` (the writer of ``medseg segment``).

    Returns:
        The written paths, the NIfTI first.
    """
    from medseg.errors import WriteError
    from medseg.io.sidecar import is_medseg_sidecar, sidecar_paths
    from medseg.pipeline import provenance_record, write_segmentation

    out = _nifti_path(path)
    if not overwrite:  # check everything first: never leave a NIfTI without its sidecars
        for p in (out, *sidecar_paths(out).values()):
            if Path(p).exists() or Path(p).is_symlink():
                raise WriteError("already exists; tick 'Overwrite' (or choose another name) to replace it", p)
    for p in sidecar_paths(out).values():  # never replace a file the user made that happens to share the name
        if (Path(p).exists() or Path(p).is_symlink()) and (Path(p).is_symlink() or not is_medseg_sidecar(p, out.name)):
            raise WriteError(
                f"a file medseg did not write for {out.name} is in the way of its sidecar; not replacing it "
                "(move it, or save under another name)", p,
            )
    source = getattr(getattr(volume, "source", None), "path", None)
    written = write_segmentation(volume, out, provenance_record(source, volume), overwrite=overwrite)
    return [str(p) for p in written.values()]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for ``labels`` layers (see module docstring about overwriting)."""
    return save_labels(labels_volume(data, meta), path, overwrite=True)
