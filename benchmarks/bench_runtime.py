"""The OpenVINO runtime against plain torch/MONAI: same network, same weights, same input, one process.

Cases (choose with ``--cases``; each runs torch and OpenVINO alternately ``--repeat`` times and reports the
best and median wall times, their ratio, and parity of the outputs):

- ``unet``: the spleen bundle's UNet (channels 16-256, 2 residual units, batch norm, seeded weights) with
  MONAI ``sliding_window_inference`` (ROI 96^3, overlap 0.5, sw_batch_size 4) over the real
  ``example_ct`` volume (122x101x112) and over a 256x256x160 volume;
- ``segresnet``: the whole-body bundle's SegResNet (105 classes, init_filters 32; seeded weights), its
  bundle's ROI 96^3, overlap 0.25, Gaussian blending, over ``example_ct``;
- ``brain``: the embedded ``brain-mri`` model (real deepbet weights): both networks (localiser 128^3 and
  the 256^3 U-Net) on the sample T1, through the predictor's own preprocessing (network stage only);
- ``sam``: the LiteMedSAM image encoder (real checkpoint) on one 256x256 slice;
- ``sample``: ``medseg segment --sample --runtime openvino`` vs ``--runtime torch`` as processes, alternating:
  the ``network`` stage of the sidecars' ``timings`` and the % of equal voxels in the written masks.

Parity: max abs difference of the network outputs, and % of equal argmax labels. OpenVINO runs fp32
(``INFERENCE_PRECISION_HINT=f32``); its conversion is cached on disk (``$MEDSEG_CACHE/openvino``), so the
first run of a case includes a conversion (reported separately, never in the timings).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_runtime.py --threads 2 --repeat 3

Prints the CPU model and flags, threads and the machine's load average (other processes share the
cores: state it with the numbers).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CT = DATA / "TotalSegmentator/tests/reference_files/example_ct.nii.gz"


def cpu_line() -> str:
    model, flags = platform.processor() or "?", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile", "avx_vnni")
                flags = " ".join(f for f in line.split(":", 1)[1].split() if f in wanted)
                break
    except OSError:
        pass
    return f"{model}; flags: {flags or 'none of avx2/avx512/amx'}; {os.cpu_count()} logical CPUs"


def ct_volume(shape=None):
    import nibabel as nib
    import torch

    arr = np.asarray(nib.load(CT).dataobj, dtype=np.float32)
    if shape is not None:
        import torch.nn.functional as F

        arr = F.interpolate(torch.from_numpy(arr)[None, None], size=shape, mode="trilinear")[0, 0].numpy()
    arr = np.clip((arr + 57.0) / 221.0, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(arr))[None, None]


def alternate(name: str, run_torch, run_ov, repeat: int) -> tuple[dict, object, object]:
    """Alternating timed runs (one warm-up each, untimed); results of the last runs for parity."""
    yt, yo = run_torch(), run_ov()  # warm-up (OpenVINO compiles per shape on first call)
    tt, to = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        yt = run_torch()
        tt.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        yo = run_ov()
        to.append(time.perf_counter() - t0)
    row = {"case": name, "torch_best": min(tt), "ov_best": min(to), "torch_med": statistics.median(tt),
           "ov_med": statistics.median(to)}
    row["ratio_best"] = row["torch_best"] / row["ov_best"]
    row["ratio_med"] = row["torch_med"] / row["ov_med"]
    return row, yt, yo


def parity(row: dict, yt, yo) -> dict:
    row["max_abs"] = float((yo - yt).abs().max())
    row["argmax_equal_pct"] = 100.0 * float((yo.argmax(1) == yt.argmax(1)).double().mean())
    return row


def sliding_case(name, module, x, roi, overlap, sw_batch, mode, threads, repeat, fingerprint):
    import torch
    from monai.inferers import sliding_window_inference

    from medseg.engine.openvino import convert_network

    t0 = time.perf_counter()
    net = convert_network(module, (sw_batch, 1, *roi), fingerprint=fingerprint, weights_sha256=None, threads=threads)
    load = time.perf_counter() - t0

    def run(predictor):
        with torch.inference_mode():
            return sliding_window_inference(x, roi, sw_batch, predictor, overlap=overlap, mode=mode)

    row, yt, yo = alternate(name, lambda: run(module), lambda: run(net), repeat)
    row["load"] = f"{load:.1f}s ({'cache hit' if net.cache_hit else 'converted'})"
    return parity(row, yt, yo)


def case_unet(threads, repeat):
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    unet = UNet(3, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch").eval()
    rows = []
    for label, x in (("example_ct 122x101x112", ct_volume()), ("256x256x160", ct_volume((256, 256, 160)))):
        rows.append(sliding_case(f"spleen UNet, {label}", unet, x, (96, 96, 96), 0.5, 4, "constant", threads, repeat,
                                 "bench-spleen-unet-seed0"))
    return rows


def case_segresnet(threads, repeat):
    import torch
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    net = SegResNet(3, init_filters=32, in_channels=1, out_channels=105, blocks_down=(1, 2, 2, 4),
                    blocks_up=(1, 1, 1)).eval()
    x = ct_volume() * 2 - 1
    return [sliding_case("SegResNet 105 cl., example_ct", net, x, (96, 96, 96), 0.25, 1, "gaussian", threads, repeat,
                         "bench-wholebody-segresnet-seed0")]


def case_brain(threads, repeat):
    """The brain-mri predictor's two networks on the sample: torch vs OpenVINO, as `segment --sample` runs them."""
    import torch

    from medseg.engine.openvino import convert_network
    from medseg.io import read
    from medseg.predictor import load_predictor

    pred = load_predictor("brain-mri", device="cpu", threads=threads)
    from importlib.resources import files

    vol = read(str(files("medseg.data") / "sample_brain_t1.nii.gz"))
    pre = pred.preprocess(vol)
    t0 = time.perf_counter()
    net = convert_network(pred.network, tuple(pre.x.shape), fingerprint=pred.fingerprint,
                          weights_sha256=pred._weights_digest, threads=threads)
    load = time.perf_counter() - t0

    def run(module):
        with torch.inference_mode():
            return module(pre.x)

    row, yt, yo = alternate("brain-mri U-Net 256^3 (real deepbet weights)", lambda: run(pred.network),
                            lambda: run(net), repeat)
    row["load"] = f"{load:.1f}s ({'cache hit' if net.cache_hit else 'converted'})"
    return [parity(row, yt, yo)]


def case_sam(threads, repeat):
    """The LiteMedSAM image encoder on OpenVINO against two torch encoders with the same weights: medseg's
    (batch norms folded, channels-last where :func:`~medseg.sam.litemedsam.prefer_channels_last` says so) and
    the network as published (``fuse=False, channels_last=False``)."""
    import torch
    import torch.nn.functional as F

    from medseg.engine.openvino import convert_network
    from medseg.sam.litemedsam import load_litemedsam_network

    enc = load_litemedsam_network().image_encoder.eval()
    plain = load_litemedsam_network(fuse=False, channels_last=False).image_encoder.eval()
    x = F.interpolate(ct_volume()[..., 60], size=(256, 256), mode="bilinear").repeat(1, 3, 1, 1)
    t0 = time.perf_counter()
    net = convert_network(enc, (1, 3, 256, 256), fingerprint="bench-litemedsam-encoder-fused", weights_sha256=None,
                          threads=threads)
    load = time.perf_counter() - t0

    def run(module):
        with torch.inference_mode():
            return module(x)

    rows = []
    for label, module in (("medseg's torch encoder (folded, channels-last here)", enc),
                          ("the torch encoder as published", plain)):
        row, yt, yo = alternate(f"LiteMedSAM encoder, 1 slice 256^2, vs {label}", lambda: run(module),
                                lambda: run(net), repeat)
        row["load"] = f"{load:.1f}s ({'cache hit' if net.cache_hit else 'converted'})"
        row["max_abs"] = float((yo - yt).abs().max())
        row["argmax_equal_pct"] = float("nan")
        rows.append(row)
    return rows


def case_sample(threads, repeat):
    """`medseg segment --sample --runtime openvino` vs `--runtime torch`, alternating processes; the sidecars'
    ``network`` stage timings and the written masks are compared."""
    import json
    import subprocess
    import sys
    import tempfile

    import nibabel as nib

    tmp = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}

    def run(rt: str, i: int) -> tuple[dict, np.ndarray]:
        out = tmp / f"{rt}{i}.nii.gz"
        cmd = [sys.executable, "-m", "medseg", "segment", "--sample", "--runtime", rt, "--threads", str(threads),
               "--no-progress", "-o", str(out)]
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        doc = json.loads(out.with_name(f"{rt}{i}.json").read_text())
        return doc["timings"] | {"cache": doc["runtime"].get("cache")}, np.asarray(nib.load(out).dataobj)

    run("openvino", -1)  # fills the compiled-model cache (a first run converts)
    tt, to, masks_t, masks_o = [], [], [], []
    for i in range(repeat):
        t, mt = run("torch", i)
        o, mo = run("openvino", i)
        tt.append(t["network"])
        to.append(o["network"])
        masks_t.append(mt)
        masks_o.append(mo)
    row = {"case": "`medseg segment --sample` network stage (sidecar timings)", "torch_best": min(tt),
           "ov_best": min(to), "torch_med": statistics.median(tt), "ov_med": statistics.median(to)}
    row["ratio_best"] = row["torch_best"] / row["ov_best"]
    row["ratio_med"] = row["torch_med"] / row["ov_med"]
    equal = [float((a == b).mean()) for a, b in zip(masks_t, masks_o)]
    row["max_abs"] = float("nan")
    row["argmax_equal_pct"] = 100.0 * min(equal)
    row["load"] = f"cache {o['cache']}, load {o['load']:.1f}s vs torch {t['load']:.1f}s"
    return [row]


CASES = {"sample": case_sample, "unet": case_unet, "segresnet": case_segresnet, "brain": case_brain, "sam": case_sam}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default="sample,brain,sam,unet,segresnet", help=f"comma list of {', '.join(CASES)}")
    args = ap.parse_args()
    import torch

    from medseg.engine.openvino import openvino_version

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_line()}")
    print(f"threads: {args.threads} (torch.set_num_threads and OpenVINO INFERENCE_NUM_THREADS); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; torch {torch.__version__}, OpenVINO {openvino_version()}")
    print(f"load average at start: {os.getloadavg()}")
    header = ("| case | torch best / median (s) | OpenVINO best / median (s) | speed-up (best / median) | max abs diff | "
              "argmax equal | OpenVINO load |\n|---|---|---|---|---|---|---|")
    rows = []
    for name in args.cases.split(","):
        for r in CASES[name.strip()](args.threads, args.repeat):
            rows.append(r)
            print(f"{_row(r)}  (load avg {os.getloadavg()[0]:.1f})", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print()
    print(header)
    for r in rows:
        print(_row(r))


def _row(r: dict) -> str:
    return (f"| {r['case']} | {r['torch_best']:.2f} / {r['torch_med']:.2f} | {r['ov_best']:.2f} / {r['ov_med']:.2f} | "
            f"{r['ratio_best']:.2f}x / {r['ratio_med']:.2f}x | {r['max_abs']:.2g} | {r['argmax_equal_pct']:.4f} % | "
            f"{r['load']} |")


if __name__ == "__main__":
    main()
