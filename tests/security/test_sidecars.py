"""Label names cannot inject lines into the .ctbl/.txt sidecars; saving never replaces an unrelated file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.errors import WriteError
from medseg.io.sidecar import render_sidecars, write_label_sidecars
from medseg.types import Geometry, Label, Volume

HOSTILE = 'liver\n99 injected 1 2 3 255\r\n"x" \\ \x00end'


def _labels() -> Volume:
    arr = np.zeros((6, 5, 4), np.uint8)
    arr[1:3, 1:3, 1:3] = 1
    arr[4, 4, 3] = 2
    return Volume(arr, Geometry(np.eye(4), arr.shape), is_label=True,
                  labels=(Label(1, HOSTILE, (200, 10, 10)), Label(2, "spleen", (0, 200, 0))))


def test_label_names_cannot_inject_lines():
    texts = render_sidecars(_labels(), "seg.nii.gz", {HOSTILE: 1.0, "spleen": 0.01})
    ctbl = texts["ctbl"].splitlines()
    data = [ln for ln in ctbl if not ln.startswith("#")]
    assert len(data) == 3  # background + 2 labels, nothing injected
    fields = data[1].split()
    assert fields[0] == "1" and fields[2:] == ["200", "10", "10", "255"] and len(fields) == 6
    txt = [ln for ln in texts["txt"].splitlines() if not ln.startswith("#")]
    assert len(txt) == 3 and all(ln.count('"') == 2 for ln in txt)
    assert json.loads(texts["json"])["labels"][1]["name"] == HOSTILE  # JSON keeps the exact name


def test_napari_writer_never_replaces_an_unrelated_file(tmp_path):
    pytest.importorskip("napari_plugin")
    from napari_plugin._writer import save_labels

    report_txt = tmp_path / "report.txt"
    report_txt.write_text("my own notes")
    with pytest.raises(WriteError, match="did not write"):
        save_labels(_labels(), tmp_path / "report.nii.gz", overwrite=True)  # as napari's writer calls it
    assert report_txt.read_text() == "my own notes" and not (tmp_path / "report.nii.gz").exists()
    # medseg's own sidecars of the same label map are replaced on overwrite
    report_txt.unlink()
    written = save_labels(_labels(), tmp_path / "report.nii.gz")
    assert len(written) == 4
    assert len(save_labels(_labels(), tmp_path / "report.nii.gz", overwrite=True)) == 4
    (tmp_path / "report.json").write_text(json.dumps({"label_map": "other.nii.gz"}))
    with pytest.raises(WriteError):
        save_labels(_labels(), tmp_path / "report.nii.gz", overwrite=True)


def test_cli_sidecars_written_atomically_and_refuse_without_overwrite(tmp_path):
    vol = _labels()
    write_label_sidecars(vol, tmp_path / "seg.nii.gz", {})
    with pytest.raises(WriteError):
        write_label_sidecars(vol, tmp_path / "seg.nii.gz", {})
