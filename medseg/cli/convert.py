"""``medseg convert PATH -o OUT.nii.gz``: DICOM/NRRD/MetaImage/NIfTI to NIfTI (or .nrrd/.mha)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from medseg.cli._options import add_input_options


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a DICOM series, NRRD, MetaImage or NIfTI file to NIfTI",
        description="Read PATH (DICOM file/folder/zip, .nii[.gz], .nrrd, .mha/.mhd) and write OUT. "
        "The output is written to a temporary file and renamed: never a partial file.",
    )
    p.add_argument("path", help="input file, DICOM folder or .zip")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file: .nii.gz, .nii, .nrrd or .mha")
    add_input_options(p, checks=False)
    p.add_argument("--reference", metavar="SERIES", default=None,
                   help="DICOM SEG input: the series it segments (default: the SEG's own folder)")
    p.add_argument("--label", action="store_true", help="store the volume as a label map (smallest unsigned int type)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.errors import MedsegError
    from medseg.input_checks import select_volume
    from medseg.io import check_writable, read, write

    from pathlib import Path

    from medseg.io.dicom_seg import is_seg

    check_writable(args.output, overwrite=args.overwrite)  # fail before the (slow) read
    if Path(args.path).is_file() and is_seg(args.path):
        return _convert_seg(args)
    if args.reference is not None:
        raise MedsegError("--reference applies to a DICOM SEG input only", args.path)
    volume = select_volume(read(args.path, series=args.series, irregular=args.irregular), args.volume)
    for warning in volume.source.warnings:
        print(f"medseg convert: warning: {args.path}: {warning}", file=sys.stderr)
    if args.label:
        volume = volume.replace(is_label=True)
    out = write(volume, args.output, overwrite=args.overwrite)
    shape = "x".join(str(s) for s in volume.shape)
    sp = " x ".join(f"{s:.4g}" for s in volume.spacing)
    print(f"wrote {out} ({shape}, {sp} mm, {volume.geometry.orientation})")
    return 0


def _convert_seg(args: argparse.Namespace) -> int:
    """DICOM SEG -> label map on its referenced series' grid, with the label sidecars."""
    from medseg.io.dicom_seg import read_seg
    from medseg.pipeline import plan_outputs, write_segmentation

    plan_outputs(args.output, args.overwrite)  # fail before reading
    labels = read_seg(args.path, reference=args.reference)
    written = write_segmentation(labels, args.output, {"input": str(args.path), "converted_from": "DICOM SEG"},
                                 overwrite=args.overwrite)
    names = ", ".join(lab.name for lab in labels.labels)
    print(f"wrote {written['label_map']} ({len(labels.labels)} segment(s): {names})")
    return 0
