"""Bounded fuzz run in CI (issue 21): mutated inputs for every reader through ``read`` and ``scan``
(what ``medseg info`` does), each in a child process with a time limit and a memory bound.

Any exception other than medseg's own, a crash signal, a timeout or a peak RSS over the bound fails.
The long mode is ``python scripts/fuzz.py`` (prints totals).
"""

from __future__ import annotations

import pytest

from tests.fuzz.harness import KINDS, SHARED_DATA, make_inputs, run_cases, summarize

N_PER_KIND = 12
SEED = 2026
BOUNDS = {"medseg.io:read": 1536 << 20, "medseg.io:scan": 800 << 20}


def test_runner_classifies_every_failure_kind(tmp_path):
    """The oracle is real: each kind of misbehaviour is caught and named."""
    names = ["ok", "clean", "traceback", "hang", "hog", "segv", "exit"]
    paths = [tmp_path / n for n in names]
    outs = run_cases("tests.fuzz._targets:behave", paths, timeout=3, mem_bytes=1024 << 20)
    assert [o.kind for o in outs] == ["ok", "clean_error", "traceback", "timeout", "memory", "crash", "crash"]
    assert "SIGSEGV" in outs[5].detail
    assert summarize(outs) == {"inputs": 7, "ok": 1, "clean_error": 1, "traceback": 1, "timeout": 1, "memory": 1,
                               "crash": 2}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    work = tmp_path_factory.mktemp("fuzz")
    return {kind: make_inputs(kind, N_PER_KIND, SEED, work) for kind in KINDS}


def test_generation_is_reproducible(tmp_path):
    a = make_inputs("nrrd", 5, 7, tmp_path / "a")
    b = make_inputs("nrrd", 5, 7, tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    c = make_inputs("nrrd", 5, 8, tmp_path / "c")
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]


@pytest.mark.parametrize("target", sorted(BOUNDS))
def test_fuzzed_inputs_end_cleanly(inputs, target):
    paths = [p for kind in KINDS for p in inputs[kind]]
    outs = run_cases(target, paths, timeout=60, mem_bytes=BOUNDS[target])  # the CLI bound: 60 s
    failures = [f"[{o.kind}] {o.path}: {o.detail.splitlines()[0] if o.detail else ''}" for o in outs if o.failed]
    assert not failures, "\n".join(failures)
    totals = summarize(outs)
    assert totals["inputs"] == len(paths) and totals["ok"] + totals["clean_error"] == len(paths)
    assert totals["ok"] > 0 and totals["clean_error"] > 0  # the mutations reach both outcomes


def test_unmutated_seeds_read(tmp_path):
    """The seeds themselves are valid scans: validation refuses what is hostile, not what is unusual
    (detached LIST and pattern forms, zlib MetaImage, ITK-written MetaImage, NIfTI-2, gzip NRRD)."""
    import random

    from medseg.io import read
    from tests.fuzz import harness as h

    files = []
    for version in (1, 2):
        files += [(f"v{version}_{name}", data) for name, data in h._nifti_seeds(version)]
    files += h._nrrd_seeds() + h._mha_seeds()
    for name, data in files:
        (tmp_path / name).write_bytes(data)
        assert read(tmp_path / name).array.size > 0, name
    variants = {
        "a.nhdr": h._nrrd_header(data_file="data.raw"),
        "b.nhdr": h._nrrd_header(encoding="gzip", data_file="data.raw.gz"),
        "c.nhdr": h._nrrd_header(data_file="slice%03d.raw 0 3 1 2"),
        "d.nhdr": h._nrrd_header(data_file="LIST 2") + "".join(f"slice{k:03d}.raw\n" for k in range(4)),
        "e.mhd": h._mha_header(data_file="data.raw"),
        "f.mhd": h._mha_header(data_file="slice%03d.raw 0 3 1"),
        "g.mhd": h._mha_header(data_file="LIST 2D") + "".join(f"slice{k:03d}.raw\n" for k in range(4)),
    }
    case = tmp_path / "detached"
    case.mkdir()
    h._detached_folder(case, random.Random(0))
    arrays = {}
    for name, text in variants.items():
        (case / name).write_text(text)
        arrays[name] = read(case / name).array
    for group in (("a.nhdr", "b.nhdr", "e.mhd"), ("c.nhdr", "d.nhdr", "f.mhd", "g.mhd")):  # one file / slices
        for name in group[1:]:
            assert (arrays[name] == arrays[group[0]]).all(), name
