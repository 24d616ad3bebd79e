"""Volume <-> napari layer conversion: placement in world space, round trips, labels metadata."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.types import Geometry, Label, SourceInfo, Volume

pytest.importorskip("napari")

from medseg_napari import _layers  # noqa: E402


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    r = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


GEOMETRIES = {
    "ras": np.array([[0.8, 0, 0, -100], [0, 0.9, 0, -120], [0, 0, 2.5, 30], [0, 0, 0, 1]]),
    # DICOM-like LPS axial stack: i -> L, j -> P, k -> S
    "lps": np.array([[-0.7, 0, 0, 90], [0, -0.7, 0, 110], [0, 0, 3.0, -50], [0, 0, 0, 1]]),
    # sagittal acquisition (i -> A, j -> S, k -> L), 13 degrees oblique
    "sagittal_oblique": None,
}
_sag = np.zeros((3, 3))
_sag[:, 0], _sag[:, 1], _sag[:, 2] = [0, 1.1, 0], [0, 0, 1.2], [-4.0, 0, 0]
_aff = np.eye(4)
_aff[:3, :3] = _rotation(2, 13) @ _sag
_aff[:3, 3] = [12.0, -7.5, 3.25]
GEOMETRIES["sagittal_oblique"] = _aff


def _volume(name: str, shape=(7, 6, 5), is_label=False) -> Volume:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 3, shape).astype(np.uint8) if is_label else rng.normal(size=shape).astype(np.float32)
    labels = (Label(1, "liver", (200, 80, 40)), Label(2, "spleen", (20, 120, 240))) if is_label else ()
    return Volume(arr, Geometry(GEOMETRIES[name], shape[:3]), SourceInfo(path=f"/x/{name}.nii.gz"), is_label, labels)


def _layer_world(kwargs: dict, data_index: np.ndarray) -> np.ndarray:
    """napari's data -> world mapping: affine @ scale (translate/rotate are defaults)."""
    m = np.asarray(kwargs["affine"]) @ np.diag([*kwargs["scale"], 1.0])
    return data_index @ m[:-1, :-1].T + m[:-1, -1]


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_world_placement_matches_geometry(name):
    vol = _volume(name)
    data, kwargs, kind = _layers.volume_to_layer_data(vol)
    assert kind == "image"
    perm = _layers.data_axes(vol.geometry)
    assert data.shape == tuple(vol.shape[p] for p in perm)
    ijk = np.array([[0, 0, 0], [6, 5, 4], [3, 1, 2]], dtype=float)
    expected = (_layers.RAS_TO_WORLD @ (ijk @ vol.affine[:3, :3].T + vol.affine[:3, 3]).T).T
    got = _layer_world(kwargs, _layers.ijk_to_data(ijk, vol.geometry))
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(sorted(kwargs["scale"]), sorted(vol.spacing), atol=1e-9)
    # the same voxel holds the same value through the view
    i, j, k = 3, 1, 2
    assert data[tuple(_layers.ijk_to_data(np.array([i, j, k]), vol.geometry))] == vol.array[i, j, k]


def test_canonical_volume_is_k_j_i_with_positive_scale():
    vol = _volume("ras")
    data, kwargs, _ = _layers.volume_to_layer_data(vol)
    assert _layers.data_axes(vol.geometry) == (2, 1, 0)
    np.testing.assert_allclose(kwargs["scale"], [2.5, 0.9, 0.8])
    np.testing.assert_allclose(np.asarray(kwargs["affine"])[:3, :3], -np.eye(3))
    assert np.shares_memory(data, vol.array)  # a view, not a copy


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_round_trip_volume_layer_volume(name):
    vol = _volume(name, is_label=True)
    data, kwargs, kind = _layers.volume_to_layer_data(vol)
    assert kind == "labels"
    back = _layers.layer_to_volume(data, scale=kwargs["scale"], affine=kwargs["affine"],
                                   metadata=kwargs["metadata"], is_label=True)
    assert back.geometry == vol.geometry
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.labels == vol.labels
    # without medseg metadata (a hand-made layer), the geometry is rebuilt from scale + affine
    bare = _layers.layer_to_volume(np.ascontiguousarray(data), scale=kwargs["scale"], affine=kwargs["affine"],
                                   is_label=True)
    ijk = np.array([[1, 2, 3], [0, 4, 1]], dtype=float)
    data_idx = _layers.ijk_to_data(ijk, vol.geometry)
    np.testing.assert_allclose(bare.affine[:3, :3] @ data_idx.T + bare.affine[:3, 3:4],
                               vol.affine[:3, :3] @ ijk.T + vol.affine[:3, 3:4], atol=1e-9)


def test_4d_volume_gets_leading_time_axis():
    arr = np.arange(7 * 6 * 5 * 3, dtype=np.float32).reshape(7, 6, 5, 3)
    vol = Volume(arr, Geometry(GEOMETRIES["lps"], (7, 6, 5)))
    data, kwargs, _ = _layers.volume_to_layer_data(vol)
    assert data.shape[0] == 3 and len(kwargs["scale"]) == 4 and np.asarray(kwargs["affine"]).shape == (5, 5)
    back = _layers.layer_to_volume(data, scale=kwargs["scale"], affine=kwargs["affine"], metadata=kwargs["metadata"])
    np.testing.assert_array_equal(back.array, arr)


def test_ct_window_from_modality():
    vol = _volume("ras")
    ct = vol.replace(source=SourceInfo(modality="CT"))
    assert _layers.volume_to_layer_data(ct)[1]["contrast_limits"] == _layers.CT_WINDOW


def test_labels_features_and_colours(make_napari_viewer):
    vol = _volume("lps", is_label=True)
    viewer = make_napari_viewer()
    data, kwargs, _ = _layers.volume_to_layer_data(vol, name="seg")
    layer = viewer.add_labels(data, **kwargs)
    np.testing.assert_allclose(layer.colormap.map(1)[:3], np.array([200, 80, 40]) / 255, atol=1e-6)
    np.testing.assert_allclose(layer.colormap.map(2)[:3], np.array([20, 120, 240]) / 255, atol=1e-6)
    assert layer.colormap.map(0)[3] == 0
    assert list(layer.features["name"]) == ["background", "liver", "spleen"]
    img_data, img_kwargs, _ = _layers.volume_to_layer_data(_volume("lps"))
    image = viewer.add_image(img_data, **img_kwargs)
    # image and labels of one geometry map every data index to the same world point
    idx = np.array([4.0, 2.0, 1.0])
    np.testing.assert_allclose(layer.data_to_world(idx), image.data_to_world(idx))
    back = _layers.layer_volume(layer)
    assert back.geometry == vol.geometry and back.labels == vol.labels


@pytest.mark.parametrize("case", ["brain1_mr", "example_ct"])
def test_display_contrast_is_sams_model_window(shared_data, case):
    """One default window: the contrast napari opens a real scan with is the window SAM's input is made from
    (LiteMedSAM's uint8 rule and the SAM/SAM 2 ``auto`` window)."""
    from medseg.io import read
    from medseg.modality import default_window
    from medseg.sam.image import window_for
    from medseg.sam.protocol import intensity_uint8

    path = {"brain1_mr": shared_data / "pyradiomics" / "data" / "brain1_image.nrrd",
            "example_ct": shared_data / "TotalSegmentator" / "tests" / "reference_files" / "example_ct.nii.gz"}[case]
    if not path.exists():
        pytest.skip(f"{path} not available")
    vol = read(path)
    shown = _layers.volume_to_layer_data(vol)[1]["contrast_limits"]
    _, rule = intensity_uint8(vol)
    assert shown == (rule.low, rule.high)
    assert shown == (window_for(vol).low, window_for(vol).high)
    w = default_window(vol)
    assert (w.kind, w.decision.is_ct) == (("window", True) if case == "example_ct" else ("percentile", False))
    if case == "example_ct":
        assert shown == _layers.CT_WINDOW
    else:  # MR: the non-zero voxels' 0.5..99.5 percentiles
        a = np.asarray(vol.array)
        assert shown == tuple(float(v) for v in np.percentile(a[a != 0], [0.5, 99.5]))
