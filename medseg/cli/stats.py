"""``medseg stats SCAN LABELS [--json|--csv]``: per-label volume, intensities, bounding box, centroid."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "stats",
        help="per-label statistics of a label map on its scan (volume, intensities, bounding box, centroid)",
        description="For every label of LABELS: voxel count, volume (mL), intensity mean/std/median/min/max and "
        "5/25/75/95th percentiles of SCAN (HU for CT), bounding box and centroid (voxel indices, RAS and "
        "DICOM/LPS scanner mm). Label names come from the LABELS sidecar (.json) or a DICOM SEG.",
    )
    p.add_argument("scan", help="the image (any format medseg reads); must share the label map's grid")
    p.add_argument("labels", help="label map (.nii.gz/.nrrd/.mha, or a DICOM SEG .dcm)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON (default: a table)")
    out.add_argument("--csv", action="store_true", help="CSV")
    p.add_argument("--series", default=None, help="DICOM series of SCAN when it holds several")
    p.set_defaults(run=run)


def load_labels(path: str, scan: str | None = None) -> Any:
    """A label map with names: a DICOM SEG (on ``scan`` as reference), else a label file + its JSON sidecar."""
    from pathlib import Path

    from medseg.io import read
    from medseg.io.dicom_seg import is_seg, read_seg

    if Path(path).is_file() and is_seg(path):
        return read_seg(path, reference=scan)
    vol = read(path).replace(is_label=True)
    if not vol.labels:
        vol = vol.replace(labels=_sidecar_labels(Path(path), vol))
    return vol


def _sidecar_labels(path: Any, vol: Any) -> tuple:
    """Names from the label map's tables (medseg JSON, Slicer .ctbl, ITK-SNAP .txt, TotalSegmentator), else
    ``"label N"`` per id present (see :func:`medseg.label_tables.find_label_table`)."""
    import numpy as np

    from medseg.label_tables import find_label_table
    from medseg.labels import label_color
    from medseg.types import Label

    ids = {int(i) for i in np.unique(np.asarray(vol.array)) if i > 0}
    found = find_label_table(path, ids=ids)
    if found is not None:
        return found[0]
    return tuple(Label(i, f"label {i}", label_color(i)) for i in sorted(ids))


def run(args: argparse.Namespace) -> int:
    from medseg.errors import MedsegError
    from medseg.io import read
    from medseg.stats import label_statistics, to_csv

    image = read(args.scan, series=args.series)
    labels = load_labels(args.labels, args.scan)
    try:
        rows = label_statistics(labels, image)
    except ValueError as err:
        raise MedsegError(str(err), args.labels) from None
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.csv:
        sys.stdout.write(to_csv(rows))
    else:
        print(f"{'id':>4}  {'name':<28} {'voxels':>9} {'mL':>10} {'mean':>9} {'std':>8} {'median':>9}  centroid RAS mm")
        for r in rows:
            c = " ".join(f"{v:.1f}" for v in r.get("centroid_ras_mm", [])) or "-"
            mean = f"{r['mean']:.1f}" if "mean" in r else "-"
            std = f"{r['std']:.1f}" if "std" in r else "-"
            med = f"{r['median']:.1f}" if "median" in r else "-"
            print(f"{r['id']:>4}  {r['name'][:28]:<28} {r['voxels']:>9} {r['volume_ml']:>10.3f} {mean:>9} {std:>8} {med:>9}  {c}")
    return 0
