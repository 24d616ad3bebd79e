"""``medseg segment INPUT -o OUT.nii.gz``: label map + sidecars (JSON, 3D Slicer .ctbl, ITK-SNAP .txt),
optionally a DICOM SEG / RTSTRUCT, per-label files and statistics; DICOMweb in and out."""

from __future__ import annotations

import argparse
import os
import sys

from medseg.cli._options import add_input_options, add_model_options, add_output_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment a volume with a model (default: brain-mri, offline)",
        description="Segment INPUT (NIfTI, NRRD, MHA, DICOM file/folder/zip, or a DICOMweb series "
        "dicomweb+http://HOST/dicom-web/studies/UID/series/UID) and write a label map with the input's exact "
        "grid, plus OUT.json (labels, colours, volumes in mL), OUT.ctbl (3D Slicer) and OUT.txt (ITK-SNAP); "
        "--format dicom-seg,rtstruct adds OUT.seg.dcm / OUT.rtstruct.dcm. All outputs or none.",
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
    add_output_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--sample", action="store_true", help="segment the bundled sample MRI (offline demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true",
                   help="print the sidecar document (OUT.json: labels, volumes, warnings, runtime, timings) to stdout "
                   "instead of the summary lines")
    p.set_defaults(run=run)


def dicomweb_auth(args: argparse.Namespace):  # noqa: ANN201 - medseg.dicomweb.Auth
    """The DICOMweb credentials from the options or the environment."""
    from medseg.dicomweb import Auth

    return Auth(
        username=args.dicomweb_user,
        password=args.dicomweb_password or os.environ.get("MEDSEG_DICOMWEB_PASSWORD"),
        token=args.dicomweb_token or os.environ.get("MEDSEG_DICOMWEB_TOKEN"),
        ca_bundle=args.dicomweb_ca,
    )


def run(args: argparse.Namespace) -> int:
    import tempfile

    from medseg.channels import parse_channel_args
    from medseg.dicomweb import is_dicomweb
    from medseg.errors import MedsegError
    from medseg.input_checks import check_channels, check_modality
    from medseg.model_input import model_contract, read_input
    from medseg.batch.naming import folder_output, is_folder_output
    from medseg.cli._options import model_kwargs
    from medseg.pipeline import OutputFormat, check_dicom_input, parse_formats, plan_outputs

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
        formats = parse_formats(args.formats)
    except ValueError as err:
        raise MedsegError(str(err)) from None
    if not args.input and not channels:
        raise MedsegError("missing INPUT (or --sample, or --channel NAME=PATH for each channel)")
    web = bool(args.input) and is_dicomweb(args.input)
    if args.store and not web:
        raise MedsegError("--store sends results back to a DICOMweb server: INPUT must be a dicomweb+http(s):// URL")
    if args.store and not any(f is not OutputFormat.NIFTI for f in formats):
        formats = (*formats, OutputFormat.DICOM_SEG)  # --store sends a SEG unless told which DICOM objects
    folder = is_folder_output(args.output)
    if not folder:
        plan_outputs(args.output, args.overwrite, formats, stats=args.stats, split=args.split)  # fail fast
    contract = model_contract(args.model)  # the model's input contract, without loading its network
    ref = None
    if web:
        from medseg.dicomweb import parse_url

        ref = parse_url(args.input)
        if args.series is not None:
            raise MedsegError("--series does not apply to a DICOMweb URL (it names the series)")
    elif args.input:
        check_dicom_input(args.input, formats)  # before reading or loading the model

    from medseg.predictor import load_predictor
    from medseg.progress import TqdmProgress

    with tempfile.TemporaryDirectory(prefix="medseg-dicomweb-") as tmp:
        source, series = args.input, args.series
        if ref is not None:
            from medseg.dicomweb import fetch_series

            files = fetch_series(ref, tmp, dicomweb_auth(args))
            print(f"fetched {len(files)} instance(s) of series {ref.series_uid}", file=sys.stderr)
            source = tmp
        volume = read_input(
            contract, source, channels or None, series=series, irregular=args.irregular, volume=args.volume
        )
        output = folder_output(args.output, volume, sample=args.sample) if folder else args.output
        if folder:
            print(f"-o is a folder: writing {output}")
        check_channels(volume, contract.channels, contract.name)
        if contract.spec is not None:
            check_modality(volume, contract.spec, force=args.force, modality=args.modality)
        if folder:
            output.parent.mkdir(parents=True, exist_ok=True)
            plan_outputs(output, args.overwrite, formats, stats=args.stats, split=args.split)
        progress = None if args.no_progress or not sys.stderr.isatty() else TqdmProgress(desc=f"{args.model}")
        predictor = load_predictor(args.model, modality=args.modality, **model_kwargs(args))
        info = getattr(predictor, "runtime_info", None)
        if info is not None and (info.note is not None or info.name != "torch"):
            print(info.line(), file=sys.stderr)
        from medseg.pipeline import segment_file

        result = segment_file(
            source or volume.source.path,
            output,
            predictor,
            overwrite=args.overwrite,
            series=series,
            progress=progress,
            extra={k: v for k, v in vars(args).items() if k not in ("run", "dicomweb_password", "dicomweb_token")},
            formats=formats,
            roi=args.roi,
            split=args.split,
            stats=args.stats,
            seg_type=args.seg_type,
            volume=volume,
            force=args.force,
            modality=args.modality,
        )
        if progress is not None:
            progress.close()
        stored = []
        if args.store and ref is not None:
            from medseg.dicomweb import store_files

            send = [p for k, p in result.extra_outputs.items() if k in ("seg", "rtstruct")]
            stored = store_files(ref.base, send, dicomweb_auth(args))
    if args.json:  # stdout carries the document only; the file list goes to stderr
        sys.stdout.write(result.sidecars["json"].read_text(encoding="utf-8").rstrip("\n") + "\n")
    out = sys.stderr if args.json else sys.stdout
    print(f"wrote {result.output} ({result.seconds:.1f} s, model {result.model})", file=out)
    for kind, path in result.extra_outputs.items():
        if not kind.startswith("split:"):
            print(f"wrote {path}", file=out)
    if args.split:
        print(f"wrote {sum(k.startswith('split:') for k in result.extra_outputs)} per-label files", file=out)
    if stored:
        print(f"stored {len(stored)} object(s) on {ref.base}", file=out)  # type: ignore[union-attr]
    for name, ml in result.volumes_ml.items():
        print(f"  {name}: {ml:.2f} mL", file=out)
    for warning in result.warnings:
        print(f"medseg segment: warning: {warning}", file=sys.stderr)
    return 0
