"""``medseg batch --format dicom-seg --stats --roi``: per-case DICOM SEG, one statistics table, a clear
failure for a non-DICOM case, and a SEG lying in the input tree reported, never read as a scan."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

import medseg.io
from medseg.cli import main
from medseg.io.dicom_seg import read_seg
from tests.interop._util import DCMQI, tiny_model


def test_batch_writes_seg_and_stats_table(shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ct = shared_data / DCMQI / "ct-3slice"
    small = shared_data / "TotalSegmentator/tests/reference_files/example_mr_sm.nii.gz"
    if not ct.exists() or not small.exists():
        pytest.skip("dcmqi/TotalSegmentator data not in ../shared/data")
    inp = tmp_path / "in"
    shutil.copytree(ct, inp / "p1" / "ct")
    shutil.copy(shared_data / DCMQI / "liver.dcm", inp / "p1" / "ct" / "liver_seg.dcm")  # a SEG next to its images
    shutil.copy(small, inp / "mr.nii.gz")
    model = tiny_model(tmp_path)
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        code = main(["batch", str(inp), "-o", str(out), "--model", str(model), "--device", "cpu", "--quiet",
                     "--format", "dicom-seg", "--stats", "--roi", "liver"])
    assert code == 1  # the NIfTI case cannot have a DICOM SEG
    rows = {Path(r["input"]).name: r for r in csv.DictReader((out / "batch_summary.csv").open())}
    assert rows["mr.nii.gz"]["status"] == "failed" and "needs a DICOM series" in rows["mr.nii.gz"]["error"]
    [dicom_row] = [r for r in rows.values() if r["status"] == "ok"]
    label_map = out / dicom_row["output"] if not Path(dicom_row["output"]).is_absolute() else Path(dicom_row["output"])
    seg_file = label_map.with_name(label_map.name.replace(".nii.gz", ".seg.dcm"))
    np.testing.assert_array_equal(read_seg(seg_file, reference=ct).array, medseg.io.read(label_map).array)
    stats = list(csv.DictReader((out / "batch_stats.csv").open()))
    assert [r["name"] for r in stats] == ["liver"] and stats[0]["input"] == dicom_row["input"]
    assert int(stats[0]["voxels"]) == int((np.asarray(medseg.io.read(label_map).array) == 1).sum())
    assert "a DICOM SEG" in caplog.text and "liver_seg.dcm" not in dicom_row["input"]
