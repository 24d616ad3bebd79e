"""Bounded-memory sliding-window inference: stitch in cells, finalise each cell as soon as it is complete.

MONAI's :func:`monai.inferers.sliding_window_inference` allocates a ``(1, C, X, Y, Z)`` float output and a
count map for the whole scan. For a 105-class model on a whole-body CT at 1.5 mm that is ~20 GB. This module
produces the *same numbers* without ever holding them for the whole scan:

- The padded image is cut into **cells** by every window boundary along each axis, so each cell is covered
  by a fixed set of windows. Windows run in MONAI's order (``dense_patch_slices``: first spatial axis
  slowest), with MONAI's batches of ``sw_batch_size`` windows, importance map and padding.
- Each cell keeps its own accumulator (``+= logits * importance``, exactly MONAI's operations in MONAI's
  order) and is **finalised** right after the last window covering it: divided by its count map (the sum
  of the same importance maps in the same order), cropped to the unpadded image and handed to a consumer
  (by default ``argmax`` into a ``uint8``/``uint16`` label array) and freed.

Because every voxel sees the same floating-point operations in the same order as MONAI's unbuffered
computation, the stitched values are bitwise equal to it, so labels are identical. Peak memory is the cells
alive between their first and last window: about one window-row of overlap across the scan instead of the
whole scan (see :func:`estimate_peak_bytes`).

The inversion back to the source grid is bounded the same way: :class:`medseg.infer.resample.LinearInverter`
is a ``consumer`` that resamples each finalised cell's probabilities into the source grid and takes the
argmax there (bitwise equal to :func:`medseg.infer.resample.invert_and_argmax` on the whole volume).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.config import BlendMode  # one definition, shared with model specs
from medseg.engine.options import check_overlap

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BlendMode",
    "PaddingMode",
    "WindowPlan",
    "plan_windows",
    "slab_sliding_window",
    "estimate_peak_bytes",
    "window_order",
    "stream_decide",
]


class PaddingMode(str, Enum):
    """Padding of inputs smaller than the ROI (``torch.nn.functional.pad`` modes)."""

    CONSTANT = "constant"
    REFLECT = "reflect"
    REPLICATE = "replicate"
    CIRCULAR = "circular"


def _option(value: Any, enum: type[Enum], name: str) -> Any:
    try:
        return enum(value.value if isinstance(value, Enum) else value)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.") from None


# ---------------------------------------------------------------------------------------------------------
# window plan


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows go, exactly as MONAI places them.

    Attributes:
        image_size: spatial size of the input ``(X, Y, Z)``.
        padded_size: size after padding inputs smaller than ``roi`` (``>= roi`` on every axis).
        roi: window size.
        pad_before: voxels padded before the image on each axis (the rest goes after).
        starts: ``(N, 3)`` window start corners in the padded image, in MONAI's processing order.
        bounds: per axis, the sorted cell boundaries (every window start and end, plus 0 and the size).
    """

    image_size: tuple[int, ...]
    padded_size: tuple[int, ...]
    roi: tuple[int, ...]
    pad_before: tuple[int, ...]
    starts: np.ndarray
    bounds: tuple[np.ndarray, ...]

    @property
    def n_windows(self) -> int:
        return int(self.starts.shape[0])

    @property
    def n_cells(self) -> tuple[int, ...]:
        return tuple(len(b) - 1 for b in self.bounds)

    def cell_range(self, w: int) -> tuple[tuple[int, int], ...]:
        """Per axis ``(first, stop)`` cell indices covered by window ``w``."""
        out = []
        for d, b in enumerate(self.bounds):
            s = int(self.starts[w, d])
            lo = int(np.searchsorted(b, s))
            hi = int(np.searchsorted(b, s + self.roi[d]))
            out.append((lo, hi))
        return tuple(out)


def plan_windows(image_size: Sequence[int], roi_size: Sequence[int] | int, overlap: Sequence[float] | float) -> WindowPlan:
    """Window positions of ``monai.inferers.sliding_window_inference`` for an image of ``image_size``.

    Args:
        image_size: spatial size ``(X, Y, Z)`` of the unpadded input.
        roi_size: window size; an int is used on every axis; ``None``/non-positive entries take the image size.
        overlap: fraction of overlap between windows in ``[0, 1)``, per axis or one value.

    >>> p = plan_windows((100, 50, 30), (64, 64, 64), 0.5)
    >>> p.padded_size, p.starts.shape
    ((100, 64, 64), (3, 3))
    """
    from monai.data.utils import dense_patch_slices

    image_size_ = tuple(int(s) for s in image_size)
    nd = len(image_size_)
    if nd < 1 or min(image_size_) < 1:
        raise ValueError(f"image_size must be positive ints, got {image_size}.")
    roi_in = (roi_size,) * nd if isinstance(roi_size, (int, np.integer)) or roi_size is None else tuple(roi_size)
    if len(roi_in) != nd:
        raise ValueError(f"roi_size {roi_size} does not match the {nd} spatial dims of {image_size_}.")
    roi = tuple(image_size_[i] if (r is None or int(r) <= 0) else int(r) for i, r in enumerate(roi_in))
    ov = (float(overlap),) * nd if isinstance(overlap, (int, float)) else tuple(float(o) for o in overlap)
    if len(ov) != nd:
        raise ValueError(f"overlap {overlap} does not match the {nd} spatial dims.")
    ov = tuple(check_overlap(o) for o in ov)
    padded = tuple(max(image_size_[i], roi[i]) for i in range(nd))
    pad_before = tuple(max(roi[i] - image_size_[i], 0) // 2 for i in range(nd))
    interval = []
    for i in range(nd):  # monai.inferers.utils._get_scan_interval
        if roi[i] == padded[i]:
            interval.append(roi[i])
        else:
            step = int(roi[i] * (1 - ov[i]))
            interval.append(step if step > 0 else 1)
    slices = dense_patch_slices(padded, roi, interval, return_slice=False)
    starts = np.asarray([[s[0] for s in win] for win in slices], dtype=np.int64).reshape(-1, nd)
    bounds = []
    for d in range(nd):
        b = np.unique(np.concatenate([[0, padded[d]], starts[:, d], starts[:, d] + roi[d]]))
        bounds.append(b.astype(np.int64))
    return WindowPlan(image_size_, padded, roi, pad_before, starts, tuple(bounds))


def estimate_peak_bytes(plan: WindowPlan, n_classes: int, itemsize: int = 4, order: str | int = "monai") -> int:
    """Largest total size (bytes) of the cell accumulators alive at once during :func:`slab_sliding_window`."""
    touched, last = _cell_schedule(plan, window_order(plan, order))
    sizes = np.ones(plan.n_cells, dtype=np.int64)
    for d, b in enumerate(plan.bounds):
        shape = [1] * len(plan.bounds)
        shape[d] = -1
        sizes = sizes * np.diff(b).reshape(shape)
    first = touched.ravel()
    lastf = last.ravel()
    s = sizes.ravel()
    delta = np.zeros(plan.n_windows + 1, dtype=np.int64)
    np.add.at(delta, first, s)
    np.add.at(delta, lastf + 1, -s)
    return int(np.cumsum(delta).max()) * int(n_classes) * int(itemsize)


def window_order(plan: WindowPlan, order: str | int = "monai") -> np.ndarray:
    """Processing order of the windows: MONAI's (``"monai"``), or streamed along spatial axis ``order``.

    Streaming along an axis sorts the windows stably by their start on that axis (MONAI's order within
    each row), so the live cells span one row of overlap across the other two axes. Choose the longest axis.
    """
    n = plan.n_windows
    if isinstance(order, str):
        if order != "monai":
            raise ValueError(f"order must be 'monai' or a spatial axis 0..{len(plan.roi) - 1}, got {order!r}.")
        return np.arange(n)
    axis = int(order)
    if not -len(plan.roi) <= axis < len(plan.roi):
        raise ValueError(f"order must be 'monai' or a spatial axis 0..{len(plan.roi) - 1}, got {order!r}.")
    return np.argsort(plan.starts[:, axis], kind="stable")


def _cell_schedule(plan: WindowPlan, seq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First and last position in ``seq`` (processing order) of a window touching each cell."""
    seq = np.arange(plan.n_windows) if seq is None else seq
    first = np.full(plan.n_cells, -1, dtype=np.int64)
    last = np.full(plan.n_cells, -1, dtype=np.int64)
    for pos, w in enumerate(seq):
        idx = tuple(slice(lo, hi) for lo, hi in plan.cell_range(int(w)))
        sub = first[idx]
        sub[sub < 0] = pos
        first[idx] = sub
        last[idx] = pos
    if (last < 0).any():  # pragma: no cover - dense_patch_slices always covers the image
        raise RuntimeError("sliding-window plan leaves cells uncovered.")
    return first, last


# ---------------------------------------------------------------------------------------------------------
# the default finaliser


def _argmax_labels(p: torch.Tensor) -> torch.Tensor:
    """``probs (C, x, y, z) -> labels (x, y, z)``: :class:`medseg.engine.decision.Decision`'s argmax."""
    from medseg.engine.decision import Decision

    return Decision(max_id=p.shape[0] - 1).labels(p)


# ---------------------------------------------------------------------------------------------------------
# the stitcher


def slab_sliding_window(
    inputs: torch.Tensor,
    roi_size: Sequence[int] | int,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    overlap: Sequence[float] | float = 0.25,
    *,
    sw_batch_size: int = 1,
    mode: BlendMode | str = BlendMode.CONSTANT,
    sigma_scale: Sequence[float] | float = 0.125,
    padding_mode: PaddingMode | str = PaddingMode.CONSTANT,
    cval: float = 0.0,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    finalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    consumer: Callable[[tuple[slice, ...], torch.Tensor], None] | None = None,
    order: str | int = "monai",
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor | None:
    """Sliding-window inference of ``predictor`` over ``inputs`` in bounded memory.

    Same windows, batches, padding, importance map and arithmetic as
    ``monai.inferers.sliding_window_inference(inputs, roi_size, sw_batch_size, predictor, overlap, mode,
    sigma_scale, padding_mode, cval)`` (single tensor output of the input's spatial size); the stitched,
    normalised values of each cell are bitwise equal to MONAI's, but are finalised cell by cell.

    Args:
        inputs: ``(1, C_in, X, Y, Z)`` tensor (float; its dtype is the accumulation dtype, as in MONAI).
        roi_size: window size (int or per axis).
        predictor: ``(B, C_in, *roi) -> (B, C, *roi)``; run under the caller's no-grad/autocast context.
        overlap: overlap fraction in ``[0, 1)``.
        sw_batch_size: windows per predictor call (MONAI's batching).
        mode: ``"constant"`` or ``"gaussian"`` blending.
        sigma_scale: gaussian sigma as a fraction of the ROI.
        padding_mode: ``"constant"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` for inputs smaller
            than the ROI.
        cval: fill value for constant padding.
        sw_device: device the windows run on (default: the input's).
        device: device where cells are stitched (default: the input's). On CUDA, windows on the GPU with
            ``device="cpu"`` keep GPU memory at one window batch.
        finalize: ``probs (C, x, y, z) -> out (..., x, y, z)`` applied to each finished cell; default
            argmax (labels in uint8/uint16); ``lambda p: p`` keeps the probabilities, a
            :class:`medseg.engine.decision.Decision`'s ``labels`` method applies that decision.
        consumer: if given, called as ``consumer(out_slices, block)`` with each finished cell's finalised
            block and its spatial slices in the unpadded image; nothing is assembled and ``None`` returned.
        order: ``"monai"`` (default): MONAI's window order, bitwise-equal values. An axis ``0..2``: stream
            along that axis (use the longest one) for a smaller peak; every voxel then adds the same
            terms in another order, so values may differ from MONAI's in the last bit (labels only at exact
            float ties). :func:`estimate_peak_bytes` tells the peak of either.
        progress: ``progress(done_windows, total_windows)`` after each batch.

    Returns:
        The finalised output ``(..., X, Y, Z)`` on ``device`` (e.g. ``uint8`` labels), or ``None`` when
        ``consumer`` is given.

    >>> import torch
    >>> net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()
    >>> with torch.no_grad():
    ...     labels = slab_sliding_window(torch.rand(1, 1, 40, 30, 20), 16, net, 0.5)
    >>> labels.shape, labels.dtype
    (torch.Size([40, 30, 20]), torch.uint8)
    """
    import torch
    import torch.nn.functional as F
    from monai.data.utils import compute_importance_map

    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}.")
    if inputs.ndim < 3:
        raise ValueError(f"inputs must be (1, C, *spatial), got shape {tuple(inputs.shape)}.")
    if inputs.shape[0] != 1:
        raise ValueError(f"inputs must have batch size 1, got shape {tuple(inputs.shape)}.")
    if int(sw_batch_size) < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}.")
    mode = _option(mode, BlendMode, "mode")
    padding_mode = _option(padding_mode, PaddingMode, "padding_mode")
    if inputs.__class__ is not torch.Tensor:  # MetaTensor etc.: plain tensor, as MONAI's convert_data_type
        inputs = inputs.as_tensor() if hasattr(inputs, "as_tensor") else torch.as_tensor(inputs)
    nd = inputs.ndim - 2
    compute_dtype = inputs.dtype
    device = torch.device(device) if device is not None else inputs.device
    sw_device = torch.device(sw_device) if sw_device is not None else inputs.device
    finalize = finalize or _argmax_labels

    plan = plan_windows(tuple(inputs.shape[2:]), roi_size, overlap)
    roi = plan.roi
    pad_size: list[int] = []
    for k in range(nd - 1, -1, -1):
        diff = plan.padded_size[k] - plan.image_size[k]
        pad_size.extend([diff // 2, diff - diff // 2])
    if any(pad_size):
        inputs = F.pad(inputs, pad=pad_size, mode=padding_mode.value, value=cval)

    imp = compute_importance_map(roi, mode=mode.value, sigma_scale=sigma_scale, device=sw_device, dtype=compute_dtype)
    w_t = imp.to(dtype=compute_dtype, device=sw_device)[None, None]
    w_dev = w_t.to(device)[0, 0]

    seq = window_order(plan, order)
    first, last = _cell_schedule(plan, seq)
    n_win = plan.n_windows
    bounds = plan.bounds
    # cells finishing after window w, in lexicographic cell order
    finish_at: dict[int, list[tuple[int, ...]]] = {}
    for cell in itertools.product(*(range(n) for n in plan.n_cells)):
        finish_at.setdefault(int(last[cell]), []).append(cell)
    ranges = [plan.cell_range(w) for w in range(n_win)]

    acc: dict[tuple[int, ...], torch.Tensor] = {}
    out: torch.Tensor | None = None
    n_out: int | None = None

    def cell_box(cell: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        return tuple((int(bounds[d][cell[d]]), int(bounds[d][cell[d] + 1])) for d in range(nd))

    def finish(cell: tuple[int, ...]) -> None:
        nonlocal out
        a = acc.pop(cell)
        box = cell_box(cell)
        # crop to the unpadded image (MONAI crops after dividing; the division is elementwise)
        crop, dst = [], []
        for d, (lo, hi) in enumerate(box):
            plo, phi = plan.pad_before[d], plan.pad_before[d] + plan.image_size[d]
            clo, chi = max(lo, plo), min(hi, phi)
            if chi <= clo:
                return
            crop.append(slice(clo - lo, chi - lo))
            dst.append(slice(clo - plo, chi - plo))
        count = torch.zeros([hi - lo for lo, hi in box], dtype=compute_dtype, device=device)
        for w in sorted(int(seq[q]) for q in range(int(first[cell]), int(last[cell]) + 1)):  # MONAI's order
            r = ranges[w]
            if all(r[d][0] <= cell[d] < r[d][1] for d in range(nd)):
                count += w_dev[tuple(slice(lo - int(plan.starts[w, d]), hi - int(plan.starts[w, d])) for d, (lo, hi) in enumerate(box))]
        a /= count
        a = a[(slice(None), *crop)]
        block = finalize(a)
        del a
        if consumer is not None:
            consumer(tuple(dst), block)
            return
        if out is None:
            out = torch.empty((*block.shape[:-nd], *plan.image_size), dtype=block.dtype, device=device)
        out[(..., *dst)] = block

    for b0 in range(0, n_win, int(sw_batch_size)):
        poss = list(range(b0, min(b0 + int(sw_batch_size), n_win)))
        wins = [int(seq[q]) for q in poss]
        sl = [tuple(slice(int(s), int(s) + roi[d]) for d, s in enumerate(plan.starts[w])) for w in wins]
        if len(wins) > 1:
            win_data = torch.cat([inputs[(slice(0, 1), slice(None), *s)] for s in sl]).to(sw_device)
        else:
            win_data = inputs[(slice(0, 1), slice(None), *sl[0])].to(sw_device)
        seg = predictor(win_data)
        if not isinstance(seg, torch.Tensor):
            raise TypeError(f"predictor must return a tensor, got {type(seg).__name__}.")
        if tuple(seg.shape[2:]) != tuple(roi) or seg.shape[0] != len(wins):
            raise ValueError(f"predictor output shape {tuple(seg.shape)} does not match windows ({len(wins)}, C, {roi}).")
        seg *= w_t
        seg = seg.to(device)
        if n_out is None:
            n_out = int(seg.shape[1])
        for p, w in zip(seg, wins):
            for cell in itertools.product(*(range(lo, hi) for lo, hi in ranges[w])):
                box = cell_box(cell)
                a = acc.get(cell)
                if a is None:
                    a = acc[cell] = torch.zeros((n_out, *[hi - lo for lo, hi in box]), dtype=compute_dtype, device=device)
                src = tuple(slice(lo - int(plan.starts[w, d]), hi - int(plan.starts[w, d])) for d, (lo, hi) in enumerate(box))
                a += p[(slice(None), *src)]
        del seg, win_data, p
        for q in poss:
            for cell in finish_at.pop(q, ()):
                finish(cell)
        if progress is not None:
            progress(poss[-1] + 1, n_win)
    if acc:  # pragma: no cover - every cell has a last window
        raise RuntimeError(f"{len(acc)} cells were never finalised.")
    return out


# ---------------------------------------------------------------------------------------------------------
# predictor-facing entry point


def stream_decide(
    x: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    inferer: Any,
    activation: Any,
    decision: Any,
    *,
    sw_device: torch.device | str | None = None,
    autocast_ctx: Callable[[], Any] | None = None,
    progress: Callable[[int], None] | None = None,
    order: str | int = "monai",
    invert_to: tuple[Sequence[Any], Sequence[int]] | None = None,
    margins: Any = None,
) -> np.ndarray:
    """Bounded counterpart of "sliding window → activation → decision (→ inversion)".

    Runs the spec's sliding window (``inferer``: a :class:`medseg.config.InfererSpec`, no TTA flips) in cells
    and applies ``activation`` to each finished cell, without ever holding the ``(C, X, Y, Z)`` scores. Then
    either:

    - ``invert_to=None``: ``decision`` on the working grid, so the result equals
      ``decision(activate(sliding_window_inference(x)[0], activation))`` (``invert: labels`` specs; the
      caller resamples the label map, one byte per voxel);
    - ``invert_to=(maps, src_shape)``: each cell's scores are resampled linearly to the source grid
      and argmaxed there by :class:`medseg.infer.resample.LinearInverter`, so the result equals
      :func:`medseg.infer.resample.invert_and_argmax` of the full activated scores (``invert:
      probabilities`` specs with an argmax decision).

    Args:
        x: ``(1, C_in, X, Y, Z)`` float32 network input.
        network: the network (called under ``autocast_ctx``; its output is cast to float32 as the engine does).
        inferer: the spec's :class:`medseg.config.InfererSpec`.
        activation: the spec's output activation (:func:`medseg.postprocess.activate`).
        decision: the :class:`medseg.engine.decision.Decision` (its dtype is also the inverted labels').
        sw_device: device the windows run on (cells are stitched on the input's device).
        progress: called with the number of windows just processed.
        order: window order, see :func:`slab_sliding_window`.
        invert_to: axis maps (:func:`medseg.infer.resample.axis_maps_from_affines`) and source shape for the
            inversion.
        margins: a :class:`medseg.engine.decision.Margins` the decision margins of each finished cell are
            added to (the quality score, on the working grid), or ``None``.

    Returns:
        ``(X, Y, Z)`` working-grid or source-grid label map (``decision.dtype``).
    """
    import contextlib

    import torch

    from medseg.postprocess import activate

    if getattr(inferer, "tta_flips", ()):
        raise ValueError("stream_decide does not average test-time flips; run without TTA or use the full path.")
    ctx = autocast_ctx or contextlib.nullcontext

    def run(w: torch.Tensor) -> torch.Tensor:
        with ctx():
            y = network(w)
        if progress is not None:
            progress(int(w.shape[0]))
        return y.float()

    def activated(p: torch.Tensor) -> torch.Tensor:
        p = activate(p, activation)
        decision.tally(p, margins)  # each working-grid voxel belongs to exactly one finished cell
        return p

    inverter = None
    if invert_to is not None:
        from medseg.infer.resample import LinearInverter

        maps, src_shape = invert_to
        inverter = LinearInverter(plan_windows(tuple(x.shape[2:]), tuple(inferer.roi_size), inferer.overlap),
                                  maps, src_shape, dtype=decision.torch_dtype)
        finalize = activated
    else:
        def finalize(p: torch.Tensor) -> torch.Tensor:
            return decision.labels(activated(p))

    with torch.inference_mode():
        out = slab_sliding_window(
            x, tuple(inferer.roi_size), run, inferer.overlap, sw_batch_size=inferer.sw_batch_size,
            mode=getattr(inferer.blend, "value", inferer.blend), padding_mode=inferer.padding_mode,
            sw_device=sw_device, finalize=finalize, order=order, consumer=inverter,
        )
    if inverter is not None:
        return inverter.labels.cpu().numpy()
    return out.cpu().numpy()
