"""``medseg batch``: a hanging or crashing case is that case's failed row; every input found is listed.

Real CLI, real worker processes, a real TorchScript model (pinned by sha256 in its spec) that hangs on
inputs whose last dimension is 7; one worker is killed with SIGSEGV from outside, as a crashing reader
or network would die.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.batch.summary import PROVENANCE_NAME, SUMMARY_NAME, read_summary
from tests.security._models import hanging_torchscript

psutil = pytest.importorskip("psutil")


def _nifti(path: Path, shape: tuple[int, int, int]) -> None:
    arr = np.zeros(shape, np.float32)
    arr[2:6, 2:6, 2:5] = 4.0
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))


def _workers() -> list:
    """This process's batch worker children (not multiprocessing's resource tracker, not Xvfb)."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd:
            out.append(child)
    return out


@pytest.fixture()
def hang_model(tmp_path: Path) -> Path:
    ts = hanging_torchscript(tmp_path / "model" / "hang.ts") if (tmp_path / "model").mkdir() is None else None
    digest = hashlib.sha256(ts.read_bytes()).hexdigest()
    spec = tmp_path / "model" / "hang.yaml"
    spec.write_text(
        "name: hang\nnetwork: {torchscript: true}\n"
        f"weights: {{source: hang.ts, sha256: '{digest}'}}\n"
        "input: {modality: any, orientation: null}\noutput: {activation: none}\nlabels: [{id: 1, name: cube}]\n"
    )
    return spec


def test_hang_and_crash_are_failed_rows_and_the_batch_goes_on(tmp_path: Path, hang_model: Path,
                                                             shared_data: Path) -> None:
    from medseg.cli import main

    inp = tmp_path / "in"
    _nifti(inp / "a.nii.gz", (12, 12, 8))
    _nifti(inp / "b_crash.nii.gz", (12, 12, 7))
    _nifti(inp / "c.nii.gz", (12, 12, 9))
    _nifti(inp / "d_hang.nii.gz", (12, 12, 7))
    (inp / "notes.txt").write_text("not an image")
    # the MetaImage with NDims = -1 (hung or crashed SimpleITK): a failed row either way
    (inp / "e_ndims.mha").write_bytes(b"ObjectType = Image\nNDims = -1\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
                                      b"ElementDataFile = LOCAL\n" + bytes(64))
    (inp / "dicom").mkdir()
    (inp / "dicom" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 3)
    (inp / "ct").mkdir()  # a real 3-slice CT series, every file cut to 60 %: an unreadable series
    for src in sorted((shared_data / "dcmqi/data/segmentations/ct-3slice").iterdir()):
        data = src.read_bytes()
        (inp / "ct" / src.name).write_bytes(data[: len(data) * 6 // 10])
    outside = tmp_path / "elsewhere"
    _nifti(outside / "x.nii.gz", (12, 12, 8))
    os.symlink(outside, inp / "linked")
    out = tmp_path / "out"

    def killer() -> None:  # SIGSEGV the worker while it is stuck in b_crash
        deadline = time.monotonic() + 240
        while not (out / "a_seg.nii.gz").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)
        for child in _workers():
            child.send_signal(signal.SIGSEGV)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    t0 = time.monotonic()
    code = main(["batch", str(inp), "-o", str(out), "--model", str(hang_model), "--device", "cpu", "--quiet",
                 "--case-timeout", "10", "--read-timeout", "8"])
    elapsed = time.monotonic() - t0
    t.join(timeout=5)
    assert code == 1
    rows = {r["input"]: r for r in read_summary(out / SUMMARY_NAME)}
    assert rows["a.nii.gz"]["status"] == "ok" and rows["c.nii.gz"]["status"] == "ok"
    assert rows["b_crash.nii.gz"]["status"] == "failed" and "SIGSEGV" in rows["b_crash.nii.gz"]["error"]
    assert rows["d_hang.nii.gz"]["status"] == "failed" and "timed out after 10 s" in rows["d_hang.nii.gz"]["error"]
    assert rows["e_ndims.mha"]["status"] == "failed" and rows["e_ndims.mha"]["error"]
    assert rows["notes.txt"]["status"] == "skipped" and "not an image" in rows["notes.txt"]["error"]
    garbage = [r for k, r in rows.items() if k.startswith("dicom")]
    assert len(garbage) == 1 and garbage[0]["status"] == "skipped" and "DICOM" in garbage[0]["error"]
    assert rows["ct"]["status"] == "failed" and "truncated" in rows["ct"]["error"]
    assert rows["linked/"]["status"] == "skipped" and "not followed" in rows["linked/"]["error"]
    assert str(outside) in rows["linked/"]["error"] and not (out / "linked").exists()
    assert (out / "a_seg.nii.gz").exists() and (out / "c_seg.nii.gz").exists()
    assert not (out / "b_crash_seg.nii.gz").exists() and not (out / "d_hang_seg.nii.gz").exists()
    # each bad case ended within its own limit (worker restarts are not counted in a case's time)
    assert float(rows["d_hang.nii.gz"]["seconds"]) < 10 + 5 and float(rows["e_ndims.mha"]["seconds"]) < 8 + 5
    assert elapsed < 900, elapsed
    assert not [c for c in _workers() if c.is_running() and c.status() != "zombie"]  # no orphan worker
    import json

    counts = json.loads((out / PROVENANCE_NAME).read_text())["counts"]
    assert counts == {"ok": 2, "skipped": 3, "failed": 4, "not_run": 0}


def test_outside_symlinks_are_reported_followed_or_not(tmp_path: Path) -> None:
    from medseg.batch.discover import discover_cases

    inp, outside = tmp_path / "in", tmp_path / "elsewhere"
    _nifti(inp / "a.nii.gz", (12, 12, 8))
    _nifti(outside / "x.nii.gz", (12, 12, 8))
    os.symlink(outside / "x.nii.gz", inp / "x.nii.gz")
    os.symlink(outside, inp / "dir")
    os.symlink(inp / "a.nii.gz", inp / "inside_link.nii.gz")  # stays inside: an ordinary case
    d = discover_cases(inp)
    assert [c.key for c in d.cases] == ["file:a.nii.gz", "file:inside_link.nii.gz"]
    reasons = {e.rel: e.reason for e in d.entries}
    assert set(reasons) == {"x.nii.gz", "dir/"} and all("not followed" in r for r in reasons.values())
    d = discover_cases(inp, follow_outside_links=True)
    notes = {c.key: c.note for c in d.cases}
    assert "followed" in notes["file:x.nii.gz"] and str(outside / "x.nii.gz") in notes["file:x.nii.gz"]
    assert "followed" in notes["file:dir/x.nii.gz"] and notes["file:a.nii.gz"] is None
