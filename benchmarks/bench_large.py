"""Large-volume benchmark: a synthetic whole-body CT through a 105-class SegResNet in bounded memory.

A synthetic 512 x 512 x 1000 CT (0.8 mm pixels, 1 mm slices, int16 HU) is resampled to 1.5 mm (273 x 273 x
667), normalised like MONAI's ``wholeBody_ct_segmentation`` bundle (z-score on non-zero voxels, then scaled
to [-1, 1]), run through that bundle's network (SegResNet, init_filters 32, blocks_down [1, 2, 2, 4],
blocks_up [1, 1, 1], 105 classes; seeded random weights: no weights can be downloaded here) with its
inferer settings (ROI 96^3, overlap 0.25, gaussian blending, replicate padding, sw_batch_size 1), and the
softmax probabilities are resampled back to the 0.8/1 mm source grid and argmaxed there (``--invert
probabilities``, medseg's default) or argmaxed at 1.5 mm and resampled nearest (``--invert labels``, the
bundle's way). The stitching and the inversion stream cell by cell (:mod:`medseg.infer.slab`), so the
full 105-class probability volume (~19 GiB at 1.5 mm, ~110 GB at the source grid) never exists.

Prints the peak resident memory (``getrusage``) and the time of each stage.

    OMP_NUM_THREADS=2 nohup .venv/bin/python benchmarks/bench_large.py > bench_large.log 2>&1 &
    .venv/bin/python benchmarks/bench_large.py --shape 128 128 200   # quick check
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (GB = 1e9 bytes; ``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """An int16 CT-like volume: air, an elliptic body of soft tissue, a spine, lungs and a few organs (HU)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    ct = np.full(shape, -1000, dtype=np.int16)
    x = (np.arange(nx) - nx / 2)[:, None] / (nx * 0.42)
    y = (np.arange(ny) - ny / 2)[None, :] / (ny * 0.30)
    body = x**2 + y**2 <= 1.0
    spine = ((np.arange(nx) - nx / 2)[:, None] / (nx * 0.05)) ** 2 + (
        (np.arange(ny) - ny * 0.72)[None, :] / (ny * 0.05)
    ) ** 2 <= 1.0
    lung_l = ((np.arange(nx) - nx * 0.33)[:, None] / (nx * 0.12)) ** 2 + ((np.arange(ny) - ny * 0.45)[None, :] / (ny * 0.15)) ** 2 <= 1
    lung_r = ((np.arange(nx) - nx * 0.67)[:, None] / (nx * 0.12)) ** 2 + ((np.arange(ny) - ny * 0.45)[None, :] / (ny * 0.15)) ** 2 <= 1
    for k in range(nz):
        sl = ct[:, :, k]
        sl[body] = 40
        sl[spine] = 700
        if 0.55 * nz < k < 0.8 * nz:
            sl[lung_l | lung_r] = -850
    # a few organ-like blobs
    for _ in range(12):
        c = rng.uniform([0.3, 0.3, 0.1], [0.7, 0.6, 0.9]) * np.array(shape)
        r = rng.uniform(0.03, 0.08) * nx
        hu = int(rng.integers(-100, 250))
        lo = np.maximum((c - r).astype(int), 0)
        hi = np.minimum((c + r).astype(int) + 1, shape)
        g = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        m = ((g[0] - c[0]) ** 2 + (g[1] - c[1]) ** 2 + ((g[2] - c[2]) * 0.8) ** 2) <= r**2
        ct[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][m] = hu
    noise = rng.normal(0, 15, size=(nx, ny)).astype(np.int16)
    for k in range(nz):  # slice-wise noise keeps temporaries small
        ct[:, :, k] += np.roll(noise, k, axis=0)
    return ct


def resample_to_working(ct: np.ndarray, src_spacing, work_spacing, chunk: int = 16):
    """Linear resampling (border clamp) of the int16 CT to the working grid, in float32, chunk by chunk."""
    import torch

    from medseg.infer.slab import AxisMap, _lerp_block, _linear_tables

    src_shape = ct.shape
    work_shape = tuple(int(round(n * s / w)) for n, s, w in zip(src_shape, src_spacing, work_spacing))
    # here the roles swap: we evaluate the *source* grid at working voxel centres
    tables = [
        _linear_tables(AxisMap(a, work_spacing[a] / src_spacing[a], 0.0), work_shape[a], src_shape[a]) for a in range(3)
    ]
    out = torch.empty(work_shape, dtype=torch.float32)
    src = torch.from_numpy(ct)
    for x0 in range(0, work_shape[0], chunk):
        sel = [np.arange(x0, min(x0 + chunk, work_shape[0])), np.arange(work_shape[1]), np.arange(work_shape[2])]
        i0, i1 = tables[0][0][sel[0]], tables[0][1][sel[0]]
        lo, hi = int(i0.min()), int(i1.max()) + 1
        block = src[lo:hi].float()[None]
        out[sel[0][0] : sel[0][-1] + 1] = _lerp_block(block, (lo, 0, 0), tables, sel)[0]
    return out, work_shape


def normalise_like_bundle(x):
    """NormalizeIntensity(nonzero=True) then ScaleIntensity(-1, 1), in place on a float32 tensor."""
    import torch

    nz = x != 0
    vals = x[nz]
    mean, std = vals.double().mean().item(), vals.double().std().item()
    del vals
    x.sub_(torch.where(nz, mean, 0.0)).div_(torch.where(nz, std if std > 0 else 1.0, 1.0))
    del nz
    lo, hi = x.min().item(), x.max().item()
    x.sub_(lo).mul_(2.0 / (hi - lo)).sub_(1.0)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 1000], help="source CT shape (voxels)")
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.0], help="source spacing (mm)")
    ap.add_argument("--target", type=float, default=1.5, help="working spacing (mm)")
    ap.add_argument("--classes", type=int, default=105)
    ap.add_argument("--filters", type=int, default=32, help="SegResNet init_filters")
    ap.add_argument("--roi", type=int, default=96)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--invert", choices=["probabilities", "labels"], default="probabilities")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--order", default="2", help="window order: 'monai' or the streamed axis (default 2, the long axis)")
    args = ap.parse_args(argv)

    import torch
    from monai.networks.nets import SegResNet

    from medseg.infer.perf import thread_report
    from medseg.infer.slab import (
        AxisMap,
        LinearInverter,
        argmax_finalizer,
        estimate_peak_bytes,
        plan_windows,
        resample_labels_nearest,
        slab_sliding_window,
    )

    torch.set_num_threads(args.threads)
    order = args.order if args.order == "monai" else int(args.order)
    print(f"threads: {thread_report()}", flush=True)
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    ct = synthetic_ct(tuple(args.shape))
    print(f"synthetic CT {ct.shape} {ct.dtype} ({ct.nbytes / 1e9:.2f} GB): {time.perf_counter() - t0:.1f} s, "
          f"RSS {current_rss_gb():.2f} GB", flush=True)

    t0 = time.perf_counter()
    work_sp = (args.target,) * 3
    x, work_shape = resample_to_working(ct, args.spacing, work_sp)
    normalise_like_bundle(x)
    x = x[None, None]
    t_pre = time.perf_counter() - t0
    print(f"preprocess -> {tuple(work_shape)} at {args.target} mm: {t_pre:.1f} s, RSS {current_rss_gb():.2f} GB", flush=True)

    torch.manual_seed(0)
    net = SegResNet(
        spatial_dims=3, in_channels=1, out_channels=args.classes, init_filters=args.filters,
        blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), dropout_prob=0.2,
    ).eval()
    plan = plan_windows(work_shape, args.roi, args.overlap)
    est = estimate_peak_bytes(plan, args.classes, order=order)
    full = args.classes * int(np.prod(work_shape)) * 4
    print(f"windows: {plan.n_windows}; stitching peak (estimated) {est / 1e9:.2f} GB vs full probability volume "
          f"{full / 1e9:.1f} GB", flush=True)

    # source voxel i -> working coordinate i * src_spacing / work_spacing (same origin, same axes)
    maps = tuple(AxisMap(a, args.spacing[a] / args.target, 0.0) for a in range(3))
    autocast = torch.bfloat16 if args.precision == "bfloat16" else None
    t_net = [0.0]

    def predictor(w):
        t = time.perf_counter()
        if autocast is None:
            y = net(w)
        else:
            with torch.autocast("cpu", dtype=autocast):
                y = net(w)
        t_net[0] += time.perf_counter() - t
        return y.float()

    def progress(i, n):
        if i == n or i % max(1, n // 20) == 0:
            el = time.perf_counter() - t0
            print(f"  window {i}/{n}  {el:.0f} s  RSS {current_rss_gb():.2f} GB  peak {peak_rss_gb():.2f} GB", flush=True)

    t0 = time.perf_counter()
    with torch.inference_mode():
        if args.invert == "probabilities":
            inv = LinearInverter(plan, maps, ct.shape)
            slab_sliding_window(
                x, args.roi, predictor, args.overlap, mode="gaussian", padding_mode="replicate", order=order,
                finalize=lambda p: torch.softmax(p, 0), consumer=inv, progress=progress,
            )
            labels = inv.labels
        else:
            work_labels = slab_sliding_window(
                x, args.roi, predictor, args.overlap, mode="gaussian", padding_mode="replicate", order=order,
                finalize=argmax_finalizer("softmax"), progress=progress,
            )
            labels = resample_labels_nearest(work_labels, maps, ct.shape)
    t_inf = time.perf_counter() - t0
    lab_np = labels.numpy()
    counts = np.zeros(args.classes, dtype=np.int64)
    for k in range(lab_np.shape[2]):  # slice by slice: a whole-volume bincount would make an int64 copy
        counts += np.bincount(lab_np[:, :, k].ravel(), minlength=args.classes)[: args.classes]
    total = time.perf_counter() - t_all
    print(f"labels {tuple(labels.shape)} {labels.dtype}; {int((counts > 0).sum())} labels present", flush=True)
    print(f"inference + stitching + inversion: {t_inf:.1f} s (network {t_net[0]:.1f} s)", flush=True)
    print(f"RESULT total {total:.1f} s; peak RSS {peak_rss_gb():.2f} GB (limit 6 GB: "
          f"{'OK' if peak_rss_gb() < 6 else 'EXCEEDED'}); precision {args.precision}; invert {args.invert}; "
          f"order {order}; threads {torch.get_num_threads()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
