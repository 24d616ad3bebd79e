"""Label clean-up and volumes (pure numpy/scipy, fast)."""

from __future__ import annotations

import numpy as np

from medseg.config import PostprocessSpec
from medseg.labels import label_volumes_ml
from medseg.postprocess import clean_labels
from medseg.types import Geometry, Label, Volume


def _labels():
    a = np.zeros((30, 30, 30), np.uint8)
    a[2:12, 2:12, 2:12] = 1  # 1000 voxels, with a hole
    a[6, 6, 6] = 0
    a[20:22, 20:22, 20:22] = 1  # 8 voxels, a second component of label 1
    a[15:25, 2:8, 2:8] = 2  # 360 voxels
    a[28, 28, 28] = 2  # 1 voxel
    return a


def test_largest_component_and_fill_holes():
    out = clean_labels(_labels(), PostprocessSpec(largest_component=True, fill_holes=True), (1.0, 1.0, 1.0))
    assert (out == 1).sum() == 1000 and out[6, 6, 6] == 1 and out[21, 21, 21] == 0
    assert (out == 2).sum() == 360 and out[28, 28, 28] == 0


def test_min_size_in_mm3_uses_spacing():
    a = _labels()
    out = clean_labels(a, PostprocessSpec(min_size_mm3=10.0), (1.0, 1.0, 1.0))
    assert out[21, 21, 21] == 0 and out[28, 28, 28] == 0 and out[6, 6, 6] == 0 and (out == 2).sum() == 360
    out = clean_labels(a, PostprocessSpec(min_size_mm3=10.0), (2.0, 2.0, 2.0))  # 8 voxels = 64 mm3: kept
    assert out[21, 21, 21] == 1 and out[28, 28, 28] == 0  # 1 voxel = 8 mm3 < 10: removed
    assert np.array_equal(clean_labels(a, PostprocessSpec(), (1, 1, 1)), a)


def test_label_volumes_ml():
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    v = Volume(_labels(), Geometry(aff, (30, 30, 30)), is_label=True,
               labels=(Label(1, "one"), Label(2, "two"), Label(3, "absent")))
    ml = label_volumes_ml(v)
    assert ml == {"one": (999 + 8) * 0.5 / 1000, "two": 361 * 0.5 / 1000, "absent": 0.0}
