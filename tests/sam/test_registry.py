"""Checkpoint registry, download against a local HTTP server, and weights_only loading."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest

from medseg.errors import ModelError
from medseg.sam.registry import CHECKPOINTS, CheckpointSpec, Family, get_checkpoint, list_checkpoints, resolve_checkpoint

from .conftest import SAM2_TINY_OVERRIDES


def test_registry_is_pure_data_and_complete():
    import subprocess

    code = "import sys, medseg.sam.registry as r; print(len(r.CHECKPOINTS), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(CHECKPOINTS)), "False"]
    names = set(list_checkpoints())
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b"} <= names
    assert {f"sam2{v}_hiera_{s}" for v in ("", ".1") for s in ("tiny", "small", "base_plus", "large")} <= names
    for spec in CHECKPOINTS.values():
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name
        assert spec.url is None or spec.url.startswith("https://dl.fbaipublicfiles.com/"), spec.name
        if spec.sha256 is None:
            assert spec.note, f"{spec.name}: an unknown checksum must be explained"
        if spec.family is Family.SAM2:
            assert spec.arch.startswith("configs/sam2")
    assert get_checkpoint("sam_vit_b").sha256.startswith("ec2df627")
    with pytest.raises(ValueError, match="Did you mean sam_vit_b"):
        get_checkpoint("sam_vit_bb")


@pytest.fixture()
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/srv."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _tiny_sam2_checkpoint(path, seed):
    import torch

    from medseg.sam import build_sam2_network

    net = build_sam2_network("configs/sam2.1/sam2.1_hiera_t.yaml", hydra_overrides=SAM2_TINY_OVERRIDES, seed=seed)
    torch.save({"model": net.state_dict()}, path)
    return net


def test_download_verify_and_load(http_dir, tmp_path):
    pytest.importorskip("sam2")
    import torch

    from medseg.models.download import DownloadError
    from medseg.sam import load_model

    root, base = http_dir
    ref = _tiny_sam2_checkpoint(root / "tiny.pt", seed=3)
    digest = hashlib.sha256((root / "tiny.pt").read_bytes()).hexdigest()
    spec = CheckpointSpec(
        "tiny_sam2", Family.SAM2, "configs/sam2.1/sam2.1_hiera_t.yaml", "tiny.pt", base + "tiny.pt", digest,
        hydra_overrides=SAM2_TINY_OVERRIDES,
    )
    cache = tmp_path / "cache"
    model = load_model(spec, cache_dir=cache)
    assert (cache / "tiny.pt").is_file() and model.family is Family.SAM2 and model.image_size == 128
    for (k, a), b in zip(ref.state_dict().items(), model.network.state_dict().values()):
        assert torch.equal(a, b), k
    # cached: no network needed the second time
    assert resolve_checkpoint(spec, cache_dir=cache, download=False) == cache / "tiny.pt"

    # wrong checksum: an error, and no file under the final name
    bad = replace(spec, filename="bad.pt", sha256="0" * 64)
    (root / "bad.pt").write_bytes((root / "tiny.pt").read_bytes())
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        resolve_checkpoint(bad, cache_dir=cache, progress=False)
    assert not (cache / "bad.pt").exists()
    assert isinstance(DownloadError("x"), ModelError)

    # unknown checksum: refused unless explicitly allowed
    unk = replace(spec, filename="unk.pt", url=base + "bad.pt", sha256=None, note="sha256 unknown")
    with pytest.raises(ModelError, match="unverified"):
        resolve_checkpoint(unk, cache_dir=cache)
    assert resolve_checkpoint(unk, cache_dir=cache, allow_unverified=True, progress=False).is_file()

    # a missing file on the server
    with pytest.raises(DownloadError, match="404"):
        resolve_checkpoint(replace(spec, filename="nope.pt", url=base + "nope.pt"), cache_dir=cache, progress=False)


def test_local_checkpoints_and_weights_only(tmp_path):
    import torch

    from medseg.sam.checkpoint import load_into, load_state_dict

    from .conftest import tiny_sam_network

    with pytest.raises(ModelError, match="not found"):
        resolve_checkpoint("sam_vit_b", path=tmp_path / "missing.pth")
    with pytest.raises(ModelError, match="no direct download address"):
        resolve_checkpoint("medsam_vit_b", cache_dir=tmp_path)
    with pytest.raises(ModelError, match="download=False"):
        resolve_checkpoint("sam_vit_b", cache_dir=tmp_path, download=False)

    a, b = tiny_sam_network(0), tiny_sam_network(1)
    torch.save(a.state_dict(), tmp_path / "a.pth")
    load_into(b, load_state_dict(tmp_path / "a.pth"), tmp_path / "a.pth")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    # a pickle carrying arbitrary objects is refused by weights_only loading
    torch.save({"net": np.dtype}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_state_dict(tmp_path / "evil.pth")
    # a checkpoint for another architecture
    with pytest.raises(ModelError, match="does not fit"):
        load_into(b, {"x": torch.zeros(1)}, tmp_path / "a.pth")


def test_load_full_size_sam_vit_b_from_a_local_checkpoint(tmp_path):
    """The registry path for SAM: segment_anything's own ViT-B builder (checkpoint=None), our weights_only load."""
    import torch

    from medseg.sam import build_sam_network, load_model
    from medseg.sam.registry import PixelNorm

    ref = build_sam_network(seed=5)  # ViT-B sizes, as sam_model_registry["vit_b"]
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(ref.state_dict(), path)
    del ref
    model = load_model("sam_vit_b", checkpoint=path)
    assert model.family is Family.SAM and model.image_size == 1024 and model.pixel_norm is PixelNorm.IMAGENET
    assert model.model_id.startswith("sam_vit_b:")
    saved = torch.load(path, weights_only=True)
    for k, v in model.network.state_dict().items():
        assert torch.equal(saved[k], v), k
    medsam = load_model("medsam_vit_b", checkpoint=path)
    assert medsam.pixel_norm is PixelNorm.UNIT and medsam.model_id != model.model_id
