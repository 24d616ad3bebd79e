"""Cases per minute: ``medseg batch`` vs a plain loop over ``medseg segment`` on the same cases.

Three ways to segment the same N synthetic CT-like NIfTI volumes with the same model:

1. ``loop-cli``:  ``medseg segment CASE -o OUT`` once per case (a new process per case: the model and
   the libraries load N times, I/O and inference never overlap) — what a shell loop does;
2. ``loop-1proc``: one process, model loaded once, read → predict → write one case after another
   (no overlap) — isolates the cost of reloading from the gain of overlapping I/O;
3. ``batch``:     ``medseg batch IN -o OUT`` (model loaded once, the next case read and the previous
   one written while the current one is inferred).

Each is timed from the start of the process(es) to the last output, so start-up counts, as it does for a
user. The label maps of all three are checked to be identical. Run::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_batch.py --cases 8 --size 128 --threads 2

The model is a MONAI UNet (channels 16-32-64-128, sliding window 96³, seeded random weights: no
hub is reachable here; weights change nothing about timing). Use ``--model NAME|SPEC`` for another.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)

EXE = Path(sys.executable).parent / "medseg"


def make_model(folder: Path) -> Path:
    from perfkit.seeded_spec import CT_WINDOW, write_seeded_unet_spec

    labels = [{"id": 1, "name": "a", "color": [255, 0, 0]}, {"id": 2, "name": "b", "color": [0, 255, 0]}]
    return write_seeded_unet_spec(
        folder, name="bench-unet", labels=labels, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1,
        modality="CT", spacing=(1.5, 1.5, 1.5), normalize=CT_WINDOW,
        inferer={"mode": "sliding", "roi_size": [96, 96, 96], "overlap": 0.25, "sw_batch_size": 1},
        filename="bench.yaml")


def make_cases(folder: Path, n: int, size: int) -> list[Path]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.normal(0, 30, (size, size, size * 3 // 4)).astype(np.int16)
        c = size // 2 + i % 5
        arr[c - size // 6 : c + size // 6, c - size // 5 : c + size // 7, size // 8 : size // 2] += 200
        path = folder / f"sub-{i:02d}" / "ct.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(arr, np.diag([1.5, 1.5, 1.5, 1.0])), str(path))
        paths.append(path)
    return paths


def run_loop_cli(cases: list[Path], root: Path, out: Path, model: str, threads: int, precision: str) -> float:
    t0 = time.perf_counter()
    for case in cases:
        dest = out / case.relative_to(root).parent / "ct_seg.nii.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(EXE), "segment", str(case), "-o", str(dest), "--model", model, "--device", "cpu",
               "--threads", str(threads), "--precision", precision, "--no-progress"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_loop_1proc(root: Path, out: Path, model: str, threads: int, precision: str) -> float:
    code = f"""
import time; t0 = time.perf_counter()
from pathlib import Path
from medseg.batch.discover import discover_cases
from medseg.batch.naming import output_paths
from medseg.batch.settings import BatchSettings
from medseg.batch.worker import read_case, segment_case
from medseg.predictor import load_predictor
import os
p = load_predictor({model!r}, device="cpu", threads={threads}, precision={precision!r},
                   runtime=os.environ["MEDSEG_RUNTIME"])
cases = discover_cases({str(root)!r}).cases
outs = output_paths([(c.key, c.rel, c.series_label) for c in cases], Path({str(out)!r}))
settings = BatchSettings()
for c in cases:
    segment_case(p, c, read_case(c, settings), outs[c.key], False, settings)
"""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def run_batch(root: Path, out: Path, model: str, threads: int, precision: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(EXE), "batch", str(root), "-o", str(out), "--model", model, "--device", "cpu", "--threads",
                    str(threads), "--precision", precision, "--quiet"], check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    wall = json.loads((out / "batch_provenance.json").read_text())["stage_seconds"]["wall"]
    with open(out / "batch_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summed = {k: sum(float(r[f"{k}_s"] or 0) for r in rows) for k in ("load", "read", "preprocess", "network", "export", "write")}
    print("      batch stages (summed over cases): " + ", ".join(f"{k} {v:.1f} s" for k, v in summed.items())
          + f"; pipeline wall {wall:.1f} s")
    return seconds


def same_outputs(a: Path, b: Path) -> bool:
    import nibabel as nib

    fa = sorted(p.relative_to(a) for p in a.rglob("*_seg.nii.gz"))
    fb = sorted(p.relative_to(b) for p in b.rglob("*_seg.nii.gz"))
    if fa != fb or not fa:
        return False
    return all(np.array_equal(np.asarray(nib.load(str(a / f)).dataobj), np.asarray(nib.load(str(b / f)).dataobj))
               for f in fa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="volume edge in voxels (1.5 mm)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--model", default=None, help="registry name or spec YAML (default: a built UNet)")
    ap.add_argument("--precision", default="float32",
                    help="predictor precision for all three (default float32: bfloat16 autocast was far slower "
                    "than float32 for this network on this CPU)")
    ap.add_argument("--runtime", default="torch", choices=["auto", "torch", "openvino"],
                    help="runtime for all three (default torch, so the labels compare byte for byte)")
    ap.add_argument("--skip-cli-loop", action="store_true", help="skip the slow per-case `medseg segment` loop")
    args = ap.parse_args()
    os.environ["MEDSEG_RUNTIME"] = args.runtime  # the CLI runs read it; the one-process loop gets it below

    work = Path(tempfile.mkdtemp(prefix="medseg-bench-batch-"))
    try:
        model = args.model or str(make_model(work))
        root = work / "in"
        cases = make_cases(root, args.cases, args.size)
        print(f"{args.cases} cases of {args.size}x{args.size}x{args.size * 3 // 4} voxels, model {Path(model).name}, "
              f"{args.threads} thread(s), {args.precision}, runtime {args.runtime}, CPU, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f}")
        timings = {}
        timings["batch"] = run_batch(root, work / "out_batch", model, args.threads, args.precision)
        timings["loop-1proc"] = run_loop_1proc(root, work / "out_1proc", model, args.threads, args.precision)
        if not args.skip_cli_loop:
            timings["loop-cli"] = run_loop_cli(cases, root, work / "out_cli", model, args.threads, args.precision)
        for name, seconds in timings.items():
            print(f"{name:>11}: {seconds:7.1f} s   {60 * args.cases / seconds:6.2f} cases/min")
        base = timings.get("loop-cli", timings["loop-1proc"])
        print(f"speed-up of batch over {'loop-cli' if 'loop-cli' in timings else 'loop-1proc'}: {base / timings['batch']:.2f}x;"
              f" over loop-1proc (same process, no overlap): {timings['loop-1proc'] / timings['batch']:.2f}x")
        ok = same_outputs(work / "out_batch", work / "out_1proc")
        if "loop-cli" in timings:
            ok = ok and same_outputs(work / "out_batch", work / "out_cli")
        print("identical label maps:", ok)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
