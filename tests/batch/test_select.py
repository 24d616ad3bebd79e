"""`medseg batch --include/--exclude/--dry-run` and label files beside scans, on real files."""

from __future__ import annotations

import shutil
from pathlib import Path

from medseg.batch.discover import CaseFilter, discover_cases, filter_cases
from medseg.cli import main

TS = Path("TotalSegmentator/tests/reference_files")


def _tree(shared: Path, root: Path) -> Path:
    (root / "p1").mkdir(parents=True)
    (root / "p2").mkdir()
    shutil.copy(shared / TS / "example_ct_sm.nii.gz", root / "p1" / "ct.nii.gz")
    shutil.copy(shared / TS / "example_seg.nii.gz", root / "p1" / "ct_seg.nii.gz")  # TotalSegmentator's labels
    shutil.copy(shared / "pyradiomics/data/brain1_image.nrrd", root / "p2" / "t1.nrrd")
    shutil.copy(shared / "pyradiomics/data/brain1_label.nrrd", root / "p2" / "t1_label.nrrd")
    return root


def test_label_files_are_skipped_with_their_reason(shared_data, tmp_path):
    root = _tree(shared_data, tmp_path / "in")
    found = filter_cases(discover_cases(root), CaseFilter())
    assert sorted(str(c.rel) for c in found.cases) == ["p1/ct.nii.gz", "p2/t1.nrrd"]
    skipped = {e.rel: e.reason for e in found.entries if e.status == "skipped"}
    assert "label map, not a scan" in skipped["p1/ct_seg.nii.gz"] and "--keep-label-files" in skipped["p1/ct_seg.nii.gz"]
    assert "label-map name" in skipped["p2/t1_label.nrrd"]
    kept = filter_cases(discover_cases(root), CaseFilter(skip_labels=False))
    assert len(kept.cases) == 4


def test_include_exclude_globs(shared_data, tmp_path):
    root = _tree(shared_data, tmp_path / "in")
    only_p2 = filter_cases(discover_cases(root), CaseFilter(include=("p2/*",)))
    assert [str(c.rel) for c in only_p2.cases] == ["p2/t1.nrrd"]
    assert any(e.reason.startswith("not matched by --include p2/*") for e in only_p2.entries)
    no_nrrd = filter_cases(discover_cases(root), CaseFilter(exclude=("*.nrrd",)))
    assert [str(c.rel) for c in no_nrrd.cases] == ["p1/ct.nii.gz"]
    assert any(e.reason == "excluded by --exclude *.nrrd" for e in no_nrrd.entries)


def test_dry_run_lists_and_writes_nothing(shared_data, tmp_path, capsys):
    root = _tree(shared_data, tmp_path / "in")
    out = tmp_path / "out"
    code = main(["batch", str(root), "-o", str(out), "--dry-run", "--exclude", "*ct.nii.gz"])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert f"run      p2/t1.nrrd  ->  {out.resolve() / 'p2' / 't1_seg.nii.gz'}" in text
    assert "skipped  p1/ct.nii.gz  (excluded by --exclude *ct.nii.gz)" in text
    assert "p1/ct_seg.nii.gz  (label map, not a scan" in text
    assert "dry run: 1 case(s) would run, 3 input(s) skipped or failed; nothing written" in text
