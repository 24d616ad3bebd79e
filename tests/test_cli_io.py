"""``medseg info`` and ``medseg convert``: in-process through ``medseg.cli.main`` and once as a real process."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.io import detect_format, read

REPO = Path(__file__).resolve().parents[1]
MEDSEG = REPO / ".venv" / "bin" / "medseg"
FUNCTIONAL = "nibabel/nibabel/tests/data/functional.nii"


def test_info_text(shared_data, capsys):
    assert main(["info", str(shared_data / FUNCTIONAL)]) == 0
    out = capsys.readouterr().out
    assert "17x21x3x20" in out and "4 x 4 x 8 mm" in out and "LAS" in out
    assert "scaling" in out and "0.075407" in out


def test_info_json(shared_data, capsys):
    assert main(["info", "--json", str(shared_data / "pyradiomics/data/brain1_image.nrrd")]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["format"] == "nrrd"
    assert entry["shape"] == [256, 256, 25]
    assert entry["spacing"] == pytest.approx([0.78125, 0.78125, 6.5])
    assert entry["orientation"] == "LAS"
    assert entry["warnings"] == []


def test_convert_nrrd_label_to_nifti(shared_data, tmp_path, capsys):
    src = shared_data / "pyradiomics/data/brain1_label.nrrd"
    out = tmp_path / "label.nii.gz"
    assert main(["convert", str(src), "-o", str(out), "--label"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    ref = read(src)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), ref.array)


def test_convert_refuses_existing_output_untouched_then_overwrites(shared_data, tmp_path, capsys):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"do not touch")
    before = out.stat()
    rc = main(["convert", str(shared_data / FUNCTIONAL), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(out) in err[0] and "--overwrite" in err[0]
    assert out.read_bytes() == b"do not touch" and out.stat().st_mtime_ns == before.st_mtime_ns
    assert main(["convert", str(shared_data / FUNCTIONAL), "-o", str(out), "--overwrite"]) == 0
    assert nib.load(out).shape == (17, 21, 3, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_convert_to_missing_directory(shared_data, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "x.nii.gz"
    assert main(["convert", str(shared_data / FUNCTIONAL), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and str(out) in err[0]
    assert not (tmp_path / "no").exists()


def test_convert_rejects_unknown_irregular_choice(shared_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(shared_data / FUNCTIONAL), "-o", str(tmp_path / "x.nii"), "--irregular", "guess"])
    assert exc.value.code == 2
    assert "invalid choice: 'guess'" in capsys.readouterr().err


def test_console_script_end_to_end(shared_data, tmp_path):
    """The installed ``medseg`` executable: a good conversion, then a bad input with exit code 2."""
    if not MEDSEG.exists():
        pytest.skip(f"console script not installed at {MEDSEG}")
    out = tmp_path / "anat.nii.gz"
    ok = subprocess.run(
        [str(MEDSEG), "convert", str(shared_data / "nibabel/nibabel/tests/data/anatomical.nii"), "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert nib.load(out).shape == (33, 41, 25)
    bad = tmp_path / "fake.nii.gz"
    bad.write_bytes(b"<html>not an image</html>\n")
    res = subprocess.run([str(MEDSEG), "info", str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"medseg info: error: {bad}: not a NIfTI file: it looks like plain text ('<html>not an image</html>'...)"]


def _limit_file_size():  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG error instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_write_failure_midway_leaves_no_partial_file(tmp_path):
    """A real I/O failure half-way through the output (file size limit): error, and nothing left behind."""
    src = tmp_path / "in" / "big.nii"
    src.parent.mkdir()
    data = np.random.default_rng(0).integers(-1000, 1000, (64, 64, 64)).astype(np.int16)  # 512 KiB
    nib.save(nib.Nifti1Image(data, np.eye(4)), src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = "import sys; from medseg.cli import main; sys.exit(main(sys.argv[1:]))"
    res = subprocess.run(
        [sys.executable, "-c", code, "convert", str(src), "-o", str(out_dir / "big.nii")],
        capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "writing failed" in lines[0] and str(out_dir / "big.nii") in lines[0]
    assert list(out_dir.iterdir()) == []


# ------------------------------------------------------------------------------ DICOM through the dispatch


def test_dicom_dispatch_folder_zip_and_single_files(shared_data, tmp_path):
    folder = shared_data / "dcmqi/data/segmentations/ct-3slice"
    vol = read(folder)
    assert vol.shape == (512, 512, 3) and vol.source.format == "dicom"
    archive = tmp_path / "ct.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"series/{f.name}")
    from_zip = read(archive)
    assert from_zip.geometry == vol.geometry
    np.testing.assert_array_equal(from_zip.array, vol.array)
    extensionless = tmp_path / "IM0001"
    shutil.copy(folder / "01.dcm", extensionless)
    assert detect_format(extensionless) == detect_format(folder / "01.dcm") == "dicom"
    assert read(extensionless).shape == (512, 512, 1)
    # dcmqi's NRRD label maps were drawn on this CT: same grid after both conversions
    liver = read(shared_data / "dcmqi/data/segmentations/liver_seg.nrrd")
    assert liver.geometry.allclose(vol.geometry, atol=1e-3)


def test_convert_irregular_dicom_errors_or_resamples(shared_data, tmp_path, capsys):
    src = shared_data / "MONAI/tests/testing_data/CT_DICOM"
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(src) in err[0] and "regular grid" in err[0]
    assert not out.exists()
    assert main(["convert", str(src), "-o", str(out), "--irregular", "resample"]) == 0
    assert "warning" in capsys.readouterr().err
    assert nib.load(out).shape[:2] == (16, 16)


def test_convert_checks_output_before_reading(tmp_path, capsys):
    """An unsupported output suffix is reported first, even when the input is unreadable too."""
    bad_input = tmp_path / "missing.nii.gz"
    assert main(["convert", str(bad_input), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert "out.png" in err and "'.png'" in err and "missing.nii.gz" not in err


def test_convert_totalsegmentator_dicom_gives_dcm2niix_affine_exactly(shared_data, tmp_path, capsys):
    """DICOM in -> NIfTI out: the stored (float32) affine equals dcm2niix's bit for bit once both are in
    canonical voxel order (dcm2niix flips the row axis; medseg keeps DICOM's order)."""
    from medseg.geometry import reorient_to_canonical

    ref_dir = shared_data / "TotalSegmentator/tests/reference_files"
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", str(ref_dir / "example_ct_dicom"), "-o", str(out)]) == 0
    ours, ref = nib.load(out), nib.load(ref_dir / "example_seg_dicom.nii.gz")
    assert ours.shape == ref.shape
    _, ours_aff = reorient_to_canonical(np.empty(ours.shape, np.uint8), ours.affine)
    _, ref_aff = reorient_to_canonical(np.empty(ref.shape, np.uint8), ref.affine)
    np.testing.assert_array_equal(ours_aff, ref_aff)
