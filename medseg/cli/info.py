"""``medseg info PATH [--json]``: list the series/volumes a file, folder or zip holds (headers only)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from medseg.cli._options import volume_choice


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="list the series in a DICOM folder/zip/file or describe a NIfTI/NRRD/MHA file",
        description="List each series (UID, description, modality, shape, spacing, orientation, warnings). "
        "Reads headers only.",
    )
    p.add_argument("path", help="DICOM file, folder or .zip; .nii/.nii.gz; .nrrd/.nhdr; .mha/.mhd")
    p.add_argument("--json", action="store_true", help="print a JSON list (one object per series)")
    p.add_argument("--volume", type=volume_choice, default=None, metavar="N|mean",
                   help="describe one volume of a 4D scan (0-based) or their mean, as convert/segment would read it")
    p.set_defaults(run=run)


def _fmt_shape(values: tuple[Any, ...], sep: str = "x", spec: str = "") -> str:
    return sep.join(format(v, spec) for v in values) if values else "-"


def run(args: argparse.Namespace) -> int:
    from medseg.io import scan

    series = scan(args.path)
    if args.volume is not None:
        series = [_one_volume(s, args.volume, args.path) for s in series]
    if args.json:
        json.dump([s.to_dict() for s in series], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    print(f"{args.path}: {len(series)} series" if len(series) != 1 else f"{args.path}: 1 series")
    for n, s in enumerate(series, 1):
        print(f"[{n}] {s.format}  {s.modality or '-'}  #{s.number if s.number is not None else '-'}  {s.description or ''}")
        if s.uid:
            print(f"    uid:         {s.uid}")
        if s.extra and s.extra.get("part"):
            print(f"    part:        {s.extra['part']} (split from one SeriesInstanceUID)")
        print(f"    shape:       {_fmt_shape(s.shape)}")
        if len(s.shape) == 4:
            print(f"    volumes:     {s.shape[3]} (0..{s.shape[3] - 1}; choose one with --volume N or --volume mean)")
        elif s.extra and s.extra.get("volume") is not None:
            print(f"    volume:      {s.extra['volume']} (of {s.extra['volumes']})")
        print(f"    spacing:     {_fmt_shape(s.spacing, ' x ', '.4g')} mm")
        print(f"    orientation: {s.orientation or '-'}")
        if s.n_files != 1:
            print(f"    files:       {s.n_files}")
        dtype = s.extra.get("dtype") if s.extra else None
        if dtype:
            print(f"    dtype:       {dtype}")
        if s.extra and s.extra.get("scl_slope") is not None:
            print(f"    scaling:     x {s.extra['scl_slope']:.6g} + {s.extra['scl_inter']:.6g}")
        for w in s.warnings:
            print(f"    warning:     {w}")
    readable = [s for s in series if s.format == "dicom" and (s.extra or {}).get("readable", True)]
    if len(readable) > 1:
        print(f"{len(readable)} image series: choose one with --series UID (or a unique UID prefix, a series number "
              "when it is unique, or NUMBER.sK for part K of a split series) in convert/segment/prompt")
    return 0


def _one_volume(s: Any, choice: int | str, path: str) -> Any:
    """The series description of one volume (``--volume``): the 4th axis dropped, the choice recorded."""
    from dataclasses import replace

    from medseg.errors import InputError

    n = s.shape[3] if len(s.shape) == 4 else 1
    if choice != "mean" and not 0 <= int(choice) < n:
        raise InputError(f"--volume {choice} is out of range: this scan has {n} volume(s) (0..{n - 1})", path)
    return replace(s, shape=tuple(s.shape[:3]), extra={**(s.extra or {}), "volume": choice, "volumes": n})
