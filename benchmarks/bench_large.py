"""Large-volume benchmark: a synthetic whole-body CT through the 105-class ``wholebody-ct`` spec, bounded.

A synthetic 512 x 512 x 1000 CT (0.8 mm pixels, 1 mm slices, int16 HU) is segmented by medseg's own
predictor (``load_predictor(spec).predict(volume)``, the path of ``medseg segment``) with the
``configs/wholebody-ct.yaml`` spec: MONAI's ``wholeBody_ct_segmentation`` network (SegResNet, 105 classes)
and settings (RAS, 1.5 mm, z-score + [-1, 1], ROI 96^3, overlap 0.25, gaussian blending, replicate padding),
with seeded random weights (no weights can be downloaded here). The score volume (~19 GiB of float32 at
1.5 mm) exceeds the predictor's ``options.stream_bytes``, so the windows are stitched cell by cell
(:mod:`medseg.infer.slab`) and

- ``--invert labels`` (the spec's, as the bundle does): each finished cell is argmaxed at 1.5 mm and the
  label map resampled to the source grid (nearest, MONAI's inverse);
- ``--invert probabilities`` (medseg's default for specs): each finished cell's softmax probabilities are
  resampled linearly to the 0.8/1 mm source grid and argmaxed there
  (:class:`medseg.infer.resample.LinearInverter`): the ~110 GB source-grid probability volume never exists.

Prints the peak resident memory (``getrusage``), the time of each stage and the network's share.

    OMP_NUM_THREADS=2 nohup .venv/bin/python benchmarks/bench_large.py > bench_large.log 2>&1 &
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_large.py --invert probabilities
    OMP_NUM_THREADS=2 nohup .venv/bin/python benchmarks/bench_large.py --runtime openvino > bench_large_ov.log 2>&1 &
    .venv/bin/python benchmarks/bench_large.py --shape 160 160 200 --filters 8   # quick check
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)


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


REPO = Path(__file__).resolve().parents[1]


def wholebody_spec(weights: Path, filters: int | None, invert: str | None) -> dict:
    """``configs/wholebody-ct.yaml`` with local seeded weights (and optional overrides)."""
    import yaml

    d = yaml.safe_load((REPO / "configs" / "wholebody-ct.yaml").read_text())
    d["weights"] = {"source": str(weights)}
    if filters is not None:
        d["network"]["args"]["init_filters"] = filters
    if invert is not None:
        d["output"]["invert"] = invert
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 1000], help="source CT shape (voxels)")
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.0], help="source spacing (mm)")
    ap.add_argument("--filters", type=int, default=None, help="SegResNet init_filters (spec: 32)")
    ap.add_argument("--invert", choices=["probabilities", "labels"], default=None, help="default: the spec's (labels)")
    ap.add_argument("--precision", default="float32", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--runtime", default="torch", choices=["torch", "openvino", "auto"],
                    help="the network's runtime (OpenVINO: converted once, cached under $MEDSEG_CACHE/openvino)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = ap.parse_args(argv)

    import torch

    from medseg.config import load_spec
    from medseg.infer.network import build_network
    from perfkit.measure import thread_report
    from medseg.predictor import load_predictor
    from medseg.types import Geometry, SourceInfo, Volume

    torch.set_num_threads(args.threads)
    print(f"threads: {thread_report()}", flush=True)
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    ct = synthetic_ct(tuple(args.shape))
    vol = Volume(ct, Geometry(np.diag([*args.spacing, 1.0]), ct.shape), SourceInfo(path="synthetic-ct", format="nifti"))
    print(f"synthetic CT {ct.shape} {ct.dtype} ({ct.nbytes / 1e9:.2f} GB): {time.perf_counter() - t0:.1f} s, "
          f"RSS {current_rss_gb():.2f} GB", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / "wholebody_seeded.pt"
        spec0 = load_spec(wholebody_spec(w, args.filters, args.invert) | {"weights": {}})
        torch.manual_seed(0)
        net, _ = build_network(spec0.network, spec0.weights)
        torch.save(net.state_dict(), w)
        del net
        spec = load_spec(wholebody_spec(w, args.filters, args.invert))
        t0 = time.perf_counter()
        pred = load_predictor(spec, device="cpu", precision=args.precision, threads=args.threads, runtime=args.runtime)
        print(f"model: {pred.runtime_info.line()}; load {time.perf_counter() - t0:.1f} s, RSS {current_rss_gb():.2f} GB",
              flush=True)

    t_net = [0.0]
    start: list[float] = []
    if hasattr(pred.network, "register_forward_hook"):  # torch: time the forward passes with hooks
        pred.network.register_forward_pre_hook(lambda m, a: start.append(time.perf_counter()))
        pred.network.register_forward_hook(lambda m, a, o: t_net.__setitem__(0, t_net[0] + time.perf_counter() - start.pop()))

    t0 = time.perf_counter()
    pre = pred.preprocess(vol)
    t_pre = time.perf_counter() - t0
    n_cls = spec.n_classes
    full = n_cls * int(np.prod(pre.x.shape[2:])) * 4
    from medseg.engine.plan import Stitch

    streams = pred.plan(pre).stitch is Stitch.CELLS
    print(f"preprocess -> {tuple(pre.x.shape[2:])} at {spec.input.spacing} mm: {t_pre:.1f} s, RSS "
          f"{current_rss_gb():.2f} GB, peak {peak_rss_gb():.2f} GB; full score volume {full / 1e9:.1f} GB -> "
          f"{'streamed' if streams else 'NOT streamed'}; invert {spec.output.invert.value}", flush=True)
    del pre  # predict() preprocesses again: the timing below is the whole user call

    t1 = time.perf_counter()

    def progress(i: int, n: int) -> None:
        if i == n or i % max(1, n // 20) == 0:
            print(f"  window {i}/{n}  {time.perf_counter() - t1:.0f} s  RSS {current_rss_gb():.2f} GB  "
                  f"peak {peak_rss_gb():.2f} GB", flush=True)

    labels = pred.predict(vol, progress=progress)
    t_pred = time.perf_counter() - t1
    if not hasattr(pred.network, "register_forward_hook"):  # OpenVINO counts its own forward passes
        t_net[0] = pred.network.infer_seconds
    lab = labels.array
    counts = np.zeros(n_cls, dtype=np.int64)
    for k in range(lab.shape[2]):  # slice by slice: a whole-volume bincount would make an int64 copy
        counts += np.bincount(lab[:, :, k].ravel(), minlength=n_cls)[:n_cls]
    assert labels.geometry == vol.geometry, "label map is not on the source grid"
    total = time.perf_counter() - t_all
    print(f"labels {lab.shape} {lab.dtype}; {int((counts > 0).sum())} labels present", flush=True)
    print(f"predict (preprocess + windows + stitching + inversion): {t_pred:.1f} s (network {t_net[0]:.1f} s, "
          f"rest {t_pred - t_net[0]:.1f} s)", flush=True)
    print(f"RESULT total {total:.1f} s; peak RSS {peak_rss_gb():.2f} GB (limit 6 GB: "
          f"{'OK' if peak_rss_gb() < 6 else 'EXCEEDED'}); precision {args.precision}; runtime "
          f"{pred.runtime_info.name}; invert {spec.output.invert.value}; load average {os.getloadavg()}; threads {torch.get_num_threads()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
