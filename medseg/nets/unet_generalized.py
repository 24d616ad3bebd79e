"""A torch port of DeepVoxNet's generalized U-Net (``pyliverlesionseg/architectures/unet_generalized.py``).

The Keras original builds a U-Net from per-pathway subsample factors, kernel sizes and feature counts, with
instance normalisation as a ``Lambda`` (``(x - mean) / (std + 1e-7)`` over the spatial axes, per sample and
channel), leaky ReLU (alpha 0.01), max pooling, ``copy`` (nearest) or ``linear`` upsampling (nearest
upsampling followed by a stride-1 average pooling of the same size), optional residual connections with
1x1x1 projection convolutions, and a final 1x1x1 convolution with a sigmoid. This module reproduces the
layer order exactly (convolutions are created in the order the Keras code creates them, which is the
order of the HDF5 file's ``layer_names``), so that :mod:`medseg.nets.keras_h5` can map weights strictly.

Tensors are ``(N, C, X, Y, Z)``: the Keras ``(N, X, Y, Z, C)`` layout with the channels moved first.

>>> net = GeneralizedUNet(**LIVER_ARGS)                      # doctest: +SKIP
>>> net.input_size                                           # doctest: +SKIP
(189, 162, 162)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneralizedUNet", "possible_sizes", "KERAS_EPSILON", "PORT_VERSION"]

#: Bumped whenever the forward computation changes (part of the OpenVINO compiled-model cache key: a network
#: converted from an older port is never reused). 3: instance norm summed by short dot products.
PORT_VERSION = 3

#: ``keras.backend.epsilon()``, added to the standard deviation by the instance-normalisation Lambda.
KERAS_EPSILON = 1e-7

Triple = tuple[int, int, int]


def _t(v: Sequence[int]) -> Triple:
    return (int(v[0]), int(v[1]), int(v[2]))


def possible_sizes(
    subsample_factors: Sequence[Sequence[int]],
    kernel_sizes: Sequence[Sequence[Sequence[Sequence[int]]]],
    kernel_sizes_common: Sequence[Sequence[int]],
    padding: str,
    upsampling: str,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """The original's size/position bookkeeping (verbatim logic, ``is`` comparisons replaced by ``==``).

    Returns ``(left_positions, right_positions, input_sizes, output_sizes)``: the per-pathway position
    offsets (for the stride-1 alignment average pooling) and, for every candidate input size 0..499 per
    axis, the output size (0 = impossible).
    """
    sfs = [np.array(s) for s in subsample_factors]
    left_pos: list[np.ndarray] = []
    right_pos: list[np.ndarray] = []
    left_sizes: list[np.ndarray] = []
    input_sizes = output_sizes = np.stack([np.arange(500)] * 3, axis=-1)
    prev_sf = np.ones(3)
    prev_positions = np.zeros(3)
    for s_f_p_p, k_s_p_p in zip([np.ones(3, int)] + sfs, [[[], []]] + list(kernel_sizes)):
        s_f = s_f_p_p // prev_sf
        prev_sf = np.array(s_f_p_p)
        prev_positions = np.abs(prev_positions - (1 - (s_f_p_p * (s_f - 1) + 1) % 2))
        output_sizes = (output_sizes // s_f) * ((output_sizes % s_f) == 0)
        for k_s in k_s_p_p[0]:
            output_sizes = output_sizes - (np.array(k_s) - 1 if padding == "valid" else 0)
            prev_positions = np.abs(prev_positions - (1 - (s_f_p_p * (np.array(k_s) - 1) + 1) % 2))
        left_pos.append(prev_positions)
        left_sizes.append(output_sizes)
    prev_sf = np.array(sfs[-1])
    for i, (s_f_p_p, k_s_p_p) in reversed(
        list(enumerate(zip([np.ones(3, int), np.ones(3, int)] + sfs[:-1], [[[], []]] + list(kernel_sizes))))
    ):
        right_pos.append(prev_positions)
        output_sizes = output_sizes - np.abs(left_pos[i] - prev_positions)
        output_sizes = output_sizes * (((left_sizes[i] - output_sizes) % 2) == 0)
        prev_positions = left_pos[i]
        for k_s in k_s_p_p[1]:
            output_sizes = output_sizes - ((np.array(k_s) - 1) if padding == "valid" else 0)
            prev_positions = np.abs(prev_positions - (1 - (s_f_p_p * (np.array(k_s) - 1) + 1) % 2))
        s_f = prev_sf // s_f_p_p
        prev_sf = np.array(s_f_p_p)
        output_sizes = output_sizes * s_f
        output_sizes = output_sizes - s_f + 1 if upsampling == "linear" else output_sizes
    for k_s in kernel_sizes_common:
        output_sizes = output_sizes - ((np.array(k_s) - 1) if padding == "valid" else 0)
    right_pos.reverse()
    return left_pos, right_pos, input_sizes, output_sizes


def _spatial_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial axes of ``(N, C, X, Y, Z)``, keeping them as size 1: a matrix product with a
    ones vector along ``Z`` (built from ``t``, so a traced graph takes any size), then a mean over ``X, Y``."""
    ones = torch.ones_like(t[:1, :1, :1, :1, :]).transpose(-1, -2)  # (1, 1, 1, Z, 1)
    rows = torch.matmul(t, ones) / ones.sum()  # (N, C, X, Y, 1)
    return rows.mean(dim=(2, 3), keepdim=True)


class GeneralizedUNet(nn.Module):
    """DeepVoxNet's ``create_unet_like_model`` (instance normalisation, leaky ReLU, max pooling, sigmoid).

    Args:
        subsample_factors: per pathway, e.g. ``[[1,1,1],[3,3,3],[9,9,9],[27,27,27]]``.
        kernel_sizes: per pathway ``[left kernels, right kernels]``, each a list of ``[kx, ky, kz]``.
        features: per pathway ``[left features, right features]`` (same nesting as ``kernel_sizes``).
        output_size: ``[X, Y, Z]`` output voxels (the input size follows, as in the original).
        padding: ``same`` | ``valid``.
        upsampling: ``copy`` | ``linear``.
        residual_connections: add (1x1x1-projected, cropped) shortcuts around each block.
        in_channels: input features (1).
        kernel_sizes_common: final common-pathway kernels (``[[1, 1, 1]]``).
        features_common: final common-pathway features (``[1]``).
    """

    def __init__(
        self,
        subsample_factors: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[Sequence[Sequence[int]]]],
        features: Sequence[Sequence[Sequence[int]]],
        output_size: Sequence[int],
        padding: str = "valid",
        upsampling: str = "copy",
        residual_connections: bool = False,
        in_channels: int = 1,
        kernel_sizes_common: Sequence[Sequence[int]] = ((1, 1, 1),),
        features_common: Sequence[int] = (1,),
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
        if upsampling not in ("copy", "linear"):
            raise ValueError(f"upsampling must be 'copy' or 'linear', got {upsampling!r}.")
        if not len(subsample_factors) == len(kernel_sizes) == len(features):
            raise ValueError("subsample_factors, kernel_sizes and features must have one entry per pathway.")
        for k, f in zip(kernel_sizes, features):
            if len(k) != 2 or len(f) != 2 or any(len(a) != len(b) for a, b in zip(k, f)):
                raise ValueError(f"each pathway needs [left, right] kernels and features of equal lengths, got {k} / {f}.")
        self.sfs = [_t(s) for s in subsample_factors]
        self.kernels = [[[_t(k) for k in side] for side in p] for p in kernel_sizes]
        self.features = [[[int(n) for n in side] for side in p] for p in features]
        self.padding = padding
        self.upsampling = upsampling
        self.residual = bool(residual_connections)
        self.kernels_common = [_t(k) for k in kernel_sizes_common]
        self.features_common = [int(n) for n in features_common]
        left_pos, right_pos, in_sizes, out_sizes = possible_sizes(
            self.sfs, self.kernels, self.kernels_common, padding, upsampling
        )
        self.align = [tuple(int(v) + 1 for v in np.abs(lp - rp)) for lp, rp in zip(left_pos, right_pos)]
        size = []
        for axis, o in enumerate(_t(output_size)):
            ok = np.nonzero(out_sizes[:, axis] == o)[0]
            if ok.size == 0:
                valid = sorted(set(int(v) for v in out_sizes[:, axis] if v > 0))[:20]
                raise ValueError(f"output_size[{axis}]={o} is not possible for this network (e.g. {valid}).")
            size.append(int(in_sizes[ok[0], axis]))
        self.output_size = _t(output_size)
        self.input_size = _t(size)

        # convolutions, created in the Keras code's order (= the HDF5 file's layer order)
        convs: list[nn.Conv3d] = []
        self._plan_down: list[list[tuple[int, int | None]]] = []  # per pathway: (conv index, shortcut conv index)
        self._plan_up: list[list[int]] = []
        self._short_down: list[int | None] = []
        self._short_up: list[int | None] = []
        ch = in_channels
        left_ch: list[int] = []
        for i in range(len(self.sfs) + 1):
            idx: list[tuple[int, int | None]] = []
            short = None
            if i > 0:
                block_in = ch
                for k_s, n_f in zip(self.kernels[i - 1][0], self.features[i - 1][0]):
                    convs.append(self._conv(ch, n_f, k_s))
                    idx.append((len(convs) - 1, None))
                    ch = n_f
                if self.residual and idx and block_in != ch:
                    convs.append(self._conv(block_in, ch, (1, 1, 1)))
                    short = len(convs) - 1
            self._plan_down.append([c for c, _ in idx])
            self._short_down.append(short)
            left_ch.append(ch)
        for i in reversed(range(len(self.sfs) + 1)):
            idx2: list[int] = []
            short = None
            if i > 0:
                if i < len(self.sfs):
                    ch = left_ch[i] + ch
                block_in = ch
                for k_s, n_f in zip(self.kernels[i - 1][1], self.features[i - 1][1]):
                    convs.append(self._conv(ch, n_f, k_s))
                    idx2.append(len(convs) - 1)
                    ch = n_f
                if self.residual and idx2 and block_in != ch:
                    convs.append(self._conv(block_in, ch, (1, 1, 1)))
                    short = len(convs) - 1
            self._plan_up.append(idx2)
            self._short_up.append(short)
        self._common: list[int] = []
        for k_s, n_f in zip(self.kernels_common, self.features_common):
            convs.append(self._conv(ch, n_f, k_s))
            self._common.append(len(convs) - 1)
            ch = n_f
        self.convs = nn.ModuleList(convs)
        self.out_channels = ch

    def _conv(self, cin: int, cout: int, k: Triple) -> nn.Conv3d:
        pad = tuple((s - 1) // 2 for s in k) if self.padding == "same" else 0
        return nn.Conv3d(cin, cout, k, padding=pad)

    @staticmethod
    def _norm(x: torch.Tensor) -> torch.Tensor:
        """The Keras Lambda ``(x - mean) / (std + 1e-7)`` over the spatial axes, per sample and channel.

        Written so that a converted graph sums accurately in float32: OpenVINO's CPU plugin fuses
        ``mean``/``var`` into one MVN (or merges chained reductions into one) whose float32 sums over a
        189x162x162 segment are off by ~1e-5 relative; on channels where the zero padding makes the spread
        tiny that moved normalised values by 0.03 and flipped 708 liver voxels of a real CT segment. Here the
        data are first shifted by a coarse mean (every 8th voxel), then each mean is a matrix product with
        a ones vector along the last axis (short dot products that no pass fuses) and a mean of those sums.
        Mathematically the same Lambda; OpenVINO then agrees with a float64 reduction within 2e-5 (sigmoid
        output, real segments) and torch within 3e-6.
        """
        shift = x[:, :, ::8, ::8, ::8].mean(dim=(2, 3, 4), keepdim=True)
        d = x - shift
        d = d - _spatial_mean(d)
        return d / (_spatial_mean(d * d).sqrt() + KERAS_EPSILON)

    @staticmethod
    def _crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        c = [int((a - b) / 2) for a, b in zip(x.shape[2:], shape)]
        if any(v < 0 for v in c):
            raise ValueError(f"cannot crop {tuple(x.shape[2:])} to {tuple(shape)}.")
        # stops counted from the end: a traced graph (OpenVINO's conversion) stays valid for every input size
        # (the crop margins of these networks do not depend on it)
        return x[:, :, c[0]: -c[0] or None, c[1]: -c[1] or None, c[2]: -c[2] or None]

    def _up(self, x: torch.Tensor, s: Triple) -> torch.Tensor:
        if s == (1, 1, 1):
            return x
        for d, f in enumerate(s):
            if f > 1:
                x = x.repeat_interleave(f, dim=2 + d)
        if self.upsampling == "linear":
            x = F.avg_pool3d(x, kernel_size=s, stride=1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, X, Y, Z)`` with ``(X, Y, Z) == input_size`` (or any size the network accepts) →
        sigmoid probabilities ``(N, 1, X', Y', Z')``."""
        act = lambda t: F.leaky_relu(t, 0.01)  # noqa: E731
        left: list[torch.Tensor] = []
        prev = (1, 1, 1)
        path = x
        for i, s_f_p_p in enumerate([(1, 1, 1)] + self.sfs):
            s_f = tuple(a // b for a, b in zip(s_f_p_p, prev))
            prev = s_f_p_p
            if s_f != (1, 1, 1):
                path = F.max_pool3d(path, kernel_size=s_f, stride=s_f)
            if i > 0:
                shortcut = path
                for j, c in enumerate(self._plan_down[i]):
                    if i > 1 or j > 0:
                        path = act(self._norm(path))
                    path = self.convs[c](path)
                if self.residual and self._plan_down[i]:
                    shortcut = self._crop(shortcut, path.shape[2:])
                    if self._short_down[i] is not None:
                        shortcut = self.convs[self._short_down[i]](shortcut)
                    path = path + shortcut
            left.append(path)
        prev = self.sfs[-1]
        ups = [(1, 1, 1), (1, 1, 1)] + self.sfs[:-1]
        for n, i in enumerate(reversed(range(len(self.sfs) + 1))):
            if self.align[i] != (1, 1, 1):
                path = F.avg_pool3d(path, kernel_size=self.align[i], stride=1)
            if i > 0:
                if i < len(self.sfs):
                    path = torch.cat([self._crop(left[i], path.shape[2:]), path], dim=1)
                shortcut = path
                for c in self._plan_up[n]:
                    path = self.convs[c](act(self._norm(path)))
                if self.residual and self._plan_up[n]:
                    shortcut = self._crop(shortcut, path.shape[2:])
                    if self._short_up[n] is not None:
                        shortcut = self.convs[self._short_up[n]](shortcut)
                    path = path + shortcut
            s_f = tuple(a // b for a, b in zip(prev, ups[i]))
            prev = ups[i]
            path = self._up(path, s_f)
        for k, c in enumerate(self._common):
            path = self.convs[c](act(self._norm(path)))
            if k == len(self._common) - 1:
                path = torch.sigmoid(path)
        return path

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, output_size={self.output_size}, padding={self.padding!r}, upsampling={self.upsampling!r}"


def build_from_args(args: dict[str, Any]) -> GeneralizedUNet:
    """:class:`GeneralizedUNet` from a spec's ``network.unet_generalized`` mapping."""
    return GeneralizedUNet(**args)
