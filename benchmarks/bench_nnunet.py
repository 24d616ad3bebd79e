"""Benchmark: medseg's NnUNetPredictor vs nnU-Net's own nnUNetPredictor, in one process, on the CPU.

Builds the tiny nnU-Net v2 results folder of the tests (2 folds, PlainConvUNet, patch 32^3, CT
normalisation, transposed plans, 3 mm -> (3.5, 4, 4) mm) and predicts two real CTs from
TotalSegmentator's test data, each in a non-canonical (ILP) orientation:

* ``small``: the test's 60 x 50 x 30 crop of ``example_ct_sm.nii.gz`` (zero border);
* ``large``: the whole ``example_ct.nii.gz`` (122 x 101 x 112 voxels).

For each run: wall time of ``predict`` (array in, labels out; file reading excluded for both), peak growth
of malloc'd memory in use during the call (glibc ``mallinfo2``, sampled every 2 ms: numpy and torch CPU
tensors), and agreement with nnU-Net's labels. medseg runs with its defaults (the 8 mirrored copies of a
tile in one network call) and as ``medseg-exact`` (``mirror_batch=1``: nnU-Net's evaluation order, labels
identical); ``--bf16`` adds a bfloat16-autocast run.

``--classes 118`` gives the network TotalSegmentator's number of outputs (memory of the logits and the export).

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_nnunet.py [--threads 1] [--cases small,large]
      [--classes 4] [--no-exact] [--bf16]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)
from perfkit.measure import dice_per_label  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "TotalSegmentator" / "tests" / "reference_files"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def _heap_in_use() -> int:
    """Bytes allocated through malloc and not freed (numpy and torch CPU tensors both use malloc/mmap)."""
    m = _libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


class PeakHeap:
    """Peak growth of malloc'd bytes in use over a ``with`` block, sampled by a thread every 2 ms.

    Unlike RSS (which the allocator keeps after the first runner), this measures what each runner itself
    holds at its peak, so two runners can be compared in one process.
    """

    def __enter__(self):
        self.base = self.peak = _heap_in_use()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _heap_in_use())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.growth = max(self.peak, _heap_in_use()) - self.base


def _case(name: str, root: Path):
    import nibabel as nib

    from medseg.geometry import reorient

    if name == "small":
        img = nib.load(DATA / "example_ct_sm.nii.gz")
        arr = np.asanyarray(img.dataobj)[30:90, 20:70, :].copy()
        aff = img.affine.copy()
        aff[:3, 3] = img.affine[:3, :3] @ [30, 20, 0] + img.affine[:3, 3]
        arr[:4] = 0
        arr[:, -3:] = 0
    else:
        img = nib.load(DATA / "example_ct.nii.gz")
        arr, aff = np.asanyarray(img.dataobj).astype(np.int16), img.affine
    arr, aff = reorient(arr, aff, "ILP")
    nii = nib.Nifti1Image(np.ascontiguousarray(arr), aff)
    nii.set_qform(aff, 1)
    nii.set_sform(aff, 1)
    path = root / f"{name}_0000.nii.gz"
    nib.save(nii, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default="small,large")
    ap.add_argument("--bf16", action="store_true", help="also run medseg under bfloat16 autocast")
    ap.add_argument("--classes", type=int, default=4, help="output classes incl. background (TotalSegmentator: 118)")
    ap.add_argument("--no-exact", action="store_true", help="skip the mirror_batch=1 medseg run")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(k, str(tmp / k))
    sys.path.insert(0, str(REPO))
    import nibabel as nib
    import torch

    from perfkit.nnunet_folder import PLAIN_ARCH, ct_intensity_properties, make_results_folder

    torch.set_num_threads(args.threads)
    ref_img = np.asanyarray(nib.load(DATA / "example_ct_sm.nii.gz").dataobj)
    labels = {"background": 0, **{f"class_{i}": i for i in range(1, args.classes)}}
    folder = make_results_folder(tmp / "results", labels=labels,
                                 intensity_properties=ct_intensity_properties(ref_img[ref_img > -300]),
                                 spacing=(3.5, 4.0, 4.0), transpose_forward=(2, 0, 1),
                                 architecture=PLAIN_ARCH((4, 8, 16)))

    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from medseg.nnunet import NnUNetPredictor
    from medseg.types import Geometry, Volume

    ref = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                          perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    ref.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1))
    ours = {
        "medseg": NnUNetPredictor(folder, device="cpu", threads=args.threads),  # defaults: mirrored copies batched
    }
    if not args.no_exact:
        ours["medseg-exact"] = NnUNetPredictor(folder, device="cpu", threads=args.threads, mirror_batch=1)
    if args.bf16:
        ours["medseg-bf16"] = NnUNetPredictor(folder, device="cpu", threads=args.threads, precision="bfloat16")
    print(f"torch threads: {args.threads}; CPU count {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
          f"{args.classes} classes")
    print(f"{'case':<7}{'shape':<16}{'runner':<13}{'time s':>8}{'ratio':>7}{'heap MB':>9}  agreement")
    for name in args.cases.split(","):
        path = _case(name, tmp)
        rw = SimpleITKIO()
        data, props = rw.read_images([str(path)])
        img = nib.load(path)
        vol = Volume(np.asanyarray(img.dataobj), Geometry(img.affine, img.shape))
        gc.collect()
        with PeakHeap() as mem:
            t = time.perf_counter()
            seg = ref.predict_single_npy_array(data, props, None, None, False)
            t_ref = time.perf_counter() - t
        ref_labels = np.ascontiguousarray(seg.transpose(2, 1, 0))  # SimpleITK (z, y, x) -> (i, j, k)
        shape = "x".join(map(str, vol.shape))
        print(f"{name:<7}{shape:<16}{'nnU-Net':<13}{t_ref:8.1f}{1.0:7.2f}{mem.growth / 2**20:9.0f}  reference")
        for label, pred in ours.items():
            gc.collect()
            with PeakHeap() as mem:
                t = time.perf_counter()
                out = pred.predict(vol)
                dt = time.perf_counter() - t
            same = np.array_equal(out.array, ref_labels)
            dice = dice_per_label(out.array, ref_labels, list(range(1, min(args.classes, 4))))
            agree = "identical" if same else f"{int((out.array != ref_labels).sum())} voxels differ, Dice " + \
                ", ".join(f"{k}:{v:.4f}" for k, v in dice.items())
            print(f"{'':<7}{'':<16}{label:<13}{dt:8.1f}{dt / t_ref:7.2f}{mem.growth / 2**20:9.0f}  {agree}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
