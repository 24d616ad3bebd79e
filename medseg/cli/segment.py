"""``medseg segment INPUT -o OUT.nii.gz``: label map + sidecars (JSON, 3D Slicer .ctbl, ITK-SNAP .txt)."""

from __future__ import annotations

import argparse
import sys

from medseg.cli._options import add_model_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment a volume with a model (default: brain-mri, offline)",
        description="Segment INPUT (NIfTI, NRRD, MHA, DICOM file/folder/zip) and write a label map with the "
        "input's exact grid, plus OUT.json (labels, colours, volumes in mL), OUT.ctbl (3D Slicer) and OUT.txt "
        "(ITK-SNAP).",
    )
    p.add_argument("input", nargs="?", help="input volume (omit with --sample)")
    p.add_argument("-o", "--output", required=True, help="output label map (.nii.gz, .nii, .nrrd, .mha)")
    add_model_options(p)
    p.add_argument("--series", default=None, help="DICOM SeriesInstanceUID when the input holds several")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--sample", action="store_true", help="segment the bundled sample MRI (offline demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.errors import MedsegError
    from medseg.pipeline import check_outputs, segment_file

    if args.sample:
        if args.input:
            raise MedsegError("give either INPUT or --sample, not both")
        try:
            from medseg.data import sample_path
        except ImportError:
            raise MedsegError("this installation has no bundled sample data") from None
        args.input = str(sample_path())
    if not args.input:
        raise MedsegError("missing INPUT (or use --sample)")
    check_outputs(args.output, args.overwrite)  # fail fast, before loading the model
    from pathlib import Path

    from medseg.errors import ReadError

    if not Path(args.input).exists():
        raise ReadError("no such file or directory", args.input)

    from medseg.predictor import load_predictor
    from medseg.progress import TqdmProgress

    progress = None if args.no_progress or not sys.stderr.isatty() else TqdmProgress(desc=f"{args.model}")
    predictor = load_predictor(
        args.model, device=args.device, precision=args.precision, overlap=args.overlap, tta=args.tta, threads=args.threads
    )
    result = segment_file(
        args.input,
        args.output,
        predictor,
        overwrite=args.overwrite,
        series=args.series,
        progress=progress,
        extra={k: v for k, v in vars(args).items() if k != "run"},
    )
    if progress is not None:
        progress.close()
    print(f"wrote {result.output} ({result.seconds:.1f} s, model {result.model})")
    for name, ml in result.volumes_ml.items():
        print(f"  {name}: {ml:.2f} mL")
    return 0
