"""Output names: mirror the input tree, unique, readable, never outside OUTPUT_DIR."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from medseg.batch.naming import OUTPUT_SUFFIX, ensure_inside, output_paths, sanitize_component
from medseg.errors import WriteError


def test_files_mirror_the_input_tree(tmp_path: Path) -> None:
    out = output_paths(
        [
            ("file:a/b/scan.nii.gz", PurePosixPath("a/b/scan.nii.gz"), None),
            ("file:t1.nrrd", PurePosixPath("t1.nrrd"), None),
            ("dicom:1.2.3", PurePosixPath("p1/ct"), "s003_CT Abdomen"),
        ],
        tmp_path,
    )
    root = tmp_path.resolve()
    assert out["file:a/b/scan.nii.gz"] == root / "a" / "b" / "scan_seg.nii.gz"
    assert out["file:t1.nrrd"] == root / "t1_seg.nii.gz"
    assert out["dicom:1.2.3"] == root / "p1" / "ct" / "s003_CT_Abdomen_seg.nii.gz"


@pytest.mark.parametrize(
    "name",
    ["..", ".", "../../etc/passwd", "/abs/path", ".hidden", "-rf", "a\x00b", "con:nul", "名前 with spaces", "x" * 400, ""],
)
def test_sanitized_components_are_safe(name: str) -> None:
    safe = sanitize_component(name)
    assert safe and safe not in (".", "..")
    assert not safe.startswith((".", "-"))
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert len(safe) <= 96


def test_hostile_input_names_stay_inside_output(tmp_path: Path) -> None:
    hostile = [
        ("k1", PurePosixPath("../../../../tmp/evil.nii.gz"), None),
        ("k2", PurePosixPath("/etc/passwd.nii"), None),
        ("k3", PurePosixPath(".."), "s001_../../x"),
        ("k4", PurePosixPath("a/./../b/.nii.gz"), None),
    ]
    out = output_paths(hostile, tmp_path / "out")
    root = (tmp_path / "out").resolve()
    for path in out.values():
        assert root in path.parents
        assert path.name.endswith(OUTPUT_SUFFIX)
    assert len(set(out.values())) == len(hostile)


def test_collisions_get_stable_unique_names(tmp_path: Path) -> None:
    cases = [
        ("file:a.nii", PurePosixPath("a.nii"), None),
        ("file:a.nii.gz", PurePosixPath("a.nii.gz"), None),
        ("file:A.nrrd", PurePosixPath("A.nrrd"), None),  # equal up to case: clashes on macOS/Windows
        ("file:b.nii", PurePosixPath("b.nii"), None),
    ]
    first = output_paths(cases, tmp_path)
    assert len({str(p).lower() for p in first.values()}) == 4
    assert first["file:b.nii"].name == "b_seg.nii.gz"  # no clash: plain name
    # the same case gets the same name whatever else is in the batch (resume depends on it)
    again = output_paths(list(reversed(cases)) + [("file:c.mha", PurePosixPath("c.mha"), None)], tmp_path)
    for key, path in first.items():
        assert again[key] == path


def test_symlink_in_output_pointing_outside_is_refused(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out_dir / "a")
    with pytest.raises(WriteError, match="outside the output folder"):
        output_paths([("file:a/x.nii", PurePosixPath("a/x.nii"), None)], out_dir)
    with pytest.raises(WriteError):
        ensure_inside(out_dir, PurePosixPath("a/x_seg.nii.gz"))


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate case key"):
        output_paths([("k", PurePosixPath("a.nii"), None), ("k", PurePosixPath("b.nii"), None)], tmp_path)
