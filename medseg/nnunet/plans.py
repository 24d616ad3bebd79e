"""Read an nnU-Net v2 results folder: ``plans.json``, ``dataset.json`` and the trained folds.

A results folder is ``<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/`` holding
``plans.json``, ``dataset.json`` and ``fold_N/checkpoint_final.pth`` (N = 0..4 or ``all``). This module turns
the two JSON files into frozen dataclasses (no magic-key dicts past this point) and imports no torch:
``is_nnunet_folder`` and ``read_model_folder`` answer instantly.

Network classes and the layer types named in ``arch_kwargs`` are resolved from an explicit allow-list of
dotted names (:data:`ALLOWED_NETWORKS`, :data:`ALLOWED_LAYERS`): a plans file can never make medseg import
an arbitrary module, unlike nnU-Net's ``pydoc.locate``.

>>> model = read_model_folder("nnUNet_results/Dataset291_X/nnUNetTrainer__nnUNetPlans__3d_fullres")  # doctest: +SKIP
>>> model.config.patch_size, model.config.spacing, [l.name for l in model.labels.labels][:2]  # doctest: +SKIP
((128, 128, 128), (1.5, 1.5, 1.5), ['spleen', 'kidney_right'])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from medseg.errors import ModelError
from medseg.labels import label_color
from medseg.types import Label

__all__ = [
    "ALLOWED_LAYERS",
    "ALLOWED_NETWORKS",
    "Architecture",
    "ChannelNormalization",
    "Configuration",
    "DatasetLabels",
    "NnUNetModel",
    "NormScheme",
    "Resampling",
    "build_network",
    "is_nnunet_folder",
    "read_model_folder",
]

CHECKPOINT_FINAL = "checkpoint_final.pth"
_FOLD_RE = re.compile(r"^fold_(\d+|all)$")

#: network classes a plans file may name, with the older/shorter spellings nnU-Net also accepts.
ALLOWED_NETWORKS: dict[str, tuple[str, str]] = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": (
        "dynamic_network_architectures.architectures.unet", "PlainConvUNet"),
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": (
        "dynamic_network_architectures.architectures.unet", "ResidualEncoderUNet"),
    "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet": (
        "dynamic_network_architectures.architectures.unet", "ResidualEncoderUNet"),
    "dynamic_network_architectures.architectures.unet.ResidualUNet": (
        "dynamic_network_architectures.architectures.unet", "ResidualUNet"),
    "PlainConvUNet": ("dynamic_network_architectures.architectures.unet", "PlainConvUNet"),
    "ResidualEncoderUNet": ("dynamic_network_architectures.architectures.unet", "ResidualEncoderUNet"),
}


def _torch_names(module: str, names: list[str], aliases: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for n in names:
        for prefix in (module, *aliases):
            out[f"{prefix}.{n}"] = (module, n)
    return out


#: layer types (``conv_op``, ``norm_op``, ``dropout_op``, ``nonlin``, ``block``) a plans file may name.
ALLOWED_LAYERS: dict[str, tuple[str, str]] = {
    **_torch_names("torch.nn.modules.conv", ["Conv1d", "Conv2d", "Conv3d"], ("torch.nn",)),
    **_torch_names("torch.nn.modules.instancenorm", ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"],
                   ("torch.nn",)),
    **_torch_names("torch.nn.modules.batchnorm", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"], ("torch.nn",)),
    **_torch_names("torch.nn.modules.normalization", ["GroupNorm", "LayerNorm"], ("torch.nn",)),
    **_torch_names("torch.nn.modules.dropout", ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d"], ("torch.nn",)),
    **_torch_names("torch.nn.modules.activation",
                   ["LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid"], ("torch.nn",)),
    **_torch_names("dynamic_network_architectures.building_blocks.residual", ["BasicBlockD", "BottleneckD"], ()),
}


class NormScheme(str, Enum):
    """nnU-Net's per-channel intensity normalisation schemes (``normalization_schemes`` in the plans)."""

    CT = "CTNormalization"  # clip to foreground 0.5/99.5 percentiles, then (x - mean) / std of the foreground
    ZSCORE = "ZScoreNormalization"  # (x - mean) / std of this image (inside the nonzero mask if use_mask_for_norm)
    NONE = "NoNormalization"
    RESCALE_01 = "RescaleTo01Normalization"
    RGB_01 = "RGBTo01Normalization"


@dataclass(frozen=True)
class ChannelNormalization:
    """How one input channel is normalised.

    Args:
        scheme: the nnU-Net scheme.
        use_mask: z-score only inside the (hole-filled) nonzero mask; outside stays 0.
        mean, std, percentile_00_5, percentile_99_5: foreground intensity properties (CT scheme).
    """

    scheme: NormScheme
    use_mask: bool = False
    mean: float | None = None
    std: float | None = None
    percentile_00_5: float | None = None
    percentile_99_5: float | None = None


class ResamplingFn(str, Enum):
    """Resampling functions medseg implements with nnU-Net's semantics."""

    DEFAULT = "resample_data_or_seg_to_shape"  # skimage-style spline zoom, separate-z for anisotropic data


@dataclass(frozen=True)
class Resampling:
    """``resampling_fn_*`` + kwargs: spline ``order`` in-plane, ``order_z`` along an anisotropic axis."""

    fn: ResamplingFn = ResamplingFn.DEFAULT
    order: int = 3
    order_z: int = 0
    force_separate_z: bool | None = None


@dataclass(frozen=True)
class Architecture:
    """``architecture`` entry of a configuration: network class and its keyword arguments (JSON values)."""

    class_name: str
    kwargs: dict[str, Any]
    requires_import: tuple[str, ...]


@dataclass(frozen=True)
class Configuration:
    """One resolved configuration of ``plans.json`` (``inherits_from`` applied).

    Axes of ``patch_size``/``spacing`` are nnU-Net's *transposed* axes: the input array in SimpleITK order
    ``(z, y, x)`` after ``transpose_forward``. ``spacing`` in mm.
    """

    name: str
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    normalization: tuple[ChannelNormalization, ...]
    architecture: Architecture
    resample_data: Resampling
    resample_probabilities: Resampling
    previous_stage: str | None = None


@dataclass(frozen=True)
class DatasetLabels:
    """Labels of ``dataset.json``.

    Args:
        labels: output label ids and names (background 0 not listed). For region-based training, the ids are
            ``regions_class_order`` and each name is the region's name.
        regions: for region-based training, the label ids forming each network output channel
            (sigmoid > 0.5; later regions overwrite earlier ones), else ``None`` (softmax argmax).
        regions_class_order: the label id written for each region.
        num_heads: number of network output channels.
        channel_names: input channel names (``{"0": "CT"}``), in channel order.
    """

    labels: tuple[Label, ...]
    regions: tuple[tuple[int, ...], ...] | None
    regions_class_order: tuple[int, ...] | None
    num_heads: int
    channel_names: tuple[str, ...]
    file_ending: str = ".nii.gz"

    @property
    def has_regions(self) -> bool:
        return self.regions is not None


@dataclass(frozen=True)
class NnUNetModel:
    """An nnU-Net v2 results folder, read and validated (no weights loaded).

    ``folds`` maps fold name (``"0"``..``"4"``, ``"all"``) to its checkpoint path.
    """

    path: Path
    dataset_name: str
    plans_name: str
    trainer_name: str
    config: Configuration
    labels: DatasetLabels
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    folds: dict[str, Path] = field(default_factory=dict)
    image_reader_writer: str = "SimpleITKIO"

    @property
    def num_input_channels(self) -> int:
        return len(self.labels.channel_names)


# --------------------------------------------------------------------------------------------------------- reading


def is_nnunet_folder(path: str | Path) -> bool:
    """Cheap check (never raises): a directory with ``plans.json`` and ``dataset.json``."""
    try:
        p = Path(path)
        return p.is_dir() and (p / "plans.json").is_file() and (p / "dataset.json").is_file()
    except (OSError, TypeError, ValueError):
        return False


def _load_json(path: Path) -> dict:
    from medseg.models.parse import parse_json_text, read_config_text

    if not path.is_file():
        raise ModelError("missing (an nnU-Net results folder needs plans.json and dataset.json)", path)
    data = parse_json_text(read_config_text(path, path.name), path, path.name)
    if not isinstance(data, dict):
        raise ModelError(f"expected a JSON object, got {type(data).__name__}", path)
    return data


def _req(d: dict, key: str, where: Path, what: str = "plans") -> Any:
    if key not in d:
        raise ModelError(f"{what} has no {key!r}", where)
    return d[key]


def _resolve_configuration(plans: dict, name: str, where: Path, seen: tuple[str, ...] = ()) -> dict:
    configs = _req(plans, "configurations", where)
    if name not in configs:
        raise ModelError(f"configuration {name!r} not in plans (has {sorted(configs)})", where)
    if name in seen:
        raise ModelError(f"circular 'inherits_from' chain {' -> '.join((*seen, name))}", where)
    conf = dict(configs[name])
    parent = conf.pop("inherits_from", None)
    if parent is not None:
        base = _resolve_configuration(plans, parent, where, (*seen, name))
        base.update(conf)
        conf = base
    return conf


def _resampling(conf: dict, which: str, default_order: int, where: Path) -> Resampling:
    fn_name = conf.get(f"resampling_fn_{which}", ResamplingFn.DEFAULT.value)
    try:
        fn = ResamplingFn(fn_name)
    except ValueError:
        raise ModelError(
            f"resampling_fn_{which} {fn_name!r} is not supported; supported: {[f.value for f in ResamplingFn]}",
            where) from None
    kw = conf.get(f"resampling_fn_{which}_kwargs") or {}
    if kw.get("is_seg"):
        raise ModelError(f"resampling_fn_{which}_kwargs has is_seg=true, which medseg does not expect", where)
    fsz = kw.get("force_separate_z")
    return Resampling(fn, int(kw.get("order", default_order)), int(kw.get("order_z", 0)),
                      None if fsz is None else bool(fsz))


def _architecture(conf: dict, where: Path) -> Architecture:
    arch = conf.get("architecture")
    if arch is None:
        raise ModelError("configuration has no 'architecture' (plans from nnU-Net < 2.3 are not supported: "
                         "re-run nnUNetv2_plan_experiment or convert the plans)", where)
    cls = _req(arch, "network_class_name", where, "architecture")
    if cls not in ALLOWED_NETWORKS:
        raise ModelError(f"network class {cls!r} is not on medseg's allow-list ({sorted(ALLOWED_NETWORKS)})", where)
    kwargs = dict(_req(arch, "arch_kwargs", where, "architecture"))
    req = tuple(arch.get("_kw_requires_import", ()))
    for key in req:
        value = kwargs.get(key)
        if value is not None and value not in ALLOWED_LAYERS:
            raise ModelError(f"arch_kwargs[{key!r}] = {value!r} is not on medseg's allow-list of layer types", where)
    _check_arch_sizes(kwargs, where)
    return Architecture(cls, kwargs, req)


#: bounds on the architecture numbers a plans file may give (a crafted plans must not allocate gigabytes)
_ARCH_BOUNDS = {"n_stages": 12, "features_per_stage": 4096, "kernel_sizes": 15, "strides": 8,
                "n_conv_per_stage": 16, "n_blocks_per_stage": 16, "n_conv_per_stage_decoder": 16}


def _check_arch_sizes(kwargs: dict, where: Path) -> None:
    """Every integer under the keys of :data:`_ARCH_BOUNDS` must be in ``1..bound``."""
    for key, bound in _ARCH_BOUNDS.items():
        if key not in kwargs:
            continue
        stack = [kwargs[key]]
        while stack:
            v = stack.pop()
            if isinstance(v, (list, tuple)):
                stack.extend(v)
            elif isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= bound:
                raise ModelError(f"configurations.architecture.arch_kwargs.{key}: values must be integers in "
                                 f"1..{bound}, got {str(v)[:40]!r}", where)


def _normalisation(conf: dict, plans: dict, n_channels: int, where: Path) -> tuple[ChannelNormalization, ...]:
    schemes = list(_req(conf, "normalization_schemes", where))
    masks = list(conf.get("use_mask_for_norm", [False] * len(schemes)))
    if len(schemes) != n_channels or len(masks) != n_channels:
        raise ModelError(f"{len(schemes)} normalization_schemes for {n_channels} input channels", where)
    props_all = plans.get("foreground_intensity_properties_per_channel",
                          plans.get("foreground_intensity_properties_by_modality", {}))
    out = []
    for c, (name, use_mask) in enumerate(zip(schemes, masks)):
        try:
            scheme = NormScheme(name)
        except ValueError:
            raise ModelError(f"normalization scheme {name!r} is not supported; supported: "
                             f"{[s.value for s in NormScheme]}", where) from None
        props = props_all.get(str(c), {}) or {}
        if scheme is NormScheme.CT:
            missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k not in props]
            if missing:
                raise ModelError(f"CTNormalization of channel {c} needs foreground intensity properties {missing}",
                                 where)
        out.append(ChannelNormalization(
            scheme, bool(use_mask),
            *(None if props.get(k) is None else float(props[k])
              for k in ("mean", "std", "percentile_00_5", "percentile_99_5"))))
    return tuple(out)


def parse_dataset_labels(dataset: dict, where: Path) -> DatasetLabels:
    """``dataset.json`` → :class:`DatasetLabels` (follows nnU-Net's ``LabelManager``)."""
    raw = _req(dataset, "labels", where, "dataset.json")
    if not isinstance(raw, dict) or raw.get("background", None) != 0:
        raise ModelError("dataset.json 'labels' must map names to ids with 'background': 0", where)
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise ModelError("dataset.json has no 'channel_names'", where)
    channel_names = tuple(str(channels[k]) for k in sorted(channels, key=int))
    entries = {k: v for k, v in raw.items() if k != "ignore"}
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in entries.values())
    file_ending = str(dataset.get("file_ending", ".nii.gz"))
    if not has_regions:
        ids: dict[int, str] = {}
        for name, v in entries.items():
            v = int(v[0]) if isinstance(v, (list, tuple)) else int(v)
            if v != 0:
                ids.setdefault(v, name)
        all_ids = sorted({0, *ids})
        if all_ids != list(range(len(all_ids))):
            raise ModelError(f"label ids must be consecutive from 0, got {all_ids}", where)
        labels = tuple(Label(i, ids[i], label_color(i)) for i in sorted(ids))
        return DatasetLabels(labels, None, None, len(all_ids), channel_names, file_ending)
    order = dataset.get("regions_class_order")
    regions: list[tuple[int, ...]] = []
    names: list[str] = []
    for name, v in entries.items():
        r = tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),)
        if set(r) == {0}:
            continue
        regions.append(r)
        names.append(name)
    if order is None or len(order) != len(regions):
        raise ModelError(f"region-based dataset.json needs 'regions_class_order' with {len(regions)} entries, "
                         f"got {order!r}", where)
    order_t = tuple(int(x) for x in order)
    by_id: dict[int, str] = {}
    for name, c in zip(names, order_t):
        by_id[c] = name  # a later region overwrites an earlier one, as in the label map
    labels = tuple(Label(i, by_id[i], label_color(i)) for i in sorted(by_id) if i != 0)
    return DatasetLabels(labels, tuple(regions), order_t, len(regions), channel_names, file_ending)


def _folder_parts(path: Path) -> tuple[str, str, str]:
    parts = path.name.split("__")
    if len(parts) != 3:
        return "", "", ""
    return parts[0], parts[1], parts[2]


def find_folds(path: Path, checkpoint_name: str = CHECKPOINT_FINAL) -> dict[str, Path]:
    """``{"0": .../fold_0/checkpoint_final.pth, ...}`` for every fold folder that has the checkpoint."""
    out: dict[str, Path] = {}
    for d in sorted(path.iterdir()):
        m = _FOLD_RE.match(d.name)
        if m and d.is_dir() and (d / checkpoint_name).is_file():
            out[m.group(1)] = d / checkpoint_name
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == "all", int(kv[0]) if kv[0] != "all" else 0)))


def read_model_folder(path: str | Path, folds: tuple[str | int, ...] | None = None,
                      configuration: str | None = None,
                      checkpoint_name: str = CHECKPOINT_FINAL) -> NnUNetModel:
    """Read and validate an nnU-Net v2 results folder (plans, labels, folds); loads no weights.

    Args:
        path: ``.../DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``.
        folds: folds to use (``0``..``4`` or ``"all"``); default: every ``fold_N`` with a checkpoint
            (``fold_all`` only if no numbered fold has one), as nnU-Net's auto-detection does.
        configuration: plans configuration; default: the last ``__`` part of the folder name.
        checkpoint_name: file inside each ``fold_N``.

    Raises:
        ModelError: missing/invalid files, unsupported configuration, no fold checkpoints, or a value of an
            unexpected shape (one line naming the file and the key being read).
    """
    from medseg.models.parse import MALFORMED, one_line

    stage = ["plans.json"]
    p = Path(path).expanduser()
    try:
        return _read_model_folder(p, folds, configuration, checkpoint_name, stage)
    except ModelError as err:
        raise ModelError(one_line(err.message, 400), err.path) from None
    except MALFORMED as err:
        raise ModelError(f"{stage[0]}: unexpected value ({type(err).__name__}: {one_line(err, 160)})",
                         p / stage[0].split(" ", 1)[0]) from None


def _read_model_folder(p: Path, folds: tuple[str | int, ...] | None, configuration: str | None,
                       checkpoint_name: str, stage: list[str]) -> NnUNetModel:
    """The body of :func:`read_model_folder`; ``stage[0]`` names the file and key being read."""
    if not p.is_dir():
        raise ModelError("not a directory (expected an nnU-Net results folder)", p)
    plans = _load_json(p / "plans.json")
    dataset = _load_json(p / "dataset.json")
    trainer, plans_name, conf_from_name = _folder_parts(p)
    conf_name = configuration or conf_from_name
    if not conf_name:
        configs = list(plans.get("configurations", {}))
        if len(configs) != 1:
            raise ModelError(f"folder name is not <Trainer>__<Plans>__<configuration>; pass the configuration "
                             f"explicitly (plans have {configs})", p)
        conf_name = configs[0]
    stage[0] = f"plans.json configurations.{conf_name}"
    conf = _resolve_configuration(plans, conf_name, p / "plans.json")
    where = p / "plans.json"
    stage[0] = "dataset.json labels"
    labels = parse_dataset_labels(dataset, p / "dataset.json")
    stage[0] = f"plans.json configurations.{conf_name}"
    if conf.get("previous_stage"):
        raise ModelError(f"configuration {conf_name!r} is a cascade stage (needs {conf['previous_stage']!r} "
                         f"predictions); medseg runs single-stage configurations only", where)
    patch = tuple(int(x) for x in _req(conf, "patch_size", where))
    spacing = tuple(float(x) for x in _req(conf, "spacing", where))
    if len(patch) != 3 or len(spacing) != 3:
        raise ModelError(f"configuration {conf_name!r} is {len(patch)}D; medseg runs 3D configurations only", where)
    stage[0] = "plans.json transpose_forward/transpose_backward"
    tf = tuple(int(x) for x in plans.get("transpose_forward", (0, 1, 2)))
    tb = tuple(int(x) for x in plans.get("transpose_backward", (0, 1, 2)))
    if sorted(tf) != [0, 1, 2] or sorted(tb) != [0, 1, 2] or tuple(tf[i] for i in tb) != (0, 1, 2):
        raise ModelError(f"transpose_forward {tf} / transpose_backward {tb} are not inverse permutations", where)
    rw = str(plans.get("image_reader_writer", "SimpleITKIO"))
    if rw not in ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient", "SimpleITKIOWithReorient"):
        raise ModelError(f"image_reader_writer {rw!r} is not supported (medseg feeds volumes in SimpleITK/"
                         f"nibabel axis order)", where)
    stage[0] = f"plans.json configurations.{conf_name}"
    config = Configuration(
        name=conf_name,
        patch_size=patch,
        spacing=spacing,
        normalization=_normalisation(conf, plans, len(labels.channel_names), where),
        architecture=_architecture(conf, where),
        resample_data=_resampling(conf, "data", 3, where),
        resample_probabilities=_resampling(conf, "probabilities", 1, where),
    )
    available = find_folds(p, checkpoint_name)
    if folds is None:
        chosen = {k: v for k, v in available.items() if k != "all"} or available
    else:
        chosen = {}
        for f in folds:
            key = str(f)
            if key not in available:
                raise ModelError(f"fold {key!r} has no {checkpoint_name} (available: {sorted(available)})", p)
            chosen[key] = available[key]
    if not chosen:
        raise ModelError(f"no fold_N/{checkpoint_name} found", p)
    return NnUNetModel(
        path=p,
        dataset_name=str(plans.get("dataset_name", p.parent.name)),
        plans_name=str(plans.get("plans_name", plans_name)),
        trainer_name=trainer,
        config=config,
        labels=labels,
        transpose_forward=tf,
        transpose_backward=tb,
        folds=chosen,
        image_reader_writer=rw,
    )


# --------------------------------------------------------------------------------------------------------- network


def _resolve(name: str, table: dict[str, tuple[str, str]]) -> Any:
    import importlib

    module, attr = table[name]
    return getattr(importlib.import_module(module), attr)


def build_network(model: NnUNetModel):  # -> torch.nn.Module
    """Instantiate the configuration's network (deep supervision off), in eval mode, untrained.

    Only names on :data:`ALLOWED_NETWORKS` / :data:`ALLOWED_LAYERS` are imported.

    Raises:
        ModelError: the architecture cannot be built from these arguments.
    """
    arch = model.config.architecture
    try:
        cls = _resolve(arch.class_name, ALLOWED_NETWORKS)
    except ImportError as e:
        raise ModelError(f"cannot import {arch.class_name}: {e} (pip install 'medseg[nnunet]')",
                         model.path / "plans.json") from None
    kwargs = dict(arch.kwargs)
    for key in arch.requires_import:
        if kwargs.get(key) is not None:
            kwargs[key] = _resolve(kwargs[key], ALLOWED_LAYERS)
    kwargs["deep_supervision"] = False
    from medseg.models.parse import MALFORMED, one_line

    try:
        net = cls(input_channels=model.num_input_channels, num_classes=model.labels.num_heads, **kwargs)
    except (*MALFORMED, AssertionError, RuntimeError) as e:
        raise ModelError(f"cannot build {arch.class_name} from arch_kwargs: {type(e).__name__}: {one_line(e, 200)}",
                         model.path / "plans.json") from None
    return net.eval()
