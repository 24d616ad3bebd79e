"""Embedding cache: the image encoder runs once per slice (counted with a forward hook on the real encoder)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from medseg.sam import EmbeddingCache, SamSession, SlicePrompt, volume_fingerprint
from medseg.sam.embed import Embedding, EmbeddingKey
from medseg.sam.image import frame_for


class EncoderCounter:
    """Counts forward calls of a module through a real forward hook."""

    def __init__(self, module):
        self.calls = 0
        self._h = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1

    def remove(self):
        self._h.remove()


@pytest.fixture()
def counter(tiny_sam):
    c = EncoderCounter(tiny_sam.image_encoder)
    yield c
    c.remove()


def test_encoder_runs_once_per_slice_and_not_for_new_prompts(tiny_sam, ellipsoid, counter):
    vol, _ = ellipsoid
    s = SamSession(tiny_sam, vol, window="ct_soft_tissue", cache=EmbeddingCache())
    s.segment(2, 7, SlicePrompt(points=[(20, 14)], labels=[1]))
    assert counter.calls == 1
    s.segment(2, 7, SlicePrompt(points=[(20, 14), (3, 3)], labels=[1, 0]))
    s.segment(2, 7, SlicePrompt(box=(10, 8, 30, 20)))
    s.segment(2, 7, SlicePrompt(mask=np.ones(s.slice_shape(2), bool)))
    assert counter.calls == 1  # new prompts on a cached slice: no encoder run
    s.segment(2, 8, SlicePrompt(points=[(20, 14)], labels=[1]))
    s.segment(0, 8, SlicePrompt(points=[(10, 5)], labels=[1]))
    assert counter.calls == 3  # another slice, another axis
    # another window is another embedding
    s2 = SamSession(tiny_sam, vol, window="ct_bone", cache=s.cache)
    s2.segment(2, 7, SlicePrompt(points=[(20, 14)], labels=[1]))
    assert counter.calls == 4
    assert s.cache.hits == 3 and len(s.cache) == 4


def test_memory_budget_evicts_least_recently_used(tiny_sam, ellipsoid, counter):
    vol, _ = ellipsoid
    probe = SamSession(tiny_sam, vol, cache=EmbeddingCache())
    one = probe.encoder.get(vol, 2, 0, probe.window).nbytes
    cache = EmbeddingCache(max_bytes=2 * one + one // 2)  # room for two
    s = SamSession(tiny_sam, vol, cache=cache)
    p = SlicePrompt(points=[(5, 5)], labels=[1])
    counter.calls = 0
    s.segment(2, 1, p)
    s.segment(2, 2, p)
    s.segment(2, 1, p)  # 1 is now most recent
    s.segment(2, 3, p)  # evicts 2
    assert counter.calls == 3 and len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert s.is_cached(2, 1) and s.is_cached(2, 3) and not s.is_cached(2, 2)
    s.segment(2, 2, p)
    assert counter.calls == 4


def test_disk_cache_round_trip(tiny_sam, ellipsoid, counter, tmp_path):
    vol, _ = ellipsoid
    s = SamSession(tiny_sam, vol, cache=EmbeddingCache(disk_dir=tmp_path))
    r1 = s.segment(1, 10, SlicePrompt(points=[(20, 6)], labels=[1]))
    assert counter.calls == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    fresh = SamSession(tiny_sam, vol, cache=EmbeddingCache(disk_dir=tmp_path))  # e.g. a new process
    r2 = fresh.segment(1, 10, SlicePrompt(points=[(20, 6)], labels=[1]))
    assert counter.calls == 1 and fresh.cache.disk_hits == 1
    np.testing.assert_array_equal(r1.logits, r2.logits)
    # files are plain npz (no pickle)
    with np.load(next(tmp_path.glob("*.npz")), allow_pickle=False) as z:
        assert "f_image_embed" in z.files


def test_fingerprint_tracks_content(ellipsoid):
    vol, _ = ellipsoid
    same = vol.replace(array=vol.array.copy())
    other = vol.replace(array=vol.array + 1)
    assert volume_fingerprint(vol) == volume_fingerprint(same) != volume_fingerprint(other)


def test_background_precompute_progress_and_cancel(tiny_sam, ellipsoid, counter):
    vol, _ = ellipsoid
    s = SamSession(tiny_sam, vol, cache=EmbeddingCache())
    seen = []
    job = s.precompute(2, index=7, radius=2, progress=lambda d, t: seen.append((d, t)))
    assert job.wait(60)
    assert sorted(job.computed) == [5, 6, 7, 8, 9] and seen[-1] == (5, 5)
    assert counter.calls == 5
    s.segment(2, 9, SlicePrompt(points=[(20, 14)], labels=[1]))
    assert counter.calls == 5  # precomputed slices are served from the cache

    # cancellation: the callback cancels after the second slice; the worker stops there
    cancel = threading.Event()
    done = []

    def progress(d, t):
        done.append(d)
        if d == 2:
            cancel.set()

    job = s.encoder.precompute(vol, 0, range(0, 20), s.window, progress=progress, cancel=cancel)
    assert job.wait(60)
    assert done == [1, 2] and len(job.computed) == 2 and counter.calls == 7


def test_cache_validates_budget(tiny_sam, ellipsoid):
    with pytest.raises(ValueError, match="max_bytes"):
        EmbeddingCache(max_bytes=-1)
    vol, _ = ellipsoid
    f = frame_for(vol.geometry, 2, 256)
    emb = Embedding({"image_embed": np.zeros((1, 4, 2, 2), np.float32)}, f)
    key = EmbeddingKey("v", 2, 0, (0.0, 1.0), "m", 256)
    c = EmbeddingCache(max_bytes=emb.nbytes - 1)  # too big to keep in memory
    c.put(key, emb)
    assert len(c) == 0 and c.get(key) is None


def test_foreground_and_background_never_encode_a_slice_twice(tiny_sam, ellipsoid, counter):
    vol, _ = ellipsoid
    s = SamSession(tiny_sam, vol, cache=EmbeddingCache())
    job = s.precompute(2, index=9, radius=2)  # 9, 10, 8, 11, 7 in a worker thread
    for k in (7, 8, 9, 10, 11):  # the user prompts the same slices meanwhile
        s.segment(2, k, SlicePrompt(points=[(20, 14)], labels=[1]))
    assert job.wait(60)
    assert counter.calls == 5 and len(s.cache) == 5
