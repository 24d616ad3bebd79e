"""``medseg batch`` end to end with the real engine and a tiny real model (seeded MONAI UNet weights).

One input tree mixes NIfTI and NRRD files, a folder holding two real CT DICOM series and one broken
file. The same batch is run uninterrupted, killed with SIGKILL after its first output and resumed, and
run on a local Ray cluster: every run must give the same label maps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.batch.summary import PROVENANCE_NAME, SUMMARY_NAME, read_summary
from medseg.cli import main

from ._data import DERIVED_UID, copy_two_series

REPO = Path(__file__).resolve().parents[2]
MEDSEG_EXE = Path(sys.executable).parent / "medseg"
LABELS = [{"id": 1, "name": "organ a", "color": [255, 0, 0]}, {"id": 2, "name": "organ b", "color": [0, 255, 0]}]
N_CASES = 7  # 4 image files + 2 DICOM series + 1 broken file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real spec YAML + a seeded UNet state dict, as ``medseg models`` specs are written."""
    from perfkit.seeded_spec import write_seeded_unet_spec

    return write_seeded_unet_spec(tmp_path_factory.mktemp("model"), name="tiny-batch-test", labels=LABELS)


@pytest.fixture(scope="module")
def batch_input(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for i, rel in enumerate(["a/case0.nii.gz", "a/case1.nii.gz", "a/b/My scan (2).nii"]):
        arr = (rng.normal(0, 1, (40, 36, 30)) * 20 + 100).astype(np.float32)
        arr[10:25, 8 + i : 20 + i, 5:20] += 300
        aff = np.diag([2.0, -2.2, 2.5, 1.0])
        aff[:3, 3] = [-40, 30, -20 + i]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, aff), str(root / rel))
    img = sitk.GetImageFromArray((rng.normal(0, 1, (20, 30, 34)) * 50).astype(np.float32))
    img.SetSpacing((1.5, 1.5, 3.0))
    sitk.WriteImage(img, str(root / "t2.nrrd"))
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 this is not a gzip stream")
    copy_two_series(shared_data, root / "dicom" / "two_series")
    return root


def _run(argv: list[str]) -> int:
    return main(["batch", *argv])


def _rows(out: Path) -> dict[str, dict[str, str]]:
    return {(r["input"], r["series"]): r for r in read_summary(out / SUMMARY_NAME)}


def _outputs(out: Path) -> dict[str, nib.Nifti1Image]:
    return {p.relative_to(out).as_posix(): nib.load(str(p)) for p in sorted(out.rglob("*_seg.nii.gz"))}


def _same_label_maps(a: Path, b: Path) -> None:
    out_a, out_b = _outputs(a), _outputs(b)
    assert sorted(out_a) == sorted(out_b)
    for name, img in out_a.items():
        other = out_b[name]
        assert np.array_equal(np.asarray(img.dataobj), np.asarray(other.dataobj)), name
        assert np.array_equal(img.affine, other.affine), name


@pytest.fixture(scope="module")
def reference(tiny_model: Path, batch_input: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted local run (with the progress bar)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    code = _run([str(batch_input), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"])
    assert code == 1  # the broken file failed
    return out


def test_mixed_folder_gives_outputs_and_a_failed_row(reference: Path, batch_input: Path, tiny_model: Path) -> None:
    from medseg.io import read
    from medseg.labels import label_volumes_ml
    from medseg.predictor import load_predictor

    rows = _rows(reference)
    assert len(rows) == N_CASES
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert [r["input"] for r in failed] == ["broken.nii.gz"]
    assert "broken.nii.gz" in failed[0]["error"] and failed[0]["volume_ml:organ a"] == ""
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == N_CASES - 1
    assert sum(1 for r in ok if r["input"] == "dicom/two_series") == 2
    assert any(DERIVED_UID in r["series"] for r in ok)
    assert {r["output"] for r in ok} >= {"a/case0_seg.nii.gz", "a/b/My_scan_2_seg.nii.gz", "t2_seg.nii.gz"}
    # the sidecar's runtime and stage timings are summary columns (MEDSEG_RUNTIME=torch in tests)
    for r in ok:
        assert r["runtime"] == "torch" and all(float(r[f"{k}_s"]) >= 0 for k in ("read", "network", "write"))
    assert failed[0]["runtime"] == "" and failed[0]["network_s"] == ""
    # the model is loaded once per worker: the first case it serves carries the load time, later ones 0
    loads = [float(r["load_s"]) for r in ok]
    assert 0 < sum(x > 0 for x in loads) < len(loads)

    predictor = load_predictor(tiny_model, device="cpu")
    for row in ok:
        out_img = nib.load(str(reference / row["output"]))
        case_path = batch_input / row["input"]
        series = row["series"].split()[-1] if row["series"] else None
        volume = read(case_path, series=series)
        # exactly the input's grid
        assert out_img.shape == volume.shape[:3]
        assert np.allclose(out_img.affine, volume.affine, atol=1e-4)
        labels = np.asarray(out_img.dataobj)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
        if row["input"] in ("a/case0.nii.gz", "t2.nrrd", "dicom/two_series"):
            expected = predictor.predict(volume)  # the engine alone, on the same input
            assert np.array_equal(labels, expected.array), row["output"]
            vols = label_volumes_ml(expected)
            for name in ("organ a", "organ b"):
                assert float(row[f"volume_ml:{name}"]) == pytest.approx(vols[name], abs=1e-3)
        sidecar = json.loads((reference / row["output"].replace(".nii.gz", ".json")).read_text())
        assert sidecar["volumes_ml"] == pytest.approx({n: float(row[f"volume_ml:{n}"]) for n in ("organ a", "organ b")},
                                                      abs=1e-3)
        assert sidecar["fingerprint"] == predictor.fingerprint and sidecar["input"] == str(case_path)
        # the same provenance record as `medseg segment` writes (medseg.pipeline.provenance_record)
        from medseg.pipeline import provenance_record

        record = json.loads(json.dumps(provenance_record(case_path, volume, predictor, warnings=sidecar["warnings"])))
        assert {k: sidecar.get(k) for k in record} == record
        assert (reference / row["output"].replace(".nii.gz", ".ctbl")).exists()

    prov = json.loads((reference / PROVENANCE_NAME).read_text())
    from medseg import __version__

    assert prov["medseg_version"] == __version__
    assert prov["model"]["fingerprint"] == predictor.fingerprint
    assert prov["model"]["labels"] == LABELS
    assert prov["settings"]["device"] == "cpu" and prov["counts"] == {"ok": 6, "skipped": 0, "failed": 1, "not_run": 0}
    assert "batch" in prov["command"]
    assert not [p for p in reference.rglob(".*.tmp*")], "temporary files left behind"


def test_sigkill_then_resume_matches_uninterrupted_run(
    reference: Path, batch_input: Path, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(MEDSEG_EXE), "batch", str(batch_input), "-o", str(out), "--model", str(tiny_model), "--device", "cpu",
           "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and any(out.rglob("*_seg.nii.gz")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the batch was not killed mid-run: {stderr.decode()[-2000:]}"
    partial = _outputs(out)
    assert 1 <= len(partial) < N_CASES - 1, sorted(partial)
    for name, img in partial.items():  # whatever is there under a final name is complete
        np.asarray(img.dataobj)
    records = [json.loads(p.read_text()) for p in (out / ".medseg-batch" / "records").glob("*.json")
               if not p.name.startswith(".")]  # not the temporary file of a record being written
    finished = sum(r["status"] == "done" for r in records)  # the kill may land before a completion record

    code = _run([str(batch_input), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "--quiet"])
    assert code == 1
    rows = _rows(out)
    statuses = sorted(r["status"] for r in rows.values())
    assert statuses.count("failed") == 1 and statuses.count("ok") + statuses.count("skipped") == N_CASES - 1
    assert statuses.count("skipped") == finished  # finished cases were not redone, unfinished ones were
    _same_label_maps(reference, out)
    ref_rows = _rows(reference)
    for key, row in rows.items():
        for col, val in row.items():
            if col == "error" and row["status"] == "skipped":  # a skipped row carries its reason
                assert val.startswith("done earlier with the same model and settings"), (key, val)
            elif col not in ("seconds", "status") and not col.endswith("_s"):  # times vary from run to run
                assert val == ref_rows[key][col], (key, col)
    assert not [p for p in out.rglob(".*.tmp*")], "temporary files left behind"

    # another model setting: the old outputs are not mistaken for new ones
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*_seg.nii.gz")}
    code = _run([str(batch_input), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "--quiet",
                 "--overlap", "0.3"])
    assert code == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*_seg.nii.gz")} == before


def _untimed(row: dict[str, str]) -> dict[str, str]:
    """A summary row without its times (``seconds`` and the stage columns ``<stage>_s``)."""
    return {c: v for c, v in row.items() if c != "seconds" and not c.endswith("_s")}


def test_ray_local_cluster_matches_local_run(reference: Path, batch_input: Path, tiny_model: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    out = tmp_path / "out"
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        code = _run([str(batch_input), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "--quiet",
                     "--ray"])
    finally:
        ray.shutdown()
    assert code == 1
    _same_label_maps(reference, out)
    rows, ref_rows = _rows(out), _rows(reference)
    assert sorted(rows) == sorted(ref_rows)
    for key, row in rows.items():
        assert _untimed(row) == _untimed(ref_rows[key])
    prov = json.loads((out / PROVENANCE_NAME).read_text())
    assert prov["settings"]["ray"] is True
    # the Ray run's completion records resume a local run (and vice versa): nothing is redone
    code = _run([str(batch_input), "-o", str(out), "--model", str(tiny_model), "--device", "cpu", "--quiet"])
    assert code == 1
    assert sorted(r["status"] for r in _rows(out).values()) == ["failed"] + ["skipped"] * (N_CASES - 1)


def test_in_process_pipeline_writes_what_the_isolated_run_writes(reference: Path, batch_input: Path, tiny_model: Path,
                                                                 tmp_path: Path) -> None:
    """``run_local`` (threads, library use) and the isolated workers both write through medseg.pipeline."""
    from medseg.batch.runner import plan_batch, run_local
    from medseg.batch.settings import BatchSettings
    from medseg.batch.state import run_fingerprint
    from medseg.pipeline import predictor_info
    from medseg.predictor import load_predictor

    settings = BatchSettings(model=str(tiny_model), device="cpu")
    predictor = load_predictor(settings.model, **settings.predictor_kwargs())
    fingerprint = run_fingerprint(predictor_info(predictor)["fingerprint"], settings.output_settings())
    out = tmp_path / "out"
    plan, state = plan_batch(batch_input, out, fingerprint)
    results = []
    try:
        run_local(predictor, plan.todo, state, settings, results.append)
    finally:
        state.unlock()
    assert sorted(r.status.value for r in results) == ["failed"] + ["ok"] * (N_CASES - 1), [r.error for r in results]
    _same_label_maps(reference, out)
    for path in reference.rglob("*_seg.*"):  # the same sidecars, provenance included
        ours = out / path.relative_to(reference)
        if path.suffix == ".json":  # the same document; stage timings differ from run to run
            a, b = json.loads(ours.read_text()), json.loads(path.read_text())
            assert set(a.pop("timings")) == set(b.pop("timings")) == {"load", "read", "preprocess", "network",
                                                                       "export", "write"}
            assert a == b, path.name
        else:
            assert ours.read_bytes() == path.read_bytes(), path.name
