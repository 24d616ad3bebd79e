#!/usr/bin/env python
"""Long fuzz run over every reader: ``python scripts/fuzz.py [--n 250] [--seed 0] [--kinds nifti1,nrrd,...]``.

Mutated inputs (``tests/fuzz/harness.py``) go through ``medseg.io.read`` (voxels; bound 1.5 GB) and
``medseg.io.scan`` (what ``medseg info`` does; bound 800 MB), each in a child process with a time limit.
Prints totals (inputs, clean errors, successes, failures by kind) per reader kind and target, lists
every failure, and exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz.harness import FAILURE_KINDS, KINDS, make_inputs, run_cases, summarize  # noqa: E402

TARGETS = {"read": ("medseg.io:read", 1536 << 20), "scan": ("medseg.io:scan", 800 << 20)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=250, help="inputs per reader kind (default 250: 2,250 inputs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    ap.add_argument("--targets", default="read,scan", help="comma list of read, scan")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    ap.add_argument("--workdir", default=None, help="keep the inputs here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="write every outcome to this JSON file")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r}")
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="medseg-fuzz-")
        workdir = Path(tmp.name)
    else:
        workdir = Path(args.workdir)
    everything = []
    t0 = time.monotonic()
    try:
        print(f"{'kind':<13}{'target':<7}{'inputs':>7}{'ok':>6}{'clean':>7}" + "".join(f"{k:>10}" for k in FAILURE_KINDS))
        for kind in kinds:
            paths = make_inputs(kind, args.n, args.seed, workdir)
            for t in targets:
                func, mem = TARGETS[t]
                outs = run_cases(func, paths, timeout=args.timeout, mem_bytes=mem)
                everything.extend((kind, o) for o in outs)
                s = summarize(outs)
                print(f"{kind:<13}{t:<7}{s['inputs']:>7}{s['ok']:>6}{s['clean_error']:>7}"
                      + "".join(f"{s[k]:>10}" for k in FAILURE_KINDS), flush=True)
        total = summarize([o for _, o in everything])
        print(f"{'TOTAL':<20}{total['inputs']:>7}{total['ok']:>6}{total['clean_error']:>7}"
              + "".join(f"{total[k]:>10}" for k in FAILURE_KINDS))
        print(f"({time.monotonic() - t0:.0f} s; inputs counted once per target)")
        failures = [(k, o) for k, o in everything if o.failed]
        by = Counter(o.kind for _, o in failures)
        if failures:
            print("\nfailures:", ", ".join(f"{n} {k}" for k, n in by.items()))
            for kind, o in failures:
                first = o.detail.splitlines()[0] if o.detail else ""
                print(f"  [{o.kind}] {kind} {o.target.split(':')[1]} {o.path}: {first[:200]}")
        if args.json:
            Path(args.json).write_text(json.dumps([{"reader": k, **o.__dict__} for k, o in everything], indent=1))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 1 if any(o.failed for _, o in everything) else 0


if __name__ == "__main__":
    sys.exit(main())
