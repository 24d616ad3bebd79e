"""Right input, right answer: modality checks, 4D volume choice and the `-o FOLDER` rule, through the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medseg.io
from medseg.cli import main
from medseg.errors import InputError
from medseg.input_checks import check_channels, parse_volume_choice, result_warnings, select_volume

REF = Path("TotalSegmentator/tests/reference_files")


@pytest.fixture()
def ct_nifti(shared_data: Path) -> Path:
    return shared_data / REF / "example_ct_sm.nii.gz"


@pytest.fixture()
def mr_4d(shared_data: Path, tmp_path: Path) -> Path:
    """A real T1 MRI stacked into a 4D file of 3 volumes: the original, x2 and x3."""
    img = nib.load(str(shared_data / "MONAI/tests/testing_data/anatomical.nii"))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    out = tmp_path / "t1_4d.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([arr, 2 * arr, 3 * arr], axis=-1), img.affine), str(out))
    return out


def _no_outputs(folder: Path) -> bool:
    return not any(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".gz", ".json", ".ctbl", ".txt"))


def test_brain_model_refuses_a_ct_before_loading(ct_nifti, tmp_path, capsys, monkeypatch):
    """The wrong modality is refused from the spec alone: no network is loaded, nothing is written."""
    import medseg.predictor

    def no_load(*a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("the model must not load for a scan it cannot segment")

    monkeypatch.setattr(medseg.predictor, "load_predictor", no_load)
    code = main(["segment", str(ct_nifti), "-o", str(tmp_path / "seg.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert str(ct_nifti) in err and "brain-mri expects MR" in err and "Hounsfield" in err and "--force" in err
    assert _no_outputs(tmp_path)


def test_dicom_modality_is_named_in_the_error(shared_data, tmp_path, capsys):
    series = shared_data / REF / "example_ct_dicom"
    code = main(["segment", str(series), "-o", str(tmp_path / "seg.nii.gz"), "--model", "brain-mri"])
    err = capsys.readouterr().err
    assert code == 2 and "this scan is CT (from DICOM Modality)" in err and "--force" in err
    # the user says it is MR: the intensity/DICOM decision is overridden, so the scan is accepted by the check
    from medseg.input_checks import check_modality
    from medseg.models.loaders import load_model_spec

    vol = medseg.io.read(series)
    assert check_modality(vol, load_model_spec("brain-mri"), modality="mr") is None
    with pytest.raises(InputError, match="expects MR"):
        check_modality(vol, load_model_spec("brain-mri"))
    assert "run anyway (--force)" in check_modality(vol, load_model_spec("brain-mri"), force=True)
    assert check_modality(vol, load_model_spec("spleen-ct")) is None
    # a CT model refuses an MR NIfTI (no negative HU at all) but accepts a CT cropped inside the body
    mr = medseg.io.read(shared_data / REF / "example_mr_sm.nii.gz")
    with pytest.raises(InputError, match="expects CT, this scan is not CT"):
        check_modality(mr, load_model_spec("spleen-ct"))
    ct = medseg.io.read(shared_data / REF / "example_ct.nii.gz")
    crop = ct.replace(array=ct.array[30:90, 20:70, :].copy(), geometry=ct.geometry.with_shape((60, 50, ct.shape[2])))
    assert check_modality(crop, load_model_spec("spleen-ct")) is None


@pytest.mark.slow
def test_force_runs_and_records_the_warning(shared_data, tmp_path, capsys):
    """--force segments anyway; the mismatch is a warning on stderr and in the sidecar."""
    out = tmp_path / "seg.nii.gz"
    code = main(["segment", str(shared_data / REF / "example_ct_sm.nii.gz"), "-o", str(out), "--force", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and out.is_file()
    assert "warning: model brain-mri expects MR" in err
    side = json.loads(out.with_name("seg.json").read_text())
    prov = side.get("provenance", side)
    assert any("expects MR" in w for w in prov["warnings"])
    assert prov["input_modality"] == {"modality": "CT", "decided_by": "intensity"}


def test_4d_scan_needs_a_volume_choice_before_the_model_loads(mr_4d, tmp_path, capsys, monkeypatch):
    import medseg.predictor

    monkeypatch.setattr(medseg.predictor, "load_predictor", lambda *a, **k: pytest.fail("model loaded"))
    code = main(["segment", str(mr_4d), "-o", str(tmp_path / "seg.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2
    assert "4D with 3 volumes" in err and "--volume N" in err and "0..2" in err
    code = main(["segment", str(mr_4d), "-o", str(tmp_path / "seg.nii.gz"), "--volume", "3"])
    assert code == 2 and "--volume 3 is out of range: this scan has 3 volume(s)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1_4d.nii.gz"]  # nothing written
    with pytest.raises(SystemExit):
        main(["segment", str(mr_4d), "-o", str(tmp_path / "x.nii.gz"), "--volume", "last"])
    assert "0-based volume number or 'mean'" in capsys.readouterr().err


def test_volume_choice_in_info_and_convert(mr_4d, tmp_path, capsys):
    assert main(["info", str(mr_4d)]) == 0
    assert "volumes:     3 (0..2; choose one with --volume N or --volume mean)" in capsys.readouterr().out
    assert main(["info", str(mr_4d), "--volume", "1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["shape"][3:] == [] and info["extra"]["volume"] == 1
    out = tmp_path / "v2.nii.gz"
    assert main(["convert", str(mr_4d), "-o", str(out), "--volume", "2"]) == 0
    src = np.asarray(nib.load(str(mr_4d)).dataobj)
    got = nib.load(str(out))
    assert got.shape == src.shape[:3]
    np.testing.assert_array_equal(np.asarray(got.dataobj), src[..., 2])
    np.testing.assert_allclose(got.affine, nib.load(str(mr_4d)).affine, atol=1e-5)
    mean = tmp_path / "mean.nii.gz"
    assert main(["convert", str(mr_4d), "-o", str(mean), "--volume", "mean"]) == 0
    np.testing.assert_allclose(np.asarray(nib.load(str(mean)).dataobj), src.mean(axis=3), rtol=1e-6)


def test_select_volume_and_channels_units(mr_4d):
    vol = medseg.io.read(mr_4d)
    assert select_volume(vol, None) is vol
    assert select_volume(vol, 0).shape == vol.shape[:3]
    with pytest.raises(InputError, match="out of range"):
        select_volume(select_volume(vol, 0), 1)  # a 3D scan has volume 0 only
    check_channels(vol, 3, "three-channel")  # a ready 3-volume stack for a 3-channel model
    with pytest.raises(InputError, match="takes 4 channels"):
        check_channels(vol, 4, "brats")
    assert parse_volume_choice("MEAN") == "mean" and parse_volume_choice("0") == 0
    with pytest.raises(ValueError):
        parse_volume_choice("-1")
    assert result_warnings("m", {"brain": 0.0})[0].startswith("model m found nothing")
    assert result_warnings("m", {"brain": 3.0}) == []


def test_output_folder_rule(shared_data, tmp_path, capsys, monkeypatch):
    """-o FOLDER/ writes FOLDER/<case name>_seg.nii.gz, the name batch gives the same input."""
    import medseg.predictor

    monkeypatch.setattr(medseg.predictor, "load_predictor", lambda *a, **k: pytest.fail("model loaded"))
    folder = tmp_path / "new_folder"
    # the wrong modality stops the run after naming the output: the message says which file it would be
    code = main(["segment", str(shared_data / REF / "example_ct_dicom"), "-o", f"{folder}/"])
    out = capsys.readouterr()
    assert code == 2 and f"writing {folder / 'CT_Body_3.0_seg.nii.gz'}" in out.out
    from medseg.batch.discover import discover_cases
    from medseg.batch.naming import output_paths

    case = discover_cases(shared_data / REF / "example_ct_dicom").cases[0]
    batch_out = output_paths([(case.key, case.rel, case.series_label)], tmp_path / "batch")[case.key]
    assert batch_out.name == "CT_Body_3.0_seg.nii.gz"  # batch's name for the same series
    assert not folder.exists()  # refused before anything was created


def test_output_folder_rule_end_to_end(tmp_path, capsys):
    """--sample into an existing folder: FOLDER/sample_seg.nii.gz with its sidecars."""
    code = main(["segment", "--sample", "-o", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"writing {tmp_path / 'sample_seg.nii.gz'}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sample_seg.ctbl", "sample_seg.json", "sample_seg.nii.gz", "sample_seg.txt"
    ]
    prov = json.loads((tmp_path / "sample_seg.json").read_text())
    prov = prov.get("provenance", prov)
    assert prov["warnings"] == [] and prov["input_modality"]["modality"] == "MR"


def test_irregular_option_on_segment(shared_data, tmp_path, capsys):
    """segment takes --irregular like convert; the hint is in CLI syntax."""
    code = main(["segment", str(shared_data / "MONAI/tests/testing_data/CT_DICOM"), "-o", str(tmp_path / "s.nii.gz"),
                 "--model", "spleen-ct"])
    err = capsys.readouterr().err
    assert code == 2 and "--irregular resample" in err and "irregular=" not in err


def test_batch_fails_the_wrong_modality_case_with_its_reason(shared_data, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(shared_data / REF / "example_ct_sm.nii.gz", inp / "ct.nii.gz")
    shutil.copy(shared_data / "pyradiomics/data/brain1_image.nrrd", inp / "t1.nrrd")
    code = main(["batch", str(inp), "-o", str(tmp_path / "out"), "--model", "brain-mri", "--quiet"])
    assert code == 1
    rows = {Path(r["input"]).name: r for r in csv.DictReader(open(tmp_path / "out" / "batch_summary.csv"))}
    assert rows["ct.nii.gz"]["status"] == "failed" and "expects MR" in rows["ct.nii.gz"]["error"]
    assert rows["t1.nrrd"]["status"] == "ok"
