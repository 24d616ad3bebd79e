"""Seeded mutation fuzzing of the config parsers (bounded for CI; ``benchmarks/fuzz_parsers.py`` runs long).

Model specs (every ``configs/*.yaml``), MONAI bundle configs (inference.json + metadata.json) and nnU-Net
plans.json/dataset.json are mutated structurally (hostile values, deleted/added keys, deep nesting, huge
lists, type swaps) and as text (truncation, flipped/inserted bytes), plus a YAML 'billion laughs'.
Anything but medseg's own one-line errors fails the test.
"""

from __future__ import annotations

import os

import pytest

from tests.security.fuzz_parsers import fuzz_bundles, fuzz_nnunet, fuzz_specs, Totals

CASES = int(os.environ.get("MEDSEG_FUZZ_CASES", "120"))


@pytest.mark.parametrize("fuzz", [fuzz_specs, fuzz_bundles, fuzz_nnunet], ids=["specs", "bundles", "nnunet"])
def test_parsers_raise_only_medseg_errors(fuzz, tmp_path):
    if fuzz is fuzz_nnunet:
        pytest.importorskip("dynamic_network_architectures")
    totals = Totals()
    fuzz(tmp_path, CASES, 1234, totals)
    print(fuzz.__name__, totals.line())
    assert not totals.failures, "\n".join(totals.examples)
    assert totals.clean_errors > CASES // 4 and totals.successes > 0  # the mutations reach both outcomes


def test_deep_and_aliased_yaml_are_refused_quickly(tmp_path):
    import time

    from medseg.config import load_spec
    from medseg.errors import ModelError
    from tests.security._mutate import billion_laughs

    for name, text in (("laughs.yaml", billion_laughs(9)), ("deep.yaml", "a: " + "[" * 20000 + "]" * 20000),
                       ("big.yaml", "name: x\n" + "# pad\n" * 3_000_000)):
        f = tmp_path / name
        f.write_text(text)
        t0 = time.perf_counter()
        with pytest.raises(ModelError) as info:
            load_spec(f)
        assert time.perf_counter() - t0 < 10 and "\n" not in str(info.value), str(info.value)
