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

__all__ = ["sidecar_paths", "write_label_sidecars", "render_sidecars", "ctbl_name", "itksnap_name", "is_medseg_sidecar"]


def sidecar_paths(label_path: str | PathLike[str]) -> dict[str, Path]:
    """``{"json": ..., "ctbl": ..., "txt": ...}`` for a label map path (``seg.nii.gz`` → ``seg.json`` ...)."""
    p = Path(label_path)
    suffix = full_suffix(p)
    stem = p.name[: len(p.name) - len(suffix)] if suffix else p.name
    return {ext: p.with_name(f"{stem}.{ext}") for ext in ("json", "ctbl", "txt")}


def ctbl_name(name: str) -> str:
    """A label name as one 3D Slicer colour-table token: whitespace and control characters become ``_``
    (a newline in a name can never inject a line)."""
    out = "".join("_" if (c.isspace() or not c.isprintable()) else c for c in str(name))
    return out or "_"


def itksnap_name(name: str) -> str:
    """A label name inside ITK-SNAP's double quotes: control characters become spaces, ``"`` becomes ``'``
    and ``\\`` becomes ``/`` (the format has no escapes), so the name stays one quoted field on one line."""
    out = "".join(" " if not c.isprintable() else c for c in str(name))
    return out.replace('"', "'").replace("\\", "/")


def render_sidecars(
    labels: Volume,
    label_file_name: str,
    volumes_ml: dict[str, float],
    extra: dict[str, Any] | None = None,
    quality: dict[str, float] | None = None,
) -> dict[str, str]:
    """Text of the three sidecars (keys ``json``, ``ctbl``, ``txt``); ``quality`` (label name → score, see
    README "Quality score") is written as each label's ``"quality"`` next to its ``"volume_ml"``."""
    doc: dict[str, Any] = {
        "label_map": label_file_name,
        "labels": [
            {"id": 0, "name": "background", "color": [0, 0, 0]},
            *[
                {"id": lab.id, "name": lab.name, "color": list(lab.color), "volume_ml": volumes_ml.get(lab.name),
                 **({"quality": quality[lab.name]} if quality and lab.name in quality else {})}
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
    ctbl += [f"{lab.id} {ctbl_name(lab.name)} {lab.color[0]} {lab.color[1]} {lab.color[2]} 255" for lab in labels.labels]
    txt = [
        "################################################",
        "# ITK-SnAP Label Description File (written by medseg)",
        "# IDX: label index; -R- -G- -B-: colour 0-255; -A--: opacity 0-1; VIS: visible; MSH: in mesh; LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    txt += [
        f'{lab.id:5d} {lab.color[0]:5d} {lab.color[1]:4d} {lab.color[2]:4d}        1  1  1    "{itksnap_name(lab.name)}"'
        for lab in labels.labels
    ]
    return {"json": json.dumps(doc, indent=2) + "\n", "ctbl": "\n".join(ctbl) + "\n", "txt": "\n".join(txt) + "\n"}


def is_medseg_sidecar(path: str | PathLike[str], label_file_name: str) -> bool:
    """True when ``path`` is a sidecar medseg wrote for the label map ``label_file_name`` (so replacing it
    loses nothing the user made): the JSON names that label map, the colour tables carry medseg's header."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    if p.suffix == ".json":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("label_map") == label_file_name
    text = head.decode("utf-8", errors="replace")
    return text.startswith("# 3D Slicer color table written by medseg") or "ITK-SnAP Label Description File (written by medseg)" in text


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
