"""Build a real, small nnU-Net v2 results folder for tests and benchmarks.

The folder is what ``nnUNetv2_train`` leaves behind: ``<results>/Dataset990_TinyCT/
nnUNetTrainer__nnUNetPlans__3d_fullres/{plans.json, dataset.json, fold_0/checkpoint_final.pth, ...}``.
``plans.json`` has every key nnU-Net 2.x's ``ExperimentPlanner`` writes (architecture with
``_kw_requires_import``, resampling functions and kwargs, CT foreground intensity properties,
transpose_forward/backward); the checkpoints have the dict nnU-Net's ``nnUNetTrainer.save_checkpoint``
writes (network weights of a deep-supervision network, SGD optimizer state after one step, logging with
numpy scalars, ``_best_ema``, ``init_args`` with plans/dataset/``torch.device``, trainer name and
``inference_allowed_mirroring_axes``). Weights are random but seeded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["PLAIN_ARCH", "RESENC_ARCH", "ct_intensity_properties", "make_results_folder"]

TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CONFIG = "3d_fullres"

_REQ = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def PLAIN_ARCH(features=(8, 16, 32)) -> dict:  # noqa: N802 - constant-like factory
    n = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": list(_REQ),
    }


def RESENC_ARCH(features=(8, 16, 32)) -> dict:  # noqa: N802
    n = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_blocks_per_stage": [1] + [2] * (n - 1),
            "n_conv_per_stage_decoder": [1] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": list(_REQ),
    }


def ct_intensity_properties(values: np.ndarray) -> dict:
    """nnU-Net's ``foreground_intensity_properties_per_channel`` entry for foreground voxel values."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "max": float(v.max()), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
        "percentile_00_5": float(np.percentile(v, 0.5)), "percentile_99_5": float(np.percentile(v, 99.5)),
        "std": float(v.std()),
    }


def make_results_folder(
    root: Path,
    *,
    labels: dict,
    intensity_properties: dict,
    patch_size=(32, 32, 32),
    spacing=(3.0, 3.0, 3.0),
    transpose_forward=(0, 1, 2),
    architecture: dict | None = None,
    normalization: str = "CTNormalization",
    regions_class_order=None,
    folds=(0, 1),
    seed: int = 0,
    mirror_axes=(0, 1, 2),
    numpy1_pickle: bool = False,
) -> Path:
    """Write an nnU-Net v2 results folder under ``root``; return ``.../Trainer__Plans__Config``.

    Args:
        labels: dataset.json ``labels`` (``{"background": 0, ...}``; lists for regions).
        intensity_properties: channel 0 foreground properties (see :func:`ct_intensity_properties`).
        transpose_forward: the plans' axis permutation; ``transpose_backward`` is its inverse.
        numpy1_pickle: rewrite the checkpoints' pickles to name numpy 1.x's ``numpy.core.multiarray``.
    """
    import torch

    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    arch = architecture or PLAIN_ARCH()
    tf = [int(t) for t in transpose_forward]
    tb = [int(i) for i in np.argsort(tf)]
    name = "Dataset990_TinyCT"
    out = Path(root) / name / f"{TRAINER}__{PLANS}__{CONFIG}"
    out.mkdir(parents=True)
    n_heads = sum(1 for k, v in labels.items() if k != "background" and k != "ignore") if regions_class_order \
        else len({int(v) for k, v in labels.items() if k != "ignore"})
    plans = {
        "dataset_name": name,
        "plans_name": PLANS,
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": [30, 80, 70],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": tf,
        "transpose_backward": tb,
        "configurations": {
            CONFIG: {
                "data_identifier": f"{PLANS}_{CONFIG}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [int(p) for p in patch_size],
                "median_image_size_in_voxels": [30.0, 80.0, 70.0],
                "spacing": [float(s) for s in spacing],
                "normalization_schemes": [normalization],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                       "force_separate_z": None},
                "architecture": arch,
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensity_properties},
    }
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": 12,
        "file_ending": ".nii.gz",
        "name": name,
    }
    if regions_class_order is not None:
        dataset["regions_class_order"] = list(regions_class_order)
    (out / "plans.json").write_text(json.dumps(plans, indent=4))
    (out / "dataset.json").write_text(json.dumps(dataset, indent=4))

    cls = {"PlainConvUNet": PlainConvUNet, "ResidualEncoderUNet": ResidualEncoderUNet}[
        arch["network_class_name"].rsplit(".", 1)[1]]
    kw = dict(arch["arch_kwargs"])
    kw.update(conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, dropout_op=None, nonlin=torch.nn.LeakyReLU)
    for fold in folds:
        torch.manual_seed(seed + 1000 * int(fold))
        net = cls(input_channels=1, num_classes=n_heads, deep_supervision=True, **kw)
        net.apply(net.initialize)  # nnU-Net's He initialisation
        with torch.no_grad():  # give the norms non-trivial affine parameters, as training would
            for name_, p in net.named_parameters():
                if "norm" in name_:
                    p.add_(0.2 * torch.randn_like(p))
        opt = torch.optim.SGD(net.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
        outs = net(torch.randn(1, 1, 16, 16, 16))  # one SGD step fills the optimizer state
        sum(o.float().mean() for o in outs).backward()
        opt.step()
        opt.zero_grad()
        ema = np.float64(0.5 + 0.01 * int(fold))
        ckpt = {
            "network_weights": net.state_dict(),
            "optimizer_state": opt.state_dict(),
            "grad_scaler_state": None,
            "logging": {
                "mean_fg_dice": [ema], "ema_fg_dice": [ema],
                "dice_per_class_or_region": [[np.float64(0.4)] * max(n_heads - 1, 1)],
                "train_losses": [np.float64(-0.31)], "val_losses": [np.float32(-0.27)], "lrs": [0.01],
                "epoch_start_timestamps": [time.time()], "epoch_end_timestamps": [time.time()],
            },
            "_best_ema": ema,
            "current_epoch": 1000,
            "init_args": {"plans": plans, "configuration": CONFIG, "fold": int(fold), "dataset_json": dataset,
                          "device": torch.device("cuda")},
            "trainer_name": TRAINER,
            "inference_allowed_mirroring_axes": None if mirror_axes is None else tuple(mirror_axes),
        }
        fdir = out / f"fold_{fold}"
        fdir.mkdir()
        torch.save(ckpt, fdir / "checkpoint_final.pth")
        if numpy1_pickle:
            _rewrite_numpy1(fdir / "checkpoint_final.pth")
    return out


def _rewrite_numpy1(path: Path) -> None:
    """Make a checkpoint look saved under numpy 1.x (``numpy.core.multiarray.scalar`` in the pickle)."""
    import zipfile

    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)
    tmp.replace(path)
