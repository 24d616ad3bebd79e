"""Reduced precision judged against float32 on a *trained* network: Dice per label, time ratio.

Seeded random weights give near-uniform class probabilities, so any rounding flips labels and says little
about a trained model. No trained multi-class CT network can be downloaded here, so this benchmark trains
one briefly: a small SegResNet (init_filters 8) on TotalSegmentator's own test case (``example_ct_sm``, 3 mm,
its 41 reference structures from ``example_seg``; real data from ``../shared/data``), with MONAI's
``DiceCELoss``, seeded. It then segments the same CT with medseg's sliding window in float32 and under
``bfloat16`` and ``float16`` autocast, and with OpenVINO in float32 and (on CPUs with native bfloat16:
AVX512-BF16/AMX) bfloat16 (``INFERENCE_PRECISION_HINT=bf16``), and reports for each: time against torch
float32 (and bfloat16's against OpenVINO float32), identical voxels, Dice per label against torch's float32
labels (minimum, median, how many reach 0.999). That Dice >= 0.999 on every label is the bar for
``precision=auto`` to pick a lower precision on a CPU (:func:`medseg.engine.openvino.auto_precision`).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_precision.py            # ~5 min on 2 AVX2 cores

On CPUs without oneDNN bfloat16/float16 convolution kernels (AVX2) the reduced precisions run ~100x slower
than float32 (PyTorch falls back to ``slow_conv3d``); ``precision=auto`` therefore keeps float32 there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "TotalSegmentator" / "tests" / "reference_files"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=300, help="training iterations (random 64x64x32 crops)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--skip-autocast", action="store_true", help="no torch bfloat16/float16 autocast rows")
    ap.add_argument("--skip-openvino", action="store_true", help="no OpenVINO float32/bfloat16 rows")
    args = ap.parse_args(argv)

    ct_path, seg_path = args.data / "example_ct_sm.nii.gz", args.data / "example_seg.nii.gz"
    if not (ct_path.is_file() and seg_path.is_file()):
        print(f"real data not found under {args.data}: nothing to measure")
        return 0

    import nibabel as nib
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import SegResNet

    from perfkit.measure import autocast_context, dice_per_label, thread_report
    from medseg.infer.slab import slab_sliding_window

    torch.set_num_threads(args.threads)
    print(f"threads: {thread_report()}", flush=True)
    ct = np.asarray(nib.load(str(ct_path)).get_fdata(dtype=np.float32))
    seg = np.asarray(nib.load(str(seg_path)).dataobj).astype(np.int64)
    ids = np.unique(seg)
    lut = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    lut[ids] = np.arange(len(ids))
    target = lut[seg]
    n_cls = len(ids)
    x = torch.from_numpy(np.clip(ct, -1000, 1000) / 1000.0)[None, None]
    y = torch.from_numpy(target)[None, None]
    roi = (64, 64, 32)
    pad = [0, max(0, roi[2] - x.shape[-1])] + [0, 0] * 2
    xp = torch.nn.functional.pad(x, pad, mode="replicate")
    yp = torch.nn.functional.pad(y.float(), pad, mode="replicate").long()
    print(f"data: {ct_path.name} {ct.shape} at 3 mm, {n_cls - 1} structures + background", flush=True)

    torch.manual_seed(0)
    net = SegResNet(spatial_dims=3, in_channels=1, out_channels=n_cls, init_filters=8,
                    blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    net.train()
    for it in range(args.iterations):
        s = [int(rng.integers(0, xp.shape[2 + a] - roi[a] + 1)) for a in range(3)]
        sl = (slice(None), slice(None), *(slice(s[a], s[a] + roi[a]) for a in range(3)))
        opt.zero_grad()
        loss = loss_fn(net(xp[sl]), yp[sl])
        loss.backward()
        opt.step()
        if (it + 1) % 50 == 0:
            print(f"  iteration {it + 1}/{args.iterations}: loss {loss.item():.3f}", flush=True)
    net.eval()
    print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)

    def segment_with(fn):
        t = time.perf_counter()
        with torch.inference_mode():
            lab = slab_sliding_window(x, roi, fn, 0.5, mode="gaussian", padding_mode="replicate")
        return lab.numpy(), time.perf_counter() - t

    def segment(dtype):
        ctx = autocast_context(dtype)

        def run(w):
            with ctx():
                return net(w).float()

        return segment_with(run)

    ref, t32 = segment(None)
    fit = dice_per_label(ref, target)
    print(f"float32: {t32:.1f} s; Dice vs the reference segmentation (how well it is trained): median "
          f"{np.median(list(fit.values())):.3f}, {sum(v > 0.5 for v in fit.values())}/{len(fit)} structures above 0.5",
          flush=True)
    rows = []

    def row(name: str, lab: np.ndarray, dt: float, base: str = "") -> None:
        dice = dice_per_label(lab, ref)
        vals = list(dice.values())
        rows.append(f"| {name} | {dt:.1f} s: {t32 / dt:.2f}x torch float32's speed{base} | "
                    f"{100 * float((lab == ref).mean()):.3f}% | {min(vals, default=1.0):.4f} | {np.median(vals):.4f} | "
                    f"{sum(v >= 0.999 for v in vals)}/{len(vals)} |")
        print(rows[-1], flush=True)

    if not args.skip_autocast:
        for dtype in (torch.bfloat16, torch.float16):
            lab, dt = segment(dtype)
            row(f"torch {str(dtype)[6:]} autocast", lab, dt)
    if not args.skip_openvino:
        ov_rows(args, net, x, roi, run_window=lambda fn: segment_with(fn), row=row)
    print(f"\nload average {os.getloadavg()}; labels vs torch float32 (41 structures + background)")
    print("| precision | time | identical voxels | min Dice per label | median | labels with Dice >= 0.999 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


def ov_rows(args, net, x, roi, run_window, row) -> None:
    """OpenVINO float32 and, on CPUs with native bfloat16 (AVX512-BF16/AMX), OpenVINO bfloat16: rows vs torch
    float32, and bfloat16's time against OpenVINO float32."""
    from medseg.engine.openvino import OpenVINONetwork, _cpu_has_bf16, convert_network

    import openvino as ov

    f32 = convert_network(net, (1, 1, *roi), fingerprint="bench-precision", weights_sha256=None, threads=args.threads,
                          cache=False)
    run_window(f32)  # warm-up: compiles the last-window shape too
    lab32, t_ov32 = run_window(f32)
    row("OpenVINO float32", lab32, t_ov32)
    if not _cpu_has_bf16(ov):
        print("this CPU has no native bfloat16: no OpenVINO bfloat16 row", flush=True)
        return
    bf16 = OpenVINONetwork(f32.model, threads=args.threads, precision="bfloat16")
    run_window(bf16)
    lab, dt = run_window(bf16)
    row("OpenVINO bfloat16", lab, dt, f", {t_ov32 / dt:.2f}x OpenVINO float32's")


if __name__ == "__main__":
    sys.exit(main())
