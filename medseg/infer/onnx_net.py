"""An ONNX network (the ``network.onnx`` specs, e.g. ``prostate-mr``) as an OpenVINO network for the engine.

OpenVINO reads ONNX directly (no conversion step, no ONNX Runtime needed). The graph becomes the same
:class:`medseg.engine.openvino.OpenVINONetwork` that converted torch networks are: compiled for the CPU per
input shape, float32 (``INFERENCE_PRECISION_HINT=f32``, not the bfloat16 OpenVINO picks by itself on AMX
CPUs), instance/group norms rewritten for float32 accuracy, one output copy per call. Only the CPU is
supported; asking for another device is an error (never a silent fallback).

>>> net = load_onnx_network("model.onnx")         # doctest: +SKIP
>>> y = net(torch.zeros(1, 1, 128, 128, 32))      # doctest: +SKIP
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING, Any

from medseg.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from medseg.engine.openvino import OpenVINONetwork

__all__ = ["load_onnx_network"]


def load_onnx_network(path: str | PathLike[str], device: Any = "cpu", threads: int | None = None) -> OpenVINONetwork:
    """The ``.onnx`` file at ``path`` read by OpenVINO, called like a torch module on ``(N, C, ...)``.

    Args:
        path: the ``.onnx`` file.
        device: ``cpu`` (a torch device or string); CUDA/MPS are refused.
        threads: inference threads (``None``: OpenVINO's default, all cores; the predictor sets its own).

    Raises:
        ModelError: another device, OpenVINO missing, or a file OpenVINO cannot read (naming the file).
    """
    if getattr(device, "type", str(device)).split(":")[0] != "cpu":
        raise ModelError(f"ONNX networks run on the CPU (OpenVINO); got device {device}")
    from medseg.engine.openvino import OpenVINONetwork, RuntimeUnavailableError, read_onnx

    try:
        model = read_onnx(path)
        net = OpenVINONetwork(model, threads=threads, source="onnx")
    except RuntimeUnavailableError:
        raise ModelError("ONNX networks need OpenVINO: pip install openvino") from None
    except RuntimeError as err:
        raise ModelError(f"OpenVINO cannot read this ONNX file: {str(err).splitlines()[0]}", path) from None
    net.source_path = str(path)
    return net
