"""Model specs: validation errors name the key path; the registry answers without torch."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medseg.config import load_spec
from medseg.errors import ModelError
from medseg.models.registry import list_models, resolve_model

REPO = Path(__file__).resolve().parents[2]
SPLEEN = yaml.safe_load((REPO / "configs" / "spleen-ct.yaml").read_text())


def test_all_shipped_specs_validate():
    names = set()
    for f in sorted((REPO / "configs").glob("*.yaml")):
        spec = load_spec(f)
        assert spec.name == f.stem
        names.add(spec.name)
        assert all(lab.id > 0 for lab in spec.labels)
    assert {"brain-mri", "spleen-ct", "wholebody-ct", "btcv-ct", "brats-mri", "pancreas-ct"} <= names
    assert len(load_spec(REPO / "configs" / "wholebody-ct.yaml").labels) == 104
    assert len(load_spec(REPO / "configs" / "btcv-ct.yaml").labels) == 13


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["inferer"].update(overlap=1.2), "inferer.overlap: must be in [0, 1), got 1.2"),
        (lambda d: d["inferer"].update(blend="median"), "inferer.blend: must be one of 'constant', 'gaussian'"),
        (lambda d: d["inferer"].update(roi_sise=[96, 96, 96]), "inferer.roi_sise: unknown key"),
        (lambda d: d["inferer"].update(roi_size=[96, 96]), "inferer.roi_size: must be a list of 3 numbers"),
        (lambda d: d["network"].update({"class": "os.system"}), "network.class: 'os.system' is not an allowed"),
        (lambda d: d["network"]["args"].update(channels="$__import__('os')"), "network.args.channels: expressions"),
        (lambda d: d["weights"].update(sha256="abc"), "weights.sha256: must be 64 hex digits"),
        (lambda d: d["input"].update(spacing=[1.5, -1, 2]), "input.spacing[1]: must be > 0"),
        (lambda d: d["input"].update(orientation="RAR"), "input.orientation: must be three axis codes"),
        (lambda d: d["input"]["normalize"][0].update(a_max=-100), "input.normalize[0].a_max: must be > a_min"),
        (lambda d: d["input"]["normalize"].append({"type": "zscore", "robust": True}), "input.normalize[1].robust"),
        (lambda d: d["output"].update(activation="relu"), "output.activation: must be one of"),
        (lambda d: d["labels"].append({"id": 1, "name": "dup"}), "labels[1].id: duplicate label id 1"),
        (lambda d: d["labels"][0].update(color=[0, 0, 300]), "labels[0].color: must be [r, g, b]"),
        (lambda d: d.pop("labels"), "labels: required key is missing"),
    ],
)
def test_bad_spec_names_the_key(mutate, message):
    d = copy.deepcopy(SPLEEN)
    mutate(d)
    with pytest.raises(ModelError) as err:
        load_spec(d)
    assert message in str(err.value)


def test_bad_spec_file_names_the_file(tmp_path):
    d = copy.deepcopy(SPLEEN)
    d["inferer"]["overlap"] = 1.2
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ModelError, match=r"bad\.yaml: inferer\.overlap: must be in \[0, 1\), got 1\.2"):
        load_spec(p)
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(ModelError, match="invalid YAML"):
        load_spec(tmp_path / "broken.yaml")


def test_registry_resolves_names_and_suggests():
    assert resolve_model("brain-mri").name == "brain-mri.yaml"
    with pytest.raises(ModelError, match="did you mean spleen-ct"):
        resolve_model("spleen-cta")
    entries = {m.name: m for m in list_models()}
    assert list_models()[0].name == "brain-mri"
    assert entries["brain-mri"].weights == "embedded"  # deepbet's weights ship in its wheel


def test_models_list_does_not_import_torch():
    code = (
        "import sys, io, contextlib\n"
        "from medseg.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    rc = main(['models', 'list'])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'monai') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "print(buf.getvalue())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert "brain-mri*" in out.stdout and "wholebody-ct" in out.stdout


def test_enumerated_options_suggest_the_closest_choice():
    """One resolver (medseg.options.look_up_option) for spec enums, spec string choices and model names."""
    from medseg.options import look_up_option

    base = {"name": "x", "network": {"class": "BasicUNet"}, "labels": [{"id": 1, "name": "a"}]}
    with pytest.raises(ModelError, match=r"inferer\.blend: must be one of 'constant', 'gaussian', got 'gausian' "
                                         r"\(did you mean 'gaussian'\?\)"):
        load_spec({**base, "inferer": {"blend": "gausian"}})
    with pytest.raises(ModelError, match=r"input\.resize_mode: .*got 'trilinar' \(did you mean 'trilinear'\?\)"):
        load_spec({**base, "input": {"resize_mode": "trilinar"}})
    with pytest.raises(ModelError, match=r"network\.class: 'BasicUnet' is not an allowed .*did you mean 'BasicUNet'"):
        load_spec({**base, "network": {"class": "BasicUnet"}})
    with pytest.raises(ValueError, match=r"^mode must be one of 'a', 'b', got 'zzz'$"):  # nothing close: no hint
        look_up_option("zzz", ("a", "b"), "mode")
