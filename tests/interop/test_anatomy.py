"""SNOMED CT coding of every registered model's labels (configs/anatomy/snomed.yaml)."""

from __future__ import annotations

import re

import pytest
import yaml

from medseg.io.anatomy import GENERIC, anatomy_file, code_for
from medseg.models.registry import list_models

#: Labels with no published code (neither TotalSegmentator's mapping nor the DICOM code dictionary).
KNOWN_GENERIC = {"intervertebral_discs"}


def test_every_registered_label_is_coded() -> None:
    generic = set()
    for entry in list_models():
        spec = yaml.safe_load(entry.path.read_text())
        for lab in spec.get("labels", []):
            coding = code_for(lab["name"])
            if coding.generic:
                generic.add(lab["name"])
            else:
                assert coding.type[0] == "SCT" and re.fullmatch(r"\d{6,18}", coding.type[1]), lab["name"]
    assert generic == KNOWN_GENERIC


def test_codes_agree_with_the_dicom_code_dictionary() -> None:
    """Where pydicom's DICOM code dictionary knows a structure by the same meaning, the value is the same.

    (This caught TotalSegmentator's mapping giving 29700009 "Right subclavian artery" to both subclavian
    arteries. Categories are not compared: DICOM CID 7150 and TotalSegmentator use 123037004 with the meaning
    "Anatomical Structure", which the dictionary files under "Body structure".)"""
    from pydicom.sr.codedict import codes

    known = {}
    for kw in dir(codes.SCT):
        try:
            c = getattr(codes.SCT, kw)
        except AttributeError:
            continue
        if not hasattr(c, "meaning"):
            continue
        known.setdefault(c.meaning.lower(), set()).add(c.value)
    doc = yaml.safe_load(anatomy_file().read_text())
    checked = 0
    for name, entry in doc["labels"].items():
        meaning, value = entry["type"][2].lower(), entry["type"][1]
        if meaning in known:
            assert value in known[meaning], (name, entry["type"])
            checked += 1
    assert checked > 20


def test_unknown_label_is_generic_tissue() -> None:
    assert code_for("no_such_structure") is GENERIC
    assert GENERIC.type == ("SCT", "85756007", "Tissue") and GENERIC.note
    with pytest.raises(TypeError):
        code_for(3)  # type: ignore[arg-type]
