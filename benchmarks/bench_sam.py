"""SAM ViT-B and SAM 2(.1) hiera-tiny at full size (random weights) on this CPU: encoder time per slice
and prompt-to-mask latency with a cached embedding, for 1 and 2 torch threads.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sam.py [--threads 1 2] [--repeats 5]``.
Weights are random (no hub here); timings depend only on the architecture. Wall times are only meaningful
on an idle machine: the line also prints process CPU time and the load average (with one thread and other
processes competing, CPU time is the better estimate of the idle wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def _volume():
    from medseg.types import Geometry, SourceInfo, Volume

    rng = np.random.default_rng(0)
    arr = rng.normal(40, 30, (512, 512, 6)).astype(np.float32)
    return Volume(arr, Geometry(np.diag([0.8, 0.8, 2.5, 1.0]), arr.shape), SourceInfo(modality="CT"))


def bench(model, name: str, threads: int, repeats: int) -> None:
    import torch

    from medseg.sam import EmbeddingCache, SamSession, SlicePrompt

    torch.set_num_threads(threads)
    vol = _volume()
    s = SamSession(model, vol, cache=EmbeddingCache())
    enc, enc_cpu = [], []
    for k in range(min(repeats, vol.shape[2])):
        t, c = time.perf_counter(), time.process_time()
        s.encoder.get(vol, 2, k, s.window)
        enc.append(time.perf_counter() - t)
        enc_cpu.append(time.process_time() - c)
    prompts = [
        SlicePrompt(points=[(256, 256)], labels=[1]),
        SlicePrompt(points=[(256, 256), (100, 100)], labels=[1, 0]),
        SlicePrompt(box=(200, 200, 320, 330)),
    ]
    s.segment(2, 0, prompts[0])  # warm-up
    lat, lat_cpu = [], []
    for _ in range(repeats):
        for p in prompts:
            t, c = time.perf_counter(), time.process_time()
            s.segment(2, 0, p)
            lat.append(time.perf_counter() - t)
            lat_cpu.append(time.process_time() - c)
    print(
        f"{name:22s} threads={threads}  encoder/slice: median {statistics.median(enc[1:] or enc):6.2f} s"
        f"  (first {enc[0]:.2f} s)   prompt->mask (cached, 512x512 slice): median "
        f"{1000 * statistics.median(lat):6.1f} ms, max {1000 * max(lat):6.1f} ms"
        f"   [process CPU time: encoder {statistics.median(enc_cpu):.2f} s, prompt {1000 * statistics.median(lat_cpu):.1f} ms;"
        f" load average {os.getloadavg()[0]:.1f}]",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--only", choices=["sam", "sam2"], default=None)
    args = ap.parse_args()
    from medseg.sam import build_sam2_network, build_sam_network, wrap_network

    models = []
    if args.only in (None, "sam"):
        models.append(("SAM ViT-B (1024)", wrap_network(build_sam_network(seed=0), "vit_b-random")))
    if args.only in (None, "sam2"):
        net = build_sam2_network("configs/sam2.1/sam2.1_hiera_t.yaml", seed=0)
        models.append(("SAM 2.1 hiera-t (1024)", wrap_network(net, "hiera_t-random")))
    for name, m in models:
        for th in args.threads:
            bench(m, name, th, args.repeats)


if __name__ == "__main__":
    main()
