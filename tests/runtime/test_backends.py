"""``--runtime`` selection: auto falls back to torch with a note, openvino never does."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openvino")

from medseg.engine.backends import Runtime, parse_runtime, select_network  # noqa: E402
from medseg.errors import ModelError  # noqa: E402


class Svd(torch.nn.Module):
    """A network OpenVINO's frontend cannot convert (no rule for aten::linalg_svd)."""

    def forward(self, x):
        return torch.linalg.svd(x[0, 0])[0][None, None]


def _select(module, runtime, shape=(1, 1, 8, 8, 8), **kw):
    args = dict(runtime=runtime, device=torch.device("cpu"), precision="auto", threads=1, fingerprint="t",
                weights_sha256=None)
    args.update(kw)
    return select_network(module, shape, **args)


def test_parse_runtime():
    assert parse_runtime("OpenVINO") is Runtime.OPENVINO
    with pytest.raises(ValueError, match="runtime must be one of auto, torch, openvino, got 'tensorrt'"):
        parse_runtime("tensorrt")


def test_auto_falls_back_with_a_note_and_openvino_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path))
    net, info = _select(Svd(), "auto")
    assert isinstance(net, Svd) and info.name == "torch" and info.requested == "auto"
    assert info.note.startswith("runtime: torch (OpenVINO cannot convert Svd") and "linalg_svd" in info.note
    assert info.line() == info.note and "\n" not in info.note
    with pytest.raises(ModelError, match=r"^--runtime openvino: OpenVINO cannot convert Svd: .*linalg_svd"):
        _select(Svd(), "openvino")


def test_auto_uses_openvino_when_it_converts(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path))
    conv = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    net, info = _select(conv, "auto")
    assert info.name == "openvino" and info.precision == "float32" and info.cache == "miss" and info.note is None
    assert info.to_dict() == {"name": "openvino", "version": info.version, "precision": "float32", "device": "cpu",
                              "cache": "miss", "requested": "auto"}
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert float((net(x) - conv(x)).abs().max()) < 1e-5
    _, again = _select(conv, "openvino")
    assert again.cache == "hit" and again.line().startswith("runtime: openvino ")
    net, info = _select(conv, "torch")
    assert net is conv and info.name == "torch" and info.cache is None


def test_precision_and_shape_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path))
    conv = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    with pytest.raises(ModelError, match="no float16 CPU path"):
        _select(conv, "openvino", precision="float16")
    net, info = _select(conv, "auto", precision="float16")
    assert net is conv and "float16" in info.note
    net, info = _select(conv, "auto", shape=None)
    assert net is conv and "input size is not fixed" in info.note
    with pytest.raises(ModelError, match="input size is not fixed"):
        _select(conv, "openvino", shape=None)


def test_auto_precision_is_float32_on_every_cpu_kind():
    """No lower precision reached Dice >= 0.999 per label against float32 on real data (bfloat16:
    benchmarks/bench_precision.py, int8: benchmarks/bench_int8.py): ``auto`` is float32 on every CPU kind, and
    each choice names the measurement behind it."""
    from medseg.engine.openvino import AUTO_PRECISION, auto_precision, cpu_kind

    assert cpu_kind() in AUTO_PRECISION
    for kind in AUTO_PRECISION:
        precision, why = auto_precision(kind)
        assert precision == "float32" and "bench_int8.py" in why
    assert auto_precision() == AUTO_PRECISION[cpu_kind()]
    with pytest.raises(ValueError, match="kind must be one of"):
        auto_precision("sse2")
