"""TotalSegmentator specs (configs/totalseg-*.yaml) and the engine hooks for nnU-Net folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

SPECS = Path(__file__).resolve().parents[2] / "configs"
RELEASES = "https://github.com/wasserth/TotalSegmentator/releases/download/"


def _load(name: str) -> dict:
    return yaml.safe_load((SPECS / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name, modality, n, dataset", [
    ("totalseg-ct-3mm", "CT", 117, "Dataset297_TotalSegmentator_total_3mm_1559subj"),
    ("totalseg-ct-organs", "CT", 24, "Dataset291_TotalSegmentator_part1_organs_1559subj"),
    ("totalseg-mr-3mm", "MR", 50, "Dataset852_TotalSegMRI_total_3mm_1088subj"),
])
def test_totalsegmentator_specs(name, modality, n, dataset):
    d = _load(name)
    assert d["name"] == name and d["network"] == {"nnunet": True}
    assert d["weights"]["source"].startswith(RELEASES) and d["weights"]["source"].endswith(f"/{dataset}.zip")
    assert d["input"] == {"modality": modality, "channels": 1, "orientation": "RAS"}
    ids = [lab["id"] for lab in d["labels"]]
    names = [lab["name"] for lab in d["labels"]]
    assert ids == list(range(1, n + 1)) and len(set(names)) == n
    assert "non-commercial" in d["license"] and d["reference"]


def test_label_maps_agree_with_totalsegmentator_class_map():
    total = [lab["name"] for lab in _load("totalseg-ct-3mm")["labels"]]
    assert [lab["name"] for lab in _load("totalseg-ct-organs")["labels"]] == total[:24]
    assert (total[0], total[4], total[25], total[50], total[90], total[91], total[114], total[116]) == (
        "spleen", "liver", "vertebrae_S1", "heart", "skull", "rib_left_1", "rib_right_12", "costal_cartilages")
    mr = [lab["name"] for lab in _load("totalseg-mr-3mm")["labels"]]
    assert (mr[9], mr[18], mr[19], mr[49]) == ("lung_left", "vertebrae", "intervertebral_discs", "brain")


def test_specs_validate_with_the_engine_schema():
    from medseg.config import NetworkSpec, load_spec

    assert "nnunet" in NetworkSpec.__dataclass_fields__
    for f in sorted(SPECS.glob("totalseg-*.yaml")):
        spec = load_spec(f)
        assert spec.network.nnunet and spec.input.orientation == "RAS"
