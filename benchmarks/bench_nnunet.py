"""Benchmark: medseg's NnUNetPredictor vs nnU-Net's own nnUNetPredictor, in one process, on the CPU.

Builds the tiny nnU-Net v2 results folder of the tests (2 folds, PlainConvUNet, patch 32^3, CT
normalisation, transposed plans, 3 mm -> (3.5, 4, 4) mm) and predicts two real CTs from
TotalSegmentator's test data, each in a non-canonical (ILP) orientation:

* ``small``: the test's 60 x 50 x 30 crop of ``example_ct_sm.nii.gz`` (zero border);
* ``large``: the whole ``example_ct.nii.gz`` (122 x 101 x 112 voxels).

For each run: wall time of ``predict`` (array in, labels out; file reading excluded for both), peak growth
of malloc'd memory in use during the call (glibc ``mallinfo2``, sampled every 2 ms: numpy and torch CPU
tensors), peak growth of the process's resident set over the call (``/proc/self/statm``, same sampler:
OpenVINO's own allocations too), and agreement with nnU-Net's labels. Runners, alternating with nnU-Net's
``nnUNetPredictor`` in one process (``--repeats``; the speed-up is nnU-Net's median time over the runner's):

* ``medseg``: torch, defaults (a tile's 8 mirrored copies in one network call);
* ``medseg-exact``: torch, ``mirror_batch=1`` (nnU-Net's evaluation order: identical labels);
* ``medseg-rows``: torch, defaults, ``stream_bytes=1`` (the bounded path: row slabs; labels = ``medseg``'s);
* ``medseg-ov`` / ``medseg-ov-rows``: the OpenVINO runtime (``--runtime openvino``), full and bounded path;
* ``medseg-bf16`` with ``--bf16``.

``--runners`` picks some; ``--classes 118`` gives the network TotalSegmentator's number of outputs (memory of
the logits and the export); ``--features``/``--patch`` size the network (nnU-Net's real ones are 32-320
features and 128^3 patches; the default is the tests' tiny 4-8-16, 32^3).

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_nnunet.py [--threads 1] [--cases small,large]
      [--classes 4] [--runners medseg,medseg-ov] [--repeats 3] [--features 4,8,16] [--patch 32] [--bf16]
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


def _rss() -> int:
    """Resident set size of this process now (bytes)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_flags() -> str:
    """The CPU model and the flags that decide the kernels (AVX2, AVX-512, VNNI, BF16, AMX)."""
    model, flags = "?", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    keep = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"]
    return f"{model}; flags: {' '.join(f for f in keep if f in flags) or 'none of ' + ','.join(keep)}"


class PeakHeap:
    """Peak growth of malloc'd bytes in use over a ``with`` block, sampled by a thread every 2 ms.

    Unlike RSS (which the allocator keeps after the first runner), this measures what each runner itself
    holds at its peak, so two runners can be compared in one process.
    """

    def __enter__(self):
        self.base = self.peak = _heap_in_use()
        self.rss_base = self.rss_peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _heap_in_use())
            self.rss_peak = max(self.rss_peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.growth = max(self.peak, _heap_in_use()) - self.base
        self.rss_growth = max(self.rss_peak, _rss()) - self.rss_base


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
    ap.add_argument("--runners", default="medseg,medseg-exact,medseg-rows,medseg-ov,medseg-ov-rows",
                    help="comma-separated medseg runners (see the module docstring)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating rounds (median times)")
    ap.add_argument("--features", default="4,8,16", help="features per stage of the PlainConvUNet")
    ap.add_argument("--patch", type=int, default=32, help="patch size (cube)")
    ap.add_argument("--no-exact", action="store_true", help="skip the mirror_batch=1 medseg run")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(k, str(tmp / k))
    os.environ.setdefault("MEDSEG_CACHE", str(tmp / "cache"))  # a cold compiled-model cache: conversions counted
    sys.path.insert(0, str(REPO))
    import nibabel as nib
    import torch

    from perfkit.nnunet_folder import PLAIN_ARCH, ct_intensity_properties, make_results_folder

    torch.set_num_threads(args.threads)
    ref_img = np.asanyarray(nib.load(DATA / "example_ct_sm.nii.gz").dataobj)
    labels = {"background": 0, **{f"class_{i}": i for i in range(1, args.classes)}}
    features = tuple(int(f) for f in args.features.split(","))
    folder = make_results_folder(tmp / "results", labels=labels,
                                 intensity_properties=ct_intensity_properties(ref_img[ref_img > -300]),
                                 spacing=(3.5, 4.0, 4.0), transpose_forward=(2, 0, 1),
                                 architecture=PLAIN_ARCH(features), patch_size=(args.patch,) * 3)

    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from medseg.nnunet import NnUNetPredictor
    from medseg.types import Geometry, Volume

    ref = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                          perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    ref.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1))
    settings = {
        "medseg": {},
        "medseg-exact": {"mirror_batch": 1},
        "medseg-rows": {"stream_bytes": 1},
        "medseg-ov": {"runtime": "openvino"},
        "medseg-ov-exact": {"runtime": "openvino", "mirror_batch": 1},
        "medseg-ov-rows": {"runtime": "openvino", "stream_bytes": 1},
        "medseg-bf16": {"precision": "bfloat16"},
    }
    names = [n for n in args.runners.split(",") if n and not (args.no_exact and n == "medseg-exact")]
    if args.bf16 and "medseg-bf16" not in names:
        names.append("medseg-bf16")
    unknown = sorted(set(names) - set(settings))
    if unknown:
        print(f"unknown runner(s) {unknown}; choose from {sorted(settings)}", file=sys.stderr)
        return 2
    ours = {}
    for name in names:
        t = time.perf_counter()
        ours[name] = NnUNetPredictor(folder, device="cpu", threads=args.threads, **settings[name])
        info = ours[name].runtime_info
        print(f"{name}: {info.line()}; load {time.perf_counter() - t:.1f} s")
    print(f"threads: {args.threads} (torch and OpenVINO); CPU count {os.cpu_count()}; {_cpu_flags()}")
    print(f"network: PlainConvUNet {features}, patch {args.patch}^3, {args.classes} classes, 2 folds, mirroring TTA")
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    print(f"{'case':<7}{'shape':<14}{'runner':<16}{'time s':>8}{'speed-up':>9}{'heap MB':>9}{'RSS+ MB':>9}  agreement")
    for case in args.cases.split(","):
        path = _case(case, tmp)
        rw = SimpleITKIO()
        data, props = rw.read_images([str(path)])
        img = nib.load(path)
        vol = Volume(np.asanyarray(img.dataobj), Geometry(img.affine, img.shape))
        times: dict[str, list[float]] = {"nnU-Net": [], **{n: [] for n in ours}}
        mem: dict[str, tuple[float, float]] = {}
        outs: dict[str, np.ndarray] = {}
        order = ["nnU-Net", *ours]
        for rep in range(args.repeats):
            for name in order[rep % len(order):] + order[:rep % len(order)]:  # rotate: each runner goes first once
                gc.collect()
                with PeakHeap() as m:
                    t = time.perf_counter()
                    if name == "nnU-Net":
                        seg = ref.predict_single_npy_array(data, props, None, None, False)
                        lab = np.ascontiguousarray(seg.transpose(2, 1, 0))  # SimpleITK (z, y, x) -> (i, j, k)
                    else:
                        lab = ours[name].predict(vol).array
                    times[name].append(time.perf_counter() - t)
                mem[name] = max(mem.get(name, (0, 0)), (m.growth / 2**20, m.rss_growth / 2**20))
                outs[name] = lab
        ref_labels = outs["nnU-Net"]
        t_ref = float(np.median(times["nnU-Net"]))
        shape = "x".join(map(str, vol.shape))
        for name in order:
            dt = float(np.median(times[name]))
            lab = outs[name]
            if name == "nnU-Net":
                agree = "reference"
            elif np.array_equal(lab, ref_labels):
                agree = "identical"
            else:
                dice = dice_per_label(lab, ref_labels, list(range(1, min(args.classes, 4))))
                agree = (f"{100 * float((lab == ref_labels).mean()):.4f} % equal "
                         f"({int((lab != ref_labels).sum())} voxels), Dice "
                         + ", ".join(f"{k}:{v:.4f}" for k, v in dice.items()))
            stitch = getattr(ours.get(name), "last_stitch", None)
            label = name if stitch is None or name.endswith("rows") == (stitch == "rows") else f"{name}({stitch})"
            print(f"{case if name == 'nnU-Net' else '':<7}{shape if name == 'nnU-Net' else '':<14}{label:<16}"
                  f"{dt:8.2f}{t_ref / dt:9.2f}{mem[name][0]:9.0f}{mem[name][1]:9.0f}  {agree}")
    print(f"load average at end {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
