"""``medseg segment INPUT -o OUT.nii.gz``: label map + sidecars (JSON, 3D Slicer .ctbl, ITK-SNAP .txt)."""

from __future__ import annotations

import argparse
import sys

from medseg.cli._options import add_input_options, add_model_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment a volume with a model (default: brain-mri, offline)",
        description="Segment INPUT (NIfTI, NRRD, MHA, DICOM file/folder/zip) and write a label map with the "
        "input's exact grid, plus OUT.json (labels, colours, volumes in mL), OUT.ctbl (3D Slicer) and OUT.txt "
        "(ITK-SNAP).",
    )
    p.add_argument("input", nargs="?",
                   help="input volume (omit with --sample or --channel); for a multi-channel model a 4D stack or any "
                   "one file of an nnU-Net case (CASE_0000.nii.gz ...)")
    p.add_argument("--channel", action="append", default=[], metavar="NAME=PATH",
                   help="one input per channel of a multi-channel model, once per channel (e.g. --channel t1c=a.nii.gz "
                   "--channel flair=b/); secondary channels are resampled onto the first channel's grid")
    p.add_argument("-o", "--output", required=True,
                   help="output label map (.nii.gz, .nii, .nrrd, .mha), or a folder (existing, or ending in /): "
                   "FOLDER/<name>_seg.nii.gz with the case name `medseg batch` would give the input")
    add_model_options(p)
    add_input_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--sample", action="store_true", help="segment the bundled sample MRI (offline demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.channels import parse_channel_args
    from medseg.errors import MedsegError
    from medseg.input_checks import check_channels, check_modality
    from medseg.model_input import model_contract, read_input
    from medseg.pipeline import check_outputs, folder_output, is_folder_output, segment_file

    if args.sample:
        if args.input or args.channel:
            raise MedsegError("give either INPUT or --sample, not both")
        try:
            from medseg.data import sample_path
        except ImportError:
            raise MedsegError("this installation has no bundled sample data") from None
        args.input = str(sample_path())
    try:
        channels = parse_channel_args(args.channel)
    except ValueError as err:
        raise MedsegError(str(err)) from None
    if not args.input and not channels:
        raise MedsegError("missing INPUT (or --sample, or --channel NAME=PATH for each channel)")
    if not is_folder_output(args.output):
        check_outputs(args.output, args.overwrite)  # fail fast, before reading or loading anything
    contract = model_contract(args.model)  # the model's input contract, without loading its network
    volume = read_input(
        contract, args.input, channels or None, series=args.series, irregular=args.irregular, volume=args.volume
    )
    output = folder_output(args.output, volume, sample=args.sample) if is_folder_output(args.output) else args.output
    if output != args.output:
        print(f"-o is a folder: writing {output}")
    check_channels(volume, contract.channels, contract.name)
    if contract.spec is not None:
        check_modality(volume, contract.spec, force=args.force, modality=args.modality)
    if output != args.output:
        output.parent.mkdir(parents=True, exist_ok=True)
        check_outputs(output, args.overwrite)

    from medseg.predictor import load_predictor
    from medseg.progress import TqdmProgress

    progress = None if args.no_progress or not sys.stderr.isatty() else TqdmProgress(desc=f"{args.model}")
    predictor = load_predictor(
        args.model, device=args.device, precision=args.precision, overlap=args.overlap, tta=args.tta, threads=args.threads
    )
    result = segment_file(
        args.input or volume.source.path,
        output,
        predictor,
        overwrite=args.overwrite,
        series=args.series,
        progress=progress,
        extra={k: v for k, v in vars(args).items() if k != "run"},
        volume=volume,
        force=args.force,
        modality=args.modality,
    )
    if progress is not None:
        progress.close()
    print(f"wrote {result.output} ({result.seconds:.1f} s, model {result.model})")
    for name, ml in result.volumes_ml.items():
        print(f"  {name}: {ml:.2f} mL")
    for warning in result.warnings:
        print(f"medseg segment: warning: {warning}", file=sys.stderr)
    return 0
