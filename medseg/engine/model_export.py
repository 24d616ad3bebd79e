"""``medseg models export NAME --format onnx|openvino -o DIR``: a model's networks for other runtimes.

The exported folder holds the network (``network.onnx``, or ``network.xml`` + ``network.bin`` for
OpenVINO IR), the localiser network when the spec has one (``localizer.*``), and ``medseg_export.json``:
the spec's labels (ids, names, colours), its preprocessing (modality, channels, orientation, spacing,
resize, normalisation steps), inferer (whole volume or sliding window: ROI, overlap, blending), output
(activation, decision), the weights' sha256, the input/output names and shapes, and the versions used.
Another runtime needs exactly this to reproduce medseg's labels.

Each exported network is checked against torch before anything is written (:func:`check_agreement` on a
seeded input). The folder is assembled under a temporary name next to ``DIR`` and renamed into place: a
failed export leaves nothing, and an existing ``DIR`` is replaced only with ``overwrite=True``.

>>> export_model("brain-mri", "out/brain-ov", fmt="openvino")     # doctest: +SKIP
PosixPath('out/brain-ov')
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

from medseg.errors import ModelError, WriteError

__all__ = ["ExportFormat", "export_model", "SIDECAR"]

#: The sidecar's file name inside the export folder.
SIDECAR = "medseg_export.json"


class ExportFormat(str, Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"


def _format(fmt: str | ExportFormat) -> ExportFormat:
    try:
        return ExportFormat(str(getattr(fmt, "value", fmt)).lower())
    except ValueError:
        raise ValueError(f"format must be one of {[f.value for f in ExportFormat]}, got {fmt!r}.") from None


def _example_shape(spec: Any) -> tuple[int, ...]:
    """``(1, C, *spatial)`` the network is fed: the sliding window's ROI or the whole-volume resize."""
    from medseg.config import InferMode

    channels = int(spec.input.channels)
    if spec.inferer.mode is InferMode.SLIDING:
        return (1, channels, *[int(s) for s in spec.inferer.roi_size])
    if spec.input.resize is not None:
        return (1, channels, *[int(s) for s in spec.input.resize])
    raise ModelError(f"{spec.name}: a whole-volume network without a fixed input size (input.resize) cannot be "
                     "exported with a representative shape")


def _sidecar(spec: Any, predictor: Any, fmt: ExportFormat, files: dict[str, Any]) -> dict[str, Any]:
    import platform

    import torch

    from medseg import __version__
    from medseg.engine.openvino import openvino_version

    d = spec.to_dict()
    return {
        "format": fmt.value,
        "model": spec.name,
        "description": spec.description,
        "license": d.get("license"),
        "labels": [{"id": lab.id, "name": lab.name, "color": list(lab.color)} for lab in spec.labels],
        "preprocessing": d.get("input"),
        "inferer": d.get("inferer"),
        "output": d.get("output"),
        "networks": files,
        "layout": "(N, C, X, Y, Z) float32, axes in the preprocessed (oriented, resampled) grid's voxel order",
        "fingerprint": predictor.fingerprint,
        "spec_digest": spec.digest(),
        "versions": {"medseg": __version__, "torch": torch.__version__, "openvino": openvino_version(),
                     "python": platform.python_version()},
    }


def _export_one(module: Any, shape: tuple[int, ...], dest: Path, stem: str, fmt: ExportFormat,
                fingerprint: str, digest: str | None) -> dict[str, Any]:
    """Export one network to ``dest/stem.*``, check it against torch; its sidecar entry."""
    import warnings

    import torch

    from medseg.engine.openvino import ConversionError, OpenVINONetwork, check_agreement, convert_network

    if fmt is ExportFormat.OPENVINO:
        import openvino as ov

        ov_net = convert_network(module, shape, fingerprint=fingerprint, weights_sha256=digest, threads=None)
        ov.save_model(ov_net.model, str(dest / f"{stem}.xml"), compress_to_fp16=False)
        names = [f"{stem}.xml", f"{stem}.bin"]
        agreement = check_agreement(module, OpenVINONetwork(ov.Core().read_model(str(dest / f"{stem}.xml"))), shape)
    else:
        try:
            import onnx  # noqa: F401 - torch's exporter needs it
        except ImportError:
            raise ModelError("ONNX export needs the onnx package: pip install onnx") from None
        path = dest / f"{stem}.onnx"
        spatial = {i: f"dim{i}" for i in range(2, len(shape))}
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (torch.zeros(shape),), str(path), dynamo=False, input_names=["input"],
                                  output_names=["output"], opset_version=17,
                                  dynamic_axes={"input": {0: "batch", **spatial}, "output": {0: "batch", **spatial}})
        except Exception as err:  # noqa: BLE001 - the exporter raises many types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConversionError(f"torch cannot export {type(module).__name__} to ONNX: {first[:300]}") from None
        import openvino as ov

        names = [path.name]
        agreement = check_agreement(module, OpenVINONetwork(ov.Core().read_model(str(path))), shape)
    return {"files": names, "input": "input" if fmt is ExportFormat.ONNX else 0, "example_shape": list(shape),
            "weights_sha256": digest, "agreement_with_torch": agreement}


def export_model(
    name: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    fmt: str | ExportFormat = ExportFormat.OPENVINO,
    *,
    overwrite: bool = False,
    trust_model_code: bool = False,
) -> Path:
    """Export a model's network(s) to ``out_dir`` with the ``medseg_export.json`` sidecar.

    Args:
        name: registry name, spec YAML or MONAI bundle directory (as for ``medseg segment --model``).
        out_dir: folder to create (refused if it exists, unless ``overwrite``).
        fmt: ``onnx`` or ``openvino`` (IR ``.xml`` + ``.bin``).
        trust_model_code: as for segmenting: load TorchScript nothing pins.

    Raises:
        WriteError: ``out_dir`` exists (without ``overwrite``) or its parent is missing.
        ModelError: the model does not load, has no fixed input size, or does not convert/export.
        ValueError: an unknown ``fmt``.
    """
    fmt = _format(fmt)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise WriteError("exists (use --overwrite to replace it)", out)
    if out.exists() and not out.is_dir():
        raise WriteError("exists and is not a folder", out)
    if not out.parent.is_dir():
        raise WriteError("no such directory", out.parent)
    import torch

    from medseg.predictor import Predictor, load_predictor

    predictor = load_predictor(name if isinstance(name, str) else str(name), device="cpu",
                               trust_model_code=trust_model_code)
    if not isinstance(predictor, Predictor) or not isinstance(predictor.network, torch.nn.Module):
        what = type(predictor.network).__name__ if isinstance(predictor, Predictor) else type(predictor).__name__
        raise ModelError(f"{predictor.spec.name}: only torch networks built from a spec, a bundle or TorchScript "
                         f"can be exported (this model runs a {what})")
    spec = predictor.spec
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        files = {"network": _export_one(predictor.network, _example_shape(spec), tmp, "network", fmt,
                                        predictor.fingerprint, predictor._weights_digest)}
        if predictor.localizer is not None:
            loc = spec.input.localize
            files["localizer"] = _export_one(predictor.localizer, (1, int(spec.input.channels), *loc.input_size),
                                             tmp, "localizer", fmt, predictor.fingerprint + ":localizer",
                                             predictor._localizer_digest)
        (tmp / SIDECAR).write_text(json.dumps(_sidecar(spec, predictor, fmt, files), indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
