"""Speed table: medseg's sliding window vs MONAI's plain ``sliding_window_inference``, in one process.

Same network (a SegResNet like the whole-body CT bundle's, 105 classes, seeded random weights), same
weights, same volume, same overlap and blending. Each row is timed once after a warm-up window (the
machine is shared: numbers are noisy; run with the machine as idle as you can). Rows:

- ``monai``: ``sliding_window_inference`` (sw_batch_size 1) then ``argmax``: the reference.
- ``medseg exact``: :func:`medseg.infer.slab.slab_sliding_window` (cell-streamed, argmax per cell), same
  windows, batches and arithmetic: labels bitwise identical.
- ``medseg onednn``: plus every float32 ``Conv3d`` routed to oneDNN (:func:`use_onednn_conv3d`; PyTorch
  otherwise runs the deep low-resolution levels on ``slow_conv3d``); last-bit differences only.
- ``medseg onednn+cl``: plus ``channels_last_3d`` memory format.
- ``medseg fastest``: the fastest of the above with overlap 0.2 (step 0.8 x ROI, TotalSegmentator's fast
  setting) instead of the reference overlap.
- bfloat16 is probed on one convolution: without a oneDNN bfloat16 kernel (AVX2 CPUs) PyTorch falls back
  to ``slow_conv3d`` and a whole volume would take hours.
- ``--reduced``: bfloat16 and float16 autocast judged against float32 on one ROI-sized crop (one window):
  time ratio, identical voxels and Dice per label. Seeded random weights give near-uniform probabilities
  (tiny margins between classes), so these agreement figures are a pessimistic bound for a trained model.

Each row prints time, ratio to ``monai``, achieved GFLOP/s (network FLOPs x windows / time) and its
fraction of the measured conv3d ceiling, and label agreement with the reference (identical voxels, lowest
Dice per label).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_speed.py
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[160, 112, 96], help="working-grid volume (voxels)")
    ap.add_argument("--roi", type=int, default=64)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--fast-overlap", type=float, default=0.2)
    ap.add_argument("--classes", type=int, default=105)
    ap.add_argument("--filters", type=int, default=16, help="SegResNet init_filters (the bundle uses 32)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--mode", default="gaussian", choices=["constant", "gaussian"])
    ap.add_argument("--reduced", action="store_true", help="also judge bfloat16/float16 autocast on one window")
    args = ap.parse_args(argv)

    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SegResNet

    from perfkit.measure import (
        conv3d_ceiling,
        count_flops,
        dice_per_label,
        onednn_bf16_supported,
        thread_report,
        use_onednn_conv3d,
    )
    from medseg.infer.slab import plan_windows, slab_sliding_window

    torch.set_num_threads(args.threads)
    print(f"threads: {thread_report()}", flush=True)
    torch.manual_seed(0)
    net = SegResNet(
        spatial_dims=3, in_channels=1, out_channels=args.classes, init_filters=args.filters,
        blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1),
    ).eval()
    x = torch.randn(1, 1, *args.shape, generator=torch.Generator().manual_seed(1))
    roi = (args.roi,) * 3
    patch = torch.zeros(1, 1, *roi)
    flops = count_flops(net, patch)
    print(f"network: SegResNet init_filters={args.filters}, {args.classes} classes; {flops / 1e9:.1f} GFLOP per "
          f"{args.roi}^3 window; volume {tuple(args.shape)}, overlap {args.overlap}, {args.mode} blending", flush=True)

    ceil_cf = conv3d_ceiling(64, 48)
    ceil_cl = conv3d_ceiling(64, 48, channels_last=True)
    ceiling = max(ceil_cf, ceil_cl)
    print(f"conv3d ceiling (64->64 ch, 48^3, fp32): {ceil_cf:.1f} GFLOP/s channels-first, {ceil_cl:.1f} "
          f"channels_last_3d", flush=True)
    bf16_ok = onednn_bf16_supported()
    small = torch.nn.Conv3d(32, 32, 3, padding=1, bias=False).eval()
    xs = torch.randn(1, 32, 24, 24, 24)
    with torch.inference_mode():
        t0 = time.perf_counter()
        small(xs)
        t32 = time.perf_counter() - t0
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t0 = time.perf_counter()
            small(xs)
            t16 = time.perf_counter() - t0
    print(f"bfloat16: oneDNN kernel available: {bf16_ok}; one 32ch 24^3 conv: fp32 {t32 * 1e3:.1f} ms, "
          f"bf16 autocast {t16 * 1e3:.1f} ms ({t16 / t32:.0f}x)", flush=True)

    def run_monai(network, overlap):
        with torch.inference_mode():
            out = sliding_window_inference(x, roi, 1, network, overlap, args.mode)
            return torch.argmax(out[0], dim=0).to(torch.uint8)

    def run_slab(network, overlap, inp=x):
        with torch.inference_mode():
            return slab_sliding_window(inp, roi, network, overlap, mode=args.mode)

    net_onednn = copy.deepcopy(net)
    use_onednn_conv3d(net_onednn)
    net_cl = copy.deepcopy(net_onednn).to(memory_format=torch.channels_last_3d)

    def cl_net(w):
        return net_cl(w.contiguous(memory_format=torch.channels_last_3d)).contiguous()

    with torch.inference_mode():  # warm-up: one window of each network variant
        for n in (net, net_onednn, cl_net):
            n(patch)

    rows = []
    ref = None
    ref_time = None

    def row(name, fn, overlap):
        nonlocal ref, ref_time
        n_win = plan_windows(args.shape, roi, overlap).n_windows
        t0 = time.perf_counter()
        lab = fn()
        dt = time.perf_counter() - t0
        if ref is None:
            ref, ref_time = lab, dt
        same = float((lab == ref).float().mean())
        dice = dice_per_label(lab.numpy(), ref.numpy())
        min_dice = min(dice.values()) if dice else 1.0
        gflops = flops * n_win / dt / 1e9
        rows.append((name, overlap, n_win, dt, ref_time / dt, gflops, gflops / ceiling, same, min_dice))
        print(f"  {name:<22} overlap {overlap:<4} windows {n_win:>3}  {dt:7.1f} s  x{ref_time / dt:4.2f}  "
              f"{gflops:6.1f} GFLOP/s ({100 * gflops / ceiling:4.1f}% of ceiling)  identical {100 * same:.4f}%  "
              f"min Dice {min_dice:.5f}", flush=True)
        return dt

    row("monai (reference)", lambda: run_monai(net, args.overlap), args.overlap)
    row("medseg exact", lambda: run_slab(net, args.overlap), args.overlap)
    t_one = row("medseg onednn", lambda: run_slab(net_onednn, args.overlap), args.overlap)
    t_cl = row("medseg onednn+cl", lambda: run_slab(cl_net, args.overlap), args.overlap)
    best = net_onednn if t_one <= t_cl else cl_net
    row("medseg fastest", lambda: run_slab(best, args.fast_overlap), args.fast_overlap)

    print("\n| mode | overlap | windows | time (s) | speed-up vs MONAI | GFLOP/s | % of conv3d ceiling | "
          "identical voxels | min Dice |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, ov, nw, dt, ratio, gf, frac, same, md in rows:
        print(f"| {name} | {ov} | {nw} | {dt:.1f} | {ratio:.2f}x | {gf:.1f} | {100 * frac:.1f}% | "
              f"{100 * same:.4f}% | {md:.5f} |")
    print(f"\nthreads {torch.get_num_threads()}; conv3d ceiling {ceiling:.1f} GFLOP/s; numbers from a shared machine")
    if args.reduced:
        reduced_precision(net, x[(..., *(slice(0, r) for r in roi))], roi, args.overlap, run_slab)
    return 0


def reduced_precision(net, crop, roi, overlap, run_slab) -> None:
    """bfloat16 / float16 autocast vs float32 on ``crop``: time ratio, identical voxels, Dice per label."""
    import torch

    from perfkit.measure import autocast_context, dice_per_label

    def with_autocast(dtype):
        ctx = autocast_context(dtype)

        def run(w):
            with ctx():
                return net(w).float()

        return run

    t0 = time.perf_counter()
    ref = run_slab(net, overlap, inp=crop).numpy()
    t32 = time.perf_counter() - t0
    print(f"\nreduced precision on one {tuple(crop.shape[2:])} crop (float32: {t32:.1f} s)")
    print("| precision | time vs float32 | identical voxels | min Dice per label | labels with Dice >= 0.999 |")
    print("|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float16):
        t0 = time.perf_counter()
        lab = run_slab(with_autocast(dtype), overlap, inp=crop).numpy()
        dt = time.perf_counter() - t0
        dice = dice_per_label(lab, ref)
        ok = sum(v >= 0.999 for v in dice.values())
        print(f"| {str(dtype)[6:]} | {dt / t32:.0f}x slower | {100 * float((lab == ref).mean()):.3f}% | "
              f"{min(dice.values(), default=1.0):.4f} | {ok}/{len(dice)} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
