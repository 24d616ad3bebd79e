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

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_liver.py --threads 2 [--lits] [--json out.json]

Extra ``--crop auto|original|body-box`` / ``--pad-value V`` write a patched spec to compare variants.
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


def run_case(inp: Path, model: str, out: Path, threads: int, modality: str) -> dict:
    cmd = [sys.executable, "-m", "medseg", "segment", str(inp), "-o", str(out), "--model", model,
           "--threads", str(threads), "--no-progress", "--overwrite", "--modality", modality]
    # peak RSS of the child: /usr/bin/time is not everywhere; resource.getrusage of children is
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"{inp}: medseg failed: {proc.stderr.strip()}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(max(peak, before) / 1024)}


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Label array and affine, reoriented to the closest canonical (RAS) orientation (no resampling)."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), img.affine


def patched_spec(model: str, tmp: Path, crop: str | None, pad: float | None, mr_pad: float | None = None) -> str:
    if crop is None and pad is None and mr_pad is None:
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
    p = tmp / f"{model}.yaml"
    p.write_text(yaml.safe_dump(d))
    return str(p)


def lits(tmp: Path, threads: int, spacing: list[float]) -> dict:
    """LiTS 117 crop from the liver-ct-segmentation-package wheel, through liver-lesions."""
    import nibabel as nib

    sys.path.insert(0, str(ROOT))
    from perfkit.liver_data import lits117

    img, lab, aff = lits117(tmp / "lits", tuple(spacing))
    nib.save(nib.Nifti1Image(img, aff), str(tmp / "lits117.nii.gz"))
    out = tmp / "lits117_seg.nii.gz"
    info = run_case(tmp / "lits117.nii.gz", "liver-lesions", out, threads, "ct")
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
    ap.add_argument("--lits", action="store_true")
    ap.add_argument("--lits-spacing", type=float, nargs=3, default=[1.3, 1.3, 1.5])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"# {platform.processor() or platform.machine()}, threads={args.threads}, "
          f"avx512={'avx512f' in flags}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model = patched_spec("liver", tmp, args.crop, args.pad_value, args.mr_pad_value)
        for name, inp, ref, modality in CASES:
            if name not in args.cases:
                continue
            out = tmp / f"{name}_liver.nii.gz"
            info = run_case(DATA / inp, model, out, args.threads, modality)
            pred, paff = read_labels(out)
            refl, raff = read_labels(DATA / ref)
            same_grid = pred.shape == refl.shape and np.allclose(paff, raff, atol=1e-3)
            side = json.loads(out.with_suffix("").with_suffix(".json").read_text())
            liver_id = next(lab["id"] for lab in side["labels"] if lab["name"] == "liver")
            row = {"case": name, **info, "dice": round(dice(pred == liver_id, refl == LIVER_CLASS), 4),
                   "same_grid_as_reference": bool(same_grid)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.lits:
            row = lits(tmp, args.threads, args.lits_spacing)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
