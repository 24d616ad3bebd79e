"""medseg's NnUNetPredictor against nnU-Net's own nnUNetPredictor on a real (tiny) nnU-Net v2 results folder.

The input is a crop of TotalSegmentator's real example CT, reoriented to ILP (non-canonical) and with a
zero border (exercises crop-to-nonzero); the plans transpose the axes (transpose_forward = [2, 0, 1]),
resample 3 mm -> (3.5, 4, 4) mm and use CT normalisation with foreground intensity properties.
nnU-Net reads the NIfTI through SimpleITK and writes its segmentation through SimpleITK; medseg gets the
same file through nibabel. Labels must be identical voxel for voxel, on the same grid.
"""

from __future__ import annotations

import os

import numpy as np
import pytest


def _nnunet_reference(folder, path, out_path):
    """nnU-Net's own prediction (CPU, both folds, mirroring, Gaussian, step 0.5), written as NIfTI."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    ref = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                          perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    ref.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1))
    rw = SimpleITKIO()
    data, props = rw.read_images([str(path)])
    seg = ref.predict_single_npy_array(data, props, None, None, False)
    rw.write_seg(seg, str(out_path), props)


@pytest.mark.slow
def test_labels_identical_to_nnunet_predictor(case, tmp_path):
    import nibabel as nib

    from medseg.nnunet import NnUNetPredictor

    folder, path, vol = case
    ref_path = tmp_path / "ref.nii.gz"
    _nnunet_reference(folder, path, ref_path)
    ref = nib.load(ref_path)
    ref_labels = np.asanyarray(ref.dataobj)

    predictor = NnUNetPredictor(folder, device="cpu", mirror_batch=1)  # mirrored copies one by one, as nnU-Net
    assert predictor.allowed_mirroring_axes == (0, 1, 2)
    calls = []
    out = predictor.predict(vol, progress=lambda d, t: calls.append((d, t)))

    assert out.is_label and out.geometry == vol.geometry
    assert np.allclose(ref.affine, out.affine, atol=1e-4)
    assert [(lab.id, lab.name) for lab in out.labels] == [(1, "liver"), (2, "spleen"), (3, "kidney")]
    assert calls and calls[-1][0] == calls[-1][1] == 8  # 4 tiles x 2 folds
    counts = np.bincount(ref_labels.ravel(), minlength=4)
    assert (counts[:2] > 1000).all()  # a non-trivial label map
    assert out.array.dtype == np.uint8
    np.testing.assert_array_equal(out.array, ref_labels)

    # default: the 8 mirrored copies of a tile go through the network as one batch (about 4x faster on the
    # CPU). Batched convolutions round differently (~1e-6); after nnU-Net's float16 accumulation this can only
    # flip voxels whose two best logits are (nearly) tied, which a random network has in places.
    fast = NnUNetPredictor(folder, device="cpu")
    assert fast.mirror_batch == 8
    labels = fast.predict(vol).array
    differ = int((labels != ref_labels).sum())
    assert differ <= 0.001 * labels.size, differ
    for lab in (1, 2):
        a, b = labels == lab, ref_labels == lab
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.999


def test_reorient_option_keeps_the_source_grid(case):
    """orientation="RAS" (TotalSegmentator's convention) runs on the canonical array, returns the source grid."""
    from medseg.nnunet import NnUNetPredictor

    folder, _, vol = case
    predictor = NnUNetPredictor(folder, device="cpu", folds=[0], tta=False, orientation="RAS")
    out = predictor.predict(vol)
    assert out.geometry == vol.geometry
    assert out.array.shape == vol.shape
    assert set(np.unique(out.array)) <= {0, 1, 2, 3}
    # the zero border stays background (crop-to-nonzero pasted back in place)
    from medseg.geometry import reorient

    lab = reorient(out.array, vol.affine, "RAS")[0]  # the crop's original (RAS) axes
    assert lab[4:, :-3].any()
    assert not lab[:4].any() and not lab[:, -3:].any()


def test_fingerprint_depends_on_settings(case):
    from medseg.nnunet import NnUNetPredictor

    folder = case[0]
    a = NnUNetPredictor(folder, device="cpu", folds=[0])
    b = NnUNetPredictor(folder, device="cpu", folds=[0])
    c = NnUNetPredictor(folder, device="cpu", folds=[0], tta=False)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert "Dataset990_TinyCT" in repr(a)


def test_wrong_channel_count_is_a_clear_error(case):
    from medseg.errors import ModelError
    from medseg.nnunet import NnUNetPredictor
    from medseg.types import Volume

    folder, _, vol = case
    predictor = NnUNetPredictor(folder, device="cpu", folds=[0])
    two = Volume(np.stack([vol.array, vol.array], axis=-1), vol.geometry)
    with pytest.raises(ModelError, match="expects 1 input channel"):
        predictor.predict(two)


def test_engine_entry_point_and_zipped_results_folder(case, tmp_path):
    """``load_nnunet_predictor`` takes the engine's arguments; a downloaded .zip is extracted safely once."""
    import zipfile

    from medseg.errors import ModelError
    from medseg.models.loaders import safe_extract_results_folder
    from medseg.nnunet.predictor import load_nnunet_predictor

    folder = case[0]
    p = load_nnunet_predictor(folder, device="cpu", precision="auto", overlap=0.25, tta=False, threads=1)
    assert (p.step_size, p.mirror_axes, p.precision, p.autocast_dtype) == (0.75, None, "float32", None)
    with pytest.raises(ValueError, match="overlap"):
        load_nnunet_predictor(folder, device="cpu", overlap=1.0)
    with pytest.raises(ModelError, match="float16 is not supported on the CPU"):
        load_nnunet_predictor(folder, device="cpu", precision="float16")

    archive = tmp_path / "Dataset990_TinyCT.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and (f.name != "checkpoint_final.pth" or f.parent.name == "fold_0"):
                z.write(f, str(f.relative_to(folder.parent.parent)))
    dest = tmp_path / "cache" / "Dataset990_TinyCT.zip.d"
    out = safe_extract_results_folder(archive, dest)
    assert out == (dest / "Dataset990_TinyCT" / folder.name).resolve()
    assert safe_extract_results_folder(archive, dest) == out  # second call: already extracted
    q = load_nnunet_predictor(out, device="cpu", tta=False)
    assert list(q.model.folds) == ["0"] and q.checkpoint_digests["0"] == p.checkpoint_digests["0"]

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("m/plans.json", "{}")
        z.writestr("m/dataset.json", "{}")
        z.writestr("m/../../escape.txt", "x")
    with pytest.raises(ModelError, match="escapes the cache directory"):
        safe_extract_results_folder(evil, tmp_path / "cache2")
    assert not (tmp_path / "escape.txt").exists()


def test_engine_load_predictor_delegates_nnunet_folders(case):
    """``medseg.predictor.load_predictor(<nnU-Net results folder>)`` → NnUNetPredictor (engine hook)."""
    import inspect

    try:
        import medseg.predictor as engine
    except ImportError as e:  # pragma: no cover - engine not present
        pytest.skip(f"medseg.predictor not importable: {e}")
    if "nnunet" not in inspect.getsource(engine.load_predictor):
        pytest.skip("medseg.predictor.load_predictor has no nnU-Net hook yet (requested from the engine owner)")
    from medseg.nnunet import NnUNetPredictor

    p = engine.load_predictor(case[0], device="cpu", tta=False)
    assert isinstance(p, NnUNetPredictor) and p.mirror_axes is None


def test_cli_segment_with_a_results_folder_and_with_a_spec(case, tmp_path):
    """``medseg segment --model <folder>`` and a spec naming the folder give nnU-Net's labels on the input grid."""
    import nibabel as nib

    from medseg.cli import main
    from medseg.nnunet import NnUNetPredictor
    from medseg.predictor import load_predictor

    folder, path, vol = case
    expected = NnUNetPredictor(folder, device="cpu", tta=False).predict(vol).array

    out = tmp_path / "seg.nii.gz"
    rc = main(["segment", str(path), "-o", str(out), "-m", str(folder), "--device", "cpu", "--no-tta",
               "--no-progress"])
    assert rc == 0
    img = nib.load(out)
    assert np.allclose(img.affine, vol.affine, atol=1e-4) and img.shape == vol.shape
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected)
    assert main(["segment", str(path), "-o", str(out), "-m", str(folder), "--device", "cpu", "--no-tta",
                 "--no-progress"]) != 0  # exists, no --overwrite

    spec = tmp_path / "specs" / "tiny-ct.yaml"
    spec.parent.mkdir()
    rel = os.path.relpath(folder, spec.parent)
    spec.write_text(f"""name: tiny-ct
network: {{nnunet: true}}
weights: {{source: {rel}}}
input: {{modality: CT, channels: 1, orientation: null}}
inferer: {{mode: sliding, roi_size: [32, 32, 32], overlap: 0.5, blend: gaussian, tta_flips: []}}
labels:
  - {{id: 1, name: liver}}
  - {{id: 2, name: spleen}}
  - {{id: 3, name: kidney}}
""")
    p = load_predictor(spec, device="cpu")
    assert isinstance(p, NnUNetPredictor) and p.name == "tiny-ct" and p.mirror_axes is None
    assert p.spec is not None and p.spec.name == "tiny-ct"
    np.testing.assert_array_equal(p.predict(vol).array, expected)
