"""Run options of every predictor: one frozen dataclass, validated once when it is built.

>>> RunOptions(overlap=0.5, threads=2).overlap
0.5
>>> RunOptions(overlap=1.0)
Traceback (most recent call last):
ValueError: overlap must be >= 0 and < 1, got 1.0.

A new option is one field with its default and, if it needs one, one check in ``__post_init__``: every
predictor and every caller takes the same :class:`RunOptions`. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from medseg.engine.runtime import Precision, parse_precision

__all__ = ["RunOptions", "check_overlap", "check_positive_int"]


def check_overlap(overlap: Any) -> float:
    """``overlap`` as a float in ``[0, 1)``, else ``ValueError`` naming it (the one overlap rule)."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}.")
    return float(overlap)


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int ``>= 1``, else ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class RunOptions:
    """How a predictor runs (not what it computes: that is the model spec).

    Args:
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda[:N]`` or ``mps`` (resolved by
            :func:`medseg.engine.runtime.resolve_device` when the predictor is built; unavailable → error).
        precision: ``auto`` | ``float32`` | ``bfloat16`` | ``float16`` autocast precision.
        threads: CPU threads while predicting (restored afterwards); ``None`` leaves torch's setting.
        overlap: sliding-window overlap in ``[0, 1)``; ``None`` = the model's.
        tta: test-time flips: ``None`` = the model's, ``False`` = none, ``True`` = the model's or all 3 axes.
        sw_batch_size: windows per network call; ``None`` = the model's.
        stream_bytes: memory budget (bytes) of the float32 score volume: above it, MONAI-spec sliding-window
            models without TTA stitch their windows in bounded cells (:mod:`medseg.engine.plan`), and nnU-Net
            models (mirroring included) stitch, resample and decide in row slabs (:mod:`medseg.nnunet.sliding`).
        runtime: ``torch`` (default here), ``openvino`` or ``auto`` (OpenVINO on the CPU when the network
            converts, else torch with a note); the CLI and napari default to ``auto``
            (:mod:`medseg.engine.backends`).
    """

    device: str = "auto"
    precision: Precision = Precision.AUTO
    threads: int | None = None
    overlap: float | None = None
    tta: bool | None = None
    sw_batch_size: int | None = None
    stream_bytes: int = 2**30
    runtime: str = "torch"

    def __post_init__(self) -> None:
        dev = self.device
        object.__setattr__(self, "device", dev if not isinstance(dev, str) else dev.strip().lower())
        object.__setattr__(self, "precision", parse_precision(self.precision))
        if self.threads is not None:
            object.__setattr__(self, "threads", check_positive_int(self.threads, "threads"))
        if self.overlap is not None:
            object.__setattr__(self, "overlap", check_overlap(self.overlap))
        if self.tta is not None and not isinstance(self.tta, bool):
            raise ValueError(f"tta must be None, True or False, got {self.tta!r}.")
        if self.sw_batch_size is not None:
            object.__setattr__(self, "sw_batch_size", check_positive_int(self.sw_batch_size, "sw_batch_size"))
        check_positive_int(self.stream_bytes, "stream_bytes")
        from medseg.engine.backends import parse_runtime

        object.__setattr__(self, "runtime", parse_runtime(self.runtime).value)

    @classmethod
    def build(cls, options: RunOptions | None = None, **kwargs: Any) -> RunOptions:
        """``options`` as given, or one built from keyword arguments (the predictors' keyword form).

        Raises:
            TypeError: both ``options`` and option keywords, or an unknown keyword.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown run option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}.")
        if options is None:
            return cls(**kwargs)
        if not isinstance(options, RunOptions):
            raise TypeError(f"options must be a RunOptions, got {type(options).__name__}.")
        if kwargs:
            raise TypeError(f"pass either options= or keyword options, not both (got {', '.join(sorted(kwargs))}).")
        return options
