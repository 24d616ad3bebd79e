"""Parts of medseg.nnunet against nnU-Net's own functions: resampling, tiling, Gaussian, regions, networks,
plans validation and weights-only checkpoint loading."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from perfkit.nnunet_folder import PLAIN_ARCH, RESENC_ARCH, make_results_folder

PROPS = {"mean": 40.0, "std": 300.0, "percentile_00_5": -1000.0, "percentile_99_5": 1500.0,
         "max": 3000.0, "min": -1024.0, "median": 30.0}


@pytest.fixture(scope="module", autouse=True)
def _nnunet_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet_env")
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(k, str(root / k))


# ------------------------------------------------------------------------------------------------ resampling


@pytest.mark.parametrize(
    "shape, new_shape, spacing, new_spacing, order",
    [
        ((2, 9, 11, 7), (12, 8, 10), (1.0, 1.2, 0.9), (0.8, 1.6, 0.6), 3),  # isotropic-ish, cubic, 2 channels
        ((1, 5, 16, 14), (11, 10, 9), (4.0, 1.0, 1.0), (2.0, 1.5, 1.5), 3),  # anisotropic: separate z (axis 0)
        ((1, 14, 6, 13), (10, 12, 9), (1.0, 5.0, 1.0), (1.4, 2.5, 1.4), 1),  # separate z along axis 1, linear
        ((3, 8, 8, 8), (8, 8, 8), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1),  # no-op
    ],
)
def test_resampling_equals_nnunet(shape, new_shape, spacing, new_spacing, order):
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    from medseg.nnunet.plans import Resampling
    from medseg.nnunet.resample import resample_to_shape

    rng = np.random.default_rng(0)
    data = rng.normal(size=shape).astype(np.float32)
    ref = resample_data_or_seg_to_shape(data, new_shape, spacing, new_spacing, is_seg=False, order=order,
                                        order_z=0, force_separate_z=None)
    got = resample_to_shape(data, new_shape, spacing, new_spacing, Resampling(order=order))
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_resampling_float16_logits_like_nnunet_export():
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape

    from medseg.nnunet.plans import Resampling
    from medseg.nnunet.resample import resample_to_shape

    logits = np.random.default_rng(1).normal(size=(4, 10, 9, 12)).astype(np.float16)
    ref = resample_data_or_seg_to_shape(logits, (13, 7, 12), (1.0, 1.5, 1.0), (0.8, 2.0, 1.0), order=1)
    got = resample_to_shape(logits, (13, 7, 12), (1.0, 1.5, 1.0), (0.8, 2.0, 1.0), Resampling(order=1))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, ref)


# ---------------------------------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("size, tile, step", [((110, 64, 40), (64, 64, 32), 0.5), ((33, 97, 128), (32, 32, 32), 0.5),
                                              ((50, 50, 50), (20, 30, 40), 0.3), ((64, 64, 64), (64, 64, 64), 1.0)])
def test_tile_starts_equal_nnunet(size, tile, step):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    from medseg.nnunet.sliding import tile_starts

    assert tile_starts(size, tile, step) == compute_steps_for_sliding_window(size, tile, step)


def test_tile_starts_validates():
    from medseg.nnunet.sliding import tile_starts

    with pytest.raises(ValueError, match="step_size"):
        tile_starts((40, 40, 40), (32, 32, 32), 1.5)
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_starts((20, 40, 40), (32, 32, 32), 0.5)


def test_gaussian_equals_nnunet():
    import torch
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    from medseg.nnunet.sliding import gaussian_importance

    ref = compute_gaussian((32, 48, 40), sigma_scale=1.0 / 8, value_scaling_factor=10, device=torch.device("cpu"))
    got = gaussian_importance((32, 48, 40), dtype=torch.float16)
    assert torch.equal(got, ref)


# --------------------------------------------------------------------------------------------------- regions


def test_region_labels_follow_nnunet_label_manager(tmp_path):
    import torch
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from medseg.nnunet.plans import read_model_folder

    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    folder = make_results_folder(tmp_path, labels=labels, intensity_properties=PROPS, regions_class_order=[1, 2, 3],
                                 normalization="ZScoreNormalization", folds=(0,))
    model = read_model_folder(folder)
    assert model.labels.has_regions and model.labels.num_heads == 3
    assert [(lab.id, lab.name) for lab in model.labels.labels] == [(1, "whole tumor"), (2, "tumor core"),
                                                                   (3, "enhancing tumor")]
    lm = LabelManager(labels, regions_class_order=[1, 2, 3])
    logits = np.random.default_rng(2).normal(size=(3, 6, 7, 8)).astype(np.float32)
    ref = lm.convert_logits_to_segmentation(logits)
    probs = torch.sigmoid(torch.from_numpy(logits)).numpy()
    ours = np.zeros(probs.shape[1:], dtype=np.uint16)
    for i, c in enumerate(model.labels.regions_class_order):
        ours[probs[i] > 0.5] = c
    np.testing.assert_array_equal(ours, ref)

    from medseg.nnunet import NnUNetPredictor

    spec = NnUNetPredictor(folder, device="cpu").spec  # provenance spec validates with the engine schema
    assert spec.network.nnunet and spec.output.decision.value == "threshold"
    assert spec.output.channel_labels == ((0, 1), (1, 2), (2, 3)) and spec.input.modality == "CT"


# -------------------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("arch", [PLAIN_ARCH((4, 8, 16)), RESENC_ARCH((4, 8, 16))])
def test_network_matches_nnunet_build(tmp_path, arch):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from medseg.nnunet.plans import build_network, read_model_folder

    folder = make_results_folder(tmp_path, labels={"background": 0, "a": 1, "b": 2}, intensity_properties=PROPS,
                                 architecture=arch, folds=(0,))
    model = read_model_folder(folder)
    ours = build_network(model)
    ref = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 1, 3, allow_init=True, deep_supervision=False)
    assert type(ours) is type(ref)
    ref_sd = ref.state_dict()
    assert list(ours.state_dict()) == list(ref_sd)
    ours.load_state_dict(ref_sd)
    ref.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        assert torch.equal(ours(x), ref(x))


# ----------------------------------------------------------------------------------------------------- plans


def _edit_plans(folder, fn):
    p = folder / "plans.json"
    plans = json.loads(p.read_text())
    fn(plans)
    p.write_text(json.dumps(plans))


def test_plans_are_read_into_typed_values(tmp_path):
    from medseg.nnunet import is_nnunet_folder, read_model_folder
    from medseg.nnunet.plans import NormScheme

    folder = make_results_folder(tmp_path, labels={"background": 0, "liver": 1, "spleen": 2},
                                 intensity_properties=PROPS, spacing=(2.5, 0.8, 0.8), transpose_forward=(2, 0, 1),
                                 folds=(0, 1))
    assert is_nnunet_folder(folder) and not is_nnunet_folder(folder.parent) and not is_nnunet_folder(tmp_path / "x")
    m = read_model_folder(folder)
    assert (m.trainer_name, m.plans_name, m.config.name) == ("nnUNetTrainer", "nnUNetPlans", "3d_fullres")
    assert m.config.patch_size == (32, 32, 32) and m.config.spacing == (2.5, 0.8, 0.8)
    assert m.transpose_forward == (2, 0, 1) and m.transpose_backward == (1, 2, 0)
    norm = m.config.normalization[0]
    assert norm.scheme is NormScheme.CT and (norm.mean, norm.std) == (40.0, 300.0)
    assert (m.config.resample_data.order, m.config.resample_probabilities.order) == (3, 1)
    assert list(m.folds) == ["0", "1"]
    assert list(read_model_folder(folder, folds=[1]).folds) == ["1"]
    assert [lab.name for lab in m.labels.labels] == ["liver", "spleen"]


def test_plans_inheritance_and_bad_plans(tmp_path):
    from medseg.errors import ModelError
    from medseg.nnunet import read_model_folder

    folder = make_results_folder(tmp_path, labels={"background": 0, "a": 1}, intensity_properties=PROPS, folds=(0,))

    def add_child(p):
        p["configurations"]["3d_fullres_bs4"] = {"inherits_from": "3d_fullres", "batch_size": 4,
                                                 "spacing": [2.0, 2.0, 2.0]}
    _edit_plans(folder, add_child)
    child = read_model_folder(folder, configuration="3d_fullres_bs4")
    assert child.config.spacing == (2.0, 2.0, 2.0) and child.config.patch_size == (32, 32, 32)

    with pytest.raises(ModelError, match="fold '3' has no checkpoint_final.pth"):
        read_model_folder(folder, folds=[3])

    def evil(p):
        p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    _edit_plans(folder, evil)
    with pytest.raises(ModelError, match="'os.system' is not on medseg's allow-list"):
        read_model_folder(folder)

    def evil_class(p):
        p["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "subprocess.Popen"
    _edit_plans(folder, evil_class)
    with pytest.raises(ModelError, match="network class 'subprocess.Popen' is not on medseg's allow-list"):
        read_model_folder(folder)

    def two_d(p):
        c = p["configurations"]["3d_fullres"]
        c["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
        c["patch_size"], c["spacing"] = [64, 64], [1.0, 1.0]
    _edit_plans(folder, two_d)
    with pytest.raises(ModelError, match="2D; medseg runs 3D configurations only"):
        read_model_folder(folder)

    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(ModelError, match="dataset.json: cannot read JSON"):
        read_model_folder(folder)
    with pytest.raises(ModelError, match="not a directory"):
        read_model_folder(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_weights_only_with_numpy_scalars(tmp_path):
    """nnU-Net's checkpoint dict (numpy scalars in logging/_best_ema) loads weights-only, also numpy-1 pickles."""
    import torch

    from medseg.nnunet.checkpoint import load_checkpoint

    folder = make_results_folder(tmp_path / "a", labels={"background": 0, "a": 1}, intensity_properties=PROPS,
                                 folds=(0,), mirror_axes=(0, 1))
    path = folder / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(pickle.UnpicklingError, match="numpy"):  # what plain weights_only=True says
        torch.load(path, map_location="cpu", weights_only=True)
    ck = load_checkpoint(path)
    assert ck.trainer_name == "nnUNetTrainer" and ck.configuration == "3d_fullres"
    assert ck.mirroring_axes == (0, 1) and len(ck.sha256) == 64
    assert all(isinstance(v, torch.Tensor) for v in ck.state_dict.values())

    old = make_results_folder(tmp_path / "b", labels={"background": 0, "a": 1}, intensity_properties=PROPS,
                              folds=(0,), numpy1_pickle=True)
    old_path = old / "fold_0" / "checkpoint_final.pth"
    assert b"numpy.core.multiarray" in zipfile.ZipFile(old_path).read("checkpoint_final/data.pkl")
    assert load_checkpoint(old_path).state_dict.keys() == ck.state_dict.keys()


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_checkpoint_refuses_other_globals_and_wrong_digest(tmp_path):
    import torch

    from medseg.errors import ModelError
    from medseg.nnunet.checkpoint import load_checkpoint

    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "x": _Payload()}, evil)
    with pytest.raises(ModelError, match="refused by weights-only loading.*posix.getcwd|refused by weights-only"):
        load_checkpoint(evil)

    good = tmp_path / "good.pth"
    torch.save({"network_weights": {"w": torch.zeros(2)}}, good)
    assert load_checkpoint(good).trainer_name is None
    with pytest.raises(ModelError, match="does not match the registered"):
        load_checkpoint(good, expected_sha256="0" * 64)
    notck = tmp_path / "plain.pth"
    torch.save({"state_dict": {}}, notck)
    with pytest.raises(ModelError, match="not an nnU-Net checkpoint"):
        load_checkpoint(notck)


def test_weights_that_do_not_fit_the_plans(tmp_path):
    from medseg.errors import ModelError
    from medseg.nnunet import NnUNetPredictor

    folder = make_results_folder(tmp_path, labels={"background": 0, "a": 1}, intensity_properties=PROPS,
                                 folds=(0,), architecture=PLAIN_ARCH((4, 8, 16)))
    _edit_plans(folder, lambda p: p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(
        features_per_stage=[8, 16, 32]))
    with pytest.raises(ModelError, match="weights do not fit the plans' network"):
        NnUNetPredictor(folder, device="cpu")


def test_strip_checkpoint_makes_a_plain_weights_only_file(tmp_path):
    import torch

    from medseg.errors import ModelError
    from medseg.nnunet.checkpoint import load_checkpoint, strip_checkpoint

    folder = make_results_folder(tmp_path, labels={"background": 0, "a": 1}, intensity_properties=PROPS, folds=(0,))
    src = folder / "fold_0" / "checkpoint_final.pth"
    from medseg.models.cache import sha256_file

    with pytest.raises(ModelError, match="sha256 mismatch"):
        strip_checkpoint(src, tmp_path / "stripped.pth", "0" * 64)
    assert not (tmp_path / "stripped.pth").exists()
    dst = strip_checkpoint(src, tmp_path / "stripped.pth", sha256_file(src))
    plain = torch.load(dst, map_location="cpu", weights_only=True)  # no allow-list needed any more
    assert set(plain) == {"network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes"}
    a, b = load_checkpoint(src), load_checkpoint(dst)
    assert a.state_dict.keys() == b.state_dict.keys() and a.mirroring_axes == b.mirroring_axes == (0, 1, 2)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    with pytest.raises(ModelError, match="exists; not overwriting"):
        strip_checkpoint(src, dst, sha256_file(src))


# ------------------------------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("scheme, use_mask", [("CTNormalization", False), ("ZScoreNormalization", False),
                                              ("ZScoreNormalization", True), ("RescaleTo01Normalization", False),
                                              ("NoNormalization", False)])
def test_crop_and_normalisation_equal_nnunet(tmp_path, scheme, use_mask):
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero as nn_crop
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    from medseg.nnunet.plans import read_model_folder
    from medseg.nnunet.predictor import crop_to_nonzero, normalize_channels

    folder = make_results_folder(tmp_path, labels={"background": 0, "a": 1}, intensity_properties=PROPS,
                                 normalization=scheme, folds=(0,))
    if use_mask:
        _edit_plans(folder, lambda p: p["configurations"]["3d_fullres"].update(use_mask_for_norm=[True]))
    model = read_model_folder(folder)
    rng = np.random.default_rng(3)
    data = (rng.normal(size=(1, 14, 12, 10)) * 400 + 50).astype(np.float32)
    data[:, :3] = 0
    data[:, :, -2:] = 0
    data[:, 6, 5, 4] = 0  # an interior zero: a hole the mask fills
    ref_data, ref_seg, ref_bbox = nn_crop(data.copy())
    ours, mask, bbox = crop_to_nonzero(data.copy())
    assert [list(b) for b in bbox] == [list(map(int, b)) for b in ref_bbox]
    np.testing.assert_array_equal(mask, ref_seg[0] >= 0)
    ours = normalize_channels(np.ascontiguousarray(ours), mask, model)
    names = {"CTNormalization": "CT", "ZScoreNormalization": "zscore", "RescaleTo01Normalization": "rescale_to_0_1",
             "NoNormalization": "noNorm"}
    norm = get_normalization_scheme(names[scheme])(use_mask_for_norm=use_mask, intensityproperties=PROPS)
    np.testing.assert_array_equal(ours[0], norm.run(ref_data[0].copy(), ref_seg[0]))


@pytest.mark.parametrize("regions", [False, True])
def test_export_equals_nnunet(tmp_path, regions):
    """postprocess (channel-by-channel resampling, running argmax / region thresholds, crop and transpose
    undone) equals nnU-Net's convert_predicted_logits_to_segmentation_with_correct_shape."""
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medseg.nnunet import NnUNetPredictor
    from medseg.types import Geometry, Volume

    labels = ({"background": 0, "wt": [1, 2, 3], "tc": [2, 3], "et": [3]} if regions
              else {"background": 0, "a": 1, "b": 2, "c": 3, "d": 4})
    folder = make_results_folder(tmp_path, labels=labels, intensity_properties=PROPS, spacing=(4.5, 1.2, 1.4),
                                 transpose_forward=(2, 0, 1), regions_class_order=[1, 2, 3] if regions else None,
                                 folds=(0,))
    p = NnUNetPredictor(folder, device="cpu")
    arr = np.random.default_rng(4).normal(size=(20, 18, 9)).astype(np.float32) * 100
    arr[:2] = 0
    vol = Volume(arr, Geometry(np.diag([1.0, 1.1, 3.0, 1.0]), arr.shape))
    x, meta = p.preprocess(vol)
    logits = torch.from_numpy(np.random.default_rng(5).normal(size=(p.model.labels.num_heads, *x.shape[1:])))
    logits = logits.to(torch.float16)
    ours = p.postprocess(logits, meta).array

    plans = PlansManager(str(folder / "plans.json"))
    dataset = json.loads((folder / "dataset.json").read_text())
    props = {"spacing": list(np.linalg.norm(vol.affine[:3, :3], axis=0)[::-1]),
             "shape_before_cropping": meta.shape_before_cropping, "bbox_used_for_cropping": [list(b) for b in meta.bbox],
             "shape_after_cropping_and_before_resampling": meta.shape_after_cropping}
    ref = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits.clone(), plans, plans.get_configuration("3d_fullres"), plans.get_label_manager(dataset), props)
    np.testing.assert_array_equal(ours, np.asarray(ref).transpose(2, 1, 0))
    assert len(np.unique(ours)) > 2
