"""``medseg models export``: ONNX and OpenVINO IR files that reproduce torch, with labels and preprocessing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")
yaml = pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    """A sliding-window UNet spec with seeded weights (48^3 windows, 3 labels)."""
    from perfkit.seeded_spec import CT_WINDOW, write_seeded_unet_spec

    labels = [{"id": 1, "name": "liver", "color": [255, 0, 0]}, {"id": 2, "name": "spleen", "color": [0, 255, 0]}]
    return write_seeded_unet_spec(
        tmp_path_factory.mktemp("spec"), name="tiny-unet", labels=labels, channels=(8, 16, 32), strides=(2, 2),
        num_res_units=1, modality="CT", spacing=(2.0, 2.0, 2.0), normalize=CT_WINDOW,
        inferer={"mode": "sliding", "roi_size": [48, 48, 48], "overlap": 0.25, "sw_batch_size": 1})


def _torch_net(spec_path):
    from medseg.predictor import load_predictor

    return load_predictor(str(spec_path), device="cpu").network


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_reproduces_torch(spec_path, tmp_path, fmt, monkeypatch):
    from medseg.engine.model_export import SIDECAR, export_model

    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    out = export_model(str(spec_path), tmp_path / "exp", fmt)
    meta = json.loads((out / SIDECAR).read_text())
    assert meta["format"] == fmt and meta["model"] == "tiny-unet"
    assert [(lab["id"], lab["name"]) for lab in meta["labels"]] == [(1, "liver"), (2, "spleen")]
    assert meta["preprocessing"]["spacing"] == [2.0, 2.0, 2.0]
    assert meta["preprocessing"]["normalize"][0]["type"] == "window"
    assert meta["inferer"]["roi_size"] == [48, 48, 48] and meta["output"]["decision"] == "argmax"
    entry = meta["networks"]["network"]
    assert entry["example_shape"] == [1, 1, 48, 48, 48] and len(entry["weights_sha256"]) == 64
    files = sorted(p.name for p in out.iterdir())
    assert files == (["medseg_export.json", "network.onnx"] if fmt == "onnx"
                     else ["medseg_export.json", "network.bin", "network.xml"])
    # the exported file, read by OpenVINO like another runtime would, gives torch's output
    model = ov.Core().read_model(str(out / entry["files"][0]))
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    x = torch.rand(1, 1, 48, 48, 64, generator=torch.Generator().manual_seed(3))  # dynamic spatial size
    y = torch.from_numpy(np.asarray(compiled({0: x.numpy()})[0]))
    with torch.no_grad():
        ref = _torch_net(spec_path)(x)
    assert float((y - ref).abs().max()) < 5e-4  # logits of magnitude ~1 (measured 1.2e-4)
    assert float((y.argmax(1) == ref.argmax(1)).double().mean()) >= 0.9999


def test_export_refuses_existing_folder_and_cli_errors(spec_path, tmp_path):
    exe = [sys.executable, "-m", "medseg", "models", "export", str(spec_path)]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    r = subprocess.run([*exe, "-o", str(tmp_path / "taken")], capture_output=True, text=True)
    assert r.returncode != 0 and "exists (use --overwrite" in r.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    r = subprocess.run([*exe, "--format", "tflite", "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode != 0 and "invalid choice" in r.stderr and not (tmp_path / "x").exists()
    r = subprocess.run([*exe, "-o", str(tmp_path / "missing" / "x")], capture_output=True, text=True)
    assert r.returncode != 0 and "no such directory" in r.stderr


def test_export_of_an_onnx_model_is_refused(tmp_path, shared_data):
    """prostate-mr already is ONNX (run by OpenVINO): there is no torch network to export."""
    from medseg.engine.model_export import export_model
    from medseg.errors import ModelError

    try:
        export_model("prostate-mr", tmp_path / "p", "onnx")
    except ModelError as err:
        assert "only torch networks" in str(err) or "weights" in str(err)
    else:  # pragma: no cover
        pytest.fail("exported an ONNX network")
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.*"))
