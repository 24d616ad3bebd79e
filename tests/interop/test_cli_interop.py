"""``medseg segment --format/--roi/--split/--stats``, ``medseg stats`` and ``medseg convert SEG`` end to end
with a tiny real model (seeded MONAI UNet) on dcmqi's real GE CT series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import medseg.io
from medseg.cli import main
from medseg.io.dicom_seg import read_seg
from medseg.stats import label_statistics
from tests.interop._util import DCMQI, TS_DICOM, reference_labels, tiny_model


@pytest.fixture(scope="module")
def ct_dir(shared_data: Path) -> Path:
    p = shared_data / DCMQI / "ct-3slice"
    if not p.exists():
        pytest.skip("dcmqi data not in ../shared/data")
    return p


@pytest.fixture(scope="module")
def segmented(ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_model(tmp_path_factory.mktemp("model"))
    out = tmp_path_factory.mktemp("out") / "case.nii.gz"
    code = main(["segment", str(ct_dir), "-o", str(out), "--model", str(model), "--device", "cpu",
                 "--format", "dicom-seg,rtstruct", "--roi", "liver", "--split", "--stats"])
    assert code == 0
    return out


def test_segment_writes_every_format_and_they_agree(segmented: Path, ct_dir: Path) -> None:
    out = segmented
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["case", "case.ctbl", "case.json", "case.nii.gz", "case.rtstruct.dcm", "case.seg.dcm",
                     "case.stats.json", "case.txt"]
    nifti = medseg.io.read(out)
    assert set(np.unique(nifti.array)) <= {0, 1}  # --roi liver: spleen (2) dropped
    seg = read_seg(out.with_name("case.seg.dcm"), reference=ct_dir)
    np.testing.assert_array_equal(seg.array, nifti.array)
    assert [lab.name for lab in seg.labels] == ["liver"]
    assert [p.name for p in (out.parent / "case").iterdir()] == ["liver.nii.gz"]
    split = medseg.io.read(out.parent / "case" / "liver.nii.gz")
    np.testing.assert_array_equal(np.asarray(split.array) > 0, np.asarray(nifti.array) == 1)
    stats = json.loads(out.with_name("case.stats.json").read_text())["labels"]
    assert stats[0]["name"] == "liver" and stats[0]["voxels"] == int((np.asarray(nifti.array) == 1).sum())
    side = json.loads(out.with_name("case.json").read_text())
    assert side["roi"] == ["liver"]


def test_convert_seg_next_to_its_series_and_with_reference(segmented: Path, ct_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(ct_dir, folder)
    shutil.copy(segmented.with_name("case.seg.dcm"), folder / "seg.dcm")
    assert main(["convert", str(folder / "seg.dcm"), "-o", str(tmp_path / "a.nii.gz")]) == 0
    assert main(["convert", str(segmented.with_name("case.seg.dcm")), "-o", str(tmp_path / "b.nii.gz"),
                 "--reference", str(ct_dir)]) == 0
    ref = np.asarray(medseg.io.read(segmented).array)
    for name in ("a.nii.gz", "b.nii.gz"):
        np.testing.assert_array_equal(medseg.io.read(tmp_path / name).array, ref)
    assert json.loads((tmp_path / "a.json").read_text())["labels"][1]["name"] == "liver"
    # the folder now holds a SEG next to the images: info reports it, never skips it
    infos = medseg.io.scan(folder)
    assert any(i.extra.get("kind", "").startswith("a DICOM SEG") for i in infos)


def test_errors_before_inference(ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    nifti = shared_data / "TotalSegmentator/tests/reference_files/example_ct_sm.nii.gz"
    code = main(["segment", str(nifti), "-o", str(tmp_path / "x.nii.gz"), "--format", "dicom-seg"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a DICOM series" in err and str(nifti) in err
    code = main(["segment", str(ct_dir), "-o", str(tmp_path / "x.nii.gz"), "--format", "dicom-sr"])
    assert code == 2 and "unknown output format 'dicom-sr'" in capsys.readouterr().err
    model = tiny_model(tmp_path)
    code = main(["segment", str(ct_dir), "-o", str(tmp_path / "x.nii.gz"), "--device", "cpu", "--roi", "livr",
                 "--model", str(model)])
    err = capsys.readouterr().err
    assert code == 2 and "'livr'" in err and "liver, spleen" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml", "weights.pt"]


def test_stats_match_direct_numpy_on_real_ct(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (shared_data / TS_DICOM).exists():
        pytest.skip("TotalSegmentator data not in ../shared/data")
    ct, labels = reference_labels(shared_data)
    rows = {r["name"]: r for r in label_statistics(labels, ct)}
    liver = np.asarray(labels.array) == [lab.id for lab in labels.labels if lab.name == "liver"][0]
    hu = np.asarray(ct.array)[liver].astype(np.float64)
    r = rows["liver"]
    assert r["voxels"] == int(liver.sum())
    assert r["volume_ml"] == pytest.approx(liver.sum() * ct.geometry.voxel_volume_ml, rel=1e-6)
    assert r["mean"] == pytest.approx(hu.mean()) and r["median"] == pytest.approx(np.median(hu))
    assert r["p95"] == pytest.approx(np.percentile(hu, 95))
    assert 20 < r["mean"] < 200  # liver parenchyma in HU
    idx = np.argwhere(liver)
    assert r["bbox_min_ijk"] == idx.min(axis=0).tolist() and r["bbox_max_ijk"] == idx.max(axis=0).tolist()
    ras = ct.affine[:3, :3] @ idx.mean(axis=0) + ct.affine[:3, 3]
    np.testing.assert_allclose(r["centroid_ras_mm"], ras, atol=1e-3)
    np.testing.assert_allclose(r["centroid_lps_mm"], ras * [-1, -1, 1], atol=1e-3)
    # the CLI on the written label map (names from the JSON sidecar)
    medseg.io.write(labels, tmp_path / "l.nii.gz")
    (tmp_path / "l.json").write_text(json.dumps({"labels": [{"id": lab.id, "name": lab.name} for lab in labels.labels]}))
    assert main(["stats", str(shared_data / TS_DICOM), str(tmp_path / "l.nii.gz"), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("id,name,voxels,volume_ml,mean")
    assert any(line.split(",")[1] == "liver" and line.split(",")[2] == str(int(liver.sum())) for line in lines[1:])


def test_convert_seg_without_its_series_is_one_clear_error(shared_data: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    seg = shared_data / DCMQI / "liver.dcm"
    if not seg.exists():
        pytest.skip("dcmqi data not in ../shared/data")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(seg, alone / "liver.dcm")
    code = main(["convert", str(alone / "liver.dcm"), "-o", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "referenced series" in err and "--reference" in err
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "x.json").exists()
