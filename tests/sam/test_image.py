"""Slice extraction, windows and the exact voxel <-> model-frame coordinate maps."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.geometry import in_plane_axes, take_slice
from medseg.sam.image import (
    Window,
    WindowPreset,
    frame_for,
    from_model_frame,
    resolve_axis,
    slice_image,
    to_model_frame,
    window_for,
)
from medseg.types import Geometry, SourceInfo, Volume

# non-square in every plane, anisotropic, oblique (rotated about k), not at the origin
_ROT = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1.0]])
_AFF = np.eye(4)
_AFF[:3, :3] = _ROT @ np.diag([0.7, 1.3, 3.0])
_AFF[:3, 3] = (12.0, -40.0, 7.5)
GEOM = Geometry(_AFF, (37, 23, 11))


@pytest.mark.parametrize("axis", [0, 1, 2, "i", "j", "k"])
def test_round_trip_voxel_model_voxel(axis):
    ax = resolve_axis(axis)
    f = frame_for(GEOM, ax, 256)
    rng = np.random.default_rng(ax)
    r_ax, c_ax = in_plane_axes(ax)
    ijk = rng.uniform(-0.5, 1.0, (50, 3)) * np.array(GEOM.shape) - 0.5
    ijk[:, ax] = 4
    xy, idx = f.voxel_to_model(ijk)
    assert np.all(idx == 4)
    back = f.model_to_voxel(xy, 4)
    np.testing.assert_allclose(back, ijk, atol=1e-9)
    # and model -> slice -> model
    xy2 = rng.uniform(0, 255, (50, 2))
    np.testing.assert_allclose(f.slice_to_model(f.model_to_slice(xy2)), xy2, atol=1e-9)
    # the longer physical side fills the frame; mm per model pixel equal along rows and cols
    sp = GEOM.spacing
    ext = (GEOM.shape[r_ax] * sp[r_ax], GEOM.shape[c_ax] * sp[c_ax])
    assert max(f.content_shape) == 256
    assert f.content_shape[int(np.argmax(ext))] == 256
    mm = f.model_pixel_mm
    assert abs(mm[0] - mm[1]) / max(mm) < 0.01, (f, mm)  # not squashed (only rounding of the content size)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_resampled_pixels_land_where_the_coordinate_map_says(axis):
    """A single bright voxel, resampled into the model frame, peaks at voxel_to_model of that voxel."""
    arr = np.zeros(GEOM.shape, np.float32)
    vox = np.array([20, 9, 6])
    arr[tuple(vox)] = 1000.0
    vol = Volume(arr, GEOM)
    f = frame_for(GEOM, axis, 256)
    img = slice_image(vol, axis, int(vox[axis]), Window(0.0, 1000.0), f)
    assert img.shape == f.content_shape and img.dtype == np.float32
    (x, y), _ = f.voxel_to_model(vox[None])[0][0], None
    # centroid of the upsampled blob (bilinear, symmetric about the pixel centre)
    w = img / img.sum()
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    assert abs((w * xx).sum() - x) < 0.05 and abs((w * yy).sum() - y) < 0.05


def test_mask_to_model_frame_and_back():
    f = frame_for(GEOM, 2, 256)
    m = np.zeros(f.slice_shape, bool)
    m[5:20, 4:15] = True
    full = to_model_frame(m, f)
    assert full.shape == (256, 256) and full[f.content_shape[0] :, :].max() == 0  # padding stays empty
    back = from_model_frame(full[None] * 2 - 1, f)[0] > 0  # as logits
    assert (back == m).mean() > 0.98
    low = from_model_frame(np.zeros((3, 64, 64)), f)  # SAM's low-res logits upsample to the slice
    assert low.shape == (3, *f.slice_shape)


def test_windows():
    arr = np.linspace(-1200, 1800, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    ct = Volume(arr, Geometry(np.eye(4), arr.shape), SourceInfo(modality="CT"))
    assert window_for(ct).name == "ct_soft_tissue"
    assert window_for(ct, "ct_soft_tissue").key == (-160.0, 240.0)
    assert window_for(ct, WindowPreset.CT_LUNG).key == (-1350.0, 150.0)
    assert window_for(ct, "ct_bone").key == (-500.0, 1300.0)
    assert window_for(ct, "ct_brain").key == (0.0, 80.0)
    mr = Volume(np.arange(1000, dtype=np.float32).reshape(10, 10, 10), Geometry(np.eye(4), (10, 10, 10)))
    w = window_for(mr)
    assert w.name == "mr" and 1 <= w.low < 10 and 990 < w.high <= 999
    assert window_for(mr, (5.0, 6.0)).key == (5.0, 6.0)
    with pytest.raises(ValueError, match="unknown window preset 'ct_liver'"):
        window_for(ct, "ct_liver")
    with pytest.raises(ValueError, match="low < high"):
        Window(3.0, 3.0)
    with pytest.raises(ValueError, match="axis must be"):
        resolve_axis("x")


def test_slice_image_values_follow_the_window():
    arr = np.zeros((8, 6, 4), np.float32)
    arr[:, :, 1] = 50.0
    vol = Volume(arr, Geometry(np.eye(4), arr.shape))
    f = frame_for(vol.geometry, 2, 64)
    assert f.content_shape == (64, 48)
    img = slice_image(vol, 2, 1, Window(0.0, 100.0), f)
    np.testing.assert_allclose(img, 0.5, atol=1e-6)
    np.testing.assert_array_equal(take_slice(arr, 2, 1), arr[:, :, 1])
    with pytest.raises(IndexError):
        take_slice(arr, 2, 4)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("res", [64, 256])
def test_model_frame_values_sample_at_the_mapped_coordinates(axis, res):
    """A model-frame ramp holding each pixel's own model (x, y) reads back, on the slice grid, exactly
    slice_to_model of each slice pixel (any frame resolution, e.g. SAM's low-res logits)."""
    f = frame_for(GEOM, axis, 256)
    centres = (np.arange(res) + 0.5) * 256 / res - 0.5  # model coordinate of each frame pixel centre
    ramp = np.stack(np.meshgrid(centres, centres, indexing="xy"))  # (2, res, res): x, y
    got = from_model_frame(ramp, f)  # (2, rows, cols)
    rr, cc = np.mgrid[: f.slice_shape[0], : f.slice_shape[1]]
    want = f.slice_to_model(np.stack([rr.ravel(), cc.ravel()], 1))
    inside = (want >= centres[0]).all(1) & (want <= centres[-1]).all(1)  # border pixels are clamped
    np.testing.assert_allclose(got[0].ravel()[inside], want[inside, 0], atol=1e-3)
    np.testing.assert_allclose(got[1].ravel()[inside], want[inside, 1], atol=1e-3)
    assert inside.mean() > 0.9
