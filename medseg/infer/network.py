"""Build a network from a spec and load its weights (``weights_only=True``; sha256 checked)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.config import ALLOWED_NETWORKS, NetworkSpec, WeightsSpec
from medseg.errors import ModelError
from medseg.models.sources import LoadedWeights, resolve_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["build_network"]


def _unpickle_message(err: BaseException) -> str:
    """One line for a checkpoint ``torch.load(weights_only=True)`` refused or could not read."""
    text = str(err)
    if text.startswith("Weights only load failed"):
        lines = [ln.strip() for ln in text.split("WeightsUnpickler error:", 1)[-1].splitlines() if ln.strip()]
        detail = next((ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the doc"))),
                      "a disallowed object")
        return (f"refused: the checkpoint pickles more than tensors ({detail[:200]}); medseg loads checkpoints "
                "with weights_only=True and never runs code from them (re-save its state_dict from a trusted copy)")
    first = (text.strip().splitlines() or [type(err).__name__])[0]
    return f"cannot load checkpoint (weights_only=True): {first[:300]}"


def _state_dict(obj: Any, key: str | None, path: Path) -> dict[str, Any]:
    import torch

    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
            raise ModelError(f"checkpoint has no key {key!r} (top-level keys: {keys})", path)
        obj = obj[key]
    elif isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in ("state_dict", "model", "network", "model_state_dict"):
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError("checkpoint is not a state dict of tensors (set weights.state_dict_key)", path)
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _build_unet_generalized(network: NetworkSpec, loaded: LoadedWeights | None, device: Any) -> Any:
    """DeepVoxNet's U-Net (:mod:`medseg.nets.unet_generalized`) with a converted state dict (strict)."""
    import torch

    from medseg.nets.unet_generalized import GeneralizedUNet

    try:
        module = GeneralizedUNet(**dict(network.unet_generalized or {}))
    except (TypeError, ValueError) as err:
        raise ModelError(f"network.unet_generalized: {err}") from None
    if loaded is None:
        raise ModelError("a unet_generalized network needs weights")
    path = loaded.path
    try:
        sd = torch.load(io.BytesIO(loaded.data), map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ModelError(f"cannot load weights (weights_only=True): {str(err).splitlines()[0]}", path) from None
    if not isinstance(sd, dict):
        raise ModelError("weights file is not a state dict", path)
    sd = {k: v for k, v in sd.items() if not k.startswith("header.")}
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise ModelError(f"weights do not fit the network: {str(err)[:400]}", path) from None
    module = module.eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def build_network(
    network: NetworkSpec,
    weights: WeightsSpec,
    device: torch.device | str = "cpu",
    *,
    trust_model_code: bool = False,
) -> tuple[torch.nn.Module, str | None]:
    """Network in ``eval()`` mode on ``device``, and the sha256 of its weight file (``None`` if none).

    A MONAI class is looked up by name in ``monai.networks.nets`` (allow-listed, never ``eval``) and built
    with ``network.args``; its state dict loads with ``torch.load(weights_only=True)``. A TorchScript
    network is the weights file itself: it is code, so it loads only when trusted (see :mod:`medseg.models.trust`).

    Args:
        trust_model_code: the user's explicit opt-in to load TorchScript whose sha256 nothing pins.

    Raises:
        ModelError: unknown class, bad arguments, missing/corrupt/mismatching checkpoint.
        CodeNotTrustedError: TorchScript that is neither pinned nor opted into.
    """
    import torch

    loaded = resolve_weights(weights)
    path, digest = (loaded.path, loaded.sha256) if loaded is not None else (None, None)
    if network.onnx:
        from medseg.infer.onnx_net import load_onnx_network

        return load_onnx_network(path, device), digest
    if network.unet_generalized is not None:
        return _build_unet_generalized(network, loaded, device), digest
    if network.torchscript:
        if loaded is None:
            raise ModelError("a TorchScript network needs weights.source")
        from medseg.models.trust import CodeNotTrustedError, code_trust_reason

        try:
            code_trust_reason(
                loaded.sha256,
                pinned_sha256=weights.member_sha256 if weights.archive_member else weights.sha256,
                source=weights.source,
                member=weights.archive_member,
                trust_model_code=trust_model_code,
            )
        except CodeNotTrustedError as err:
            raise CodeNotTrustedError(err.message, loaded.path) from None
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(io.BytesIO(loaded.data), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - a corrupt archive fails in many ways
            raise ModelError(f"not a TorchScript module: {str(err).splitlines()[0]}", path) from None
    else:
        if network.class_name not in ALLOWED_NETWORKS:
            raise ModelError(f"network class {network.class_name!r} is not allowed")
        import monai.networks.nets as nets

        cls = getattr(nets, network.class_name, None)
        if cls is None:
            raise ModelError(f"this MONAI version has no network {network.class_name!r}")
        try:
            module = cls(**dict(network.args))
        except (TypeError, ValueError, KeyError, AssertionError) as err:
            raise ModelError(f"network.args: cannot build {network.class_name}: {err}") from None
        if loaded is not None:
            try:
                obj = torch.load(io.BytesIO(loaded.data), map_location="cpu", weights_only=True)
            except Exception as err:  # unpickling errors come in many types
                raise ModelError(_unpickle_message(err), path) from None
            sd = _state_dict(obj, weights.state_dict_key, path)
            try:
                module.load_state_dict(sd, strict=True)
            except RuntimeError as err:
                raise ModelError(f"checkpoint does not fit {network.class_name}: {str(err)[:400]}", path) from None
    del loaded
    module = module.eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return module, digest
