"""The default model ``brain-mri`` (deepbet's trained U-Nets) through ``medseg segment`` agrees with
deepbet's own ``run_bet`` on real brain MRI (Dice >= 0.98), and the CLI fails cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfkit.measure import dice
from tests.engine._util import SHARED, itk_volume

BRAINS = [SHARED / "pyradiomics" / "data" / f"brain{i}_image.nrrd" for i in (1, 2)]


def _deepbet_mask(nrrd, tmp_path):
    """deepbet's run_bet on the same image (it needs NIfTI: converted losslessly with nibabel)."""
    import nibabel as nib
    from deepbet import run_bet

    vol = itk_volume(nrrd)
    src = tmp_path / "input.nii.gz"
    nib.save(nib.Nifti1Image(vol.array, vol.affine), str(src))
    run_bet([str(src)], mask_paths=[str(tmp_path / "mask.nii.gz")], no_gpu=True)
    mask = nib.load(str(tmp_path / "mask.nii.gz"))
    assert np.allclose(mask.affine, vol.affine, atol=1e-4)
    return np.asarray(mask.dataobj) > 0


@pytest.mark.slow
@pytest.mark.parametrize("nrrd", BRAINS, ids=["brain1", "brain2"])
def test_brain_mri_matches_deepbet(nrrd, tmp_path):
    if not nrrd.is_file():
        pytest.skip(f"real test data not found: {nrrd}")
    import nibabel as nib

    from medseg.cli import main

    out = tmp_path / "brain_mask.nii.gz"
    assert main(["segment", str(nrrd), "-o", str(out), "--threads", "1", "--no-progress"]) == 0
    seg = nib.load(str(out))
    vol = itk_volume(nrrd)
    assert seg.shape == vol.shape and np.allclose(seg.affine, vol.affine, atol=1e-5)
    ref = _deepbet_mask(nrrd, tmp_path)
    d = dice(np.asarray(seg.dataobj), ref)
    assert d >= 0.98, f"Dice vs deepbet {d:.4f}"
    side = json.loads((tmp_path / "brain_mask.json").read_text())
    assert side["model"] == "brain-mri" and side["labels"][1]["name"] == "brain"
    n = int((np.asarray(seg.dataobj) == 1).sum())
    assert side["volumes_ml"]["brain"] == pytest.approx(n * np.prod(vol.spacing) / 1000, rel=1e-6)
    assert (tmp_path / "brain_mask.ctbl").is_file() and (tmp_path / "brain_mask.txt").is_file()


def test_cli_errors_leave_no_output(tmp_path, capsys):
    from medseg.cli import main

    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 200)
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(bad), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "scan.nii.gz" in err and "medseg segment: error" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]

    out.write_bytes(b"keep me")
    assert main(["segment", str(bad), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"

    assert main(["segment", str(bad), "-o", str(tmp_path / "x.nii.gz"), "--model", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", str(bad), "-o", str(tmp_path / "y.nii.gz"), "--overlap", "1.2"])
    assert "overlap must be >= 0 and < 1, got 1.2" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz", "seg.nii.gz"]
