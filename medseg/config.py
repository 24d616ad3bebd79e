"""Model specs: one YAML file per model, validated into a frozen :class:`ModelSpec`.

Pure data (no torch import). Every unknown key or bad value raises :class:`~medseg.errors.ModelError`
naming the key path, e.g. ``inferer.overlap: must be in [0, 1), got 1.2``.

A spec has these sections (see ``configs/*.yaml`` for complete examples)::

    name: spleen-ct                # registry name
    description: ...
    network:                       # a MONAI network class (allow-listed) + args, or TorchScript
      class: UNet                  # or  torchscript: true  (the weights file is the TorchScript module)
      args: {spatial_dims: 3, in_channels: 1, out_channels: 2, ...}
    weights:
      source: https://...          # local path (relative to the spec), URL, or package:DIST/path/in/dist
      sha256: 0123...              # the file's (or, with archive_member, the archive's) sha256; for URLs
                                   # required unless a publisher digest is given or --allow-unverified
      archive_sha1: 0123...        # the archive's sha1 as its publisher lists it (MONAI zoo model_info.json)
      mirrors: [https://...]       # other addresses of the same archive, tried in order if source fails
      archive_member: a/b/model.pt # file inside a downloaded .zip
      member_sha256: 0123...       # pinned sha256 of the extracted member (checked at every load)
      state_dict_key: model        # checkpoint dict key holding the state dict (optional)
    input:
      modality: CT                 # CT | MR | PET | any
      channels: 1
      orientation: RAS             # or null: keep the input's axis order
      spacing: [1.5, 1.5, 2.0]     # mm, or null: no resampling
      spacing_mode: bilinear
      crop_foreground: null        # {margin: 0, threshold: 0.0, source: image | normalized}
                                   # normalized: select on the normalised image, after normalisation (TAPS)
      resize: null                 # [256, 256, 256]: network input shape
      resize_mode: trilinear       # nearest | nearest-exact | trilinear | area
      normalize:                   # applied in order
        - {type: window, a_min: -57, a_max: 164, b_min: 0, b_max: 1, clip: true}
        - {type: zscore, nonzero: true, channel_wise: true}
        - {type: percentile, lower: 0.5, upper: 99.5, b_min: 0, b_max: 1, clip: true, reference: input}
          # reference: input = percentiles of the network input; image = of the whole (reoriented)
          # image before any crop/resize
        # all steps run on the network's grid, after orientation, spacing, crop and resize
        - {type: minmax, b_min: -1, b_max: 1}
        - {type: affine, scale: 0.226, shift: 0.449}
      localize: null               # optional first-stage localiser network (crop to its bounding box)
    inferer:
      mode: sliding                # whole | sliding
      roi_size: [96, 96, 96]
      overlap: 0.5
      blend: constant              # constant | gaussian
      sw_batch_size: 4
      padding_mode: constant
      tta_flips: []                # e.g. [[0], [1], [2]] spatial axes flipped and averaged
    output:
      activation: softmax          # softmax | sigmoid | none
      decision: argmax             # argmax | threshold
      threshold: 0.5
      channel_labels: null         # threshold: [[channel, label_id], ...] painted in order
      invert: probabilities        # resample probabilities (linear) or labels (nearest) to the source grid
      postprocess: {largest_component: false, fill_holes: false, min_size_mm3: 0}
      smooth_sigma: 0              # Gaussian blur (voxels) of the raw outputs on the working grid
    labels:                        # volume_ml (optional): plausible [low, high] mL, outside = a warning
      - {id: 1, name: spleen, color: [157, 108, 162], volume_ml: [30, 2000]}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from enum import Enum
from os import PathLike
from pathlib import Path
from typing import Any

from medseg.errors import ModelError
from medseg.models.parse import MALFORMED, check_tree, one_line, parse_yaml_text, read_config_text
from medseg.options import did_you_mean
from medseg.options import look_up_option as _look_up_option
from medseg.types import Label

__all__ = [
    "ALLOWED_NETWORKS",
    "Activation",
    "BlendMode",
    "Decision",
    "InferMode",
    "InputSpec",
    "InvertMode",
    "InfererSpec",
    "LocalizeSpec",
    "ModelSpec",
    "NetworkSpec",
    "NormStep",
    "OutputSpec",
    "PostprocessSpec",
    "WeightsSpec",
    "load_spec",
    "look_up_option",
]

#: MONAI network classes a spec may name (resolved with getattr on monai.networks.nets, never eval).
ALLOWED_NETWORKS = frozenset(
    {
        "UNet",
        "BasicUNet",
        "BasicUNetPlusPlus",
        "DynUNet",
        "SegResNet",
        "SegResNetDS",
        "SegResNetVAE",
        "SwinUNETR",
        "UNETR",
        "AttentionUnet",
        "VNet",
        "HighResNet",
        "FlexibleUNet",
    }
)


class InferMode(str, Enum):
    WHOLE = "whole"
    SLIDING = "sliding"


class BlendMode(str, Enum):
    CONSTANT = "constant"
    GAUSSIAN = "gaussian"


class Activation(str, Enum):
    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"
    NONE = "none"


class Decision(str, Enum):
    ARGMAX = "argmax"
    THRESHOLD = "threshold"


class InvertMode(str, Enum):
    PROBABILITIES = "probabilities"
    LABELS = "labels"


class NormType(str, Enum):
    WINDOW = "window"
    ZSCORE = "zscore"
    PERCENTILE = "percentile"
    MINMAX = "minmax"
    AFFINE = "affine"


RESIZE_MODES = ("nearest", "nearest-exact", "trilinear", "area")
SPACING_MODES = ("bilinear", "nearest")
PADDING_MODES = ("constant", "replicate", "reflect", "circular")
MODALITIES = ("CT", "MR", "PET", "US", "any")


def look_up_option(value: Any, enum: type[Enum], path: str) -> Any:
    """``enum(value)`` or a :class:`ModelError` at ``path`` listing the valid choices (and the closest)."""
    return _look_up_option(value, enum, path, error=ModelError, sep=": ")


# ----------------------------------------------------------------------------------------------------------
# dataclasses: each spec key is a field; its default, and how a YAML value is checked, sit on the field
# (``spec_field``), so the validators below derive the allowed keys, the required keys and the defaults.

#: how a YAML value is checked: ``check(value, key_path) -> value`` (raises ModelError naming the key path)
Check = Callable[[Any, str], Any]


def spec_field(default: Any = MISSING, *, check: Check | None = None, key: str | None = None,
               factory: Callable[[], Any] | None = None, internal: bool = False) -> Any:
    """A dataclass field that is also a spec key.

    Args:
        default: the value when the key is absent (no default: the key is required).
        check: validates and converts the YAML value; ``None`` = built by the section's own code.
        key: the YAML key, when it differs from the field name (``class`` for ``class_name``).
        factory: a default factory instead of ``default``.
        internal: not a spec key (set by the loader, e.g. ``base_dir``).
    """
    md = {"check": check, "key": key, "internal": internal}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def _is_num(lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> Check:
    return lambda v, p: _num(v, p, lo, hi, hi_open)


def _is_int(lo: int | None = None) -> Check:
    return lambda v, p: _int(v, p, lo)


def _is_choice(choices: tuple[str, ...]) -> Check:
    return lambda v, p: _str(v, p, choices)


def _is_option(enum: type[Enum]) -> Check:
    return lambda v, p: look_up_option(v, enum, p)


def _is_triple(kind: str = "int") -> Check:
    return lambda v, p: _triple(v, p, kind=kind)


def _is_hex(n: int) -> Check:
    return lambda v, p: _hex(v, p, n)


@dataclass(frozen=True)
class NetworkSpec:
    """Network: a MONAI class (``class_name`` + ``args``), a TorchScript module (``torchscript``), an
    nnU-Net results folder (``nnunet``; ``weights.source`` is the folder or a ``.zip`` of it), an ONNX
    graph (``onnx``, run by OpenVINO) or DeepVoxNet's generalized U-Net (``unet_generalized``: its
    arguments; Keras HDF5 weights converted once to a torch state dict)."""

    class_name: str | None = spec_field(None, key="class")
    args: Mapping[str, Any] = spec_field(factory=dict)
    torchscript: bool = spec_field(False, check=lambda v, p: _bool(v, p))
    nnunet: bool = spec_field(False, check=lambda v, p: _bool(v, p))
    onnx: bool = spec_field(False, check=lambda v, p: _bool(v, p))  # an ONNX graph, run by OpenVINO (medseg.infer.onnx_net)
    unet_generalized: Mapping[str, Any] | None = spec_field(None)  # DeepVoxNet's U-Net (medseg.nets), Keras HDF5 weights


@dataclass(frozen=True)
class WeightsSpec:
    """Where the weights come from. ``source``: path (relative to the spec), URL or ``package:DIST/path``."""

    source: str | None = spec_field(None)
    sha256: str | None = spec_field(None, check=_is_hex(64))
    archive_member: str | None = spec_field(None)
    state_dict_key: str | None = spec_field(None, check=lambda v, p: _str(v, p))
    base_dir: str | None = spec_field(None, internal=True)  # directory of the spec file, for relative paths
    python_version: str | None = spec_field(None)  # wheel sources: pip download --python-version (old Pythons)
    archive_sha1: str | None = spec_field(None, check=_is_hex(40))  # publisher's sha1 of the archive (MONAI zoo)
    member_sha256: str | None = spec_field(None, check=_is_hex(64))  # pinned sha256 of the extracted member
    mirrors: tuple[str, ...] = spec_field(())  # other URLs of the same archive (same digest), tried in order

    @property
    def kind(self) -> str:
        """``'none'``, ``'url'``, ``'package'``, ``'wheel'`` or ``'path'``."""
        if self.source is None:
            return "none"
        if re.match(r"^(https?|file)://", self.source):
            return "url"
        if self.source.startswith("package:"):
            return "package"
        if self.source.startswith("wheel:"):
            return "wheel"
        return "path"


@dataclass(frozen=True)
class NormStep:
    """One intensity normalisation step (see the module docstring for the parameters of each type)."""

    type: NormType
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalizeSpec:
    """A first-stage localiser: a small network finds the organ, the input is cropped to its box.

    The image is resized to ``input_size`` (``resize_mode``), normalised like the main input, run through
    ``network``; channel ``channel`` is thresholded at ``threshold``; the largest component's bounding box
    (voxels where the mean along the other two axes exceeds ``projection_threshold``), grown by ``margin``
    (fraction of its size on each side), is scaled back to the image and cropped.
    """

    network: NetworkSpec = spec_field()
    weights: WeightsSpec = spec_field()
    input_size: tuple[int, int, int] = spec_field(check=_is_triple())
    resize_mode: str = spec_field("nearest-exact", check=_is_choice(RESIZE_MODES))
    activation: Activation = spec_field(Activation.NONE, check=_is_option(Activation))
    channel: int = spec_field(1, check=_is_int(0))
    threshold: float = spec_field(0.5, check=_is_num())
    projection_threshold: float = spec_field(0.02, check=_is_num(0.0, 1.0))
    margin: float = spec_field(0.1, check=_is_num(0.0, 10.0))


@dataclass(frozen=True)
class InputSpec:
    """The network's input contract."""

    modality: str = spec_field("any")
    channels: int = spec_field(1, check=_is_int(1))
    channel_names: tuple[str, ...] = spec_field(())  # e.g. ("t1c", "t1", "t2", "flair"): `--channel NAME=PATH`
    orientation: str | None = spec_field("RAS")
    spacing: tuple[float, float, float] | None = spec_field(None, check=_is_triple("float"))
    spacing_mode: str = spec_field("bilinear", check=_is_choice(SPACING_MODES))
    crop_foreground: Mapping[str, Any] | None = spec_field(None)
    resize: tuple[int, int, int] | None = spec_field(None, check=_is_triple())
    resize_mode: str = spec_field("trilinear", check=_is_choice(RESIZE_MODES))
    normalize: tuple[NormStep, ...] = spec_field(())
    localize: LocalizeSpec | None = spec_field(None)


@dataclass(frozen=True)
class InfererSpec:
    mode: InferMode = spec_field(InferMode.WHOLE, check=_is_option(InferMode))
    roi_size: tuple[int, int, int] | None = spec_field(None, check=_is_triple())
    overlap: float = spec_field(0.25, check=_is_num(0.0, 1.0, hi_open=True))
    blend: BlendMode = spec_field(BlendMode.CONSTANT, check=_is_option(BlendMode))
    sw_batch_size: int = spec_field(1, check=_is_int(1))
    padding_mode: str = spec_field("constant", check=_is_choice(PADDING_MODES))
    tta_flips: tuple[tuple[int, ...], ...] = spec_field(())


@dataclass(frozen=True)
class PostprocessSpec:
    largest_component: bool = spec_field(False, check=lambda v, p: _bool(v, p))
    fill_holes: bool = spec_field(False, check=lambda v, p: _bool(v, p))
    min_size_mm3: float = spec_field(0.0, check=_is_num(0.0))


@dataclass(frozen=True)
class OutputSpec:
    activation: Activation = spec_field(Activation.SOFTMAX, check=_is_option(Activation))
    decision: Decision = spec_field(Decision.ARGMAX, check=_is_option(Decision))
    threshold: float = spec_field(0.5, check=_is_num())
    channel_labels: tuple[tuple[int, int], ...] | None = spec_field(None)
    invert: InvertMode = spec_field(InvertMode.PROBABILITIES, check=_is_option(InvertMode))
    postprocess: PostprocessSpec = spec_field(factory=PostprocessSpec)
    smooth_sigma: float = spec_field(0.0, check=_is_num(0.0))  # Gaussian blur (voxels) of the raw outputs


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec. ``labels`` lists the foreground labels (id 0 = background is implicit).

    ``weights``, ``input``, ``inferer`` and ``output`` may be left out of a spec file (their defaults);
    ``name``, ``network`` and ``labels`` are required.
    """

    name: str
    network: NetworkSpec
    weights: WeightsSpec
    input: InputSpec
    inferer: InfererSpec
    output: OutputSpec
    labels: tuple[Label, ...]
    description: str = spec_field("", check=lambda v, p: _str(v, p))
    license: str = spec_field("", check=lambda v, p: _str(v, p))
    reference: str = spec_field("", check=lambda v, p: _str(v, p))
    pipeline: Mapping[str, Any] | None = None  # a model-specific pipeline (medseg.liver), e.g. {kind: liver}
    source_path: str | None = spec_field(None, internal=True)
    #: plausible volume of a label in mL, ``{label id: (low, high)}`` from ``labels[i].volume_ml``: a result
    #: outside it is a warning (:func:`medseg.input_checks.result_warnings`), never an error. Not part of
    #: :meth:`to_dict` (it changes no output, so no fingerprint).
    volume_ranges_ml: Mapping[int, tuple[float, float]] = spec_field(factory=dict, internal=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (enums as values) for provenance and fingerprints."""

        def conv(o: Any) -> Any:
            if isinstance(o, Enum):
                return o.value
            if isinstance(o, Mapping):
                return {str(k): conv(v) for k, v in o.items()}
            if isinstance(o, (list, tuple)):
                return [conv(v) for v in o]
            return o

        d = conv(asdict(self))
        d.pop("source_path", None)
        d.pop("volume_ranges_ml", None)
        for w in (d["weights"], (d["input"].get("localize") or {}).get("weights") or {}):
            w.pop("base_dir", None)  # file locations: not part of what the spec computes
            w.pop("mirrors", None)
        if not d["input"]["channel_names"]:  # unnamed channels: the same dict (and fingerprint) as before names existed
            d["input"].pop("channel_names")
        return d

    def digest(self) -> str:
        """sha256 of the spec's canonical JSON (without file locations)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def n_classes(self) -> int:
        """Number of label ids including background (max id + 1)."""
        return max((lab.id for lab in self.labels), default=0) + 1


# ----------------------------------------------------------------------------------------------------------
# validation helpers


def _err(path: str, msg: str) -> ModelError:
    return ModelError(f"{path}: {msg}")


def _check_keys(d: Any, path: str, allowed: set[str], required: set[str] = frozenset()) -> Mapping[str, Any]:  # type: ignore[assignment]
    if not isinstance(d, Mapping):
        raise _err(path or "<spec>", f"must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        where = f"{path}." if path else ""
        raise _err(f"{where}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(d))
    if missing:
        where = f"{path}." if path else ""
        raise _err(f"{where}{missing[0]}", "required key is missing")
    return d


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise _err(path, f"must be true or false, got {v!r}")
    return v


def _num(v: Any, path: str, lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(path, f"must be a number, got {v!r}")
    v = float(v)
    if lo is not None and v < lo or hi is not None and (v >= hi if hi_open else v > hi):
        rng = f"[{lo:g}, {hi:g})" if hi_open else f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise _err(path, f"must be in {rng}, got {v:g}" if hi is not None else f"must be {rng}, got {v:g}")
    return v


def _int(v: Any, path: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(path, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise _err(path, f"must be >= {lo}, got {v}")
    return v


def _str(v: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise _err(path, f"must be a string, got {v!r}")
    return v if choices is None else _look_up_option(v, choices, path, error=ModelError, sep=": ")


def _triple(v: Any, path: str, kind: str = "int", lo: float = 1) -> tuple:
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise _err(path, f"must be a list of 3 numbers, got {v!r}")
    if kind == "int":
        return tuple(_int(x, f"{path}[{i}]", int(lo)) for i, x in enumerate(v))
    out = tuple(_num(x, f"{path}[{i}]") for i, x in enumerate(v))
    for i, x in enumerate(out):
        if x <= 0:
            raise _err(f"{path}[{i}]", f"must be > 0, got {x:g}")
    return out


def _hex(v: Any, path: str, n: int) -> str | None:
    if v is None:
        return None
    _str(v, path)
    if not re.fullmatch(f"[0-9a-fA-F]{{{n}}}", v):
        raise _err(path, f"must be {n} hex digits, got {v[:80]!r}")
    return v.lower()


def _keys(cls: type) -> dict[str, Field]:
    """Spec key → dataclass field of ``cls`` (fields marked ``internal`` are not keys)."""
    return {f.metadata.get("key") or f.name: f for f in fields(cls) if not f.metadata.get("internal")}


def _required(cls: type) -> set[str]:
    """The keys of ``cls`` without a default."""
    return {k for k, f in _keys(cls).items() if f.default is MISSING and f.default_factory is MISSING}


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]


def _value(d: Mapping[str, Any], cls: type, name: str) -> Any:
    """``d``'s value for field ``name`` of ``cls``, or the field's default."""
    f = next(f for f in fields(cls) if f.name == name)
    key = f.metadata.get("key") or f.name
    return d[key] if key in d else _default(f)


def _section(cls: type, d: Any, path: str, *, required: set[str] | None = None,
             internal: Mapping[str, Any] | None = None, **built: Callable[[dict[str, Any]], Any]) -> Any:
    """Validate the mapping ``d`` against the fields of ``cls`` and build it.

    Unknown and missing keys are refused (naming the key path); each value goes through its field's
    ``check`` (an absent key takes the field's default), or through ``built[name](values so far)`` for
    fields the section builds itself. Fields are handled in declaration order.
    """
    keys = _keys(cls)
    _check_keys(d, path, set(keys), _required(cls) if required is None else required)
    values: dict[str, Any] = {}
    for key, f in keys.items():
        if f.name in built:
            values[f.name] = built[f.name](values)
            continue
        check = f.metadata.get("check")
        if check is None:  # pragma: no cover - a programming error, not a spec error
            raise TypeError(f"{cls.__name__}.{f.name} has neither a check nor a builder")
        v = d[key] if key in d else _default(f)
        values[f.name] = None if v is None and _default(f) is None else check(v, f"{path}.{key}" if path else key)
    return cls(**values, **(internal or {}))


_NORM_PARAMS: dict[NormType, dict[str, Any]] = {
    NormType.WINDOW: {"a_min": None, "a_max": None, "b_min": 0.0, "b_max": 1.0, "clip": True},
    NormType.ZSCORE: {"nonzero": False, "channel_wise": True},
    NormType.PERCENTILE: {"lower": None, "upper": None, "b_min": 0.0, "b_max": 1.0, "clip": True, "reference": "input"},
    NormType.MINMAX: {"b_min": 0.0, "b_max": 1.0},
    NormType.AFFINE: {"scale": 1.0, "shift": 0.0},
}


def _norm_step(d: Any, path: str) -> NormStep:
    if not isinstance(d, Mapping) or "type" not in d:
        raise _err(path, "must be a mapping with a 'type' key")
    ntype = look_up_option(d["type"], NormType, f"{path}.type")
    defaults = _NORM_PARAMS[ntype]
    _check_keys(d, path, {"type", *defaults}, {k for k, v in defaults.items() if v is None})
    params: dict[str, Any] = {}
    for k, default in defaults.items():
        v = d.get(k, default)
        if isinstance(default, bool):
            params[k] = _bool(v, f"{path}.{k}")
        elif k == "reference":
            params[k] = _str(v, f"{path}.{k}", ("input", "image"))
        elif k in ("lower", "upper"):
            params[k] = _num(v, f"{path}.{k}", 0.0, 100.0)
        else:
            params[k] = _num(v, f"{path}.{k}")
    if ntype is NormType.WINDOW and params["a_max"] <= params["a_min"]:
        raise _err(f"{path}.a_max", f"must be > a_min ({params['a_min']:g}), got {params['a_max']:g}")
    if ntype is NormType.PERCENTILE and params["upper"] <= params["lower"]:
        raise _err(f"{path}.upper", f"must be > lower ({params['lower']:g}), got {params['upper']:g}")
    return NormStep(ntype, params)


_UNET_GENERALIZED_KEYS = {
    "subsample_factors", "kernel_sizes", "features", "output_size", "padding", "upsampling",
    "residual_connections", "in_channels", "kernel_sizes_common", "features_common",
}


def _network(d: Any, path: str) -> NetworkSpec:
    _check_keys(d, path, set(_keys(NetworkSpec)))
    ts, nn, ox = (_bool(_value(d, NetworkSpec, k), f"{path}.{k}") for k in ("torchscript", "nnunet", "onnx"))
    ug = d.get("unet_generalized")
    cls = d.get("class")
    if sum([ts, nn, ox, ug is not None, cls is not None]) > 1:
        raise _err(
            f"{path}.class", "give exactly one of class, torchscript: true, nnunet: true, onnx: true or unet_generalized"
        )
    if ox:
        if d.get("args"):
            raise _err(f"{path}.args", "an ONNX network takes no args (the graph is the weights file)")
        return NetworkSpec(onnx=True)
    if ug is not None:
        _check_keys(ug, f"{path}.unet_generalized", _UNET_GENERALIZED_KEYS,
                    {"subsample_factors", "kernel_sizes", "features", "output_size"})
        if d.get("args"):
            raise _err(f"{path}.args", "give the arguments under unet_generalized")
        _str(ug.get("padding", "valid"), f"{path}.unet_generalized.padding", ("same", "valid"))
        _str(ug.get("upsampling", "copy"), f"{path}.unet_generalized.upsampling", ("copy", "linear"))
        _bool(ug.get("residual_connections", False), f"{path}.unet_generalized.residual_connections")
        _triple(ug["output_size"], f"{path}.unet_generalized.output_size")
        return NetworkSpec(unet_generalized=dict(ug))
    if nn:
        if d.get("args"):
            raise _err(f"{path}.args", "an nnU-Net network takes no args (they come from its plans)")
        return NetworkSpec(nnunet=True)
    if not ts:
        if cls is None:
            raise _err(f"{path}.class", "required key is missing (or set torchscript: true)")
        _str(cls, f"{path}.class")
        if cls not in ALLOWED_NETWORKS:
            raise _err(f"{path}.class", f"{cls!r} is not an allowed MONAI network ({', '.join(sorted(ALLOWED_NETWORKS))})"
                       f"{did_you_mean(cls, sorted(ALLOWED_NETWORKS))}")
    args = d.get("args", {}) or {}
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise _err(f"{path}.args", "must be a mapping of argument names to values")
    if ts and args:
        raise _err(f"{path}.args", "a TorchScript network takes no args")
    for k, v in args.items():
        if isinstance(v, str) and v.startswith("$"):
            raise _err(f"{path}.args.{k}", "expressions ('$...') are not evaluated in specs")
    return NetworkSpec(class_name=cls, args=dict(args), torchscript=ts)


def _weights(d: Any, path: str, base_dir: str | None) -> WeightsSpec:
    if d is None:
        return WeightsSpec(base_dir=base_dir)

    def source(_: dict) -> str | None:
        src = d.get("source")
        if src is None:
            return None
        _str(src, f"{path}.source")
        if src.startswith("package:") and "/" not in src[len("package:"):]:
            raise _err(f"{path}.source", f"package source must be 'package:DIST/path/in/dist', got {src!r}")
        if src.startswith("wheel:"):
            if not re.fullmatch(r"wheel:[A-Za-z0-9][A-Za-z0-9._\-]*==[A-Za-z0-9.+!_\-]+/[^\\]+", src) or ".." in src.split("/"):
                raise _err(f"{path}.source", f"wheel source must be 'wheel:NAME==VERSION/member/path', got {src!r}")
            if d.get("sha256") is None:
                raise _err(f"{path}.sha256", "a wheel source needs the wheel's sha256")
        return src

    def archive_member(_: dict) -> str | None:
        member = d.get("archive_member")
        if member is not None:
            _str(member, f"{path}.archive_member")
            parts = member.replace("\\", "/").split("/")
            if not member or member.startswith("/") or ".." in parts or ":" in parts[0]:
                raise _err(f"{path}.archive_member", f"must be a relative path inside the archive, got {member!r}")
        return member

    def python_version(_: dict) -> str | None:
        pyver = d.get("python_version")
        if pyver is not None:
            _str(pyver, f"{path}.python_version")
            if not re.fullmatch(r"\d+(\.\d+)?", pyver):
                raise _err(f"{path}.python_version", f"must look like '3.6', got {pyver!r}")
        return pyver

    def mirrors(values: dict) -> tuple[str, ...]:
        urls = d.get("mirrors") or []
        if urls and (values["source"] is None or not re.match(r"^https?://", values["source"])):
            raise _err(f"{path}.mirrors", "only meaningful with an http(s) source")
        if not isinstance(urls, list):
            raise _err(f"{path}.mirrors", f"must be a list of http(s) URLs, got {urls!r}")
        for i, u in enumerate(urls):
            if not isinstance(u, str) or not re.match(r"^https?://[^\s]+$", u):
                raise _err(f"{path}.mirrors[{i}]", f"must be an http(s) URL, got {u!r}")
        return tuple(urls)

    w = _section(WeightsSpec, d, path, internal={"base_dir": base_dir}, source=source, archive_member=archive_member,
                 python_version=python_version, mirrors=mirrors)
    if w.archive_member is None and (w.member_sha256 is not None or w.archive_sha1 is not None):
        key = "member_sha256" if w.member_sha256 is not None else "archive_sha1"
        raise _err(f"{path}.{key}", "only meaningful with archive_member")
    return w


def _localize(d: Any, path: str, base_dir: str | None) -> LocalizeSpec:
    return _section(
        LocalizeSpec, d, path,
        network=lambda _: _network(d["network"], f"{path}.network"),
        weights=lambda _: _weights(d["weights"], f"{path}.weights", base_dir),
    )


def _input(d: Any, path: str, base_dir: str | None) -> InputSpec:
    d = d or {}

    def modality(_: dict) -> str:
        m = _value(d, InputSpec, "modality")
        if isinstance(m, str) and m.upper() in ("CT", "MR", "PET", "US"):
            m = m.upper()
        return _str(m, f"{path}.modality", MODALITIES)

    def channel_names(values: dict) -> tuple[str, ...]:
        names = d.get("channel_names") or []
        if not isinstance(names, list):
            raise _err(f"{path}.channel_names", f"must be a list of names, got {names!r}")
        names = [_str(n, f"{path}.channel_names[{i}]").strip().lower() for i, n in enumerate(names)]
        n = values["channels"]
        if names and (len(names) != n or len(set(names)) != len(names) or not all(re.fullmatch(r"[a-z0-9_\-]+", x) for x in names)):
            raise _err(f"{path}.channel_names", f"must be {n} distinct names (letters, digits, _ or -), got {names!r}")
        return tuple(names)

    def orientation(_: dict) -> str | None:
        o = _value(d, InputSpec, "orientation")
        if o is None:
            return None
        _str(o, f"{path}.orientation")
        u = o.upper()
        if len(u) != 3 or {u[0], u[1], u[2]} - set("RLAPSI") or len({c.translate(str.maketrans("LPI", "RAS")) for c in u}) != 3:
            raise _err(f"{path}.orientation", f"must be three axis codes like 'RAS', got {o!r}")
        return u

    def crop_foreground(_: dict) -> dict[str, Any] | None:
        crop = d.get("crop_foreground")
        if crop is None:
            return None
        where = f"{path}.crop_foreground"
        _check_keys(crop, where, {"margin", "threshold", "source"})
        out = {"margin": _int(crop.get("margin", 0), f"{where}.margin", 0),
               "threshold": _num(crop.get("threshold", 0.0), f"{where}.threshold")}
        source = _str(crop.get("source", "image"), f"{where}.source", ("image", "normalized"))
        if source != "image":
            out["source"] = source
        return out

    def normalize(_: dict) -> tuple[NormStep, ...]:
        norm = d.get("normalize", []) or []
        if not isinstance(norm, list):
            raise _err(f"{path}.normalize", f"must be a list of steps, got {norm!r}")
        return tuple(_norm_step(s, f"{path}.normalize[{i}]") for i, s in enumerate(norm))

    return _section(
        InputSpec, d, path, modality=modality, channel_names=channel_names, orientation=orientation,
        crop_foreground=crop_foreground, normalize=normalize,
        localize=lambda _: None if d.get("localize") is None else _localize(d["localize"], f"{path}.localize", base_dir),
    )


def _inferer(d: Any, path: str) -> InfererSpec:
    d = d or {}

    def tta_flips(_: dict) -> tuple[tuple[int, ...], ...]:
        flips = d.get("tta_flips", []) or []
        if not isinstance(flips, list):
            raise _err(f"{path}.tta_flips", f"must be a list of axis lists like [[0], [1, 2]], got {flips!r}")
        for i, f in enumerate(flips):
            if not isinstance(f, list) or not f:
                raise _err(f"{path}.tta_flips[{i}]", f"must be a non-empty list of spatial axes 0-2, got {f!r}")
            for j, a in enumerate(f):
                if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a <= 2:
                    raise _err(f"{path}.tta_flips[{i}][{j}]", f"must be a spatial axis 0, 1 or 2, got {a!r}")
        return tuple(tuple(f) for f in flips)

    spec = _section(InfererSpec, d, path, tta_flips=tta_flips)
    if spec.mode is InferMode.SLIDING and spec.roi_size is None:
        raise _err(f"{path}.roi_size", "required when mode is 'sliding'")
    return spec


def _output(d: Any, path: str) -> OutputSpec:
    d = d or {}

    def channel_labels(_: dict) -> tuple[tuple[int, int], ...] | None:
        cl = d.get("channel_labels")
        if cl is None:
            return None
        if not isinstance(cl, list) or not cl:
            raise _err(f"{path}.channel_labels", f"must be a list of [channel, label_id] pairs, got {cl!r}")
        pairs = []
        for i, p in enumerate(cl):
            if not isinstance(p, list) or len(p) != 2:
                raise _err(f"{path}.channel_labels[{i}]", f"must be [channel, label_id], got {p!r}")
            pairs.append((_int(p[0], f"{path}.channel_labels[{i}][0]", 0), _int(p[1], f"{path}.channel_labels[{i}][1]", 1)))
        return tuple(pairs)

    return _section(
        OutputSpec, d, path, channel_labels=channel_labels,
        postprocess=lambda _: _section(PostprocessSpec, d.get("postprocess") or {}, f"{path}.postprocess"),
    )


def _labels(v: Any, path: str) -> tuple[Label, ...]:
    if not isinstance(v, list) or not v:
        raise _err(path, "must be a non-empty list of {id, name, color}")
    out: list[Label] = []
    seen: set[int] = set()
    for i, d in enumerate(v):
        p = f"{path}[{i}]"
        _check_keys(d, p, set(_keys(Label)) | {"volume_ml"}, _required(Label))  # volume_ml: ModelSpec.volume_ranges_ml
        lid = _int(d["id"], f"{p}.id", 1)
        if lid in seen:
            raise _err(f"{p}.id", f"duplicate label id {lid}")
        seen.add(lid)
        name = _str(d["name"], f"{p}.name")
        color = d.get("color")
        if color is None:
            color = _default_color(lid)
        if not isinstance(color, list) or len(color) != 3 or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
        ):
            raise _err(f"{p}.color", f"must be [r, g, b] integers 0-255, got {color!r}")
        out.append(Label(lid, name, tuple(color)))  # type: ignore[arg-type]
    return tuple(out)


def _volume_ranges(v: Any, path: str) -> dict[int, tuple[float, float]]:
    """``labels[i].volume_ml: [low, high]`` (mL, ``0 <= low < high``) by label id (labels already checked)."""
    out: dict[int, tuple[float, float]] = {}
    for i, d in enumerate(v if isinstance(v, list) else ()):
        r = d.get("volume_ml") if isinstance(d, Mapping) else None
        if r is None:
            continue
        p = f"{path}[{i}].volume_ml"
        if not isinstance(r, list) or len(r) != 2:
            raise _err(p, f"must be [low, high] in mL, got {r!r}")
        lo, hi = _num(r[0], f"{p}[0]", 0.0), _num(r[1], f"{p}[1]", 0.0)
        if not lo < hi:
            raise _err(p, f"low must be below high, got {r!r}")
        out[int(d["id"])] = (float(lo), float(hi))
    return out


def _default_color(i: int) -> list[int]:
    """A stable, distinct colour for label ``i`` (golden-ratio hue walk)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
    return [int(r * 255), int(g * 255), int(b * 255)]


#: Model-specific pipelines (:mod:`medseg.liver`): kind -> allowed keys.
PIPELINES = {
    "liver": {"kind", "crop", "pad_value", "mr_pad_value", "slab_extend_mm", "threshold"},
    "liver-lesions": {"kind", "liver_model", "threshold"},
}


def _pipeline(d: Any, path: str) -> dict[str, Any]:
    if not isinstance(d, Mapping) or "kind" not in d:
        raise _err(path, "must be a mapping with a 'kind' key")
    kind = _str(d["kind"], f"{path}.kind", tuple(PIPELINES))
    _check_keys(d, path, PIPELINES[kind])
    out: dict[str, Any] = {"kind": kind}
    if kind == "liver":
        out["crop"] = _str(d.get("crop", "auto"), f"{path}.crop", ("auto", "original", "body-box", "none"))
        out["pad_value"] = _num(d.get("pad_value", 0.0), f"{path}.pad_value", -1.0, 1.0)
        out["mr_pad_value"] = _num(d.get("mr_pad_value", out["pad_value"]), f"{path}.mr_pad_value", -1.0, 1.0)
        out["slab_extend_mm"] = _num(d.get("slab_extend_mm", 0.0), f"{path}.slab_extend_mm", 0.0, 1000.0)
    else:
        out["liver_model"] = _str(d.get("liver_model", "liver"), f"{path}.liver_model")
    out["threshold"] = _num(d.get("threshold", 0.5), f"{path}.threshold", 0.0, 1.0)
    return out


def spec_from_dict(d: Mapping[str, Any], base_dir: str | None = None, source_path: str | None = None) -> ModelSpec:
    """Validate a spec mapping (as loaded from YAML) into a :class:`ModelSpec`.

    Raises:
        ModelError: an unknown key, a bad value (naming the key path), or a mapping over the size/depth limits.
    """
    check_tree(d, source_path, "model spec")

    def name(_: dict) -> str:
        n = _str(d["name"], "name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", n):
            raise _err("name", f"must be letters, digits, '-', '_' or '.', got {n!r}")
        return n

    spec = _section(
        ModelSpec, d, "", required={"name", "network", "labels"}, internal={"source_path": source_path}, name=name,
        network=lambda _: _network(d["network"], "network"),
        weights=lambda _: _weights(d.get("weights"), "weights", base_dir),
        input=lambda _: _input(d.get("input"), "input", base_dir),
        inferer=lambda _: _inferer(d.get("inferer"), "inferer"),
        output=lambda _: _output(d.get("output"), "output"),
        labels=lambda _: _labels(d["labels"], "labels"),
        pipeline=lambda _: None if d.get("pipeline") is None else _pipeline(d["pipeline"], "pipeline"),
    )
    network, weights, inp, output, labels = spec.network, spec.weights, spec.input, spec.output, spec.labels
    if network.torchscript and weights.source is None:
        raise _err("weights.source", "a TorchScript network needs its file as weights.source")
    if network.nnunet and weights.source is None:
        raise _err("weights.source", "an nnU-Net network needs its results folder (or .zip URL) as weights.source")
    if (network.onnx or network.unet_generalized is not None) and weights.source is None:
        raise _err("weights.source", "this network needs its weights file as weights.source")
    if output.decision is Decision.THRESHOLD and output.channel_labels is None and len(labels) != 1:
        raise _err("output.channel_labels", "required for a threshold decision with more than one label")
    if output.channel_labels:
        ids = {lab.id for lab in labels}
        for i, (_, lid) in enumerate(output.channel_labels):
            if lid not in ids:
                raise _err(f"output.channel_labels[{i}][1]", f"label id {lid} is not in labels")
    if inp.resize is not None and inp.spacing is not None:
        raise _err("input.resize", "give either a target spacing or a fixed resize shape, not both")
    ranges = _volume_ranges(d["labels"], "labels")
    return replace(spec, volume_ranges_ml=ranges) if ranges else spec


def load_spec(path_or_dict: str | PathLike[str] | Mapping[str, Any]) -> ModelSpec:
    """Load and validate a model spec from a YAML file or a mapping.

    Args:
        path_or_dict: path to a ``.yaml`` spec, or an already-parsed mapping (relative weight paths are
            then resolved against the current directory).

    Raises:
        ModelError: unreadable file, or an unknown key / bad value (the message names the key path).

    >>> spec = load_spec(Path(__file__).parent.parent / "configs" / "brain-mri.yaml")  # doctest: +SKIP
    """
    if isinstance(path_or_dict, Mapping):
        check_tree(path_or_dict, None, "model spec")
        return _validated(lambda: spec_from_dict(path_or_dict, base_dir=None), None)
    path = Path(path_or_dict)
    data = parse_yaml_text(read_config_text(path, "model spec"), path, "model spec")
    return _validated(
        lambda: spec_from_dict(data, base_dir=str(path.resolve().parent), source_path=str(path.resolve())), path
    )


def _validated(build: Any, path: Path | None) -> ModelSpec:
    """Run a spec validation; every error comes out as one line naming the spec file."""
    try:
        return build()
    except ModelError as err:
        raise ModelError(one_line(err.message, 400), path) from None
    except MALFORMED as err:  # a value of a shape no validator expected
        raise ModelError(f"malformed model spec ({type(err).__name__}: {one_line(err, 160)})", path) from None
