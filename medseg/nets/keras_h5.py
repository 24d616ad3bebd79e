"""Keras ``save_weights`` HDF5 → torch state dict, strictly, by the file's own layer order (h5py only).

A Keras 2 weights file lists its layers in the root attribute ``layer_names`` (topological = creation order
for the generalized U-Net) and, per layer group, its weights in ``weight_names``. Only ``Conv3D`` layers
carry weights here: ``kernel`` ``(kx, ky, kz, in, out)`` (channels last) becomes a torch ``Conv3d`` weight
``(out, in, kx, ky, kz)``, ``bias`` stays ``(out,)``. The n-th weighted layer of the file goes to
``convs.<n>`` of the network. Any other weight, a shape that does not fit, a weight left over or a
parameter left unfilled is an error: every weight is used exactly once.

>>> sd, header = keras_h5_to_state_dict("model.hdf5", net.state_dict())   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from medseg.errors import ModelError

__all__ = ["keras_h5_to_state_dict", "read_keras_header"]


def _names(attr: Any) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in attr]


def read_keras_header(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """The file's ``header`` group (e.g. ``voxel_size``) as arrays (empty if there is none)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "header" not in f:
            return {}
        return {k: np.asarray(v[()]) for k, v in f["header"].items() if isinstance(v, h5py.Dataset)}


def keras_h5_to_state_dict(path: str | PathLike[str], target: Mapping[str, Any]) -> dict[str, Any]:
    """Map the Conv3D weights of a Keras HDF5 file onto ``target`` (a torch state dict of ``convs.N.*``).

    Args:
        path: Keras 2 ``save_weights`` (or ``save``) HDF5 file.
        target: the torch network's ``state_dict()`` (shapes are checked against it).

    Returns:
        A state dict with exactly ``target``'s keys (float32 tensors).

    Raises:
        ModelError: not a Keras weights file, an unknown weight kind, a shape mismatch, or a count mismatch.
    """
    import h5py
    import torch

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ModelError(f"not an HDF5 file: {err}", path) from None
    with f:
        g = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in g.attrs:
            raise ModelError("not a Keras weights file (no 'layer_names' attribute)", path)
        weighted: list[tuple[str, dict[str, np.ndarray]]] = []
        for layer in _names(g.attrs["layer_names"]):
            grp = g[layer]
            wnames = _names(grp.attrs.get("weight_names", []))
            if not wnames:
                continue
            weights: dict[str, np.ndarray] = {}
            for wn in wnames:
                kind = wn.rsplit("/", 1)[-1].split(":")[0]
                if kind in weights:
                    raise ModelError(f"layer {layer!r} has two {kind!r} weights", path)
                weights[kind] = np.asarray(grp[wn][()], dtype=np.float32)
            weighted.append((layer, weights))
    n_target = len({k.rsplit(".", 1)[0] for k in target})
    if len(weighted) != n_target:
        raise ModelError(f"file has {len(weighted)} weighted layers, the network {n_target} convolutions", path)
    out: dict[str, Any] = {}
    for n, (layer, weights) in enumerate(weighted):
        if set(weights) != {"kernel", "bias"}:
            raise ModelError(f"layer {layer!r}: expected kernel and bias, got {sorted(weights)}", path)
        k = torch.from_numpy(np.ascontiguousarray(weights["kernel"].transpose(4, 3, 0, 1, 2)))
        b = torch.from_numpy(weights["bias"])
        for key, val in ((f"convs.{n}.weight", k), (f"convs.{n}.bias", b)):
            if key not in target:
                raise ModelError(f"layer {layer!r} maps to {key!r}, which the network does not have", path)
            if tuple(target[key].shape) != tuple(val.shape):
                raise ModelError(
                    f"layer {layer!r}: {key} has shape {tuple(val.shape)}, the network expects {tuple(target[key].shape)}",
                    path,
                )
            out[key] = val
    missing = sorted(set(target) - set(out))
    if missing:
        raise ModelError(f"network parameters left without weights: {missing[:5]}", path)
    return out
