"""Multi-input models: `--channel NAME=PATH` and nnU-Net `CASE_000N` files, checked against SimpleITK.

The four "sequences" are made from a real MR (pyradiomics brain1): the original NRRD, a scaled copy on the
same grid, a copy resampled by SimpleITK onto a coarser grid and a cropped copy, so every secondary-channel
path (same grid, other grid, partial field of view) is exercised on real anatomy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import medseg.io
from medseg.channels import coverage, nnunet_channel_files, order_channels, parse_channel_args, stack_channels
from medseg.cli import main
from medseg.errors import InputError
from medseg.model_input import model_contract, read_input


def _sitk():
    return pytest.importorskip("SimpleITK")


@pytest.fixture(scope="module")
def sequences(tmp_path_factory, request) -> dict[str, Path]:
    shared = request.getfixturevalue("shared_data")
    sitk = _sitk()
    src = shared / "pyradiomics/data/brain1_image.nrrd"
    folder = tmp_path_factory.mktemp("brats_like")
    img = sitk.ReadImage(str(src))
    out = {"t1c": src}
    t1 = sitk.Cast(img, sitk.sitkFloat32) * 0.8
    sitk.WriteImage(t1, str(folder / "t1.nii.gz"))
    out["t1"] = folder / "t1.nii.gz"
    coarse = sitk.Resample(  # another grid: 1.5 mm in-plane, 5 mm slices, same direction and origin
        img, [int(img.GetSize()[0] / 1.92), int(img.GetSize()[1] / 1.92), 32], sitk.Transform(), sitk.sitkLinear,
        img.GetOrigin(), (1.5, 1.5, 5.0), img.GetDirection(), 0.0, sitk.sitkFloat32,
    )
    sitk.WriteImage(coarse, str(folder / "t2.nii.gz"))
    out["t2"] = folder / "t2.nii.gz"
    crop = img[16:240, 8:248, 2:23]  # partial field of view, other origin
    sitk.WriteImage(crop, str(folder / "flair.nrrd"))
    out["flair"] = folder / "flair.nrrd"
    far = sitk.Image(img)
    far.SetOrigin([o + 1000.0 for o in img.GetOrigin()])
    sitk.WriteImage(far, str(folder / "elsewhere.nii.gz"))
    out["elsewhere"] = folder / "elsewhere.nii.gz"
    return out


def _reference_on_grid(path: Path, reference: Path) -> np.ndarray:
    """SimpleITK's own linear resampling of ``path`` onto ``reference``'s grid, as an (i, j, k) array."""
    sitk = _sitk()
    ref = sitk.ReadImage(str(reference))
    res = sitk.Resample(sitk.ReadImage(str(path)), ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return np.transpose(sitk.GetArrayFromImage(res), (2, 1, 0))


def test_channels_are_stacked_on_the_first_grid(sequences):
    contract = model_contract("brats-mri")
    assert contract.channel_names == ("t1c", "t1", "t2", "flair") and contract.channels == 4
    given = {n: str(sequences[n]) for n in ("flair", "t2", "t1", "t1c")}  # any order on the command line
    vol = read_input(contract, channels=given)
    ref = medseg.io.read(sequences["t1c"])
    assert vol.shape == (*ref.shape, 4) and vol.geometry.allclose(ref.geometry)
    np.testing.assert_array_equal(vol.array[..., 0], ref.array.astype(np.float32))
    np.testing.assert_allclose(vol.array[..., 1], ref.array * np.float32(0.8), rtol=1e-6)
    for c, name in ((2, "t2"), (3, "flair")):
        expected = _reference_on_grid(sequences[name], sequences["t1c"])
        inside = expected != 0  # SimpleITK and medseg both give 0 outside the channel's field of view
        agree = np.abs(vol.array[..., c] - expected) <= 1e-3 * (1 + np.abs(expected))
        assert agree.mean() > 0.9999, (name, agree.mean())  # same values, same field of view
        assert inside.mean() > 0.5
    assert any("t2 resampled onto the grid of channel t1c" in w for w in vol.source.warnings)
    assert list(vol.source.extra["channels"]) == ["t1c", "t1", "t2", "flair"]


def test_channel_errors_name_the_channels(sequences):
    contract = model_contract("brats-mri")
    with pytest.raises(InputError, match=r"missing t2, flair \(give --channel t1c=PATH --channel t1=PATH"):
        read_input(contract, channels={"t1c": str(sequences["t1c"]), "t1": str(sequences["t1"])})
    with pytest.raises(InputError, match="unknown channel\\(s\\) dwi"):
        order_channels({"dwi": "x", **{n: "x" for n in contract.channel_names}}, contract.channel_names, "brats-mri")
    far = {"t1c": str(sequences["t1c"]), "t1": str(sequences["t1"]), "t2": str(sequences["elsewhere"]),
           "flair": str(sequences["flair"])}
    with pytest.raises(InputError, match="channel t2 does not overlap channel t1c in scanner space \\(0% "):
        read_input(contract, channels=far)
    with pytest.raises(InputError, match="not both"):
        read_input(contract, input=str(sequences["t1c"]), channels={"t1c": "x"})
    with pytest.raises(InputError, match="does not name its input channels"):
        read_input(model_contract("spleen-ct"), channels={"ct": "x"})
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_channel_args(["t1c"])


def test_nnunet_case_files_are_grouped(sequences, tmp_path):
    import shutil

    for i, name in enumerate(("t1c", "t1", "t2", "flair")):
        suffix = ".nrrd" if str(sequences[name]).endswith(".nrrd") else ".nii.gz"
        if suffix == ".nrrd":  # one suffix per case, as nnU-Net requires
            medseg.io.write(medseg.io.read(sequences[name]), tmp_path / f"case7_{i:04d}.nii.gz")
        else:
            shutil.copy(sequences[name], tmp_path / f"case7_{i:04d}.nii.gz")
    files = nnunet_channel_files(tmp_path / "case7_0002.nii.gz")
    assert [f.name for f in files] == [f"case7_{i:04d}.nii.gz" for i in range(4)]
    vol = read_input(model_contract("brats-mri"), input=str(tmp_path / "case7_0003.nii.gz"))
    assert vol.shape[3] == 4
    (tmp_path / "case7_0001.nii.gz").unlink()
    with pytest.raises(InputError, match="channels \\[0, 2, 3\\]"):
        nnunet_channel_files(tmp_path / "case7_0000.nii.gz")


def test_coverage_of_a_partial_field_of_view(sequences):
    ref = medseg.io.read(sequences["t1c"])
    crop = medseg.io.read(sequences["flair"])
    assert 0.6 < coverage(ref, crop) < 0.8  # 224/256 x 240/256 x 21/25 = 0.69 of the volume
    assert coverage(ref, ref) == 1.0
    with pytest.raises(InputError, match="4D"):
        stack_channels([("a", ref), ("b", ref.replace(array=np.stack([ref.array] * 2, -1)))])


@pytest.mark.slow
def test_brats_spec_runs_end_to_end_on_four_files(sequences, tmp_path, capsys):
    """The registered brats-mri spec (its SegResNet with seeded weights) on four separate sequence files."""
    import torch
    import yaml
    from monai.networks.nets import SegResNet

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "brats-mri.yaml").read_text())
    torch.manual_seed(0)
    torch.save(SegResNet(**spec["network"]["args"]).state_dict(), tmp_path / "brats_seeded.pt")
    spec["weights"] = {"source": "brats_seeded.pt"}
    spec["inferer"]["roi_size"] = [128, 128, 32]  # smaller windows than the bundle's 240x240x160: CI time
    (tmp_path / "brats.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "seg.nii.gz"
    args = ["segment", "-o", str(out), "--model", str(tmp_path / "brats.yaml"), "--no-progress"]
    for name in ("t1c", "t1", "t2", "flair"):
        args += ["--channel", f"{name}={sequences[name]}"]
    assert main(args) == 0, capsys.readouterr().err
    labels = medseg.io.read(out)
    ref = medseg.io.read(sequences["t1c"])
    assert labels.shape == ref.shape and labels.geometry.allclose(ref.geometry, atol=1e-4)
    assert set(np.unique(labels.array)) <= {0, 1, 2, 4}
    prov = json.loads(out.with_name("seg.json").read_text())
    prov = prov.get("provenance", prov)
    assert prov["arguments"]["channel"][0].startswith("t1c=")
    # one channel short: a clear error before the model loads
    assert main(args[:-2] + ["-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "missing flair" in capsys.readouterr().err
