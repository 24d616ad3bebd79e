"""medseg's predictor vs plain MONAI sliding-window inference, in one process, same network/weights/volume.

    .venv/bin/python benchmarks/bench_engine.py [--threads 2] [--volume PATH] [--repeats 1]

Network: the model zoo's spleen_ct_segmentation UNet (3D, channels 16-256, 4.8 M parameters) with seeded
random weights; volume: TotalSegmentator's example_ct_sm.nii.gz (real CT, 3 mm), which the spleen contract
resamples to 1.5 x 1.5 x 2 mm. The reference is what the model-zoo tutorials do: MONAI dictionary
transforms, ``sliding_window_inference(x, (96, 96, 96), 4, model, overlap=0.5)`` under ``torch.no_grad``,
softmax, ``Invertd`` and argmax. Prints wall time, the ratio, peak resident memory above the start, and
achieved GFLOP/s against a measured conv3d ceiling; checks that the float32 labels are identical.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)
from perfkit.measure import conv3d_ceiling  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VOLUME = REPO / ".." / "shared" / "data" / "TotalSegmentator" / "tests" / "reference_files" / "example_ct_sm.nii.gz"
NET_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"}


class PeakRSS:
    """Peak resident set size (bytes) above the value at start, sampled every 5 ms from /proc."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def window_flops(net, roi=(96, 96, 96)) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 1, *roi))
    return fc.get_total_flops()


def reference_monai(image_path: Path, net, sw_batch_size: int = 4):
    """Model-zoo tutorial style: dictionary transforms, sliding_window_inference, Invertd, argmax."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, EnsureTyped, Invertd, LoadImaged, Orientationd,
        ScaleIntensityRanged, Spacingd,
    )

    pre = Compose([
        LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), Orientationd(keys="image", axcodes="RAS"),
        Spacingd(keys="image", pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=-57, a_max=164, b_min=0, b_max=1, clip=True), EnsureTyped(keys="image"),
    ])
    post = Compose([
        Activationsd(keys="pred", softmax=True),
        Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted(keys="pred", argmax=True),
    ])
    d = pre({"image": str(image_path)})
    with torch.no_grad():
        d["pred"] = sliding_window_inference(d["image"][None], (96, 96, 96), sw_batch_size, net, overlap=0.5)[0]
    d = post(d)
    return d["pred"][0].numpy().astype("uint8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch
    from monai.networks.nets import UNet

    from medseg.config import load_spec
    from medseg.io import read
    from medseg.predictor import load_predictor

    torch.set_num_threads(args.threads)
    if not args.volume.is_file():
        raise SystemExit(f"volume not found: {args.volume}")
    torch.manual_seed(2)
    net = UNet(**NET_ARGS).eval()
    tmp = Path(tempfile.mkdtemp())
    torch.save(net.state_dict(), tmp / "model.pt")
    import yaml

    spec_d = yaml.safe_load((REPO / "configs" / "spleen-ct.yaml").read_text())
    spec_d["weights"] = {"source": str(tmp / "model.pt")}
    spec = load_spec(spec_d)
    vol = read(args.volume)

    print(f"volume {args.volume.name}: {vol.shape}, spacing {tuple(round(s, 3) for s in vol.spacing)} mm; "
          f"torch {torch.__version__}, {args.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}")
    flops_win = window_flops(net)
    p32 = load_predictor(spec, device="cpu", precision="float32")
    pre = p32.preprocess(vol)
    n_win = p32._n_steps(tuple(pre.x.shape[2:]))
    total_gflop = flops_win * n_win / 1e9
    print(f"network input {tuple(pre.x.shape[2:])}: {n_win} windows of 96^3, {flops_win / 1e9:.1f} GFLOP each, "
          f"{total_gflop:.0f} GFLOP per run")
    from medseg.engine.runtime import cpu_supports_bf16

    ceil32 = conv3d_ceiling()
    ceil16 = conv3d_ceiling(dtype=torch.bfloat16) if cpu_supports_bf16() else None
    print(f"conv3d ceiling: {ceil32:.0f} GFLOP/s float32"
          + (f", {ceil16:.0f} GFLOP/s bfloat16 autocast" if ceil16 else
             " (no native bfloat16 on this CPU: bfloat16 would be ~100x slower)"))

    results = {}

    def timed(name, fn):
        best, out, mem = None, None, 0.0
        for _ in range(args.repeats):
            with PeakRSS() as m:
                t = time.perf_counter()
                out = fn()
                dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
            mem = max(mem, m.mib)
        results[name] = (best, mem, out)
        return out

    ref = timed("MONAI reference (fp32)", lambda: reference_monai(args.volume, net))
    lab32 = timed("medseg float32", lambda: p32.predict(vol).array)
    pbf = load_predictor(spec, device="cpu", precision="auto")
    labbf = lab32
    if pbf.autocast_dtype is not None:
        labbf = timed(f"medseg auto ({str(pbf.autocast_dtype).replace('torch.', '')})", lambda: pbf.predict(vol).array)

    identical = bool(np.array_equal(ref, lab32))
    agree = float((labbf == ref).mean())
    print()
    print(f"{'run':<28}{'time s':>8}{'ratio':>8}{'peak MiB':>10}{'GFLOP/s':>9}{'% ceil':>8}")
    t_ref = results["MONAI reference (fp32)"][0]
    for name, (t, mem, _) in results.items():
        gf = total_gflop / t
        ceil = ceil16 if "bfloat16" in name and ceil16 else ceil32
        print(f"{name:<28}{t:8.2f}{t / t_ref:8.2f}{mem:10.0f}{gf:9.0f}{100 * gf / ceil:7.0f}%")
    print()
    n_diff = int((ref != lab32).sum())
    print(f"labels medseg float32 == MONAI reference: {identical}  ({n_diff} of {ref.size} voxels differ; "
          f"foreground {100 * (ref == 1).mean():.1f}% of voxels)")
    print(f"medseg auto vs reference: {100 * agree:.3f}% of voxels agree")
    if n_diff > ref.size * 1e-5:  # float32 rounding in the inversion may flip a tie voxel, never a region
        raise SystemExit(f"labels differ in {n_diff} voxels")


if __name__ == "__main__":
    main()
