"""Seeded hostile UIH VFRAME files (issue 24): the private (0065,1050) slice count and (0065,1051)
position sequence are untrusted. Each mutated file goes through ``read`` and ``scan`` (what ``medseg info``
does) in a child process with a time limit and a memory bound; anything but a result or medseg's own
one-line error fails (traceback, crash, timeout, memory).
"""

from __future__ import annotations

import copy
import io
import random
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from tests.fuzz.harness import SHARED_DATA, run_cases, summarize
from tests.fuzz.mutate import mutate_bytes

N_CASES = 40
SEED = 2412
BOUNDS = {"medseg.io:read": 1536 << 20, "medseg.io:scan": 800 << 20}

_COUNTS = ["0", "-1", "1e12", "4294967297", "NaN", "inf", "3.5", " ", "65536", "36864", "36865", "9\\9", "1", "4", "16"]
_POSITIONS = [["nan", "0", "0"], ["1e308", "1e308", "1e308"], ["1", "2"], ["0", "0", "0"], ["-1e20", "0", "5"]]


def _seed_dataset() -> pydicom.Dataset:
    from tests.io._uih_synth import source_volumes, vframe_dataset

    return vframe_dataset(source_volumes(SHARED_DATA / "dcm_qa_philips" / "In")[0])


def _mutate(base: pydicom.Dataset, rng: random.Random) -> bytes:
    ds = copy.deepcopy(base)
    items = ds[0x00651051].value
    if rng.random() < 0.2:  # a valid spelling of the count (some files must read: validation is not refusal)
        ds[0x00651050].value = rng.choice(["9", "9.0", " 9", "+9"])
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        op = rng.randrange(8)
        if op == 0:
            ds[0x00651050].value = rng.choice(_COUNTS)
        elif op == 1:
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
            ds[0x00651050] = pydicom.DataElement(0x00651050, "UN", junk)
        elif op == 2 and len(items):
            del items[rng.randrange(len(items))]
        elif op == 3 and len(items):
            for _ in range(rng.choice([1, 7, 300])):
                items.append(copy.deepcopy(items[rng.randrange(len(items))]))
        elif op == 4 and len(items):
            items[rng.randrange(len(items))].ImagePositionPatient = rng.choice(_POSITIONS)
        elif op == 5:
            ds.Rows, ds.Columns = rng.choice([(1, 1), (192, 64), (65535, 65535), (191, 192)])
        elif op == 6:
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            ds[0x00651051] = pydicom.DataElement(0x00651051, "UN", junk)
        else:
            ds.PixelData = ds.PixelData[: rng.randrange(len(ds.PixelData))]
    if rng.random() < 0.3:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return mutate_bytes(data, rng, focus=4096) if rng.random() < 0.2 else data


@pytest.fixture(scope="module")
def uih_inputs(tmp_path_factory) -> list[Path]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    import warnings

    rng = random.Random(SEED)
    base = _seed_dataset()
    warnings.filterwarnings("ignore", module="pydicom")  # hostile values are the point
    out = tmp_path_factory.mktemp("fuzz_uih")
    paths = []
    for i in range(N_CASES):
        path = out / f"{i:03d}.dcm"
        path.write_bytes(_mutate(base, rng))
        paths.append(path)
    return paths


@pytest.mark.parametrize("target", sorted(BOUNDS))
def test_hostile_uih_files_end_cleanly(uih_inputs, target):
    outs = run_cases(target, uih_inputs, timeout=60, mem_bytes=BOUNDS[target])
    failures = [f"[{o.kind}] {o.path}: {o.detail.splitlines()[0] if o.detail else ''}" for o in outs if o.failed]
    assert not failures, "\n".join(failures)
    totals = summarize(outs)
    assert totals["ok"] + totals["clean_error"] == len(uih_inputs)
    if target == "medseg.io:read":
        assert totals["ok"] > 0 and totals["clean_error"] > 0  # the mutations reach both outcomes
        assert max(o.seconds for o in outs) < 30
