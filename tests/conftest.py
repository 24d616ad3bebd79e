"""Shared fixtures: the real data under ../shared/data, deterministic single-thread torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # steady timings on a shared 2-core machine
# CLI runs in tests compare outputs with references: they pin the torch runtime (`--runtime` defaults to
# $MEDSEG_RUNTIME, else auto = OpenVINO on the CPU); tests/runtime choose their runtime explicitly.
os.environ.setdefault("MEDSEG_RUNTIME", "torch")

REPO = Path(__file__).resolve().parents[1]
# MEDSEG_TEST_DATA points the real-data tests at another copy of shared/data (see its MANIFEST.md).
SHARED_DATA = Path(os.environ.get("MEDSEG_TEST_DATA") or (REPO / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$MEDSEG_TEST_DATA`` or ``<repo>/../shared/data``; skips the test when the real data set is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set MEDSEG_TEST_DATA to another copy)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _isolated_trust_records(tmp_path_factory, monkeypatch):
    """Each test gets its own trust-record file (``medseg.models.trust``), never the user's ~/.config one."""
    monkeypatch.setenv("MEDSEG_TRUST_FILE", str(tmp_path_factory.mktemp("trust") / "trusted_models.json"))
