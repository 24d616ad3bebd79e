"""Image embeddings of volume slices for SAM / SAM 2: the encoder through the one embedding cache
(:mod:`medseg.sam.cache`, also LiteMedSAM's) and background precomputation of neighbouring slices
(:class:`PrecomputeJob`, every family's).

Cache keys are ``(volume fingerprint, axis, slice, intensity rule and window, model id, image size)``. A
prompt on a slice whose embedding is cached never runs the image encoder again.

>>> cache = EmbeddingCache(max_bytes=512 * 1024**2)
>>> enc = SliceEncoder(model, cache)                          # doctest: +SKIP
>>> emb = enc.get(volume, axis=2, index=40, window=window)    # doctest: +SKIP
>>> job = enc.precompute(volume, 2, range(30, 51), window, progress=print)  # doctest: +SKIP
>>> job.cancel(); job.wait()                                  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from medseg.sam.cache import Cached, Embedding, EmbeddingCache, EmbeddingKey, known_fingerprint, volume_fingerprint
from medseg.sam.image import SliceFrame, Window, frame_for, resolve_axis, slice_image
from medseg.sam.models import SamModel
from medseg.sam.registry import Family, PixelNorm
from medseg.types import Volume

__all__ = [
    "volume_fingerprint",
    "known_fingerprint",
    "EmbeddingKey",
    "Cached",
    "Embedding",
    "EmbeddingCache",
    "encode_image",
    "SliceEncoder",
    "PrecomputeJob",
    "ProgressCallback",
]

#: ``progress(done, total)``; called from the worker thread.
ProgressCallback = Callable[[int, int], None]


def _model_input(model: SamModel, image01: np.ndarray) -> object:
    """``(h, w)`` image in [0, 1] → the ``(1, 3, S, S)`` tensor the image encoder takes (padded bottom/right)."""
    import torch
    import torch.nn.functional as F

    s = model.image_size
    x = torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32))[None, None].expand(1, 3, -1, -1)
    x = x.to(model.device)
    if model.pixel_norm is PixelNorm.IMAGENET:
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std  # = SAM's (255 x - pixel_mean) / pixel_std, and SAM 2's normalisation
    h, w = x.shape[-2:]
    return F.pad(x, (0, s - w, 0, s - h), value=0.0)


def encode_image(model: SamModel, image01: np.ndarray) -> dict[str, np.ndarray]:
    """Run the image encoder on one ``(h, w)`` image in [0, 1] (``h, w <= image_size``).

    Returns the features named as in :class:`Embedding`, float32 numpy on the CPU.
    """
    import torch

    if image01.ndim != 2 or max(image01.shape) > model.image_size:
        raise ValueError(f"image must be 2D with sides <= {model.image_size}, got shape {image01.shape}.")
    x = _model_input(model, image01)
    net = model.network
    with torch.inference_mode():
        if model.family is Family.SAM:
            emb = net.image_encoder(x)
            return {"image_embed": emb.float().cpu().numpy()}
        backbone_out = net.forward_image(x)
        _, vision_feats, _, feat_sizes = net._prepare_backbone_features(backbone_out)
        if net.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + net.no_mem_embed
        feats = [f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(vision_feats, feat_sizes)]
        out = {"image_embed": feats[-1]}
        for n, f in enumerate(feats[:-1]):
            out[f"high_res_{n}"] = f
        return {k: v.float().cpu().numpy() for k, v in out.items()}


class PrecomputeJob:
    """Handle of a background precomputation: ``cancel()``, ``wait()``, ``done``, ``computed``, ``error``."""

    def __init__(self, thread: threading.Thread, cancel_event: threading.Event) -> None:
        self._thread = thread
        self.cancel_event = cancel_event
        self.computed: list[int] = []
        self.error: BaseException | None = None

    def cancel(self) -> None:
        """Ask the worker to stop after the slice it is encoding."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Join the worker; True if it finished. Re-raises an error raised in the worker."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @classmethod
    def start(
        cls, todo: Sequence[int], encode: Callable[[int], object], progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None, name: str = "medseg-sam-precompute",
    ) -> PrecomputeJob:
        """Run ``encode(index)`` for each of ``todo`` in order in a daemon thread (every SAM family's
        background embedding: :class:`SliceEncoder` and LiteMedSAM's session).

        Args:
            progress: ``progress(done, total)`` after each slice (called in the worker thread).
            cancel: set it (or call ``job.cancel()``) to stop after the current slice.
        """
        ev = cancel if cancel is not None else threading.Event()
        indices = [int(i) for i in todo]

        def run() -> None:
            try:
                for done, idx in enumerate(indices, start=1):
                    if ev.is_set():
                        return
                    encode(idx)
                    job.computed.append(idx)
                    if progress is not None:
                        progress(done, len(indices))
            except BaseException as exc:  # surfaced by job.wait()
                job.error = exc

        thread = threading.Thread(target=run, name=name, daemon=True)
        job = cls(thread, ev)
        thread.start()
        return job


class SliceEncoder:
    """Embeddings of volume slices for one model, through a cache.

    The encoder runs under a lock (one forward at a time, foreground or background), and a slice being
    encoded by one thread is waited for, not encoded again, by another.
    """

    def __init__(self, model: SamModel, cache: EmbeddingCache | None = None) -> None:
        self.model = model
        self.cache = cache if cache is not None else EmbeddingCache()
        self._encode_lock = threading.Lock()

    def key(self, volume: Volume, axis: int | str, index: int, window: Window) -> EmbeddingKey:
        ax = resolve_axis(axis)
        n = volume.shape[ax]
        if not 0 <= int(index) < n:
            raise IndexError(f"slice index {index} out of range 0..{n - 1} along axis {ax}.")
        return EmbeddingKey(
            volume_fingerprint(volume), ax, int(index), window.key, self.model.model_id, self.model.image_size
        )

    def frame(self, volume: Volume, axis: int | str) -> SliceFrame:
        return frame_for(volume.geometry, axis, self.model.image_size)

    def get(self, volume: Volume, axis: int | str, index: int, window: Window) -> Embedding:
        """The slice's embedding: from the cache, or encoded now (and cached)."""
        key = self.key(volume, axis, index, window)

        def encode() -> Embedding:
            frame = self.frame(volume, key.axis)
            img = slice_image(volume, key.axis, key.index, window, frame)
            with self._encode_lock:
                feats = encode_image(self.model, img)
            return Embedding(feats, frame)

        return self.cache.get_or_compute(key, encode)

    def precompute(
        self,
        volume: Volume,
        axis: int | str,
        indices: Iterable[int],
        window: Window,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> PrecomputeJob:
        """Encode ``indices`` (e.g. the neighbours of the current slice) in a background thread.

        Args:
            progress: ``progress(done, total)`` after each slice (called in the worker thread).
            cancel: set it (or call ``job.cancel()``) to stop after the current slice.
        """
        ax = resolve_axis(axis)
        n = volume.shape[ax]
        todo = [int(i) for i in indices if 0 <= int(i) < n]
        return PrecomputeJob.start(todo, lambda idx: self.get(volume, ax, idx, window), progress, cancel)


def neighbours(index: int, radius: int, n: int) -> list[int]:
    """Slices around ``index`` nearest first (``index``, +1, -1, +2, -2, ...), within ``0..n-1``."""
    out = [index] if 0 <= index < n else []
    for d in range(1, radius + 1):
        out += [i for i in (index + d, index - d) if 0 <= i < n]
    return out


__all__.append("neighbours")
