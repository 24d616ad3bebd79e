"""Which runtime runs a network: ``auto`` | ``torch`` | ``openvino`` (the ``--runtime`` option).

The rule (:func:`select_network`):

- ``torch``: the torch module as built.
- ``openvino``: the network converted by :mod:`medseg.engine.openvino`; never a silent fallback: OpenVINO
  missing, a non-CPU device, a precision OpenVINO cannot honour here, or a network that does not convert
  is a :class:`~medseg.errors.ModelError` with one line.
- ``auto``: OpenVINO on the CPU when it is installed, the precision is ``auto``/``float32`` and the network
  converts; otherwise torch, with a one-line :attr:`RuntimeInfo.note` saying why. CUDA/MPS stay torch.

The choice is reported as a :class:`RuntimeInfo` (name, version, precision, device, compiled-cache hit or
miss), which goes into the provenance. Imports no torch at module import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from medseg.errors import ModelError

__all__ = ["Runtime", "RuntimeInfo", "parse_runtime", "select_network", "torch_info"]


class Runtime(str, Enum):
    """The network runtime: ``auto`` (OpenVINO on CPU when it converts, else torch), ``torch``, ``openvino``."""

    AUTO = "auto"
    TORCH = "torch"
    OPENVINO = "openvino"


def parse_runtime(value: str | Runtime) -> Runtime:
    """``value`` as a :class:`Runtime`; ``ValueError`` listing the choices otherwise."""
    if isinstance(value, Runtime):
        return value
    try:
        return Runtime(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"runtime must be one of {', '.join(r.value for r in Runtime)}, got {value!r}.") from None


@dataclass(frozen=True)
class RuntimeInfo:
    """What ran the network (the provenance ``runtime`` object).

    Attributes:
        name: ``torch`` or ``openvino``.
        version: that library's version.
        precision: ``float32``, ``bfloat16``, ``float16`` (torch autocast) as used.
        device: ``cpu``, ``cuda:0`` ...
        cache: ``hit`` / ``miss`` for OpenVINO's compiled-model cache, ``None`` for torch.
        requested: the ``--runtime`` asked for.
        note: one line when ``auto`` did not pick OpenVINO on a CPU (why), else ``None``.
    """

    name: str
    version: str | None
    precision: str
    device: str
    cache: str | None = None
    requested: str = "auto"
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The provenance object (``note`` only when there is one)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k != "note"}

    def line(self) -> str:
        """One line for the user: the note when ``auto`` fell back, else what runs the network."""
        if self.note is not None:
            return self.note
        cache = f", compiled-model cache {self.cache}" if self.cache is not None else ""
        return f"runtime: {self.name} {self.version} ({self.precision}, {self.device}{cache})"


def torch_info(device: Any, precision: str, requested: Runtime = Runtime.TORCH, note: str | None = None) -> RuntimeInfo:
    """The :class:`RuntimeInfo` of a torch run on ``device`` with autocast ``precision``."""
    import torch

    return RuntimeInfo("torch", torch.__version__, precision, str(device), None, requested.value, note)


def select_network(
    module: Any,
    example_shape: Sequence[int] | None,
    *,
    runtime: str | Runtime,
    device: Any,
    precision: str,
    threads: int | None,
    fingerprint: str,
    weights_sha256: str | None,
) -> tuple[Any, RuntimeInfo]:
    """The callable that runs ``module`` under ``runtime``, and what was chosen.

    Args:
        module: the torch network (eval mode, on ``device``).
        example_shape: ``(N, C, *spatial)`` it is fed (``None``: unknown, OpenVINO is not used by ``auto``).
        runtime: ``auto`` | ``torch`` | ``openvino``.
        device: the resolved torch device.
        precision: the resolved precision name (``float32``, ``bfloat16``, ``float16``; ``auto`` = float32).
        threads: CPU threads (OpenVINO's ``INFERENCE_NUM_THREADS``).
        fingerprint, weights_sha256: the compiled-model cache key's parts.

    Raises:
        ModelError: ``runtime='openvino'`` and OpenVINO cannot run this network here (the reason in one line).
        ValueError: an unknown ``runtime``.
    """
    from medseg.engine.openvino import (
        ConversionError,
        OpenVINONetwork,
        RuntimeUnavailableError,
        auto_precision,
        convert_network,
        openvino_version,
    )

    rt = parse_runtime(runtime)
    prec = str(getattr(precision, "value", precision)).lower()
    if prec in ("auto", "none"):
        prec = "float32"  # torch's auto on the CPU; OpenVINO's per-CPU choice (float32 everywhere so far) below
    if isinstance(module, OpenVINONetwork):  # an ONNX spec's graph runs on OpenVINO whatever was asked
        module.set_threads(threads)
        return module, RuntimeInfo("openvino", openvino_version(), module.describe()["precision"], "cpu", None, rt.value)
    if rt is Runtime.TORCH:
        return module, torch_info(device, prec, rt)
    dev_type = getattr(device, "type", str(device).split(":")[0])
    reason = None
    if dev_type != "cpu":
        reason = f"OpenVINO runs on the CPU, the device is {device}"
    elif prec not in ("float32", "bfloat16"):
        reason = f"OpenVINO has no {prec} CPU path here (use --precision float32)"
    elif rt is Runtime.AUTO and prec != "float32":
        reason = f"precision {prec} runs on torch under --runtime auto (--runtime openvino to use OpenVINO's {prec})"
    elif example_shape is None:
        reason = "the network's input size is not fixed before the volume is seen"
    if reason is not None:
        if rt is Runtime.OPENVINO:
            raise ModelError(f"--runtime openvino: {reason}")
        return module, torch_info(device, prec, rt, None if dev_type != "cpu" else f"runtime: torch ({reason})")
    if prec == "float32" and str(getattr(precision, "value", precision)).lower() in ("auto", "none"):
        try:
            prec = auto_precision()[0]
        except RuntimeUnavailableError:
            pass  # reported by convert_network below
    try:
        net = convert_network(module, example_shape, fingerprint=fingerprint, weights_sha256=weights_sha256,
                              threads=threads, precision=prec)
    except (RuntimeUnavailableError, ConversionError) as err:
        if rt is Runtime.OPENVINO:
            raise ModelError(f"--runtime openvino: {err.message}") from None
        return module, torch_info(device, prec, rt, f"runtime: torch ({err.message})")
    info = net.describe()
    return net, RuntimeInfo("openvino", info["version"], info["precision"], "cpu", info["cache"], rt.value)
