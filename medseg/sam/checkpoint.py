"""Reading SAM checkpoints: ``torch.load(weights_only=True)`` only, strict keys, a cheap file identity.

Shared by every SAM family's loader (:mod:`medseg.sam.models`, :mod:`medseg.sam.litemedsam`); imports no
other SAM module, so the loaders do not import each other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from medseg.errors import ModelError

__all__ = ["load_state_dict", "load_into", "file_digest"]


def load_state_dict(path: str | os.PathLike[str], key: str | None = None) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; ``key`` selects a nested dict (SAM 2 uses ``"model"``)."""
    import torch

    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with disallowed globals, not a torch file
        raise ModelError(f"cannot read checkpoint ({type(exc).__name__}: {exc})", p) from exc
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ModelError(f"checkpoint has no {key!r} entry", p)
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ModelError(f"checkpoint is not a state dict (got {type(obj).__name__})", p)
    return obj


def load_into(network: Any, state: dict[str, Any], path: Path) -> None:
    """Load ``state`` into ``network`` with strict keys; a mismatch is a :class:`ModelError` naming ``path``."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint does not fit the architecture: {exc}", path) from exc


def file_digest(path: Path, n: int = 1 << 20) -> str:
    """Cheap identity of a checkpoint file: size + sha1 of its first MiB (for cache keys, not security)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        h.update(f.read(n))
    return f"{path.stat().st_size}-{h.hexdigest()[:16]}"
