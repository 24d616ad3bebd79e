"""``medseg models export NAME --format onnx|openvino -o DIR`` (the logic is :mod:`medseg.engine.model_export`)."""

from __future__ import annotations

import argparse


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` under ``medseg models``."""
    pe = sub.add_parser(
        "export", help="export a model's network(s) to ONNX or OpenVINO IR, with labels and preprocessing in a sidecar"
    )
    pe.add_argument("name", help="registered model name, spec YAML or MONAI bundle directory")
    pe.add_argument("--format", dest="export_format", choices=["onnx", "openvino"], default="openvino",
                    help="onnx (network.onnx) or openvino (network.xml + network.bin); default openvino")
    pe.add_argument("-o", "--output", required=True, help="folder to create (with medseg_export.json)")
    pe.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    pe.add_argument("--trust-model-code", action="store_true",
                    help="load TorchScript whose sha256 nothing pins (it is code)")
    pe.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    import json

    from medseg.engine.model_export import SIDECAR, export_model

    out = export_model(args.name, args.output, args.export_format, overwrite=args.overwrite,
                       trust_model_code=args.trust_model_code)
    meta = json.loads((out / SIDECAR).read_text())
    for role, entry in meta["networks"].items():
        agree = entry["agreement_with_torch"]
        print(f"{meta['model']}: {role} -> {', '.join(str(out / f) for f in entry['files'])} "
              f"(input {entry['example_shape']}, max abs difference to torch {agree['max_abs']:.2g})")
    print(f"{meta['model']}: labels and preprocessing in {out / SIDECAR}")
    return 0
