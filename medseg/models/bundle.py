"""MONAI bundle directory → :class:`~medseg.config.ModelSpec`, run by medseg's own engine.

A bundle holds ``configs/inference.json`` (or ``.yaml``), ``configs/metadata.json`` and ``models/model.pt``
(a state dict) or ``models/model.ts`` (TorchScript). The config is *read*, never executed: only ``@ref``
references and literal ``$`` values are resolved, and only these transforms are translated:

* preprocessing: ``LoadImaged``, ``EnsureChannelFirstd``, ``EnsureTyped``, ``CastToTyped`` (no-ops here);
  ``Orientationd``, ``Spacingd``, ``CropForegroundd``, ``Resized`` (spatial, must come first);
  ``ScaleIntensityRanged``, ``ScaleIntensityRangePercentilesd``, ``NormalizeIntensityd``, ``ScaleIntensityd``;
* inferer: ``SlidingWindowInferer``, ``SimpleInferer``;
* postprocessing: ``Activationsd``, ``Invertd``, ``AsDiscreted``, ``KeepLargestConnectedComponentd``,
  ``FillHolesd``, ``SaveImaged`` (ignored), ``EnsureTyped``, ``ToDeviced``.

Anything else is a :class:`~medseg.errors.ModelError` naming the transform and the config file.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from medseg.config import ModelSpec, spec_from_dict
from medseg.models.parse import MALFORMED, one_line, parse_json_text, parse_yaml_text, read_config_text
from medseg.errors import ModelError

__all__ = ["spec_from_bundle", "is_bundle"]

_NOOP_PRE = {"LoadImaged", "EnsureChannelFirstd", "EnsureTyped", "CastToTyped", "ToTensord", "EnsureTyped"}
_SPATIAL = {"Orientationd", "Spacingd", "CropForegroundd", "Resized"}
_INTENSITY = {"ScaleIntensityRanged", "ScaleIntensityRangePercentilesd", "NormalizeIntensityd", "ScaleIntensityd"}
_NOOP_POST = {"SaveImaged", "EnsureTyped", "ToDeviced", "CopyItemsd", "SqueezeDimd", "ToNumpyd"}


def is_bundle(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / "configs" / f).is_file() for f in ("inference.json", "inference.yaml", "inference.yml"))


def _load_config(root: Path) -> tuple[dict[str, Any], Path]:
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        f = root / "configs" / name
        if f.is_file():
            text = read_config_text(f, "bundle config")
            data = parse_json_text(text, f, "bundle config") if f.suffix == ".json" else parse_yaml_text(
                text, f, "bundle config")
            if not isinstance(data, dict):
                raise ModelError(f"bundle config must be a mapping, got {type(data).__name__}", f)
            return data, f
    raise ModelError("not a MONAI bundle: no configs/inference.json or configs/inference.yaml", root)


class _Resolver:
    """Resolves ``@a#b`` references and literal ``$...`` values of a bundle config; nothing is executed."""

    def __init__(self, config: dict[str, Any], file: Path) -> None:
        self.config = config
        self.file = file
        self._active: list[str] = []  # references being resolved (cycle detection)

    def get(self, ref: str, where: str) -> Any:
        if ref in self._active or len(self._active) > 32:
            chain = " -> ".join(f"@{r}" for r in [*self._active, ref])
            raise ModelError(f"{where}: circular or too deep references ({one_line(chain, 200)})", self.file)
        node: Any = self.config
        for part in ref.split("#"):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ModelError(f"{where}: reference @{one_line(ref, 120)} not found", self.file)
        self._active.append(ref)
        try:
            return self.value(node, where)
        finally:
            self._active.pop()

    def value(self, v: Any, where: str) -> Any:
        if isinstance(v, str):
            if v.startswith("@"):
                return self.get(v[1:], where)
            if v.startswith("$"):
                try:
                    return ast.literal_eval(v[1:].strip())
                except (ValueError, SyntaxError):
                    raise ModelError(
                        f"{where}: expression {one_line(repr(v), 120)} is not a literal; medseg does not execute "
                        "bundle code",
                        self.file,
                    ) from None
                except MALFORMED:  # e.g. a literal nested too deeply for the parser
                    raise ModelError(f"{where}: expression is too complex to read as a literal", self.file) from None
            return v
        if isinstance(v, list):
            return [self.value(x, where) for x in v]
        if isinstance(v, dict):
            return {k: self.value(x, f"{where}.{k}") for k, x in v.items()}
        return v


def _target(t: Any) -> str:
    name = str(dict.get(t, "_target_", "")) if isinstance(t, dict) else ""
    return name.rsplit(".", 1)[-1]


def _transforms(node: Any, where: str, r: _Resolver) -> list[dict[str, Any]]:
    node = r.value(node, where) if isinstance(node, str) else node
    if isinstance(node, dict) and _target(node) == "Compose":
        node = node.get("transforms", [])
    if not isinstance(node, list):
        raise ModelError(f"{where}: expected a Compose or a list of transforms", r.file)
    out = []
    for i, t in enumerate(node):
        t = r.value(t, f"{where}[{i}]") if isinstance(t, str) else t
        if not isinstance(t, dict):
            raise ModelError(f"{where}[{i}]: expected a transform mapping", r.file)
        out.append(_Lazy(t, r, f"{where}[{i}]"))
    return out


class _Lazy(dict):
    """A transform's arguments, resolved only when read (so unused ``$`` expressions do no harm)."""

    def __init__(self, d: dict[str, Any], r: _Resolver, where: str) -> None:
        super().__init__(d)
        self._r = r
        self._where = where

    def __getitem__(self, key: str) -> Any:
        if not super().__contains__(key):
            raise ModelError(f"{self._where}: missing argument {key!r}", self._r.file)
        return self._r.value(super().__getitem__(key), f"{self._where}.{key}")

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if super().__contains__(key) else default


def spec_from_bundle(root: str | Path) -> ModelSpec:
    """Translate a MONAI bundle directory into a validated :class:`ModelSpec` (weights from ``models/``).

    Raises:
        ModelError: missing files, unsupported transforms/inferers, non-literal expressions, or a value of
            an unexpected shape (one line naming the config file and the section).
    """
    root = Path(root)
    config, cfile = _load_config(root)
    stage = ["network_def"]
    try:
        return _translate(root, config, cfile, stage)
    except ModelError as err:
        raise ModelError(one_line(err.message, 400), err.path) from None
    except MALFORMED as err:
        raise ModelError(f"{stage[0]}: unexpected value ({type(err).__name__}: {one_line(err, 160)})", cfile) from None


def _translate(root: Path, config: dict[str, Any], cfile: Path, stage: list[str]) -> ModelSpec:
    """The body of :func:`spec_from_bundle`; ``stage[0]`` names the section being read (for errors)."""
    r = _Resolver(config, cfile)
    if "network_def" not in config:
        raise ModelError("bundle config has no network_def", cfile)

    models = root / "models"
    weights: dict[str, Any]
    if (models / "model.pt").is_file():
        weights = {"source": str((models / "model.pt").resolve())}
        net_def = r.value(config["network_def"], "network_def")
        if not isinstance(net_def, dict) or "_target_" not in net_def:
            raise ModelError("network_def: expected a mapping with _target_", cfile)
        network = {"class": _target(net_def), "args": {k: v for k, v in net_def.items() if k != "_target_"}}
    elif (models / "model.ts").is_file():
        weights = {"source": str((models / "model.ts").resolve())}
        network = {"torchscript": True}
    else:
        raise ModelError("bundle has no models/model.pt or models/model.ts", root)

    # preprocessing
    inp: dict[str, Any] = {"orientation": None, "normalize": []}
    seen_intensity = None
    stage[0] = "preprocessing"
    for i, t in enumerate(_transforms(config.get("preprocessing", []), "preprocessing", r)):
        name = _target(t)
        where = f"preprocessing[{i}] {one_line(name, 80)}"
        stage[0] = where
        if name in _NOOP_PRE:
            continue
        if name in _SPATIAL and seen_intensity:
            raise ModelError(
                f"{where}: comes after the intensity transform {seen_intensity}; medseg applies spatial "
                "transforms first, so this bundle cannot be reproduced exactly",
                cfile,
            )
        if name == "Orientationd":
            inp["orientation"] = str(t.get("axcodes", "RAS"))
        elif name == "Spacingd":
            pix = t["pixdim"]
            inp["spacing"] = [float(x) for x in (pix if isinstance(pix, list) else [pix] * 3)]
            mode = t.get("mode", "bilinear")
            inp["spacing_mode"] = mode[0] if isinstance(mode, list) else mode
        elif name == "CropForegroundd":
            if t.get("select_fn") is not None:
                raise ModelError(f"{where}: a custom select_fn is not supported", cfile)
            margin = t.get("margin", 0)
            if isinstance(margin, list):
                raise ModelError(f"{where}: per-axis margins are not supported", cfile)
            inp["crop_foreground"] = {"margin": int(margin), "threshold": 0.0}
        elif name == "Resized":
            size = t["spatial_size"]
            inp["resize"] = size if isinstance(size, list) else [size] * 3
            mode = t.get("mode", "area")
            inp["resize_mode"] = mode[0] if isinstance(mode, list) else mode
        elif name == "ScaleIntensityRanged":
            inp["normalize"].append(
                {"type": "window", "a_min": t["a_min"], "a_max": t["a_max"], "b_min": t.get("b_min", 0.0),
                 "b_max": t.get("b_max", 1.0), "clip": bool(t.get("clip", False))}
            )
            seen_intensity = name
        elif name == "ScaleIntensityRangePercentilesd":
            inp["normalize"].append(
                {"type": "percentile", "lower": t["lower"], "upper": t["upper"], "b_min": t.get("b_min", 0.0),
                 "b_max": t.get("b_max", 1.0), "clip": bool(t.get("clip", False))}
            )
            seen_intensity = name
        elif name == "NormalizeIntensityd":
            if t.get("subtrahend") is not None or t.get("divisor") is not None:
                raise ModelError(f"{where}: fixed subtrahend/divisor are not supported", cfile)
            inp["normalize"].append(
                {"type": "zscore", "nonzero": bool(t.get("nonzero", False)), "channel_wise": bool(t.get("channel_wise", False))}
            )
            seen_intensity = name
        elif name == "ScaleIntensityd":
            if t.get("factor") is not None:
                raise ModelError(f"{where}: 'factor' scaling is not supported", cfile)
            inp["normalize"].append({"type": "minmax", "b_min": t.get("minv", 0.0), "b_max": t.get("maxv", 1.0)})
            seen_intensity = name
        else:
            raise ModelError(f"{where}: transform not supported by medseg's bundle translation", cfile)

    # inferer
    stage[0] = "inferer"
    inf_node = r.value(config.get("inferer", {"_target_": "SimpleInferer"}), "inferer")
    iname = _target(inf_node)
    if iname == "SlidingWindowInferer":
        roi = inf_node["roi_size"]
        inferer = {
            "mode": "sliding",
            "roi_size": roi if isinstance(roi, list) else [roi] * 3,
            "overlap": float(inf_node.get("overlap", 0.25)),
            "sw_batch_size": int(inf_node.get("sw_batch_size", 1)),
            "blend": str(inf_node.get("mode", "constant")),
            "padding_mode": str(inf_node.get("padding_mode", "constant")),
        }
    elif iname == "SimpleInferer":
        inferer = {"mode": "whole"}
    else:
        raise ModelError(f"inferer: {one_line(repr(iname), 80)} is not supported (SlidingWindowInferer or "
                         "SimpleInferer)", cfile)

    # postprocessing
    output: dict[str, Any] = {"activation": "none", "decision": "argmax", "invert": "probabilities", "postprocess": {}}
    decided = False
    stage[0] = "postprocessing"
    for i, t in enumerate(_transforms(config.get("postprocessing", []), "postprocessing", r)):
        name = _target(t)
        where = f"postprocessing[{i}] {one_line(name, 80)}"
        stage[0] = where
        if name in _NOOP_POST:
            continue
        if name == "Activationsd":
            if t.get("softmax"):
                output["activation"] = "softmax"
            elif t.get("sigmoid"):
                output["activation"] = "sigmoid"
        elif name == "Invertd":
            output["invert"] = "labels" if decided else "probabilities"
        elif name == "AsDiscreted":
            if t.get("argmax"):
                output["decision"] = "argmax"
            elif t.get("threshold") is not None:
                output["decision"] = "threshold"
                output["threshold"] = float(t["threshold"])
            else:
                raise ModelError(f"{where}: only argmax or threshold are supported", cfile)
            decided = True
        elif name == "KeepLargestConnectedComponentd":
            output["postprocess"]["largest_component"] = True
        elif name == "FillHolesd":
            output["postprocess"]["fill_holes"] = True
        else:
            raise ModelError(f"{where}: transform not supported by medseg's bundle translation", cfile)

    # labels from metadata.json
    labels = []
    meta_file = root / "configs" / "metadata.json"
    channel_def: dict[str, str] = {}
    meta: dict[str, Any] = {}
    stage[0] = "metadata.json"
    if meta_file.is_file():
        meta = parse_json_text(read_config_text(meta_file, "metadata.json"), meta_file, "metadata.json")
        if not isinstance(meta, dict):
            raise ModelError(f"metadata.json must be a mapping, got {type(meta).__name__}", meta_file)
        pred = ((meta.get("network_data_format") or {}).get("outputs") or {}).get("pred") or {}
        channel_def = {str(k): str(v) for k, v in (pred.get("channel_def") or {}).items()}
        inputs = ((meta.get("network_data_format") or {}).get("inputs") or {}).get("image") or {}
        if inputs.get("modality"):
            inp["modality"] = str(inputs["modality"]).upper() if str(inputs["modality"]).upper() in ("CT", "MR", "PET", "US") else "any"
        if inputs.get("num_channels"):
            inp["channels"] = int(inputs["num_channels"])
    n_out = None
    if "args" in network:
        n_out = network["args"].get("out_channels") or network["args"].get("num_classes")
    if channel_def:
        for k, v in sorted(channel_def.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
            if k.isdigit() and int(k) > 0 and v.lower() not in ("background", "everything else"):
                labels.append({"id": int(k), "name": v})
    if not labels:
        n = int(n_out) - 1 if n_out else 1
        labels = [{"id": i, "name": f"label_{i}"} for i in range(1, max(n, 1) + 1)]
    if "channels" not in inp and "args" in network and network["args"].get("in_channels"):
        inp["channels"] = int(network["args"]["in_channels"])

    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in (meta.get("name") or root.name)).strip("-.") or "bundle"
    d = {
        "name": name,
        "description": str(meta.get("description", f"MONAI bundle {root.name}")),
        "network": network,
        "weights": weights,
        "input": inp,
        "inferer": inferer,
        "output": output,
        "labels": labels,
    }
    stage[0] = "bundle translation"
    try:
        return spec_from_dict(d, base_dir=str(root.resolve()), source_path=str(cfile.resolve()))
    except ModelError as err:
        raise ModelError(f"bundle translation: {err.message}", cfile) from None
