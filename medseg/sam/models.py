"""Build SAM-family networks and load their weights (``torch.load(..., weights_only=True)`` only).

A :class:`SamModel` wraps one network with what the rest of :mod:`medseg.sam` needs to know about it:
its family (SAM or SAM 2), its square input size, its input normalisation and a stable id used in
embedding-cache keys.

>>> model = load_model("sam_vit_b", checkpoint="/path/to/sam_vit_b_01ec64.pth")  # doctest: +SKIP
>>> model.image_size
1024
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from medseg.errors import ModelError
from medseg.sam.checkpoint import file_digest, load_into, load_state_dict
from medseg.sam.registry import CheckpointSpec, Family, PixelNorm, get_checkpoint, resolve_checkpoint

__all__ = ["SamModel", "load_model", "build_sam_network", "build_sam2_network", "load_state_dict"]


@dataclass(eq=False)
class SamModel:
    """A network ready for :mod:`medseg.sam`.

    Args:
        network: ``segment_anything.modeling.Sam`` or ``sam2.sam2_video_predictor.SAM2VideoPredictor``
            (a ``SAM2Base``: it serves single slices and slice-as-frame propagation).
        family: :class:`Family`.
        image_size: side of the square model frame in pixels (1024 for the released models).
        pixel_norm: input normalisation (:class:`PixelNorm`).
        model_id: stable identity for cache keys (checkpoint name + file digest, or a description of
            a randomly initialised network with its seed).
        device: torch device string the network lives on.
    """

    network: Any
    family: Family
    image_size: int
    pixel_norm: PixelNorm = PixelNorm.IMAGENET
    model_id: str = ""
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_encoder(self) -> Any:
        """The image-encoder module (hook it to count encoder runs)."""
        return self.network.image_encoder

    def __repr__(self) -> str:
        return f"SamModel({self.family.value}, image_size={self.image_size}, id={self.model_id!r}, device={self.device})"


def build_sam_network(
    encoder_embed_dim: int = 768,
    encoder_depth: int = 12,
    encoder_num_heads: int = 12,
    encoder_global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    image_size: int = 1024,
    patch_size: int = 16,
    window_size: int = 14,
    prompt_embed_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    seed: int | None = None,
) -> Any:
    """A segment-anything ``Sam`` of any size, randomly initialised (seeded), in eval mode.

    The defaults are ViT-B; the released models are built with ``sam_model_registry`` in
    :func:`load_model`. Small sizes (e.g. ``image_size=256, encoder_embed_dim=64, encoder_depth=2``)
    give fast test networks with the real SAM code paths.
    """
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size}).")
    if seed is not None:
        torch.manual_seed(seed)
    emb = image_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder_depth, embed_dim=encoder_embed_dim, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=encoder_num_heads,
            patch_size=patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(encoder_global_attn_indexes), window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim, image_embedding_size=(emb, emb),
            input_image_size=(image_size, image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
            ),
            transformer_dim=prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_sam2_network(
    config: str, device: str = "cpu", hydra_overrides: Sequence[str] = (), seed: int | None = None
) -> Any:
    """A SAM 2 video predictor (``SAM2VideoPredictor``) from a sam2 hydra config, random weights, eval mode.

    ``hydra_overrides`` shrink it for tests, e.g. ``["++model.image_size=256",
    "++model.image_encoder.trunk.stages=[1,1,2,1]", "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.memory_attention.num_layers=1"]``. Hole filling (which needs sam2's optional CUDA extension)
    is switched off so CPU runs do not warn on every frame.
    """
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    if seed is not None:
        torch.manual_seed(seed)
    try:
        net = build_sam2_video_predictor(
            config, ckpt_path=None, device=device, hydra_overrides_extra=list(hydra_overrides)
        )
    except Exception as exc:  # hydra: missing config or bad override
        raise ModelError(f"cannot build SAM 2 from config {config!r}: {exc}") from exc
    net.fill_hole_area = 0
    return net.eval()


def load_model(
    name: str | CheckpointSpec,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    allow_unverified: bool = False,
    download: bool = True,
) -> SamModel:
    """Build a registry model and load its checkpoint.

    Args:
        name: registry name (see :func:`medseg.sam.registry.list_checkpoints`).
        checkpoint: local checkpoint file; default: the cache, downloading (checksum-verified) if needed.
        device: torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
        cache_dir: checkpoint cache directory.
        allow_unverified: accept downloading an entry without a known sha256.
        download: allow a download when the file is not cached.

    Returns:
        a :class:`SamModel`; for ``"litemedsam"`` a :class:`medseg.sam.protocol.LiteMedSAM` (same
        ``family``/``image_size``/``model_id``/``device`` attributes), which runs the reference protocol.

    Raises:
        ModelError: unavailable or unreadable checkpoint, or one that does not match the architecture.
    """
    spec = get_checkpoint(name)
    if spec.family is Family.LITEMEDSAM:  # the reference box protocol, see medseg.sam.protocol
        from medseg.sam.protocol import LiteMedSAM

        return LiteMedSAM.load(None if checkpoint is None else str(checkpoint), device=device)  # type: ignore[return-value]
    path = resolve_checkpoint(spec, checkpoint, cache_dir, allow_unverified=allow_unverified, download=download)
    model_id = f"{spec.name}:{file_digest(path)}"
    if spec.family is Family.SAM:
        from segment_anything.build_sam import sam_model_registry

        builder = sam_model_registry[spec.arch]
        net = builder(checkpoint=None)  # never let segment_anything call torch.load itself
        load_into(net, load_state_dict(path), path)
        net = net.to(device).eval()
        size = int(net.image_encoder.img_size)
    else:
        net = build_sam2_network(spec.arch, device="cpu", hydra_overrides=spec.hydra_overrides)
        load_into(net, load_state_dict(path, key="model"), path)
        net = net.to(device).eval()
        size = int(net.image_size)
    return SamModel(net, spec.family, size, spec.pixel_norm, model_id, str(device))


def wrap_network(
    network: Any, model_id: str, pixel_norm: PixelNorm = PixelNorm.IMAGENET, device: str = "cpu"
) -> SamModel:
    """Wrap an already built network (e.g. from :func:`build_sam_network`) as a :class:`SamModel`."""
    if hasattr(network, "sam_mask_decoder"):
        return SamModel(network, Family.SAM2, int(network.image_size), pixel_norm, model_id, device)
    if hasattr(network, "mask_decoder") and hasattr(network, "image_encoder"):
        return SamModel(network, Family.SAM, int(network.image_encoder.img_size), pixel_norm, model_id, device)
    raise TypeError(f"not a SAM or SAM 2 network: {type(network).__name__}.")


__all__.append("wrap_network")
