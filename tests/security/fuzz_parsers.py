"""Seeded mutation fuzzing of medseg's config parsers: model specs, MONAI bundle configs, nnU-Net plans.

Every input must either parse or raise one of medseg's own errors (:class:`medseg.errors.MedsegError`),
within a time bound. :func:`run` returns the totals; the CI test runs a bounded number of cases and the
long mode is ``python benchmarks/fuzz_parsers.py --cases N``.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.security._mutate import billion_laughs, dumps, mutate_structure, mutate_text

REPO = Path(__file__).resolve().parents[2]
TIME_LIMIT_S = 10.0


@dataclass
class Totals:
    inputs: int = 0
    clean_errors: int = 0
    successes: int = 0
    failures: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        bad = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        return (f"inputs {self.inputs}, clean errors {self.clean_errors}, successes {self.successes}, "
                f"failures {sum(self.failures.values())} ({bad})")


def _check(totals: Totals, label: str, fn: Callable[[], Any]) -> None:
    from medseg.errors import MedsegError

    totals.inputs += 1
    t0 = time.perf_counter()
    try:
        fn()
    except MedsegError as err:
        totals.clean_errors += 1
        if "\n" in str(err):
            totals.failures["multi-line error"] += 1
            totals.examples.append(f"{label}: multi-line error {str(err)[:200]!r}")
    except Exception as err:  # noqa: BLE001 - this is what the fuzzer looks for
        totals.failures[type(err).__name__] += 1
        if len(totals.examples) < 20:
            totals.examples.append(f"{label}: {type(err).__name__}: {str(err)[:200]}")
    else:
        totals.successes += 1
    dt = time.perf_counter() - t0
    if dt > TIME_LIMIT_S:
        totals.failures["over time limit"] += 1
        totals.examples.append(f"{label}: took {dt:.1f} s")


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogateescape")


def _serialise(obj: Any) -> str | None:
    try:
        return dumps(obj)
    except (RecursionError, ValueError, TypeError):
        return None


def fuzz_specs(work: Path, cases: int, seed: int, totals: Totals) -> None:
    """Model spec YAML files (every file in configs/), structure- and text-mutated, plus a billion-laughs file."""
    import yaml

    from medseg.config import load_spec, spec_from_dict

    rng = random.Random(seed)
    bases = [(p.name, p.read_text(), yaml.safe_load(p.read_text())) for p in sorted((REPO / "configs").glob("*.yaml"))]
    work.mkdir(parents=True, exist_ok=True)
    f = work / "spec.yaml"
    _write(f, billion_laughs())
    _check(totals, "spec billion laughs", lambda: load_spec(f))
    for i in range(cases):
        name, text, data = rng.choice(bases)
        if rng.random() < 0.5:
            mutated = mutate_structure(data, rng)
            doc = _serialise(mutated)
            if doc is None:
                _check(totals, f"spec dict {name} #{i}", lambda: spec_from_dict(mutated))
                _check(totals, f"spec mapping {name} #{i}", lambda: load_spec(mutated))
                continue
        else:
            doc = mutate_text(text, rng)
        _write(f, doc)
        _check(totals, f"spec {name} #{i}", lambda: load_spec(f))


def fuzz_bundles(work: Path, cases: int, seed: int, totals: Totals) -> None:
    """MONAI bundle folders: configs/inference.json and metadata.json mutated (models/model.pt present)."""
    from medseg.models.bundle import spec_from_bundle
    from tests.engine.test_bundle import SPLEEN_INFERENCE, SPLEEN_METADATA

    rng = random.Random(seed)
    root = work / "bundle"
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "model.pt").write_bytes(b"not loaded by the translation")
    inf_text, meta_text = json.dumps(SPLEEN_INFERENCE, indent=1), json.dumps(SPLEEN_METADATA, indent=1)
    for i in range(cases):
        which = rng.random()
        inf, meta = inf_text, meta_text
        if which < 0.45:
            inf = _serialise(mutate_structure(SPLEEN_INFERENCE, rng)) or "[" * 100000
        elif which < 0.65:
            inf = mutate_text(inf_text, rng)
        elif which < 0.85:
            meta = _serialise(mutate_structure(SPLEEN_METADATA, rng)) or "[" * 100000
        else:
            meta = mutate_text(meta_text, rng)
        _write(root / "configs" / "inference.json", inf)
        _write(root / "configs" / "metadata.json", meta)
        _check(totals, f"bundle #{i}", lambda: spec_from_bundle(root))


def fuzz_nnunet(work: Path, cases: int, seed: int, totals: Totals) -> None:
    """nnU-Net results folders: plans.json and dataset.json mutated (the fold checkpoints untouched)."""
    from medseg.nnunet.plans import read_model_folder
    import numpy as np

    from perfkit.nnunet_folder import ct_intensity_properties, make_results_folder

    rng = random.Random(seed)
    props = ct_intensity_properties(np.random.default_rng(0).normal(40, 200, 5000))
    folder = make_results_folder(work / "results", labels={"background": 0, "a": 1, "b": 2},
                                 intensity_properties=props, folds=(0,))
    plans_text, ds_text = (folder / "plans.json").read_text(), (folder / "dataset.json").read_text()
    plans, ds = json.loads(plans_text), json.loads(ds_text)
    try:
        for i in range(cases):
            which = rng.random()
            p_doc, d_doc = plans_text, ds_text
            if which < 0.5:
                p_doc = _serialise(mutate_structure(plans, rng)) or "[" * 100000
            elif which < 0.65:
                p_doc = mutate_text(plans_text, rng)
            elif which < 0.9:
                d_doc = _serialise(mutate_structure(ds, rng)) or "[" * 100000
            else:
                d_doc = mutate_text(ds_text, rng)
            _write(folder / "plans.json", p_doc)
            _write(folder / "dataset.json", d_doc)
            _check(totals, f"nnunet #{i}", lambda: read_model_folder(folder))
    finally:
        _write(folder / "plans.json", plans_text)
        _write(folder / "dataset.json", ds_text)


def run(work: Path, cases: int, seed: int = 0) -> dict[str, Totals]:
    """Fuzz every parser with ``cases`` inputs each; returns totals per parser."""
    out = {}
    for name, fn in (("model specs", fuzz_specs), ("bundle configs", fuzz_bundles), ("nnU-Net plans", fuzz_nnunet)):
        totals = Totals()
        fn(work / name.replace(" ", "_"), cases, seed, totals)
        out[name] = totals
    shutil.rmtree(work, ignore_errors=True)
    return out
