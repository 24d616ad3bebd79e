"""``medseg batch INPUT_DIR -o OUTPUT_DIR --model NAME``: segment every scan in a folder tree.

Resumable (finished cases are skipped on a re-run with the same model and settings), fault tolerant
(a bad case becomes a failed row, the batch goes on; exit code 1 when any case failed), with a progress
bar, a summary CSV and a provenance JSON. ``--ray [ADDRESS]`` runs the same batch on a Ray cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from medseg.cli._options import add_model_options, add_output_options, positive_float, positive_int

LOCAL_RAY = "local"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "batch",
        help="segment every scan under a folder (resumable, fault tolerant, optional Ray cluster)",
        description="Find every NIfTI/NRRD/MetaImage file and DICOM series under INPUT_DIR, segment each with "
        "one model loaded once, and write OUTPUT_DIR/<same relative path>/<name>_seg.nii.gz plus sidecars, "
        "batch_summary.csv and batch_provenance.json. Each case runs in a worker process with time limits: a case "
        "that fails, hangs or crashes is a failed row and the rest go on. Every input found is listed in the "
        "summary (ok / failed / skipped, with the reason). Re-running skips finished cases. Exit code: 0 all "
        "cases succeeded, 1 some case failed, 2 the batch could not run, 130 interrupted.",
    )
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder searched recursively for scans")
    p.add_argument("-o", "--output", dest="output_dir", metavar="OUTPUT_DIR", required=True,
                   help="output folder (created if missing); must not contain INPUT_DIR")
    add_model_options(p)
    add_output_options(p, dicomweb=False)
    p.add_argument("--irregular", choices=["error", "resample"], default="error",
                   help="DICOM slices not on a regular grid: fail the case (default) or resample")
    p.add_argument("--modality", choices=["auto", "ct", "mr"], default="auto",
                   help="the scans' modality: auto = DICOM Modality, else an intensity test for Hounsfield units")
    p.add_argument("--force", action="store_true",
                   help="segment cases whose modality is not the model's (default: such a case fails with the reason)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs not written by this batch, or written with another model/settings")
    p.add_argument("--read-ahead", type=positive_int, default=1, help=argparse.SUPPRESS)  # kept for old scripts
    p.add_argument("--read-timeout", type=positive_float, default=None, metavar="SECONDS",
                   help="time allowed to read one case before it is failed and its worker restarted "
                   "(default: $MEDSEG_READ_TIMEOUT or 60)")
    p.add_argument("--case-timeout", type=positive_float, default=None, metavar="SECONDS",
                   help="time allowed for one whole case: read, segment, write (default: $MEDSEG_CASE_TIMEOUT "
                   "or 1800)")
    p.add_argument("--follow-outside-symlinks", action="store_true",
                   help="read inputs reached through symlinks that leave INPUT_DIR (by default they are listed "
                   "as skipped; either way the summary says which)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="only cases whose path relative to INPUT_DIR (or name) matches GLOB; repeatable")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip cases whose path relative to INPUT_DIR (or name) matches GLOB; repeatable")
    p.add_argument("--keep-label-files", action="store_true",
                   help="also segment files that are label maps (by default such files, e.g. *_seg.nii.gz beside "
                   "scans, are skipped with the reason in the summary)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would run (input -> output) and what would be skipped, then stop; writes nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar: one log line per case (for log files)")
    p.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: ADDRESS (e.g. 'auto' or 'ray://head:10001'), or a local cluster "
                   "when omitted. Needs `pip install 'medseg[distributed]'`")
    p.add_argument("--ray-workers", type=positive_int, default=None,
                   help="model replicas on Ray (default: one per GPU, else one per --threads CPUs, i.e. one per CPU "
                   "without --threads)")
    p.set_defaults(run=run)


def _command_line(args: argparse.Namespace) -> list[str]:
    """The command as it would be typed (for the provenance file), with every option that was set."""
    cmd = ["medseg", "batch", str(args.input_dir), "-o", str(args.output_dir), "--model", str(args.model)]
    for flag, value, default in (
        ("--device", args.device, "auto"),
        ("--precision", args.precision, "auto"),
        ("--overlap", args.overlap, None),
        ("--threads", args.threads, None),
        ("--runtime", args.runtime, "torch"),
        ("--irregular", args.irregular, "error"),
        ("--modality", args.modality, "auto"),
        ("--read-timeout", args.read_timeout, None),
        ("--case-timeout", args.case_timeout, None),
        ("--ray-workers", args.ray_workers, None),
    ):
        if value != default:
            cmd += [flag, str(value)]
    if args.formats != "nifti":
        cmd += ["--format", str(args.formats)]
    if args.seg_type != "binary":
        cmd += ["--seg-type", args.seg_type]
    if args.roi:
        cmd += ["--roi", *args.roi]
    for flag, on in (("--split", args.split), ("--stats", args.stats)):
        if on:
            cmd.append(flag)
    if args.tta is not None:
        cmd.append("--tta" if args.tta else "--no-tta")
    for flag, on in (("--overwrite", args.overwrite), ("--force", args.force), ("--quiet", args.quiet),
                     ("--trust-model-code", args.trust_model_code),
                     ("--follow-outside-symlinks", args.follow_outside_symlinks),
                     ("--keep-label-files", args.keep_label_files)):
        if on:
            cmd.append(flag)
    for flag, globs in (("--include", args.include), ("--exclude", args.exclude)):
        for glob in globs:
            cmd += [flag, glob]
    if args.ray is not None:
        cmd += ["--ray"] + ([] if args.ray == LOCAL_RAY else [args.ray])
    return cmd


def _renamed(args: argparse.Namespace, formats: tuple[str, ...]) -> dict[str, Any]:
    """:class:`~medseg.batch.settings.BatchSettings` fields whose option has another name or form; every other
    field is the option of the same name (``--device`` -> ``device`` ...)."""
    return {
        "formats": formats,
        "roi": tuple(args.roi or ()),
        "follow_outside_links": args.follow_outside_symlinks,
        "include": tuple(args.include),
        "exclude": tuple(args.exclude),
        "skip_labels": not args.keep_label_files,
    }


def batch_settings(args: argparse.Namespace, formats: tuple[str, ...]) -> Any:
    """The :class:`~medseg.batch.settings.BatchSettings` of the parsed options (``formats`` parsed)."""
    from dataclasses import fields

    from medseg.batch.settings import BatchSettings

    renamed = _renamed(args, formats)
    values = {f.name: renamed[f.name] if f.name in renamed else getattr(args, f.name)
              for f in fields(BatchSettings) if f.name in renamed or hasattr(args, f.name)}
    return BatchSettings(**values)


def run(args: argparse.Namespace) -> int:
    from medseg.batch.runner import run_batch
    from medseg.errors import MedsegError
    from medseg.pipeline import parse_formats

    try:
        formats = tuple(f.value for f in parse_formats(args.formats))
    except ValueError as err:
        raise MedsegError(str(err)) from None

    if args.quiet:
        logging.getLogger("medseg.batch").setLevel(logging.INFO)
    settings = batch_settings(args, formats)
    if args.dry_run:
        from medseg.batch.runner import dry_run

        rows = dry_run(args.input_dir, args.output_dir, settings)
        for inp, status, what in rows:
            print(f"{status:<8} {inp}  ->  {what}" if status == "run" else f"{status:<8} {inp}  ({what})")
        n_run = sum(r[1] == "run" for r in rows)
        print(f"dry run: {n_run} case(s) would run, {len(rows) - n_run} input(s) skipped or failed; nothing written")
        return 0
    code, results = run_batch(
        args.input_dir,
        args.output_dir,
        settings,
        use_ray=args.ray is not None,
        ray_address=None if args.ray in (None, LOCAL_RAY) else args.ray,
        ray_workers=args.ray_workers,
        quiet=args.quiet,
        command=_command_line(args),
    )
    failed = [r for r in results if r.status.value == "failed"]
    if failed:
        print(f"medseg batch: {len(failed)} case(s) failed; see {args.output_dir}/batch_summary.csv", file=sys.stderr)
    return code
