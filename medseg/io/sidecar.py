"""Sidecars next to a label map: ``<stem>.json`` (labels, colours, volumes, provenance), ``<stem>.ctbl``
(3D Slicer colour table) and ``<stem>.txt`` (ITK-SNAP label description)."""

from __future__ import annotations

import json
import os
from os import PathLike
from pathlib import Path
from typing import Any

from medseg.io.atomic import full_suffix
from medseg.types import Volume

__all__ = ["sidecar_paths", "write_label_sidecars", "render_sidecars"]


def sidecar_paths(label_path: str | PathLike[str]) -> dict[str, Path]:
    """``{"json": ..., "ctbl": ..., "txt": ...}`` for a label map path (``seg.nii.gz`` → ``seg.json`` ...)."""
    p = Path(label_path)
    suffix = full_suffix(p)
    stem = p.name[: len(p.name) - len(suffix)] if suffix else p.name
    return {ext: p.with_name(f"{stem}.{ext}") for ext in ("json", "ctbl", "txt")}


def render_sidecars(
    labels: Volume, label_file_name: str, volumes_ml: dict[str, float], extra: dict[str, Any] | None = None
) -> dict[str, str]:
    """Text of the three sidecars (keys ``json``, ``ctbl``, ``txt``)."""
    doc: dict[str, Any] = {
        "label_map": label_file_name,
        "labels": [
            {"id": 0, "name": "background", "color": [0, 0, 0]},
            *[
                {"id": lab.id, "name": lab.name, "color": list(lab.color), "volume_ml": volumes_ml.get(lab.name)}
                for lab in labels.labels
            ],
        ],
        "volumes_ml": volumes_ml,
        "voxel_volume_ml": labels.geometry.voxel_volume_ml,
        "shape": list(labels.geometry.shape),
        "spacing_mm": [round(s, 6) for s in labels.geometry.spacing],
        "orientation": labels.geometry.orientation,
    }
    if extra:
        doc.update(extra)
    ctbl = ["# 3D Slicer color table written by medseg", "# id name R G B A", "0 background 0 0 0 0"]
    ctbl += [f"{lab.id} {lab.name.replace(' ', '_')} {lab.color[0]} {lab.color[1]} {lab.color[2]} 255" for lab in labels.labels]
    txt = [
        "################################################",
        "# ITK-SnAP Label Description File (written by medseg)",
        "# IDX: label index; -R- -G- -B-: colour 0-255; -A--: opacity 0-1; VIS: visible; MSH: in mesh; LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    txt += [
        f'{lab.id:5d} {lab.color[0]:5d} {lab.color[1]:4d} {lab.color[2]:4d}        1  1  1    "{lab.name}"'
        for lab in labels.labels
    ]
    return {"json": json.dumps(doc, indent=2) + "\n", "ctbl": "\n".join(ctbl) + "\n", "txt": "\n".join(txt) + "\n"}


def write_label_sidecars(
    labels_volume: Volume,
    nifti_path: str | PathLike[str],
    volumes_ml: dict[str, float],
    *,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the three sidecars next to ``nifti_path`` (each atomically); returns their paths.

    Raises:
        WriteError: a sidecar exists and ``overwrite`` is false, or the directory is not writable.
    """
    from medseg.io.atomic import atomic_output

    paths = sidecar_paths(nifti_path)
    texts = render_sidecars(labels_volume, Path(nifti_path).name, volumes_ml, extra)
    for key, path in paths.items():
        with atomic_output(path, overwrite=overwrite) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(texts[key])
                f.flush()
                os.fsync(f.fileno())
    return paths
