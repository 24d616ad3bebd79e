"""``medseg segment INPUT -o OUT.nii.gz``: label map + sidecars (JSON, 3D Slicer .ctbl, ITK-SNAP .txt)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from medseg.cli._options import add_input_options, add_model_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment a volume with a model (default: brain-mri, offline)",
        description="Segment INPUT (NIfTI, NRRD, MHA, DICOM file/folder/zip) and write a label map with the "
        "input's exact grid, plus OUT.json (labels, colours, volumes in mL), OUT.ctbl (3D Slicer) and OUT.txt "
        "(ITK-SNAP).",
    )
    p.add_argument("input", nargs="?", help="input volume (omit with --sample)")
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
    from pathlib import Path

    from medseg.errors import ReadError
    from medseg.input_checks import check_channels, check_modality, select_volume
    from medseg.io import read
    from medseg.pipeline import folder_output, is_folder_output

    if not is_folder_output(args.output):
        check_outputs(args.output, args.overwrite)  # fail fast, before reading or loading anything
    channels, spec = model_contract(args.model)  # the model's input contract, without loading its network
    if not Path(args.input).exists():
        raise ReadError("no such file or directory", args.input)
    volume = select_volume(read(args.input, series=args.series, irregular=args.irregular), args.volume)
    output = folder_output(args.output, volume, sample=args.sample) if is_folder_output(args.output) else args.output
    if output != args.output:
        print(f"-o is a folder: writing {output}")
    check_channels(volume, channels, str(args.model))
    if spec is not None:
        check_modality(volume, spec, force=args.force, modality=args.modality)
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
        args.input,
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


def model_contract(model: str) -> tuple[int, Any]:
    """``(input channels, spec or None)`` of ``--model`` without loading a network.

    Specs, registry names and MONAI bundles give their :class:`~medseg.config.ModelSpec`; an nnU-Net
    results folder gives its ``dataset.json`` channel count (its spec is built when it loads).
    """
    import json
    from pathlib import Path

    from medseg.errors import ModelError

    folder = Path(str(model)).expanduser()
    dataset = folder / "dataset.json"
    if folder.is_dir() and dataset.is_file() and not (folder / "configs").is_dir():
        try:
            channels = json.loads(dataset.read_text(encoding="utf-8")).get("channel_names")
        except (OSError, ValueError, AttributeError) as err:
            raise ModelError(f"cannot read dataset.json: {err}", dataset) from None
        if isinstance(channels, dict) and channels:
            return len(channels), None
        raise ModelError("dataset.json has no 'channel_names'", dataset)
    from medseg.predictor import load_model_spec

    spec = load_model_spec(model)
    return spec.input.channels, spec
