"""Label names and colours for a label map, from the files that usually travel with it.

Sources, in the order :func:`find_label_table` tries them for ``X.nii.gz`` / ``X.nrrd``:

1. ``X.json`` — medseg's sidecar (``{"labels": [{"id", "name", "color"}, ...]}``);
2. ``X.ctbl`` — a 3D Slicer colour table (``id name R G B A`` per line);
3. ``X.txt`` — an ITK-SNAP label description (``IDX R G B A VIS MSH "LABEL"`` per line);
4. the NIfTI header's label table: TotalSegmentator (``--ml``) stores its class map as a Caret XML
   extension (``<Label Key="1" Red=".." ...>spleen</Label>``);
5. TotalSegmentator's class map (:func:`class_map`, kept as data in
   ``medseg/data/totalsegmentator_classes.yaml``) when the file name says it comes from TotalSegmentator
   (``*totalseg*``) and its ids fit the map.

Every source is untrusted: files larger than :data:`MAX_TABLE_BYTES` are ignored, bad lines are skipped,
and a table that yields nothing is treated as absent. Labels without a colour get :func:`medseg.labels.label_color`.
No Qt, no torch.

>>> labels, source = find_label_table("example_seg.nii.gz")      # doctest: +SKIP
>>> labels[0], source                                            # doctest: +SKIP
(Label(id=1, name='spleen', color=(0, 255, 0)), 'NIfTI header label table (TotalSegmentator)')
"""

from __future__ import annotations

import json
import os
import re
import shlex
from functools import lru_cache
from pathlib import Path

from medseg.labels import label_color
from medseg.types import Label

__all__ = [
    "MAX_TABLE_BYTES",
    "read_label_table",
    "nifti_header_labels",
    "class_map",
    "class_map_names",
    "find_label_table",
    "table_paths",
]

#: label tables above this size are not read (a real one with thousands of labels is < 1 MB)
MAX_TABLE_BYTES = 4 * 1024 * 1024

def _rgb(values: list, scale: float = 1.0) -> tuple[int, int, int] | None:
    try:
        rgb = tuple(int(round(float(v) * scale)) for v in values[:3])
    except (TypeError, ValueError):
        return None
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        return None
    return rgb  # type: ignore[return-value]


def _finish(entries: dict[int, tuple[str, tuple[int, int, int] | None]]) -> tuple[Label, ...]:
    return tuple(
        Label(lid, name, color if color is not None else label_color(lid))
        for lid, (name, color) in sorted(entries.items())
        if lid > 0
    )


def _read_text(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_TABLE_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _parse_json(text: str) -> tuple[Label, ...]:
    try:
        doc = json.loads(text)
    except ValueError:
        return ()
    entries: dict[int, tuple[str, tuple[int, int, int] | None]] = {}
    items = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return ()
    for e in items:
        if not isinstance(e, dict):
            continue
        try:
            lid = int(e["id"])
        except (KeyError, TypeError, ValueError):
            continue
        color = e.get("color")
        entries[lid] = (str(e.get("name", f"label {lid}")), _rgb(color) if isinstance(color, list) else None)
    return _finish(entries)


def _parse_ctbl(text: str) -> tuple[Label, ...]:
    entries: dict[int, tuple[str, tuple[int, int, int] | None]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or len(parts) < 2:
            continue
        try:
            lid = int(parts[0])
        except ValueError:
            continue
        entries[lid] = (parts[1], _rgb(parts[2:5]) if len(parts) >= 5 else None)
    return _finish(entries)


def _parse_itksnap(text: str) -> tuple[Label, ...]:
    entries: dict[int, tuple[str, tuple[int, int, int] | None]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
            lid = int(parts[0])
        except (ValueError, IndexError):
            continue
        if len(parts) < 8:
            continue
        entries[lid] = (parts[7], _rgb(parts[1:4]))
    return _finish(entries)


_CARET_LABEL = re.compile(
    r'<Label\s+Key="(\d+)"\s+Red="([0-9.eE+-]+)"\s+Green="([0-9.eE+-]+)"\s+Blue="([0-9.eE+-]+)"[^>]*>'
    r"\s*(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))\s*</Label>",
    re.S,
)


def _parse_caret(text: str) -> tuple[Label, ...]:
    entries: dict[int, tuple[str, tuple[int, int, int] | None]] = {}
    for key, r, g, b, cdata, plain in _CARET_LABEL.findall(text):
        name = (cdata or plain or "").strip() or f"label {key}"
        entries[int(key)] = (name, _rgb([r, g, b], 255.0))
    return _finish(entries)


def read_label_table(path: str | os.PathLike[str]) -> tuple[Label, ...]:
    """Labels from a medseg ``.json`` sidecar, a Slicer ``.ctbl`` or an ITK-SNAP ``.txt`` (chosen by suffix).

    Returns:
        The labels with id > 0, sorted by id; ``()`` when the file is missing, too large or holds none.

    Raises:
        ValueError: the suffix is none of ``.json``, ``.ctbl``, ``.txt``.
    """
    p = Path(path)
    parsers = {".json": _parse_json, ".ctbl": _parse_ctbl, ".txt": _parse_itksnap}
    parse = parsers.get(p.suffix.lower())
    if parse is None:
        raise ValueError(f"label table must be .json, .ctbl or .txt, got {p.name!r}.")
    text = _read_text(p)
    return parse(text) if text is not None else ()


def nifti_header_labels(path: str | os.PathLike[str]) -> tuple[Label, ...]:
    """The label table stored in a NIfTI header extension (TotalSegmentator's Caret XML), or ``()``.

    Reads the header only (no voxel data); never raises for a bad or non-NIfTI file.
    """
    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz")):
        return ()
    try:
        import nibabel as nib

        img = nib.load(str(p))
        extensions = getattr(img.header, "extensions", [])
        for ext in extensions:
            content = ext.get_content()
            if isinstance(content, bytes) and len(content) <= MAX_TABLE_BYTES and b"<LabelTable" in content:
                labels = _parse_caret(content.decode("utf-8", errors="replace"))
                if labels:
                    return labels
    except Exception:  # an unreadable header simply has no label table (the image reader reports it)
        return ()
    return ()


@lru_cache(maxsize=1)
def _class_maps() -> dict[str, tuple[str, ...]]:
    import yaml

    doc = yaml.safe_load((Path(__file__).parent / "data" / "totalsegmentator_classes.yaml").read_text("utf-8"))
    return {str(k): tuple(str(n) for n in v) for k, v in doc["maps"].items()}


def class_map_names() -> tuple[str, ...]:
    """Names of the bundled class maps (``"total"``, ``"total_mr"``)."""
    return tuple(_class_maps())


def class_map(name: str = "total") -> tuple[Label, ...]:
    """TotalSegmentator's class map ``name`` as labels (ids from 1, palette colours).

    >>> class_map("total")[4]
    Label(id=5, name='liver', color=(245, 130, 48))
    """
    maps = _class_maps()
    if name not in maps:
        raise ValueError(f"unknown class map {name!r}; choose one of {sorted(maps)}.")
    return tuple(Label(i, n, label_color(i)) for i, n in enumerate(maps[name], start=1))


def table_paths(label_path: str | os.PathLike[str]) -> dict[str, Path]:
    """``{"json", "ctbl", "txt"}`` table paths beside a label map (``X.nii.gz`` -> ``X.json`` ...)."""
    from medseg.io.sidecar import sidecar_paths

    return sidecar_paths(label_path)


def find_label_table(
    label_path: str | os.PathLike[str], ids: set[int] | None = None
) -> tuple[tuple[Label, ...], str] | None:
    """Labels for the label map at ``label_path`` and where they came from, or ``None`` when nothing matches.

    Args:
        label_path: the label map file.
        ids: label ids present in the map (optional). TotalSegmentator's class map is used only when all of
            them are in the map; ids missing from a found table are added as ``"label N"``.

    Returns:
        ``(labels, source)``, ``source`` naming the file or rule (e.g. ``"seg.ctbl"``).
    """
    p = Path(label_path)
    found: tuple[tuple[Label, ...], str] | None = None
    for key, side in table_paths(p).items():
        if key == "json" and side == p:
            continue
        labels = read_label_table(side)
        if labels:
            found = (labels, side.name)
            break
    if found is None:
        labels = nifti_header_labels(p)
        if labels:
            found = (labels, "NIfTI header label table (TotalSegmentator)")
    if found is None and "totalseg" in p.name.lower().replace("_", "").replace("-", ""):
        name = "total_mr" if "mr" in re.split(r"[^a-z0-9]+", p.name.lower()) else "total"
        labels = class_map(name)
        if ids is None or ids <= {lab.id for lab in labels}:
            found = (labels, f"TotalSegmentator class map {name!r}")
    if found is None:
        return None
    labels, source = found
    if ids:
        known = {lab.id for lab in labels}
        extra = [Label(i, f"label {i}", label_color(i)) for i in sorted(ids) if i > 0 and i not in known]
        labels = tuple(sorted((*labels, *extra), key=lambda lab: lab.id))
    return labels, source
