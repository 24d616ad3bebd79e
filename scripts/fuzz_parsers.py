"""Long run of the config-parser fuzzer: ``python scripts/fuzz_parsers.py --cases 5000 --seed 1``.

Prints, per parser (model specs, MONAI bundle configs, nnU-Net plans/dataset.json): inputs, clean errors
(medseg's own), successes and failures by kind (any other exception, multi-line errors, over 10 s).
Exit code 1 when any failure was seen.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.security.fuzz_parsers import run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=2000, help="inputs per parser (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(Path(tmp), args.cases, args.seed)
    bad = 0
    for name, totals in results.items():
        print(f"{name}: {totals.line()}")
        for example in totals.examples[:10]:
            print(f"    {example}")
        bad += sum(totals.failures.values())
    print(f"total time {time.perf_counter() - t0:.1f} s, seed {args.seed}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
