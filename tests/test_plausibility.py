"""After inference: volumes outside a spec's plausible range and the per-structure quality score are
reported (sidecar, CLI stderr, batch summary), never failing the case."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.config import load_spec
from medseg.errors import ModelError
from medseg.input_checks import result_warnings
from medseg.models.registry import resolve_model

REF = Path("TotalSegmentator/tests/reference_files")


def _spec(**label) -> dict:
    """The registered spleen-ct spec with its one label replaced."""
    import yaml

    d = yaml.safe_load(resolve_model("spleen-ct").read_text())
    d["labels"] = [{"id": 1, "name": "spleen", **label}]
    return d


def test_spec_volume_ranges_parse_and_stay_out_of_the_fingerprint():
    spec = load_spec(_spec(volume_ml=[800, 2200]))
    assert spec.volume_ranges_ml == {1: (800.0, 2200.0)}
    assert spec.to_dict() == load_spec(_spec()).to_dict()  # no output changes: same fingerprint
    for bad in ([800], [2200, 800], ["a", 3], -1):
        with pytest.raises(ModelError, match=r"labels\[0\]\.volume_ml"):
            load_spec(_spec(volume_ml=bad))


@pytest.mark.parametrize("model", ["brain-mri", "liver", "spleen-ct", "prostate-mr", "btcv-ct"])
def test_registered_specs_carry_ranges(model):
    spec = load_spec(resolve_model(model))
    names = {lab.id: lab.name for lab in spec.labels}
    assert spec.volume_ranges_ml and all(lid in names for lid in spec.volume_ranges_ml)
    assert all(0 < lo < hi for lo, hi in spec.volume_ranges_ml.values())


def test_result_warnings_flag_only_found_structures_outside_their_range():
    rng = {"spleen": (30.0, 2000.0), "liver": (500.0, 4000.0)}
    assert result_warnings("m", {"spleen": 200.0, "liver": 1500.0}, rng) == []
    assert result_warnings("m", {"spleen": 0.0, "liver": 1500.0}, rng) == []  # absent: may be out of the scan
    (w,) = result_warnings("m", {"spleen": 5000.0, "liver": 1500.0}, rng)
    assert w.startswith("spleen: 5000.0 mL is outside the plausible 30-2000 mL of model m")


@pytest.mark.slow
def test_brain_model_on_abdominal_ct_is_flagged_in_batch(shared_data, tmp_path):
    """brain-mri with --force on an abdominal CT: ok row, but the implausible brain volume is a warning in
    the sidecar and the summary; the real brain MR has none, and both rows carry a quality score."""
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(shared_data / REF / "example_ct.nii.gz", inp / "ct.nii.gz")
    shutil.copy(shared_data / "pyradiomics/data/brain1_image.nrrd", inp / "t1.nrrd")
    out = tmp_path / "out"
    code = main(["batch", str(inp), "-o", str(out), "--model", "brain-mri", "--force", "--quiet"])
    assert code == 0
    rows = {Path(r["input"]).name: r for r in csv.DictReader(open(out / "batch_summary.csv"))}
    ct, t1 = rows["ct.nii.gz"], rows["t1.nrrd"]
    assert ct["status"] == t1["status"] == "ok"
    assert "outside the plausible 800-2200 mL" in ct["warnings"] and "expects MR" in ct["warnings"]
    assert "outside the plausible" not in t1["warnings"]
    side = json.loads((out / ct["output"]).with_suffix("").with_suffix(".json").read_text())
    assert any("outside the plausible" in w for w in side.get("provenance", side)["warnings"])
    for row in (ct, t1):  # the quality score: in the summary (sortable) and next to volume_ml in the sidecar
        assert row["min_quality_label"] == "brain" and 0.0 <= float(row["min_quality"]) <= 1.0
    brain = next(lab for lab in side["labels"] if lab["name"] == "brain")
    assert brain["quality"] == pytest.approx(float(ct["min_quality"]), abs=1e-4) and "volume_ml" in brain
