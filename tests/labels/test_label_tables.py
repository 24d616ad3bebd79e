"""Label tables (medseg JSON, Slicer .ctbl, ITK-SNAP .txt, TotalSegmentator header/class map) and the
one label-map detection rule, on real files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medseg.label_tables import class_map, find_label_table, nifti_header_labels, read_label_table
from medseg.labels_detect import label_map_reason, label_name_hint, label_values
from medseg.types import Label

TS = "TotalSegmentator/tests/reference_files"


def test_the_three_sidecar_formats_round_trip(tmp_path):
    """medseg writes all three; each reads back to the same labels."""
    from medseg.io.sidecar import render_sidecars
    from medseg.types import Geometry, Volume

    labels = (Label(1, "liver", (10, 20, 30)), Label(7, "left kidney", (200, 0, 100)))
    vol = Volume(np.zeros((2, 2, 2), np.uint8), Geometry(np.eye(4), (2, 2, 2)), is_label=True, labels=labels)
    texts = render_sidecars(vol, "seg.nii.gz", {"liver": 0.0, "left kidney": 0.0})
    for ext, text in texts.items():
        (tmp_path / f"seg.{ext}").write_text(text)
    assert read_label_table(tmp_path / "seg.json") == labels
    assert read_label_table(tmp_path / "seg.txt") == labels
    # Slicer names cannot hold spaces: medseg writes underscores
    assert read_label_table(tmp_path / "seg.ctbl") == (labels[0], Label(7, "left_kidney", (200, 0, 100)))
    assert read_label_table(tmp_path / "missing.ctbl") == ()
    with pytest.raises(ValueError, match="ctbl"):
        read_label_table(tmp_path / "seg.csv")


def test_hostile_tables_are_ignored(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.ctbl").write_text("# only comments\nx y z\n-3 neg 1 2 3 255\n")
    (tmp_path / "c.txt").write_text('  1 999 0 0 1 1 1 "bad colour"\n 2 "unterminated\n')
    assert read_label_table(tmp_path / "a.json") == ()
    assert read_label_table(tmp_path / "b.ctbl") == ()
    got = read_label_table(tmp_path / "c.txt")
    assert [(lab.id, lab.name) for lab in got] == [(1, "bad colour")] and got[0].color != (999, 0, 0)


def test_totalsegmentator_header_table_matches_the_bundled_class_map(shared_data):
    for name, task in (("example_seg.nii.gz", "total"), ("example_seg_mr.nii.gz", "total_mr")):
        header = nifti_header_labels(shared_data / TS / name)
        assert [(lab.id, lab.name) for lab in header] == [(lab.id, lab.name) for lab in class_map(task)]
    assert header[0] == Label(1, "spleen", (0, 255, 0))
    assert nifti_header_labels(shared_data / TS / "example_ct.nii.gz") == ()
    with pytest.raises(ValueError, match="total_mr"):
        class_map("nope")


def test_find_label_table_order_and_class_map_by_name(shared_data, tmp_path):
    seg = tmp_path / "case_seg.nii.gz"
    shutil.copy(shared_data / TS / "example_seg.nii.gz", seg)
    labels, source = find_label_table(seg)
    assert source.startswith("NIfTI header") and len(labels) == 117
    (tmp_path / "case_seg.ctbl").write_text("0 bg 0 0 0 0\n5 my_liver 1 2 3 255\n")
    labels, source = find_label_table(seg, ids={0, 5, 300})
    assert source == "case_seg.ctbl"
    assert [(lab.id, lab.name) for lab in labels] == [(5, "my_liver"), (300, "label 300")]
    # a headerless TotalSegmentator output is known by its name
    plain = tmp_path / "ct_totalseg.nii.gz"
    shutil.copy(shared_data / TS / "example_ct_sm.nii.gz", plain)
    labels, source = find_label_table(plain, ids={1, 5})
    assert "TotalSegmentator class map 'total'" == source and labels[4].name == "liver"
    assert find_label_table(plain, ids={500}) is None
    assert find_label_table(tmp_path / "nothing.nii.gz") is None


@pytest.mark.parametrize(
    "rel, expect",
    [
        (f"{TS}/example_seg.nii.gz", "label table"),
        (f"{TS}/example_seg_fast/liver.nii.gz", "2 distinct"),
        ("pyradiomics/data/brain1_label.nrrd", "label-map name"),
        ("pyradiomics/data/prostate_phantom_subvolume-label.nrrd", "label-map name"),
        ("dcmqi/data/segmentations/liver_seg.nrrd", "label-map name"),
        (f"{TS}/example_ct.nii.gz", None),
        (f"{TS}/example_mr_sm.nii.gz", None),
        ("pyradiomics/data/brain1_image.nrrd", None),
        ("MONAI/tests/testing_data/anatomical.nii", None),
    ],
)
def test_label_map_rule_on_real_files(shared_data, rel, expect):
    reason = label_map_reason(shared_data / rel)
    if expect is None:
        assert reason is None
    else:
        assert reason is not None and expect in reason, reason


def test_label_values_and_names():
    assert label_values(np.array([[[0, 3, 3]]], np.int16)).tolist() == [0, 3]
    assert label_values(np.array([[[0.0, 2.0]]])).tolist() == [0, 2]  # whole-number floats
    assert label_values(np.array([[[0.5, 2.0]]])) is None
    assert label_values(np.array([[[-1, 2]]])) is None
    assert label_values(np.arange(5000).reshape(10, 10, 50)) is None
    assert label_name_hint("x_seg.nii.gz") and label_name_hint("MASK.nrrd") and label_name_hint("seg.nii")
    assert not label_name_hint("t1_mprage.nii.gz")
    many = np.arange(20, dtype=np.uint8).reshape(1, 4, 5)
    assert label_map_reason(None, many) is None  # 20 values, no name: not enough to call it labels
    assert "label-map name" in label_map_reason("lesion_mask.nii.gz", many)
    with pytest.raises(ValueError, match="path or an array"):
        label_map_reason(None)
