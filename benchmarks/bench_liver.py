"""Liver (and lesion) accuracy, time and peak memory of the pyliverlesionseg models on real data.

Each case runs ``medseg segment --model liver`` in its own process (so peak RSS is per case), then the label
named ``liver`` is compared with TotalSegmentator's reference labels (liver = class 5 of its class map) in
``../shared/data/TotalSegmentator/tests/reference_files``:

==========================  ==========================================
input                       reference
==========================  ==========================================
example_ct.nii.gz           example_seg_fast_force_split.nii.gz
example_ct_sm.nii.gz        example_seg.nii.gz
example_ct_dicom/ (DICOM)   example_seg_dicom.nii.gz
example_mr_sm.nii.gz        example_seg_mr.nii.gz
==========================  ==========================================

``--lits`` adds the LiTS case 117 crop carried by the ``liver-ct-segmentation-package`` 1.6.0 wheel
(``data/img_117.mrc`` HU, ``data/lab_117.mrc`` liver 1 / tumour 2, 128^3, no voxel size in the file; read by
``perfkit/liver_data.py``: the array as stored is LPS): it is written as NIfTI with ``--lits-spacing`` (default
1.3 1.3 1.5 mm, our estimate from the anatomy) and run through ``liver-lesions``; liver (liver + tumour) and
tumour Dice are reported. Run::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_liver.py --threads 2 [--runtime openvino|torch] [--lits] [--json out.json]

Extra ``--crop auto|original|body-box`` / ``--pad-value V`` / ``--mr-pad-value V`` / ``--slab-extend-mm MM``
write a patched spec to compare variants. Each row gives the wall time, the sidecar's ``network`` stage, the
child's own peak RSS and the 1-minute load average when it ended (the machine is shared: say it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)
from perfkit.measure import dice  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "TotalSegmentator" / "tests" / "reference_files"
CASES = [
    ("example_ct", "example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", "auto"),
    ("example_ct_sm", "example_ct_sm.nii.gz", "example_seg.nii.gz", "auto"),
    ("example_ct_dicom", "example_ct_dicom", "example_seg_dicom.nii.gz", "auto"),
    ("example_mr_sm", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "auto"),
]
LIVER_CLASS = 5


_CHILD = ("import atexit, resource, runpy, sys; "
          "atexit.register(lambda: print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
          "sys.argv = ['medseg', *sys.argv[1:]]; runpy.run_module('medseg', run_name='__main__')")


def run_case(inp: Path, model: str, out: Path, threads: int, modality: str, runtime: str) -> dict:
    """``medseg segment`` in a child process: wall seconds, the child's own peak RSS, the sidecar's stage
    timings (``network`` = forward passes) and runtime."""
    cmd = [sys.executable, "-c", _CHILD, "segment", str(inp), "-o", str(out), "--model", model,
           "--threads", str(threads), "--no-progress", "--overwrite", "--modality", modality, "--runtime", runtime]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{inp}: medseg failed: {proc.stderr.strip()}")
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS_KB")]
    side = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    timings = side.get("timings", {})
    return {"seconds": round(seconds, 1), "network_s": round(timings.get("network") or 0.0, 1),
            "peak_rss_mb": round(rss[-1] / 1024) if rss else None, "runtime": side.get("runtime", {}).get("name"),
            "load_avg_1m": round(os.getloadavg()[0], 1)}


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Label array and affine, reoriented to the closest canonical (RAS) orientation (no resampling)."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), img.affine


def patched_spec(model: str, tmp: Path, crop: str | None, pad: float | None, mr_pad: float | None = None,
                 slab_extend: float | None = None) -> str:
    if crop is None and pad is None and mr_pad is None and slab_extend is None:
        return model
    import yaml

    src = ROOT / "configs" / f"{model}.yaml"
    d = yaml.safe_load(src.read_text())
    if crop is not None:
        d["pipeline"]["crop"] = crop
    if pad is not None:
        d["pipeline"]["pad_value"] = pad
    if mr_pad is not None:
        d["pipeline"]["mr_pad_value"] = mr_pad
    if slab_extend is not None:
        d["pipeline"]["slab_extend_mm"] = slab_extend
    p = tmp / f"{model}.yaml"
    p.write_text(yaml.safe_dump(d))
    return str(p)


def lits(tmp: Path, threads: int, spacing: list[float], runtime: str) -> dict:
    """LiTS 117 crop from the liver-ct-segmentation-package wheel, through liver-lesions."""
    import nibabel as nib

    sys.path.insert(0, str(ROOT))
    from perfkit.liver_data import lits117

    img, lab, aff = lits117(tmp / "lits", tuple(spacing))
    nib.save(nib.Nifti1Image(img, aff), str(tmp / "lits117.nii.gz"))
    out = tmp / "lits117_seg.nii.gz"
    info = run_case(tmp / "lits117.nii.gz", "liver-lesions", out, threads, "ct", runtime)
    pred = np.asarray(nib.load(str(out)).dataobj)  # on the input grid, same array order as ``lab``
    return {"case": "LiTS 117 crop", "spacing_mm_assumed": spacing, **info,
            "liver_dice": round(dice(pred > 0, lab > 0), 4), "tumour_dice": round(dice(pred == 2, lab == 2), 4),
            "tumour_ref_voxels": int((lab == 2).sum()), "tumour_pred_voxels": int((pred == 2).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", nargs="*", default=[c[0] for c in CASES])
    ap.add_argument("--crop", choices=["auto", "original", "body-box", "none"], default=None)
    ap.add_argument("--pad-value", type=float, default=None)
    ap.add_argument("--mr-pad-value", type=float, default=None)
    ap.add_argument("--slab-extend-mm", type=float, default=None)
    ap.add_argument("--runtime", choices=["auto", "torch", "openvino"], default="openvino")
    ap.add_argument("--lits", action="store_true")
    ap.add_argument("--lits-spacing", type=float, nargs=3, default=[1.3, 1.3, 1.5])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"# {platform.processor() or platform.machine()}, threads={args.threads}, runtime={args.runtime}, "
          f"avx512={'avx512f' in flags}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model = patched_spec("liver", tmp, args.crop, args.pad_value, args.mr_pad_value, args.slab_extend_mm)
        for name, inp, ref, modality in CASES:
            if name not in args.cases:
                continue
            out = tmp / f"{name}_liver.nii.gz"
            info = run_case(DATA / inp, model, out, args.threads, modality, args.runtime)
            pred, paff = read_labels(out)
            refl, raff = read_labels(DATA / ref)
            same_grid = pred.shape == refl.shape and np.allclose(paff, raff, atol=1e-3)
            side = json.loads(out.with_suffix("").with_suffix(".json").read_text())
            info["crop"] = (side.get("crop") or {}).get("method")
            liver_id = next(lab["id"] for lab in side["labels"] if lab["name"] == "liver")
            row = {"case": name, **info, "dice": round(dice(pred == liver_id, refl == LIVER_CLASS), 4),
                   "same_grid_as_reference": bool(same_grid)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.lits:
            row = lits(tmp, args.threads, args.lits_spacing, args.runtime)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
