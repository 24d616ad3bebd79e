"""Label maps: their integer dtype, the label palette and the volume of each label — one definition each.

>>> label_dtype(255), label_dtype(256)
(dtype('uint8'), dtype('uint16'))
>>> label_color(1)
(230, 25, 75)

Label tables on disk (``.json``/``.ctbl``/``.txt``/...) are read by :mod:`medseg.label_tables` and written
next to label maps by :mod:`medseg.io.sidecar`. Imports no torch at module level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.types import Volume

__all__ = ["label_dtype", "torch_label_dtype", "label_color", "label_volumes_ml"]

_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)


def label_dtype(max_id: int) -> np.dtype:
    """Smallest unsigned dtype holding label ids ``0 .. max_id``: uint8, uint16 or uint32 (the one rule).

    Raises:
        ValueError: ``max_id`` is negative or does not fit in uint32.
    """
    max_id = int(max_id)
    if max_id < 0:
        raise ValueError(f"max_id must be >= 0, got {max_id}.")
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_id <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"label {max_id} does not fit in uint32")


def torch_label_dtype(max_id: int) -> Any:
    """:func:`label_dtype` as a torch dtype (uint32 ids are held as int32, torch's widest indexable type)."""
    import torch

    return {np.uint8: torch.uint8, np.uint16: torch.uint16, np.uint32: torch.int32}[label_dtype(max_id).type]


def label_color(label_id: int) -> tuple[int, int, int]:
    """A distinct, deterministic RGB colour (0-255) for a label id (20-colour palette, shifted per cycle).

    >>> label_color(21)
    (11, 99, 186)
    """
    if int(label_id) < 1:
        raise ValueError(f"label_id must be >= 1, got {label_id}.")
    r, g, b = _PALETTE[(int(label_id) - 1) % len(_PALETTE)]
    shift = 37 * ((int(label_id) - 1) // len(_PALETTE))
    return ((r + shift) % 256, (g + 2 * shift) % 256, (b + 3 * shift) % 256)


def label_volumes_ml(labels: Volume) -> dict[str, float]:
    """Volume in mL of every label listed in ``labels.labels`` (0.0 for absent ones), by label name."""
    counts = np.bincount(labels.array.ravel().astype(np.int64), minlength=1)
    vml = labels.geometry.voxel_volume_ml
    out = {}
    for lab in labels.labels:
        n = int(counts[lab.id]) if lab.id < len(counts) else 0
        out[lab.name] = round(n * vml, 6)
    return out
