"""One writer: the napari plugin's save and ``medseg segment``/``batch`` write the same label map and sidecars
through :func:`medseg.pipeline.write_segmentation`, with the provenance of :func:`medseg.pipeline.provenance_record`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import WriteError
from medseg.pipeline import provenance_record, write_segmentation
from medseg.types import Geometry, Label, SourceInfo, Volume

PROVENANCE_FREE = {"label_map", "labels", "volumes_ml", "voxel_volume_ml", "shape", "spacing_mm", "orientation"}


def _labels(path: str) -> Volume:
    arr = np.zeros((7, 6, 5), np.uint8)
    arr[1:4, 2:5, 1:3] = 1
    arr[5, 5, 4] = 3
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-10.0, 4.0, 7.5)
    return Volume(arr, Geometry(affine, arr.shape), is_label=True, source=SourceInfo(path=path, format="nifti"),
                  labels=(Label(1, "liver", (200, 10, 10)), Label(3, "spleen", (0, 200, 0))))


def test_napari_save_writes_what_the_pipeline_writes(tmp_path: Path) -> None:
    pytest.importorskip("napari_plugin")
    from napari_plugin._writer import save_labels

    labels = _labels(str(tmp_path / "scan.nii.gz"))
    (tmp_path / "napari").mkdir()
    (tmp_path / "cli").mkdir()
    written = save_labels(labels, tmp_path / "napari" / "seg")  # ".nii.gz" added
    assert [Path(p).name for p in written] == ["seg.nii.gz", "seg.json", "seg.ctbl", "seg.txt"]
    ref = write_segmentation(labels, tmp_path / "cli" / "seg.nii.gz", {"input": "x", "model": "m"})
    for kind, path in ref.items():
        mine = tmp_path / "napari" / path.name
        if kind == "json":
            a, b = json.loads(mine.read_text()), json.loads(path.read_text())
            assert {k: a[k] for k in PROVENANCE_FREE} == {k: b[k] for k in PROVENANCE_FREE}
            assert {k: a[k] for k in a if k not in PROVENANCE_FREE} == provenance_record(labels.source.path, labels)
        else:
            assert mine.read_bytes() == path.read_bytes(), kind


def test_write_segmentation_is_all_or_nothing(tmp_path: Path) -> None:
    labels = _labels("scan.nii.gz")
    (tmp_path / "seg.ctbl").write_text("mine")  # one output is taken: nothing is written
    with pytest.raises(WriteError, match="seg.ctbl"):
        write_segmentation(labels, tmp_path / "seg.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.ctbl"]
    out = write_segmentation(labels, tmp_path / "sub" / "seg.nii.gz", make_parents=True, stats=True, split=True)
    assert {"label_map", "json", "ctbl", "txt", "stats", "split:liver", "split:spleen"} == set(out)
    assert all(p.is_file() for p in out.values())
