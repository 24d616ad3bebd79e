"""A real medseg model spec (YAML + a seeded MONAI ``UNet`` state dict) for tests and benchmarks.

The weights are random but seeded (``torch.manual_seed(0)`` before the network is built), so every run writes
the same bytes and predicts the same labels. The spec is what a user writes for ``medseg segment --model
PATH.yaml``: it goes through the ordinary loader, preprocessing, inferer and export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: CT soft-tissue window to [0, 1], the normalisation of the CT specs.
CT_WINDOW = [{"type": "window", "a_min": -200, "a_max": 300, "b_min": 0.0, "b_max": 1.0, "clip": True}]
#: Z-score over the whole volume, for specs that accept any modality.
ZSCORE = [{"type": "zscore", "nonzero": False}]


def write_seeded_unet_spec(
    folder: Path,
    *,
    name: str,
    labels: Sequence[dict[str, Any]],
    channels: Sequence[int] = (4, 8),
    strides: Sequence[int] = (2,),
    num_res_units: int = 0,
    modality: str = "any",
    spacing: Sequence[float] = (4.0, 4.0, 4.0),
    normalize: Sequence[dict[str, Any]] = tuple(ZSCORE),
    inferer: dict[str, Any] | None = None,
    filename: str = "tiny.yaml",
) -> Path:
    """Write ``weights.pt`` (seeded UNet, one input channel, ``len(labels) + 1`` outputs) and the spec YAML
    ``folder / filename`` next to it; return the YAML's path. ``inferer`` defaults to whole-volume inference."""
    import torch
    import yaml
    from monai.networks.nets import UNet

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": len(labels) + 1, "channels": list(channels),
            "strides": list(strides), "num_res_units": num_res_units}
    torch.manual_seed(0)
    torch.save(UNet(**args).state_dict(), folder / "weights.pt")
    spec = {
        "name": name,
        "network": {"class": "UNet", "args": args},
        "weights": {"source": "weights.pt"},
        "input": {"modality": modality, "orientation": "RAS", "spacing": list(spacing), "normalize": list(normalize)},
        "inferer": dict(inferer) if inferer is not None else {"mode": "whole"},
        "output": {"activation": "softmax", "decision": "argmax", "invert": "labels"},
        "labels": [dict(label) for label in labels],
    }
    path = folder / filename
    path.write_text(yaml.safe_dump(spec))
    return path
