"""``medseg models list`` / ``medseg models pull NAME``: the model registry (no torch import)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list registered models, download weights")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    pl = sub.add_parser("list", help="list registered models (answers without loading torch)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(run=run_list)
    pp = sub.add_parser("pull", help="download a model's weights into the cache (~/.cache/medseg or $MEDSEG_CACHE)")
    pp.add_argument("name", help="registered model name")
    pp.add_argument(
        "--allow-unverified",
        action="store_true",
        help="accept weights whose sha256 is not published (the digest is recorded for later checks)",
    )
    pp.add_argument(
        "--trust-model-code",
        action="store_true",
        help="you trust this model's author: record its TorchScript's sha256 as pinned by you, so later runs "
        "load it without the flag (TorchScript is code and runs when loaded)",
    )
    pp.add_argument("--no-progress", action="store_true", help="no progress bar")
    pp.set_defaults(run=run_pull)
    from medseg.cli.models_export import add_export_parser

    add_export_parser(sub)
    p.set_defaults(run=run_list, json=False)


def _sam_rows() -> list[dict]:
    """Promptable (SAM-family) models: kind, weights present or not, and how to get absent ones."""
    from medseg.sam.registry import CHECKPOINTS, DEFAULT_SAM, weights_status

    rows = []
    for spec in CHECKPOINTS.values():
        present, where = weights_status(spec)
        rows.append({"name": spec.name, "kind": spec.family.value, "prompt": spec.prompt, "weights_present": present,
                     "weights": where, "default": spec.name == DEFAULT_SAM})
    return rows


def run_list(args: argparse.Namespace) -> int:
    from medseg.models.registry import DEFAULT_MODEL, list_models

    models = list_models()
    sam = _sam_rows()
    if getattr(args, "json", False):
        print(
            json.dumps(
                [
                    {
                        "name": m.name,
                        "description": m.description,
                        "modality": m.modality,
                        "labels": m.n_labels,
                        "weights": m.weights,
                        "source": m.source,
                        "spec": str(m.path),
                        "default": m.name == DEFAULT_MODEL,
                    }
                    for m in models
                ]
                + [{**r, "type": "sam"} for r in sam],
                indent=2,
            )
        )
        return 0
    width = max((len(m.name) for m in models), default=4) + 2
    print(f"{'NAME':<{width}}{'MODALITY':<10}{'LABELS':>7}  {'WEIGHTS':<10}DESCRIPTION")
    for m in models:
        star = "*" if m.name == DEFAULT_MODEL else " "
        print(f"{m.name + star:<{width}}{m.modality:<10}{m.n_labels:>7}  {m.weights:<10}{m.description}")
    print("* default model; weights: embedded = offline, download = run `medseg models pull NAME` first")
    print()
    sw = max(len(r["name"]) for r in sam) + 2
    print(f"{'SAM MODEL':<{sw}}{'KIND':<12}{'PROMPT':<12}{'WEIGHTS':<9}WHERE / HOW TO GET THEM OFFLINE")
    for r in sam:
        star = "*" if r["default"] else " "
        state = "present" if r["weights_present"] else "absent"
        print(f"{r['name'] + star:<{sw}}{r['kind']:<12}{r['prompt']:<12}{state:<9}{r['weights']}")
    print("* default SAM model (`medseg prompt`, napari SAM widget)")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from medseg.config import load_spec
    from medseg.errors import ModelError
    from medseg.models.registry import resolve_model
    from medseg.models.sources import pull_model

    spec_path = resolve_model(args.name)
    if spec_path.is_dir():
        raise ModelError("a bundle directory needs no pull", spec_path)
    spec = load_spec(spec_path)
    for r in pull_model(spec, allow_unverified=args.allow_unverified, trust_model_code=bool(getattr(args, "trust_model_code", False)),
                        progress=not args.no_progress, say=lambda line: print(line, flush=True)):
        if r.path is None:
            print(f"{spec.name}: weights are {r.kind} ({r.source}); nothing to download")
        else:
            print(f"{spec.name}: {r.path}{r.note}")
    return 0
