"""batch groups nnU-Net's ``CASE_0000 .. CASE_000N`` files into one case for a multi-channel model; a case
missing a channel fails with the reason; every file is accounted for in the summary."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.batch.discover import discover_cases, group_channel_files
from medseg.cli import main
from tests.test_multi_input import sequences  # noqa: F401 - the real-MR "sequences" fixture


def _tiny(path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(path))


def test_grouping_of_channel_files(tmp_path):
    for i in range(4):
        _tiny(tmp_path / f"caseA_{i:04d}.nii.gz")
    for i in (0, 1, 3):
        _tiny(tmp_path / f"caseB_{i:04d}.nii.gz")
    _tiny(tmp_path / "plain.nii.gz")
    found = discover_cases(tmp_path)
    assert group_channel_files(found, 1) is found  # one-channel models: every file is a case
    grouped = group_channel_files(found, 4, "brats-mri")
    cases = {c.rel.name: c for c in grouped.cases}
    assert sorted(cases) == ["caseA_0000.nii.gz", "caseB_0000.nii.gz", "plain.nii.gz"]
    a, b = cases["caseA_0000.nii.gz"], cases["caseB_0000.nii.gz"]
    assert [p.name for p in a.channel_files] == [f"caseA_{i:04d}.nii.gz" for i in range(4)] and a.problem is None
    assert str(a.naming_rel) == "caseA.nii.gz"
    assert "missing caseB_0002.nii.gz" in b.problem and "takes 4" in b.problem
    skipped = {e.rel: e.reason for e in grouped.entries}
    assert set(skipped) == {"caseA_0001.nii.gz", "caseA_0002.nii.gz", "caseA_0003.nii.gz", "caseB_0001.nii.gz",
                            "caseB_0003.nii.gz"}
    assert "of nnU-Net case caseA_0000.nii.gz" in skipped["caseA_0002.nii.gz"]


@pytest.mark.slow
def test_batch_runs_an_nnunet_case_and_fails_the_incomplete_one(sequences, tmp_path, capsys):  # noqa: F811
    """Seeded brats-mri (its SegResNet, torch.manual_seed(0)) on real MR channels named as nnU-Net does."""
    import torch
    import yaml
    from monai.networks.nets import SegResNet

    import medseg.io

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "brats-mri.yaml").read_text())
    torch.manual_seed(0)
    torch.save(SegResNet(**spec["network"]["args"]).state_dict(), tmp_path / "brats_seeded.pt")
    spec["weights"] = {"source": str(tmp_path / "brats_seeded.pt")}
    spec["inferer"]["roi_size"] = [128, 128, 32]  # CI time, as tests/test_multi_input.py
    (tmp_path / "brats.yaml").write_text(yaml.safe_dump(spec))
    inp = tmp_path / "in"
    inp.mkdir()
    for i, name in enumerate(("t1c", "t1", "t2", "flair")):
        src = sequences[name]
        for case in ("p1", "p2"):
            if case == "p2" and i == 2:
                continue  # p2 lacks its T2
            dst = inp / f"{case}_{i:04d}.nii.gz"
            if str(src).endswith(".nrrd"):
                medseg.io.write(medseg.io.read(src), dst)
            else:
                shutil.copy(src, dst)
    out = tmp_path / "out"
    args = ["batch", str(inp), "-o", str(out), "--model", str(tmp_path / "brats.yaml"), "--quiet"]
    assert main(args + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "p1_0000.nii.gz" in dry and "p1_seg.nii.gz" in dry
    code = main(args)
    assert code == 1  # one failed case
    rows = {r["input"]: r for r in csv.DictReader(open(out / "batch_summary.csv"))}
    assert len(rows) == 7  # every input file has its row
    assert rows["p1_0000.nii.gz"]["status"] == "ok" and rows["p1_0000.nii.gz"]["output"] == "p1_seg.nii.gz"
    assert rows["p2_0000.nii.gz"]["status"] == "failed"
    assert "missing p2_0002.nii.gz" in rows["p2_0000.nii.gz"]["error"]
    assert all(rows[f"p1_{i:04d}.nii.gz"]["status"] == "skipped" for i in (1, 2, 3))
    labels = medseg.io.read(out / "p1_seg.nii.gz")
    assert labels.shape == medseg.io.read(sequences["t1c"]).shape
