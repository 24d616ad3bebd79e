"""``medseg segment --sample --runtime openvino|torch|auto``: same mask (>= 99.99 % voxels), runtime and
stage timings in the sidecar, the choice said in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("openvino")
nib = pytest.importorskip("nibabel")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = {"load", "read", "preprocess", "network", "export", "write"}


def _segment(tmp_path, runtime, name, cache, *extra):
    env = {**os.environ, "PYTHONPATH": REPO, "MEDSEG_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("MEDSEG_RUNTIME", None)
    out = tmp_path / f"{name}.nii.gz"
    r = subprocess.run([sys.executable, "-m", "medseg", "segment", "--sample", "--runtime", runtime, "--threads", "2",
                        "--no-progress", "-o", str(out), *extra], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r, json.loads((tmp_path / f"{name}.json").read_text()), np.asarray(nib.load(out).dataobj)


def test_sample_openvino_matches_torch(tmp_path):
    cache = tmp_path / "cache"
    r_ov, doc_ov, ov = _segment(tmp_path, "openvino", "ov", cache)
    r_t, doc_t, t = _segment(tmp_path, "torch", "torch", cache, "--json")
    assert json.loads(r_t.stdout) == doc_t  # --json: stdout is the sidecar document, the file list on stderr
    assert "wrote " in r_t.stderr and "brain:" in r_t.stderr
    # measured with 2 threads: 99.9966 % (56 voxels); with 1 thread OpenVINO's deepbet output drifts more
    # (99.981 %, see README "CPU runtime"): the check's 2-core setting is what this pins
    assert float((ov == t).mean()) >= 0.9999
    assert doc_ov["runtime"]["name"] == "openvino" and doc_ov["runtime"]["precision"] == "float32"
    assert doc_ov["runtime"]["cache"] == "miss" and doc_ov["runtime"]["requested"] == "openvino"
    assert doc_t["runtime"] == {"name": "torch", "version": doc_t["runtime"]["version"], "precision": "float32",
                                "device": "cpu", "cache": None, "requested": "torch"}
    for doc in (doc_ov, doc_t):
        assert set(doc["timings"]) == STAGES and all(v >= 0 for v in doc["timings"].values())
    assert r_ov.stderr.count("runtime: openvino") == 1 and "runtime:" not in r_t.stderr
    # torch keeps its fingerprint; OpenVINO's differs (its labels may differ in a few voxels)
    assert doc_ov["fingerprint"] != doc_t["fingerprint"]
    # auto on this CPU: OpenVINO, now from the compiled-model cache
    r_auto, doc_auto, auto = _segment(tmp_path, "auto", "auto", cache)
    assert doc_auto["runtime"]["name"] == "openvino" and doc_auto["runtime"]["cache"] == "hit"
    assert doc_auto["runtime"]["requested"] == "auto" and np.array_equal(auto, ov)
    assert "compiled-model cache hit" in r_auto.stderr
