"""Run an ONNX network with OpenVINO (CPU) as a torch-tensor callable, for the sliding-window engine.

OpenVINO reads ONNX directly (no conversion step, no ONNX Runtime needed). The compiled model takes the
``(N, C, X, Y, Z)`` float32 window the engine passes and returns its first output as a torch tensor.
Only the CPU is supported here; asking for another device is an error (never a silent fallback).

>>> net = OnnxNetwork("model.onnx")               # doctest: +SKIP
>>> y = net(torch.zeros(1, 1, 128, 128, 32))      # doctest: +SKIP
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from medseg.errors import ModelError

__all__ = ["OnnxNetwork"]


class OnnxNetwork:
    """An ONNX graph compiled by OpenVINO for the CPU, called like a torch module on ``(N, C, ...)``.

    Args:
        path: the ``.onnx`` file.
        device: ``cpu`` (a torch device or string); CUDA/MPS are refused.
        threads: inference threads (``None``: OpenVINO's default, i.e. all cores).
    """

    def __init__(self, path: str | PathLike[str], device: Any = "cpu", threads: int | None = None) -> None:
        if getattr(device, "type", str(device)).split(":")[0] != "cpu":
            raise ModelError(f"ONNX networks run on the CPU (OpenVINO); got device {device}")
        try:
            import openvino as ov
        except ImportError:
            raise ModelError("ONNX networks need OpenVINO: pip install openvino") from None
        core = ov.Core()
        config: dict[str, Any] = {}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(path))
            self._compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as err:
            raise ModelError(f"OpenVINO cannot read this ONNX file: {str(err).splitlines()[0]}", path) from None
        self._request = self._compiled.create_infer_request()
        self.path = str(path)
        self.input_shape = str(self._compiled.input(0).get_partial_shape())

    def eval(self) -> OnnxNetwork:  # torch-module surface used by the engine
        return self

    def to(self, *_: Any, **__: Any) -> OnnxNetwork:
        return self

    def parameters(self):  # noqa: D401 - no torch parameters
        return iter(())

    def __call__(self, x: Any) -> Any:
        """``x``: ``(N, C, X, Y, Z)`` torch tensor (float32) → first output as a float32 torch tensor."""
        import numpy as np
        import torch

        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = self._request.infer({0: arr})
        return torch.from_numpy(np.array(out[self._compiled.output(0)], dtype=np.float32, copy=True))

    def __repr__(self) -> str:
        return f"OnnxNetwork({self.path!r}, input={self.input_shape})"
