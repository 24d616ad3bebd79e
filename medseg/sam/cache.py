"""The one embedding cache of every SAM family: a thread-safe, byte-budgeted LRU of slice embeddings (optionally
on disk), keyed by the volume's content, the plane, the intensity rule and the model.

SAM / SAM 2 (:class:`medseg.sam.embed.SliceEncoder`, :class:`Embedding` values) and LiteMedSAM
(:class:`medseg.sam.protocol.BoxSession`, :class:`~medseg.sam.protocol.PlaneEmbedding` values) keep their
embeddings here and compute a missing one through :meth:`EmbeddingCache.get_or_compute` (once, however many
threads ask). This module imports no model code (the model modules import it).

>>> cache = EmbeddingCache(max_bytes=512 * 1024**2)
>>> emb = cache.get_or_compute(key, lambda: encode(slice))   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from medseg.sam.image import SliceFrame
from medseg.types import Volume

__all__ = ["volume_fingerprint", "known_fingerprint", "EmbeddingKey", "Embedding", "Cached", "EmbeddingCache"]

_FINGERPRINTS: weakref.WeakKeyDictionary[Volume, str] = weakref.WeakKeyDictionary()
_FP_LOCK = threading.Lock()


def volume_fingerprint(volume: Volume) -> str:
    """Content hash of a volume (array bytes, dtype, shape and affine); memoised per Volume object."""
    with _FP_LOCK:
        fp = _FINGERPRINTS.get(volume)
    if fp is not None:
        return fp
    h = hashlib.blake2b(digest_size=16)
    arr = np.ascontiguousarray(volume.array)
    h.update(str((arr.dtype.str, arr.shape)).encode())
    h.update(np.ascontiguousarray(volume.affine, dtype=np.float64).tobytes())
    flat = arr.reshape(-1).view(np.uint8)
    for start in range(0, flat.size, 1 << 26):
        h.update(flat[start : start + (1 << 26)])
    fp = h.hexdigest()
    with _FP_LOCK:
        _FINGERPRINTS[volume] = fp
    return fp


def known_fingerprint(volume: Volume) -> str | None:
    """:func:`volume_fingerprint` if it was computed already, else ``None`` (never hashes: a GUI thread asks
    whether a slice is cached without reading the whole volume)."""
    with _FP_LOCK:
        return _FINGERPRINTS.get(volume)


@dataclass(frozen=True)
class EmbeddingKey:
    """Identity of one slice embedding.

    ``window`` is the ``(low, high)`` intensity clip and ``rule`` how the slice's intensities were made from
    it: ``"window"`` (clip and scale, SAM's windows and LiteMedSAM's CT windows) or ``"percentile"``
    (LiteMedSAM's MR rule: clipped to the non-zero voxels' percentiles, zero stays zero).
    """

    volume: str
    axis: int
    index: int
    window: tuple[float, float]
    model: str
    image_size: int
    rule: str = "window"

    def digest(self) -> str:
        """Stable file-name-safe digest (used by the on-disk cache)."""
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:40]


@dataclass(frozen=True, eq=False)
class Embedding:
    """Encoder output for one slice.

    Args:
        features: named float arrays, each with a leading batch dim of 1. SAM: ``image_embed``
            ``(1, 256, S/16, S/16)``. SAM 2: ``image_embed`` ``(1, 256, S/16, S/16)`` plus
            ``high_res_0`` ``(1, 32, S/4, S/4)`` and ``high_res_1`` ``(1, 64, S/8, S/8)``.
        frame: how the slice sits in the model frame.
    """

    features: dict[str, np.ndarray]
    frame: SliceFrame

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.features.values()))


class Cached(Protocol):
    """What the cache holds: an embedding that knows its size (:class:`Embedding`, LiteMedSAM's
    :class:`~medseg.sam.protocol.PlaneEmbedding`)."""

    @property
    def nbytes(self) -> int: ...


E = TypeVar("E", bound=Cached)


class EmbeddingCache:
    """Thread-safe LRU cache of embeddings with a memory budget, optionally backed by a directory.

    Args:
        max_bytes: memory budget; least recently used entries are evicted beyond it. An entry larger
            than the budget is not kept in memory (only on disk, if enabled); ``0`` keeps nothing.
        disk_dir: if set, every :class:`Embedding` (SAM, SAM 2) is also written there as ``<digest>.npz``
            (``np.savez``, loaded with ``allow_pickle=False``) and read back on a memory miss. LiteMedSAM's
            plane embeddings (torch tensors its decoder reuses by identity) stay in memory only.
    """

    def __init__(self, max_bytes: int = 1 << 30, disk_dir: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}.")
        self.max_bytes = int(max_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        self._items: OrderedDict[EmbeddingKey, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self._inflight: dict[EmbeddingKey, tuple[threading.Event, list[Any]]] = {}
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0

    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: EmbeddingKey) -> bool:
        with self._lock:
            if key in self._items:
                return True
        return self._disk_path(key) is not None and self._disk_path(key).is_file()  # type: ignore[union-attr]

    def keys(self) -> list[EmbeddingKey]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Drop the in-memory entries (the disk cache stays)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def get(self, key: EmbeddingKey) -> Any | None:
        with self._lock:
            emb = self._items.get(key)
            if emb is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return emb
        emb = self._load(key)
        if emb is not None:
            self.disk_hits += 1
            self._remember(key, emb)
            return emb
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: EmbeddingKey, emb: Cached) -> None:
        self._remember(key, emb)
        self._save(key, emb)

    def get_or_compute(self, key: EmbeddingKey, compute: Callable[[], E]) -> E:
        """The cached entry of ``key``, or ``compute()``'s result, stored (the one way embeddings enter the cache).

        ``compute`` runs once per missing key: another thread asking for the same key meanwhile (e.g. a
        prompt while the background precompute encodes that slice) waits for it and gets the same object,
        even when the budget keeps nothing. An error in ``compute`` is raised in the thread that ran it; a
        waiting thread then computes the entry itself.
        """
        while True:
            emb = self.get(key)
            if emb is not None:
                return emb
            with self._lock:
                flight = self._inflight.get(key)
                mine = flight is None
                if mine:
                    flight = self._inflight[key] = (threading.Event(), [])
            event, result = flight  # type: ignore[misc]
            if mine:
                break
            event.wait()
            if result:
                return result[0]
        try:
            emb = compute()
            self.put(key, emb)
            result.append(emb)
            return emb
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()

    def _remember(self, key: EmbeddingKey, emb: Cached) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if emb.nbytes > self.max_bytes:
                return
            self._items[key] = emb
            self._bytes += emb.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, ev = self._items.popitem(last=False)
                self._bytes -= ev.nbytes

    def _disk_path(self, key: EmbeddingKey) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key.digest()}.npz"

    def _save(self, key: EmbeddingKey, emb: Cached) -> None:
        path = self._disk_path(key)
        if path is None or not isinstance(emb, Embedding) or path.exists():
            return
        f = emb.frame
        meta = json.dumps(
            {"key": key.__dict__, "frame": [f.axis, list(f.slice_shape), list(f.pixel_spacing), f.image_size,
                                             list(f.content_shape)]}
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, __meta__=np.array(meta), **{f"f_{k}": v for k, v in emb.features.items()})
        os.replace(tmp, path)

    def _load(self, key: EmbeddingKey) -> Embedding | None:
        path = self._disk_path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                feats = {k[2:]: np.array(z[k]) for k in z.files if k.startswith("f_")}
        except (OSError, ValueError, KeyError):
            return None  # unreadable cache file: recompute (and it will be rewritten)
        if meta.get("key") != json.loads(json.dumps(key.__dict__)):
            return None
        ax, ss, ps, size, cs = meta["frame"]
        frame = SliceFrame(int(ax), tuple(ss), tuple(ps), int(size), tuple(cs))  # type: ignore[arg-type]
        return Embedding(feats, frame)
