"""pyliverlesionseg's liver and liver-lesion steps on plain arrays (numpy/scipy; the network is a callable).

Reproduces ``cnn_liver_lesion_seg_CT_MR_main`` of pyliverlesionseg 0.3 (Apache-2.0):

liver (:func:`liver_probabilities` + :func:`liver_mask`): the volume in the original's LPS layout is cropped
to the abdomen (:mod:`medseg.liver.crop`), zoomed to half the model's voxel size (1.5 mm), median filtered
(size 3), zoomed to the model's voxel size (3 mm), normalised (CT ``clip(HU / 1000, -0.2, 0.2) * 2.5``;
MR: clip to [min, min + 0.8 range], then to [-0.5, 0.5]), flipped to RAS and run once as one input segment
centred on the volume (DeepVoxNet's centre sampling; the segment is padded with ``pad_value``, voxels
outside the output segment take the nearest predicted value). The probabilities are thresholded at 0.5,
eroded (18-neighbourhood), reduced to the largest 6-connected component, dilated back, zoomed linearly to
the crop (``> 0``) and pasted into the full volume.

lesions (:func:`lesion_mask`): the normalised image and the liver mask are zoomed to the lesion model's
voxel size (1 x 1 x 3 mm); the liver mask is dilated (the 18-neighbourhood iterated twice); outside it the
image is -0.5; the box of the dilated mask is tiled with the network's output segment (DeepVoxNet's
uniform coordinate sampling, zero padding), thresholded at 0.5 and zoomed back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.liver.zoom import zoom3d

__all__ = [
    "CropResult",
    "abdomen_crop",
    "normalize_ct",
    "normalize_mr_liver",
    "deepvoxnet_predict",
    "liver_probabilities",
    "liver_mask",
    "lesion_mask",
]

Net = Callable[[np.ndarray], np.ndarray]  # (X, Y, Z) float32 input segment -> (x, y, z) probabilities


@dataclass(frozen=True)
class CropResult:
    """The abdomen box (LPS array slices) and how it was found (``original``, ``original-xy``, ``whole``,
    ``body-box`` or ``none``)."""

    box: tuple[slice, slice, slice]
    method: str
    reason: str = ""


def _body_box(vol: np.ndarray, threshold: float, max_size_vox: Sequence[int]) -> tuple[slice, slice, slice]:
    """Bounding box in x/y of the largest connected region above ``threshold`` (the original's first step),
    the full z range; each side limited to ``max_size_vox`` around the box centre (z: the top is kept)."""
    binary = ndimage.binary_erosion(vol > threshold)
    lab, n = ndimage.label(binary)
    if n == 0:
        box = tuple(slice(0, s) for s in vol.shape)
    else:
        sizes = np.bincount(lab.ravel())[1:]
        box = ndimage.find_objects((lab == int(np.argmax(sizes)) + 1).astype(np.int8))[0]
        box = (box[0], box[1], slice(0, vol.shape[2]))
    out = []
    for axis, (sl, m) in enumerate(zip(box, max_size_vox)):
        size = sl.stop - sl.start
        if size > m:
            if axis == 2:
                sl = slice(sl.stop - m, sl.stop)
            else:
                start = sl.start + (size - m) // 2
                sl = slice(start, start + m)
        out.append(sl)
    return tuple(out)  # type: ignore[return-value]


def abdomen_crop(vol_lps: np.ndarray, voxsize: Sequence[float], modality: str, method: str = "auto") -> CropResult:
    """The original's abdomen crop (``crop_ct_image`` / ``crop_mr_image`` with the main function's arguments).

    Args:
        vol_lps: ``(X, Y, Z)`` in the original's LPS layout (axis 2 from feet to head).
        voxsize: voxel size in mm.
        modality: ``CT`` or ``MR``.
        method: ``auto`` (the original's box, its x/y sides kept at the volume edge where the field of view
            cuts through the body; its z range only for scans longer than the network's 408 mm reach; when
            the heuristics fail or give a degenerate box: the whole volume, centred in the network's segment
            as the original does with any volume), ``original`` (errors propagate), ``body-box`` (skip the
            heuristics), ``none`` (the whole volume).
    """
    from medseg.liver.crop import crop_ct_image, crop_mr_image

    if method not in ("auto", "original", "body-box", "none"):
        raise ValueError(f"method must be 'auto', 'original', 'body-box' or 'none', got {method!r}.")
    if method == "none":
        return CropResult(tuple(slice(0, n) for n in vol_lps.shape), "none", "requested")  # type: ignore[arg-type]
    vox = np.asarray(voxsize, dtype=np.float64)
    max_mm = [489, 408, 408]
    threshold = -150.0 if modality == "CT" else 0.01 * float(np.max(vol_lps))
    max_vox = [int(m / v) for m, v in zip(max_mm, vox)]

    def fallback(why: str) -> CropResult:
        # a partial field of view (no lungs / hips for the heuristics): the whole volume, as the quick
        # port measured (DICOM slab Dice 0.948); a tighter body box put HU 0 padding next to the body
        return CropResult(tuple(slice(0, n) for n in vol_lps.shape), "whole", why)  # type: ignore[arg-type]

    if method == "body-box":
        return CropResult(_body_box(vol_lps, threshold, max_vox), "body-box", "requested")
    try:
        with np.errstate(all="ignore"):
            if modality == "CT":
                box = crop_ct_image(vol_lps, vox, size_mm_max=max_mm, tissue_th=-150, lung_th=-600, bone_th=500,
                                    bone_hip_ratio=0.7, liver_height_max=400, liver_dome_margin_mm=70.0,
                                    hip_margin_mm=20.0)
            else:
                box = crop_mr_image(vol_lps, vox, size_mm_max=max_mm, tissue_ratio=0.01, liver_height_max=400,
                                    zstart_margin_mm=30.0)
        box = tuple(slice(int(s.start or 0), int(s.stop if s.stop is not None else n)) for s, n in zip(box, vol_lps.shape))
    except (IndexError, ValueError) as err:
        if method == "original":
            raise
        return fallback(f"original crop failed: {type(err).__name__}: {err}")
    # a box thinner than 10 cm on any axis cannot hold a liver: the heuristics misread a partial field of view
    sizes_mm = [(s.stop - s.start) * v for s, v in zip(box, vox)]
    if method == "auto" and min(sizes_mm) < min(100.0, min(n * v for n, v in zip(vol_lps.shape, vox)) * 0.999):
        return fallback(f"original crop too small ({', '.join(f'{s:.0f}' for s in sizes_mm)} mm)")
    reasons = []
    if method == "auto":
        box, cut = _extend_to_cut_edges(vol_lps, box, threshold)  # type: ignore[arg-type]
        if cut:
            reasons.append(f"x/y box kept to the edges where the field of view cuts the body ({', '.join(cut)})")
    if method == "auto" and vol_lps.shape[2] * vox[2] <= max_mm[2] and (box[2].start > 0 or box[2].stop < vol_lps.shape[2]):
        # the z crop exists to fit a long scan into the network's 408 mm output; a scan that fits already
        # only loses liver by it (example_ct: the field of view ends in the liver and the dome heuristic
        # cut 48 % of it away). Keep every slice, keep the original's x/y box.
        reasons.insert(0, f"z range kept: the scan ({vol_lps.shape[2] * vox[2]:.0f} mm) fits the network's {max_mm[2]} mm")
        return CropResult((box[0], box[1], slice(0, vol_lps.shape[2])), "original-xy", "; ".join(reasons))
    return CropResult(box, "original", "; ".join(reasons))  # type: ignore[arg-type]


#: the original's final x/y box is that of the body eroded by a 5x5x5 cube (2 voxels per side, and the
#: outermost voxel of the volume, which erosion treats as outside): at most this far from a volume edge,
#: the body region reached that edge
_EROSION_MARGIN = 3


def _extend_to_cut_edges(
    vol_lps: np.ndarray, box: tuple[slice, slice, slice], threshold: float
) -> tuple[tuple[slice, ...], list[str]]:
    """Extend x/y sides of ``box`` to the volume edge where the field of view cuts through the body.

    A side counts as cut when the box already ends within the erosion margin of the edge and most of the
    edge plane (over the box's slices) is tissue (``> threshold``). On a whole-body field of view the edge
    planes are air and nothing changes; on a partial one (a crop around the liver) the original's erosion
    would otherwise drop the outermost voxels, where the organ continues past the edge.
    """
    out, cut = list(box), []
    for axis in (0, 1):
        n = vol_lps.shape[axis]
        for side, edge in (("start", 0), ("stop", n - 1)):
            sl = out[axis]
            gap = sl.start if side == "start" else n - sl.stop
            if gap == 0 or gap > _EROSION_MARGIN:
                continue
            plane = np.take(vol_lps[:, :, box[2]], edge, axis=axis)
            if float(np.mean(plane > threshold)) > 0.5:
                out[axis] = slice(0, sl.stop) if side == "start" else slice(sl.start, n)
                cut.append(f"{'xy'[axis]}{'-' if side == 'start' else '+'}")
    return tuple(out), cut


def normalize_ct(vol: np.ndarray) -> np.ndarray:
    """``clip(HU / 1000, -0.2, 0.2) * 2.5`` (liver and lesion models)."""
    return (np.clip(vol / 1000.0, -0.2, 0.2) * 2.5).astype(np.float32)


def normalize_mr_liver(vol: np.ndarray) -> np.ndarray:
    """The liver model's MR normalisation: clip to ``[min, min + 0.8 (max - min)]``, map to ``[-0.5, 0.5]``."""
    lo, hi = float(np.min(vol)), float(np.max(vol))
    upper = lo + 0.8 * (hi - lo)
    if upper <= lo:
        return np.zeros(vol.shape, np.float32)
    return ((np.clip(vol, lo, upper) - lo) / (upper - lo) - 0.5).astype(np.float32)


def _extract(image: np.ndarray, center: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """DeepVoxNet's ``ExtractSegment3D2`` (subsample factor 1): a ``size`` segment around ``center``."""
    seg = np.full(tuple(size), pad_value, dtype=np.float32)
    src, dst = [], []
    for d_i, d_s, c in zip(image.shape, size, center):
        n_left_s = d_s // 2
        n_right_s = d_s // 2 - (1 if d_s % 2 == 0 else 0)
        n_left_i, n_right_i = c, d_i - c - 1
        if n_left_i < n_left_s:
            start_s, start_i = d_s // 2 - n_left_i, 0
        else:
            start_s, start_i = 0, c - n_left_s
        if n_right_i < n_right_s:
            end_s, end_i = d_s // 2 + n_right_i, c + n_right_i
        else:
            end_s, end_i = d_s - 1, c + n_right_s
        src.append(slice(start_i, end_i + 1))
        dst.append(slice(start_s, end_s + 1))
    seg[tuple(dst)] = image[tuple(src)]
    return seg


def deepvoxnet_predict(
    image: np.ndarray,
    net: Net,
    input_size: Sequence[int],
    output_size: Sequence[int],
    center_sampling: bool,
    pad_value: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """DeepVoxNet's ``predict`` for one output at the input resolution: segments at centre (one, centred on
    the volume) or uniform (tiles of the output size, the last one flush with the end) coordinates; each
    output segment is pasted (later ones win); voxels no segment reached take the nearest predicted value.

    Args:
        image: ``(X, Y, Z)`` float32 network-ready volume.
        net: maps an ``input_size`` segment to an ``output_size`` probability map.
        pad_value: value of the segment outside the image (DeepVoxNet's default 0).

    Returns:
        ``(X, Y, Z)`` float32 probabilities.
    """
    shape = image.shape
    seg = list(shape) if center_sampling else [min(o, s) for o, s in zip(output_size, shape)]
    starts = []
    for n, s in zip(shape, seg):
        st = list(range(0, n, s))
        if n % s:
            st.append(n - s)
        starts.append(st)
    out = np.full(shape, np.nan, dtype=np.float32)
    total = math.prod(len(s) for s in starts)
    done = 0
    for x in starts[0]:
        for y in starts[1]:
            for z in starts[2]:
                centre = [math.ceil(p + (s - 1) / 2) for p, s in zip((x, y, z), seg)]
                y_pred = net(_extract(image, centre, input_size, pad_value))
                dst, src = [], []
                for c, d_in, d_out, n in zip(centre, input_size, output_size, shape):
                    real_c = c if d_in % 2 else c - 0.5
                    start = real_c - (d_out - 1) / 2
                    end = real_c + (d_out - 1) / 2
                    under = max(0.0, -start)
                    over = max(0.0, end - (n - 1))
                    dst.append(slice(round(start + math.ceil(under) - 1e-7), round(end - math.ceil(over) + 1 - 1e-7)))
                    src.append(slice(math.ceil(under), -math.ceil(over) or None))
                out[tuple(dst)] = y_pred[tuple(src)]
                done += 1
                if progress is not None:
                    progress(done, total)
    missing = np.isnan(out)
    if missing.all():
        raise ValueError("no output segment overlapped the volume.")
    if missing.any():
        idx = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
        out = out[tuple(idx)]
    return out


def liver_probabilities(
    vol_lps: np.ndarray,
    voxsize: Sequence[float],
    modality: str,
    crop: CropResult,
    net: Net,
    input_size: Sequence[int],
    output_size: Sequence[int],
    target_voxsize: Sequence[float] = (3.0, 3.0, 3.0),
    pad_value: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    slab_extend_mm: float = 0.0,
) -> np.ndarray:
    """The liver model's probabilities on its 3 mm grid (RAS layout) for the cropped volume.

    ``slab_extend_mm``: a volume thinner than this along z (a slab, which cannot hold a whole liver: the
    organ runs through both ends) is extended on each side by its own thickness, repeating its end slices,
    before it is placed in the network's segment; the extension is cut away from the probabilities. Without
    it the network sees the organ stop abruptly at the slab's ends (0 = off, the original's behaviour).
    """
    vox = np.asarray(voxsize, dtype=np.float64)
    t2 = np.asarray(target_voxsize, dtype=np.float64)
    t1 = t2 / 2.0
    cropped = np.asarray(vol_lps[crop.box], dtype=np.float32)
    x = zoom3d(cropped, vox / t1)
    x = ndimage.median_filter(x, size=3)
    x = zoom3d(x, t1 / t2)
    x = normalize_ct(x) if modality == "CT" else normalize_mr_liver(x)
    x = np.ascontiguousarray(np.flip(x, (0, 1)))
    k = 0
    if 0 < x.shape[2] * t2[2] < slab_extend_mm:
        k = min(x.shape[2], max(0, (int(output_size[2]) - x.shape[2]) // 2))
        x = np.pad(x, ((0, 0), (0, 0), (k, k)), mode="edge")
    prob = deepvoxnet_predict(x, net, input_size, output_size, center_sampling=True, pad_value=pad_value, progress=progress)
    return np.ascontiguousarray(prob[:, :, k: prob.shape[2] - k]) if k else prob


def _largest_component_opened(binary: np.ndarray) -> np.ndarray:
    """The original's clean-up: erode (18-neighbourhood), largest 6-connected component, dilate back."""
    ss = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 1)
    eroded = ndimage.binary_erosion(binary, structure=ss)
    lab, n = ndimage.label(eroded, structure=ndimage.generate_binary_structure(3, 1))
    if n == 0:
        return np.zeros(binary.shape, bool)
    sizes = np.bincount(lab.ravel())[1:]
    return ndimage.binary_dilation(lab == int(np.argmax(sizes)) + 1, structure=ss)


def liver_mask(prob_ras: np.ndarray, vol_shape: Sequence[int], crop: CropResult, threshold: float = 0.5) -> np.ndarray:
    """``cnn_liver_pred_postprocess``: probabilities (3 mm, RAS) → boolean liver mask on the full LPS volume."""
    pred = np.flip(prob_ras, (0, 1)) > threshold
    clean = _largest_component_opened(pred).astype(np.int16)
    crop_shape = [s.stop - s.start for s in crop.box]
    zoom = np.array(crop_shape) / np.array(clean.shape)
    resized = ndimage.zoom(clean, zoom, order=1, prefilter=False) > 0
    out = np.zeros(tuple(vol_shape), bool)
    out[crop.box] = resized
    return out


def lesion_mask(
    vol_ras: np.ndarray,
    liver_ras: np.ndarray,
    voxsize: Sequence[float],
    modality: str,
    net: Net,
    input_size: Sequence[int],
    output_size: Sequence[int],
    target_voxsize: Sequence[float] = (1.0, 1.0, 3.0),
    threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The lesion stage on the full RAS volume. Returns ``(lesions, dilated liver region)`` as boolean masks
    on the volume's grid (the region is where the lesion model looked)."""
    vox = np.asarray(voxsize, dtype=np.float64)
    t = np.asarray(target_voxsize, dtype=np.float64)
    if not liver_ras.any():
        z = np.zeros(vol_ras.shape, bool)
        return z, z
    if modality == "CT":
        norm = normalize_ct(vol_ras)
    else:
        vals = vol_ras[liver_ras > 0]
        lo, hi, med = float(vals.min()), float(vals.max()), float(np.median(vals))
        denom = max(abs(lo - med), abs(hi - med), 1e-6)
        norm = ((vol_ras - med) * (0.5 / denom)).astype(np.float32)
    img = zoom3d(norm, vox / t)
    liv = zoom3d(liver_ras.astype(np.float32), vox / t) > 0.5
    ss = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 2)
    dil = ndimage.binary_dilation(liv, structure=ss)
    masked = np.where(dil, img, np.float32(-0.5))
    masked = np.clip(masked, -0.5, 0.5).astype(np.float32)
    where = np.nonzero(dil)
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
    prob = deepvoxnet_predict(masked[box], net, input_size, output_size, center_sampling=False, progress=progress)
    pad = np.zeros(masked.shape, np.float32)
    pad[box] = prob > threshold
    zoom = np.array(vol_ras.shape) / np.array(pad.shape)
    lesions = ndimage.zoom(pad, zoom, order=1, prefilter=False) > 0
    region = ndimage.zoom(dil.astype(np.float32), zoom, order=1, prefilter=False) > 0
    return lesions, region
