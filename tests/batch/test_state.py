"""Resume state: done only with an atomic output AND a matching completion record; summary CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.batch.state import STATE_DIRNAME, BatchState, run_fingerprint
from medseg.batch.summary import CaseResult, CaseStatus, read_summary, summary_columns, write_summary


def _out(tmp_path: Path, name: str = "a_seg.nii.gz", data: bytes = b"label map bytes") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_done_needs_record_with_same_fingerprint_and_bytes(tmp_path: Path) -> None:
    fp = run_fingerprint("model-1", {"irregular": "error"})
    state = BatchState(tmp_path, fp)
    out = _out(tmp_path)
    assert state.done("file:a.nii", out) is None  # output without record: not done
    state.mark_pending("file:a.nii", out)
    assert state.done("file:a.nii", out) is None  # pending: not done
    assert state.owns("file:a.nii", out)
    rec = state.mark_done("file:a.nii", out, 1.5, {"liver": 12.0})
    assert state.done("file:a.nii", out) == rec
    assert not state.owns("file:a.nii", out)  # finished: replaced only when it is stale or with --overwrite
    assert rec.volumes_ml == {"liver": 12.0}

    # another model or other settings: not done, and recognised as stale
    other = BatchState(tmp_path, run_fingerprint("model-2", {"irregular": "error"}))
    assert other.done("file:a.nii", out) is None
    assert other.stale("file:a.nii", out) is not None
    assert BatchState(tmp_path, run_fingerprint("model-1", {"irregular": "resample"})).done("file:a.nii", out) is None

    # the output truncated or replaced after the record: not done
    out.write_bytes(b"label map by")
    assert state.done("file:a.nii", out) is None
    out.write_bytes(b"label map bytes")
    assert state.done("file:a.nii", out) is not None
    out.unlink()
    assert state.done("file:a.nii", out) is None


def test_records_are_json_and_corrupt_ones_are_ignored(tmp_path: Path) -> None:
    state = BatchState(tmp_path, "fp")
    out = _out(tmp_path)
    state.mark_done("k", out, 0.1, {})
    records = list((tmp_path / STATE_DIRNAME / "records").iterdir())
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "done"
    records[0].write_text("{not json")
    assert state.done("k", out) is None and state.load("k") is None
    assert not [p for p in records[0].parent.iterdir() if ".tmp" in p.name]  # no temporaries left


def test_fingerprint_validation() -> None:
    with pytest.raises(ValueError, match="model_fingerprint"):
        run_fingerprint("", {})
    assert run_fingerprint("m", {"a": 1}) != run_fingerprint("m", {"a": 2})


def test_summary_csv_columns_and_rows(tmp_path: Path) -> None:
    rows = [
        CaseResult("k1", "a/t1.nii.gz", None, "a/t1_seg.nii.gz", CaseStatus.OK, 2.0, {"liver": 1.25, "spleen": 0.5}),
        CaseResult("k2", "broken.nii.gz", None, "broken_seg.nii.gz", CaseStatus.FAILED, 0.1, {},
                   "broken.nii.gz: not a NIfTI\nfile"),
    ]
    path = tmp_path / "s.csv"
    write_summary(path, rows, ["liver", "spleen"])
    got = read_summary(path)
    assert list(got[0]) == summary_columns(["liver", "spleen"])
    assert got[0]["status"] == "ok" and float(got[0]["volume_ml:liver"]) == 1.25
    assert got[1]["status"] == "failed" and got[1]["volume_ml:liver"] == ""
    assert got[1]["error"] == "broken.nii.gz: not a NIfTI file"


def test_one_batch_per_output_folder(tmp_path: Path) -> None:
    from medseg.errors import MedsegError

    first = BatchState(tmp_path, "fp")
    first.lock()
    try:
        with pytest.raises(MedsegError, match="another medseg batch is running"):
            BatchState(tmp_path, "fp").lock()
    finally:
        first.unlock()
    again = BatchState(tmp_path, "fp")
    again.lock()  # released: a new run may start
    again.unlock()


def test_out_of_memory_is_named_in_the_error() -> None:
    import torch

    from medseg.batch.worker import format_error
    from medseg.errors import ReadError

    assert format_error(MemoryError("Unable to allocate 80 GiB")).startswith("out of memory:")
    assert format_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")).startswith("out of memory:")
    assert format_error(ReadError("not a NIfTI file", "/x/a.nii")) == "/x/a.nii: not a NIfTI file"
    assert format_error(ValueError("bad")) == "ValueError: bad"


def test_progress_bar_and_quiet_log_lines(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from medseg.batch.runner import _Progress

    ok = CaseResult("k1", "a.nii", None, "a_seg.nii.gz", CaseStatus.OK, 1.0)
    bad = CaseResult("k2", "b.nii", None, "b_seg.nii.gz", CaseStatus.FAILED, 0.1, error="/in/b.nii: not a NIfTI file")
    bar = _Progress(total=3, initial=1, failed=0, quiet=False)  # one case done by an earlier run
    bar(ok)
    bar(bad)
    bar.close()
    err = capsys.readouterr().err
    assert "3/3" in err and "failed=1" in err  # cases done and failures
    assert "<00:00" in err  # tqdm's elapsed<remaining (ETA)
    assert "failed: /in/b.nii: not a NIfTI file" in err

    with caplog.at_level(logging.INFO, logger="medseg.batch"):
        quiet = _Progress(total=2, initial=0, failed=0, quiet=True)
        quiet(ok)
        quiet(bad)
        quiet.close()
    assert not capsys.readouterr().err  # no bar
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["[1/2] ok a.nii -> a_seg.nii.gz (1.0 s)", "[2/2] failed b.nii: /in/b.nii: not a NIfTI file"]
