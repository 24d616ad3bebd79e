"""Back to the source grid: linear resampling of class scores and argmax there, in bounded memory.

The working grid of a model (the source reoriented and resampled to the model's spacing) and the source
grid are axis-aligned: each working axis is an affine function of one source axis (:class:`AxisMap`,
from the two affines by :func:`axis_maps_from_affines`). Resampling the per-class scores back is then
separable: one linear interpolation per axis, with border clamping, the same sampling as MONAI's
``Spacing`` inverse (``grid_sample`` with ``padding_mode="border"``).

- :func:`invert_and_argmax` resamples a whole ``(C, X, Y, Z)`` score volume chunk by chunk and argmaxes on
  the source grid, holding one chunk of resampled scores at a time.
- :class:`LinearInverter` does the same for the cells of :func:`medseg.infer.slab.slab_sliding_window` as
  they are finalised, so the full score volume never exists.
- :func:`interp_argmax` is the kernel both use. It works in tiles and drops, per tile, every class that
  provably cannot reach the maximum anywhere in the tile (its largest score in the tile's stencil region
  is below the best smallest score of another class by far more than the rounding error of the
  interpolation). The kept classes are computed with exactly the same operations, so the labels are
  bitwise those of the plain "interpolate every class, then argmax"; a real model keeps a handful of the
  105 whole-body classes in most tiles.
- :func:`resample_labels_nearest`: nearest-neighbour resampling of a label map, in chunks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.labels import torch_label_dtype

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "AxisMap",
    "axis_maps_from_affines",
    "interp_argmax",
    "invert_and_argmax",
    "LinearInverter",
    "resample_labels_nearest",
]

#: Classes whose tile maximum is below the best tile minimum by more than ``PRUNE_MARGIN x max|score|``
#: are dropped from a tile. Three separable float32 interpolation passes err by at most ~1e-6 of the
#: largest magnitude, so 1e-5 leaves a tenfold safety margin: a dropped class can neither win nor tie.
PRUNE_MARGIN = 1e-5


@dataclass(frozen=True)
class AxisMap:
    """Working-grid axis coordinate as a function of one source axis: ``w = scale * i_src + offset`` (voxels)."""

    src_axis: int
    scale: float
    offset: float


def axis_maps_from_affines(
    src_affine: np.ndarray, work_affine: np.ndarray, tol: float = 1e-6
) -> tuple[AxisMap, AxisMap, AxisMap]:
    """Per working axis, the source axis and 1D map, from the two voxel→world affines.

    Resampling to a new spacing and reorienting (flip/permute) keep the grids axis-aligned, so each working
    axis depends on exactly one source axis. Raises ``ValueError`` for a rotated (oblique) relation.
    """
    m = np.linalg.inv(np.asarray(work_affine, dtype=np.float64)) @ np.asarray(src_affine, dtype=np.float64)
    maps = []
    used = set()
    for a in range(3):
        row = m[a, :3]
        j = int(np.argmax(np.abs(row)))
        others = np.delete(np.abs(row), j)
        if others.max(initial=0.0) > tol * max(abs(row[j]), 1e-12) or abs(row[j]) < 1e-12 or j in used:
            raise ValueError(
                f"source and working grids are not axis-aligned (voxel map row {a} = {row.tolist()}); "
                "use the unbounded resampling for oblique grids."
            )
        used.add(j)
        maps.append(AxisMap(j, float(row[j]), float(m[a, 3])))
    return tuple(maps)  # type: ignore[return-value]


def linear_tables(amap: AxisMap, n_src: int, n_work: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For source indices ``0..n_src-1``: lower/upper working index and their float32 weights (border clamp)."""
    w = amap.scale * np.arange(n_src, dtype=np.float64) + amap.offset
    w = np.clip(w, 0.0, n_work - 1)
    if n_work == 1:
        i0 = np.zeros(n_src, dtype=np.int64)
        return i0, i0.copy(), np.ones(n_src, np.float32), np.zeros(n_src, np.float32)
    i0 = np.minimum(np.floor(w).astype(np.int64), n_work - 2)
    t = w - i0
    return i0, i0 + 1, (1.0 - t).astype(np.float32), t.astype(np.float32)


def lerp_block(
    e: torch.Tensor, origin: Sequence[int], tables: Sequence[tuple[np.ndarray, ...]], sel: Sequence[np.ndarray]
) -> torch.Tensor:
    """Separable linear interpolation of ``e (C, ex, ey, ez)`` at the selected source indices, axis by axis.

    ``e`` holds working voxels ``origin[a] ...`` on axis ``a``; ``tables[a]`` are the per-source-index
    ``(i0, i1, w0, w1)`` of working axis ``a`` and ``sel[a]`` the source indices to evaluate. Only
    elementwise multiply/add (no fused ops), so each value is independent of the block and of the other
    channels.
    """
    import torch

    for a in range(3):
        i0, i1, w0, w1 = (t[sel[a]] for t in tables[a])
        dim = a + 1
        v0 = torch.index_select(e, dim, torch.from_numpy(i0 - origin[a]).to(e.device))
        v1 = torch.index_select(e, dim, torch.from_numpy(i1 - origin[a]).to(e.device))
        shape = [1, 1, 1, 1]
        shape[dim] = -1
        wa = torch.from_numpy(w0).to(e.device, e.dtype).reshape(shape)
        wb = torch.from_numpy(w1).to(e.device, e.dtype).reshape(shape)
        e = v0 * wa + v1 * wb
    return e


def _argmax0(v: torch.Tensor) -> torch.Tensor:
    """Index of the first maximum along dim 0 (``torch.max(dim=0).indices``: same as argmax, ~2x faster here)."""
    return v.max(dim=0).indices


def _runs(idx: np.ndarray, tile: int) -> list[slice]:
    """Split positions of a monotonic working-index array into runs sharing ``idx // tile``."""
    if len(idx) == 0:
        return []
    b = idx // tile
    cuts = np.flatnonzero(np.diff(b)) + 1
    edges = [0, *cuts.tolist(), len(idx)]
    return [slice(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def interp_argmax(
    e: torch.Tensor,
    origin: Sequence[int],
    tables: Sequence[tuple[np.ndarray, ...]],
    sel: Sequence[np.ndarray],
    tile: int | None = 16,
) -> torch.Tensor:
    """Argmax over classes of :func:`lerp_block` ``(e, origin, tables, sel)``: ``(len(sel[0]), len(sel[1]),
    len(sel[2]))`` int64 class indices in working-axis order.

    With ``tile`` (working voxels per tile edge), classes that cannot win anywhere in a tile are dropped
    before interpolating (see the module docstring); ``tile=None`` interpolates every class. Both give the
    same labels bit for bit.
    """
    import torch

    n0, n1, n2 = (len(s) for s in sel)
    if tile is None or e.shape[0] == 1:
        return _argmax0(lerp_block(e, origin, tables, sel))
    out = torch.empty((n0, n1, n2), dtype=torch.int64, device=e.device)
    lo_hi = []  # per axis: per run, (positions, working lo, working hi) relative to e
    for a in range(3):
        i0 = tables[a][0][sel[a]]
        i1 = tables[a][1][sel[a]]
        runs = []
        for r in _runs(i0, tile):
            runs.append((r, int(min(i0[r].min(), i1[r].min())) - origin[a], int(max(i0[r].max(), i1[r].max())) + 1 - origin[a]))
        lo_hi.append(runs)
    all_classes = torch.arange(e.shape[0], device=e.device)
    for (r0, a0, b0), (r1, a1, b1), (r2, a2, b2) in itertools.product(*lo_hi):
        sub = e[:, a0:b0, a1:b1, a2:b2]
        flat = sub.reshape(sub.shape[0], -1)
        mx = flat.amax(dim=1)
        mn = flat.amin(dim=1)
        scale = float(torch.maximum(mx.abs().max(), mn.abs().max()))
        keep = torch.nonzero(mx >= mn.max() - PRUNE_MARGIN * scale).flatten()
        if len(keep) == 1:
            out[r0, r1, r2] = keep[0]
            continue
        if len(keep) < e.shape[0]:
            sub = sub.index_select(0, keep)
        else:
            keep = all_classes
        sub_origin = (origin[0] + a0, origin[1] + a1, origin[2] + a2)
        v = lerp_block(sub, sub_origin, tables, (sel[0][r0], sel[1][r1], sel[2][r2]))
        out[r0, r1, r2] = keep[_argmax0(v)]
    return out


def _to_source_order(block: torch.Tensor, maps: Sequence[AxisMap]) -> torch.Tensor:
    """Permute a ``(..., a0, a1, a2)`` block in working-axis order to source-axis order."""
    src_axes = [m.src_axis for m in maps]
    lead = block.ndim - 3
    perm = list(range(lead)) + [lead + src_axes.index(j) for j in range(3)]
    return block.permute(perm)


def _chunks(z_sel: np.ndarray, per_index_bytes: int, max_chunk_bytes: int) -> list[np.ndarray]:
    step = max(1, int(max_chunk_bytes) // max(int(per_index_bytes), 1))
    return [z_sel[k : k + step] for k in range(0, len(z_sel), step)]


def invert_and_argmax(
    probs: torch.Tensor,
    maps: Sequence[AxisMap],
    src_shape: Sequence[int],
    dtype: Any = None,
    max_chunk_bytes: int = 64 * 2**20,
    tile: int | None = 16,
) -> torch.Tensor:
    """Linearly resample all of ``probs (C, X, Y, Z)`` to the source grid, then argmax: ``src_shape`` labels.

    Linear interpolation with border clamping (as ``grid_sample(..., padding_mode="border")``), separable
    along the working axes, in chunks along the last working axis (at most ``max_chunk_bytes`` of resampled
    scores at once). This is the unbounded reference of :class:`LinearInverter`.
    """
    import torch

    work = tuple(int(s) for s in probs.shape[1:])
    src_shape = tuple(int(s) for s in src_shape)
    tables = [linear_tables(m, src_shape[m.src_axis], work[a]) for a, m in enumerate(maps)]
    sel = [np.arange(src_shape[m.src_axis]) for m in maps]
    out = torch.empty(src_shape, dtype=dtype or torch_label_dtype(probs.shape[0] - 1), device=probs.device)
    per_z = probs.shape[0] * len(sel[0]) * len(sel[1]) * 4
    for zs in _chunks(sel[2], per_z, max_chunk_bytes):
        lab = interp_argmax(probs, (0, 0, 0), tables, [sel[0], sel[1], zs], tile=tile)
        dst = [slice(None)] * 3
        dst[maps[2].src_axis] = slice(int(zs[0]), int(zs[-1]) + 1)
        out[tuple(dst)] = _to_source_order(lab.to(out.dtype), maps)
    return out


class LinearInverter:
    """Consumer for :func:`slab_sliding_window`: resample finished cells to the source grid and argmax there.

    Bitwise equal to :func:`invert_and_argmax` on the whole probability volume, but holds only the finished
    cells' one-voxel upper faces (for the stencils that straddle cells) and one chunk of at most
    ``max_chunk_bytes`` of resampled probabilities. Cells arrive in an order where all lower neighbours of a
    cell are finished before it (the last window covering a cell never precedes that of a lower neighbour).

    Args:
        plan: the window plan (``plan_windows(image_size, roi, overlap)``) of the sliding window.
        maps: working axis ← source axis maps (:func:`axis_maps_from_affines`).
        src_shape: shape of the source grid.
        dtype: label dtype (default from the channel count).
        max_chunk_bytes: bound on one resampled chunk ``C x n_voxels x 4``.
        device: where the source-grid labels are kept.
        tile: class-pruning tile edge of :func:`interp_argmax` (``None``: no pruning, same labels).

    Use ``inverter = LinearInverter(...); slab_sliding_window(..., finalize=softmax, consumer=inverter)``
    then ``inverter.labels``.
    """

    def __init__(
        self,
        plan: Any,
        maps: Sequence[AxisMap],
        src_shape: Sequence[int],
        dtype: Any = None,
        max_chunk_bytes: int = 64 * 2**20,
        device: Any = "cpu",
        tile: int | None = 16,
    ) -> None:
        import torch

        if len(maps) != 3 or sorted(m.src_axis for m in maps) != [0, 1, 2]:
            raise ValueError(f"maps must map each of the 3 working axes to a distinct source axis, got {maps}.")
        self.maps = tuple(maps)
        self.src_shape = tuple(int(s) for s in src_shape)
        self.work_shape = plan.image_size
        self.dtype = dtype
        self.max_chunk_bytes = int(max_chunk_bytes)
        self.device = torch.device(device)
        self.tile = tile
        self.bounds = []
        for d, b in enumerate(plan.bounds):
            bb = np.unique(np.clip(b - plan.pad_before[d], 0, plan.image_size[d]))
            self.bounds.append(bb)
        self.n_cells = tuple(len(b) - 1 for b in self.bounds)
        self.tables = [
            linear_tables(m, self.src_shape[m.src_axis], self.work_shape[a]) for a, m in enumerate(self.maps)
        ]
        # owned source indices per cell along each working axis: those whose upper stencil index is in the cell
        self.owned = []
        for a in range(3):
            i1 = self.tables[a][1]
            cell_of = np.searchsorted(self.bounds[a], i1, side="right") - 1
            self.owned.append([np.nonzero(cell_of == c)[0] for c in range(self.n_cells[a])])
        self.faces: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self.pending_up: dict[tuple[int, ...], int] = {}
        self.labels: torch.Tensor | None = None
        self.done = 0

    def _cell_of(self, slices: Sequence[slice]) -> tuple[int, ...]:
        cell = []
        for a, s in enumerate(slices):
            c = int(np.searchsorted(self.bounds[a], s.start, side="right") - 1)
            if int(self.bounds[a][c]) != s.start or int(self.bounds[a][c + 1]) != s.stop:
                raise ValueError(f"block {slices} does not match the cell grid on axis {a}.")
            cell.append(c)
        return tuple(cell)

    def __call__(self, slices: tuple[slice, ...], probs: torch.Tensor) -> None:
        import torch

        cell = self._cell_of(slices)
        c_n = probs.shape[0]
        probs = probs.to(self.device)
        if self.labels is None:
            self.labels = torch.zeros(self.src_shape, dtype=self.dtype or torch_label_dtype(c_n - 1), device=self.device)
        lo = [s.start for s in slices]
        ext_lo = [max(lo[a] - 1, 0) for a in range(3)]
        shape = [c_n] + [slices[a].stop - ext_lo[a] for a in range(3)]
        if ext_lo == lo:
            e = probs
        else:
            e = torch.empty(shape, dtype=probs.dtype, device=probs.device)
            inner = tuple(slice(lo[a] - ext_lo[a], None) for a in range(3))
            e[(slice(None), *inner)] = probs
            halo_axes = [a for a in range(3) if ext_lo[a] < lo[a]]
            for r in range(1, len(halo_axes) + 1):
                for sub in itertools.combinations(halo_axes, r):
                    nb = tuple(cell[a] - (1 if a in sub else 0) for a in range(3))
                    face = self.faces[nb][sub[0]]  # last plane of the neighbour along sub[0]
                    src = tuple(slice(-1, None) if a in sub else slice(None) for a in range(3))
                    dst = tuple(slice(0, 1) if a in sub else slice(lo[a] - ext_lo[a], None) for a in range(3))
                    e[(slice(None), *dst)] = face[(slice(None), *src)]
                    self._release(nb)
        # keep this cell's upper faces for its upper neighbours
        ups = sum(1 for sub in _nonempty_subsets(3) if all(cell[a] + 1 < self.n_cells[a] for a in sub))
        if ups:
            self.faces[cell] = [
                probs[(slice(None), *(slice(-1, None) if a == d else slice(None) for a in range(3)))].clone()
                for d in range(3)
            ]
            self.pending_up[cell] = ups
        sel = [self.owned[a][cell[a]] for a in range(3)]
        if all(len(s) for s in sel):
            self._resample(e, ext_lo, sel, c_n)
        self.done += 1

    def _release(self, nb: tuple[int, ...]) -> None:
        """One upper neighbour has used ``nb``'s faces; drop them after the last one."""
        left = self.pending_up[nb] - 1
        if left:
            self.pending_up[nb] = left
        else:
            del self.pending_up[nb], self.faces[nb]

    def _resample(self, e: torch.Tensor, origin: Sequence[int], sel: list[np.ndarray], c_n: int) -> None:
        per_z = c_n * len(sel[0]) * len(sel[1]) * 4
        for zs in _chunks(sel[2], per_z, self.max_chunk_bytes):
            lab = interp_argmax(e, origin, self.tables, [sel[0], sel[1], zs], tile=self.tile).to(self.labels.dtype)
            dst = [None, None, None]
            for a, m in enumerate(self.maps):
                idx = sel[a] if a != 2 else zs
                dst[m.src_axis] = slice(int(idx[0]), int(idx[-1]) + 1)
            self.labels[tuple(dst)] = _to_source_order(lab, self.maps)


def _nonempty_subsets(n: int) -> list[tuple[int, ...]]:
    return [sub for r in range(1, n + 1) for sub in itertools.combinations(range(n), r)]


def resample_labels_nearest(
    labels: torch.Tensor, maps: Sequence[AxisMap], src_shape: Sequence[int], max_chunk_voxels: int = 2**24
) -> torch.Tensor:
    """Nearest-neighbour resampling of working-grid ``labels (X, Y, Z)`` to the source grid, in chunks.

    The working index is ``clip(floor(w + 0.5), 0, n - 1)`` with ``w`` from ``maps``; memory is the output
    plus one chunk. Returns ``src_shape`` labels of ``labels.dtype``.
    """
    import torch

    work = tuple(int(s) for s in labels.shape)
    src_shape = tuple(int(s) for s in src_shape)
    idx = []
    for a, m in enumerate(maps):
        w = m.scale * np.arange(src_shape[m.src_axis], dtype=np.float64) + m.offset
        idx.append(torch.from_numpy(np.clip(np.floor(w + 0.5), 0, work[a] - 1).astype(np.int64)).to(labels.device))
    out = torch.empty(src_shape, dtype=labels.dtype, device=labels.device)
    n0 = len(idx[0])
    step = max(1, max_chunk_voxels // max(len(idx[1]) * len(idx[2]), 1))
    for k in range(0, n0, step):
        blk = labels.index_select(0, idx[0][k : k + step]).index_select(1, idx[1]).index_select(2, idx[2])
        dst = [slice(None)] * 3
        dst[maps[0].src_axis] = slice(k, k + blk.shape[0])
        out[tuple(dst)] = _to_source_order(blk, maps)
    return out
