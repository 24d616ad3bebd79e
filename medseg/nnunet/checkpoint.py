"""Load nnU-Net v2 checkpoints (``fold_N/checkpoint_final.pth``) with ``torch.load(weights_only=True)``.

**How medseg loads nnU-Net checkpoints (the one place this is explained).**
nnU-Net saves a dict: ``network_weights`` (a state dict), ``optimizer_state``, ``grad_scaler_state``,
``logging`` (per-epoch losses and Dice values), ``_best_ema``, ``current_epoch``, ``init_args`` (plans,
configuration, fold, dataset.json, ``torch.device``), ``trainer_name`` and
``inference_allowed_mirroring_axes``. Plain ``torch.load(path, weights_only=True)`` refuses these files:
``logging`` and ``_best_ema`` hold **numpy scalars** (``np.float64`` from ``np.nanmean``), which pickle as
``numpy._core.multiarray.scalar`` (``numpy.core.multiarray.scalar`` when saved under numpy 1.x) plus a
``numpy.dtype`` whose class is e.g. ``numpy.dtypes.Float64DType``. Nothing else in a standard nnU-Net
checkpoint is outside torch's weights-only allow-list (``torch.device``, tuples, dicts, lists, str, int, float
and tensors are allowed already).

medseg therefore loads every checkpoint with ``weights_only=True`` inside
``torch.serialization.safe_globals(...)`` that adds exactly: ``numpy._core.multiarray.scalar`` (also under
its numpy-1 name), ``numpy.dtype`` and the numeric ``numpy.dtypes.*DType`` classes. These rebuild numbers and
dtypes only; they cannot run code. **Loading a model never unpickles a checkpoint with
``weights_only=False``** — no flag or setting turns it on, registered download or not (a spec's ``sha256``
is checked in addition). If a checkpoint (e.g. from a custom trainer) pickles anything else, loading fails
with a :class:`~medseg.errors.ModelError` naming the refused global. The only full unpickling in medseg is
the explicit, manual conversion :func:`strip_checkpoint` (``python -m medseg.nnunet.checkpoint --strip IN
OUT SHA256``, refused unless IN has that digest), which keeps the keys inference needs as plain tensors/strings/ints: run it once, yourself, on a
file you trust; its output loads with plain ``weights_only=True``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import ModelError
from medseg.models.cache import read_hashed

__all__ = ["NnUNetCheckpoint", "load_checkpoint", "safe_numpy_globals", "strip_checkpoint"]

#: checkpoint keys medseg reads (:func:`strip_checkpoint` keeps these).
INFERENCE_KEYS = ("network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes")


@dataclass(frozen=True)
class NnUNetCheckpoint:
    """What inference needs from one fold's checkpoint.

    Args:
        state_dict: network weights (CPU tensors).
        trainer_name: nnU-Net trainer class name, e.g. ``"nnUNetTrainer"``.
        configuration: configuration the fold was trained with (from ``init_args``), or ``None``.
        mirroring_axes: axes (0-based, spatial) the trainer allows for mirroring TTA; ``None`` = no mirroring.
        sha256: hex digest of the file.
    """

    state_dict: dict[str, Any]
    trainer_name: str | None
    configuration: str | None
    mirroring_axes: tuple[int, ...] | None
    sha256: str


def safe_numpy_globals() -> list:
    """The numpy globals added to torch's weights-only allow-list (numbers and dtypes only)."""
    import numpy as np

    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    allowed: list = [ma.scalar, (ma.scalar, "numpy.core.multiarray.scalar"), np.dtype]
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is not None:
        for name in ("Float16DType", "Float32DType", "Float64DType", "LongDoubleDType", "Int8DType", "Int16DType",
                     "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType",
                     "BoolDType", "LongDType", "ULongDType", "LongLongDType", "ULongLongDType", "IntDType",
                     "UIntDType", "ShortDType", "UShortDType", "ByteDType", "UByteDType"):
            cls = getattr(dtypes_mod, name, None)
            if cls is not None and cls not in allowed:
                allowed.append(cls)
    return allowed


def load_checkpoint(path: str | Path, expected_sha256: str | None = None) -> NnUNetCheckpoint:
    """Load one nnU-Net checkpoint with ``weights_only=True`` (see the module docstring).

    Args:
        path: ``fold_N/checkpoint_final.pth``.
        expected_sha256: if given, the file must have this digest (registered downloads).

    Raises:
        ModelError: unreadable file, digest mismatch, a pickled object outside the allow-list, or not an
            nnU-Net checkpoint.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise ModelError("checkpoint not found", p)
    try:
        data, digest = read_hashed(p)  # the bytes checked are the bytes loaded
    except OSError as e:
        raise ModelError(f"cannot read checkpoint: {e.strerror or e}", p) from None
    if expected_sha256 is not None and digest.lower() != expected_sha256.lower():
        raise ModelError(f"sha256 {digest} does not match the registered {expected_sha256}", p)
    try:
        with torch.serialization.safe_globals(safe_numpy_globals()):
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise ModelError(f"refused by weights-only loading ({detail}); medseg never unpickles checkpoints "
                         f"fully — see medseg.nnunet.checkpoint for how to convert a trusted file", p) from None
    except (OSError, RuntimeError, EOFError) as e:
        raise ModelError(f"cannot read checkpoint: {e}", p) from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ModelError(f"not an nnU-Net checkpoint (no 'network_weights'; has {keys})", p)
    weights = ckpt["network_weights"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelError("'network_weights' is not a state dict of tensors", p)
    init_args = ckpt.get("init_args") or {}
    axes = ckpt.get("inference_allowed_mirroring_axes")
    return NnUNetCheckpoint(
        state_dict=dict(weights),
        trainer_name=ckpt.get("trainer_name"),
        configuration=init_args.get("configuration") if isinstance(init_args, dict) else None,
        mirroring_axes=None if axes is None else tuple(int(a) for a in axes),
        sha256=digest,
    )


def strip_checkpoint(src: str | Path, dst: str | Path, sha256: str) -> Path:
    """Re-save only :data:`INFERENCE_KEYS` of a checkpoint YOU TRUST, as plain tensors/str/int/tuples.

    This is the one place medseg unpickles a file fully: a manual, explicit conversion step for checkpoints
    whose extra objects weights-only loading refuses. The caller must give the file's sha256 (from the
    publisher, or computed on the copy they trust); the file is unpickled only when it matches, so a
    swapped file is never executed. The output loads with plain ``torch.load(..., weights_only=True)``.

    Raises:
        ModelError: ``dst`` exists, the digest does not match, or ``src`` is not an nnU-Net checkpoint.
    """
    import torch

    from medseg.io.atomic import atomic_output

    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise ModelError("exists; not overwriting", dst)
    data, digest = read_hashed(src)
    if digest != sha256.strip().lower():
        raise ModelError(f"sha256 mismatch: expected {sha256}, file has {digest}; not unpickling it", src)
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)  # the verified bytes themselves
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise ModelError("not an nnU-Net checkpoint (no 'network_weights')", src)
    init_args = ckpt.get("init_args") or {}
    axes = ckpt.get("inference_allowed_mirroring_axes")
    out = {
        "network_weights": {str(k): v for k, v in ckpt["network_weights"].items()},
        "trainer_name": str(ckpt.get("trainer_name")),
        "init_args": {"configuration": str(init_args.get("configuration"))},
        "inference_allowed_mirroring_axes": None if axes is None else tuple(int(a) for a in axes),
    }
    with atomic_output(dst) as tmp:
        torch.save(out, tmp)
    return dst


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) != 5 or sys.argv[1] != "--strip":
        raise SystemExit("usage: python -m medseg.nnunet.checkpoint --strip TRUSTED_IN.pth OUT.pth SHA256_OF_IN")
    try:
        print(strip_checkpoint(sys.argv[2], sys.argv[3], sys.argv[4]))
    except ModelError as e:
        raise SystemExit(str(e)) from None
