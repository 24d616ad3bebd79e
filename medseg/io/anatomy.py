"""Coded anatomy (SNOMED CT) of label names, for DICOM SEG segments and RTSTRUCT ROIs.

The mapping is data: ``configs/anatomy/snomed.yaml`` beside the model specs (codes taken from
TotalSegmentator's published mapping and the DICOM code dictionary; never invented). A label without
an entry gets the generic ``Tissue`` coding and a note saying so.

>>> code_for("liver").type                                  # doctest: +SKIP
('SCT', '10200004', 'Liver')
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Coding", "code_for", "anatomy_file", "GENERIC"]

Code = tuple[str, str, str]  # (coding scheme designator, code value, code meaning)


@dataclass(frozen=True)
class Coding:
    """SNOMED CT coding of one structure. ``note`` says when the coding is generic or approximate."""

    category: Code
    type: Code
    type_modifier: Code | None = None
    region: Code | None = None
    region_modifier: Code | None = None
    source: str = ""
    note: str = ""

    @property
    def generic(self) -> bool:
        return self.source == "generic"


#: Fallback for labels with no known code (DICOM CID 7150/7151 "Tissue").
GENERIC = Coding(("SCT", "85756007", "Tissue"), ("SCT", "85756007", "Tissue"), source="generic",
                 note="no SNOMED CT code known for this label: generic Tissue coding")


def anatomy_file() -> Path:
    """The mapping file: ``configs/anatomy/snomed.yaml`` in a checkout, ``medseg/configs/...`` in a wheel."""
    from medseg.paths import config_dirs

    for d in config_dirs():
        p = d / "anatomy" / "snomed.yaml"
        if p.is_file():
            return p
    raise FileNotFoundError("configs/anatomy/snomed.yaml is missing from this installation")


def _code(value: object, where: str) -> Code | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) and v for v in value)):
        raise ValueError(f"{where}: a code must be [scheme, value, meaning] strings, got {value!r}.")
    return (value[0], value[1], value[2])


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Coding]:
    import yaml

    path = anatomy_file()
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    out: dict[str, Coding] = {}
    for name, entry in (doc or {}).get("labels", {}).items():
        where = f"{path}: labels.{name}"
        unknown = set(entry) - {"category", "type", "type_modifier", "region", "region_modifier", "source", "note"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}.")
        out[str(name).lower()] = Coding(
            category=_code(entry["category"], where),  # type: ignore[arg-type]
            type=_code(entry["type"], where),  # type: ignore[arg-type]
            type_modifier=_code(entry.get("type_modifier"), where),
            region=_code(entry.get("region"), where),
            region_modifier=_code(entry.get("region_modifier"), where),
            source=str(entry.get("source", "")),
            note=str(entry.get("note", "")),
        )
    return out


def code_for(name: str) -> Coding:
    """The coding of label ``name`` (case-insensitive), or :data:`GENERIC` when none is known."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}.")
    return _table().get(name.strip().lower(), GENERIC)
