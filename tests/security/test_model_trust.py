"""TorchScript is code: it loads only when pinned (spec / medseg / verified pull) or with --trust-model-code.

The hostile model is a real TorchScript segmentation network whose ``__setstate__`` creates a file when
``torch.jit.load`` runs; every test checks whether that file appeared.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security._models import evil_torchscript, spec_text, tiny_volume

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "medseg", *args], capture_output=True, text=True, env=full_env,
                          timeout=300)


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "pwned.txt"
    ts = evil_torchscript(tmp_path / "evil.ts", marker)
    return ts, marker, hashlib.sha256(ts.read_bytes()).hexdigest()


def test_unpinned_torchscript_spec_is_refused_by_segment_cli(tmp_path, evil):
    ts, marker, digest = evil
    spec = tmp_path / "evil.yaml"
    spec.write_text(spec_text(ts))
    img = tiny_volume(tmp_path / "img.nii.gz")
    out = tmp_path / "seg.nii.gz"
    r = _cli("segment", str(img), "-o", str(out), "-m", str(spec), "--device", "cpu")
    assert r.returncode == 2, r.stderr
    assert not marker.exists(), "code from the model file ran"
    assert not out.exists()
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "executable code" in err and digest in err and "--trust-model-code" in err and str(ts) in err


def test_trust_flag_and_spec_pin_let_it_run(tmp_path, evil):
    from medseg.cli import main

    ts, marker, digest = evil
    img = tiny_volume(tmp_path / "img.nii.gz")
    spec = tmp_path / "evil.yaml"
    spec.write_text(spec_text(ts))
    assert main(["segment", str(img), "-o", str(tmp_path / "a.nii.gz"), "-m", str(spec), "--device", "cpu",
                 "--trust-model-code", "--no-progress"]) == 0
    assert marker.read_bytes() == b"A" * 8  # the user opted in: the module's code ran
    marker.unlink()
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(spec_text(ts, sha256=digest))
    assert main(["segment", str(img), "-o", str(tmp_path / "b.nii.gz"), "-m", str(pinned), "--device", "cpu",
                 "--no-progress"]) == 0
    assert marker.exists()


def test_pinned_hash_is_checked_on_the_loaded_bytes(tmp_path, evil):
    """A pin for another file (e.g. the file was swapped after pinning) refuses before any code runs."""
    from medseg.config import load_spec
    from medseg.errors import ModelError
    from medseg.infer.network import build_network

    ts, marker, digest = evil
    spec = tmp_path / "pinned.yaml"
    spec.write_text(spec_text(ts, sha256="0" * 64))
    s = load_spec(spec)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        build_network(s.network, s.weights, trust_model_code=False)
    assert not marker.exists()


def test_bundle_torchscript_is_refused_without_trust(tmp_path, evil, capsys):
    from medseg.cli import main
    from tests.engine.test_bundle import SPLEEN_INFERENCE, SPLEEN_METADATA

    ts, marker, _ = evil
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(json.dumps(SPLEEN_INFERENCE))
    (bundle / "configs" / "metadata.json").write_text(json.dumps(SPLEEN_METADATA))
    (bundle / "models" / "model.ts").write_bytes(ts.read_bytes())
    img = tiny_volume(tmp_path / "img.nii.gz")
    code = main(["segment", str(img), "-o", str(tmp_path / "seg.nii.gz"), "-m", str(bundle), "--device", "cpu",
                 "--force"])  # the bundle is a CT model; the tiny test volume is not CT
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists(), err
    assert "model.ts" in err and "--trust-model-code" in err


def test_embedded_deepbet_files_are_pinned():
    """The default model's TorchScript files load only because configs/brain-mri.yaml pins their sha256."""
    pytest.importorskip("deepbet")
    from medseg.config import load_spec
    from medseg.models.sources import resolve_weights
    from medseg.models.registry import resolve_model

    spec = load_spec(resolve_model("brain-mri"))
    for w in (spec.weights, spec.input.localize.weights):
        assert w.sha256 is not None
        assert resolve_weights(w).sha256 == w.sha256


def test_registered_zoo_models_carry_the_publisher_sha1():
    from medseg.config import load_spec
    from medseg.models.registry import resolve_model

    for name in ("spleen-ct", "wholebody-ct", "btcv-ct", "brats-mri", "pancreas-ct"):
        w = load_spec(resolve_model(name)).weights
        assert w.archive_sha1 is not None and len(w.archive_sha1) == 40, name
        assert w.source.startswith("https://api.ngc.nvidia.com/v2/models/nvidia/monaihosting/"), name
        assert w.source.endswith(".zip") and w.archive_member


def test_archive_member_torchscript_chain_of_trust(tmp_path, evil, monkeypatch, capsys):
    """pancreas-ct's case: TorchScript inside a downloaded zip. Publisher sha1 verified at pull → the
    member's sha256 is recorded and trusted; no publisher digest → --allow-unverified never trusts code,
    only `models pull --trust-model-code` (or the run flag) does."""
    import io
    import zipfile

    from medseg.cli import main
    from tests.engine.test_download import _Handler, server  # noqa: F401 - the local HTTP server fixture

    ts, marker, _ = evil
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("b/models/model.ts", ts.read_bytes())
    data = buf.getvalue()
    import http.server
    import threading

    _Handler.files = {"/b_v1.zip": data}
    _Handler.cut_after = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/b_v1.zip"
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    body = ("network: {torchscript: true}\ninput: {modality: any, orientation: null}\noutput: {activation: none}\n"
            "labels: [{id: 1, name: cube}]\n")
    (cfg / "zoo.yaml").write_text(
        f"name: zoo\n{body}weights: {{source: '{url}', archive_sha1: '{hashlib.sha1(data).hexdigest()}', "
        "archive_member: b/models/model.ts}\n")
    (cfg / "nodigest.yaml").write_text(f"name: nodigest\n{body}weights: {{source: '{url}#x', "
                                       "archive_member: b/models/model.ts}\n")
    monkeypatch.setenv("MEDSEG_CONFIGS", str(cfg))
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    img = tiny_volume(tmp_path / "img.nii.gz")
    try:
        seg = ["segment", str(img), "--device", "cpu", "--no-progress", "-m"]
        assert main(["models", "pull", "zoo", "--no-progress"]) == 0
        assert not marker.exists()  # pulling never loads the module
        assert main([*seg, "zoo", "-o", str(tmp_path / "a.nii.gz")]) == 0
        assert marker.exists()
        marker.unlink()
        assert main(["models", "pull", "nodigest", "--no-progress", "--allow-unverified"]) == 0
        assert "NOT trusted" in capsys.readouterr().out
        assert main([*seg, "nodigest", "-o", str(tmp_path / "b.nii.gz")]) == 2
        assert "--trust-model-code" in capsys.readouterr().err and not marker.exists()
        assert main(["models", "pull", "nodigest", "--no-progress", "--trust-model-code"]) == 0
        assert main([*seg, "nodigest", "-o", str(tmp_path / "b.nii.gz")]) == 0
        assert marker.exists()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_pickle_with_code_is_refused_by_weights_only(tmp_path):
    """A checkpoint whose pickle calls os.system: refused with one line, nothing runs."""
    import torch

    from medseg.config import load_spec
    from medseg.errors import ModelError
    from medseg.infer.network import build_network

    marker = tmp_path / "pickle_pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "s.yaml").write_text("name: e\nnetwork: {class: BasicUNet, args: {spatial_dims: 3, in_channels: 1, "
                                     "out_channels: 2}}\nweights: {source: evil.pt}\nlabels: [{id: 1, name: x}]\n")
    s = load_spec(tmp_path / "s.yaml")
    with pytest.raises(ModelError, match="never runs code") as info:
        build_network(s.network, s.weights)
    assert "posix.system" in str(info.value) and "\n" not in str(info.value) and not marker.exists()
