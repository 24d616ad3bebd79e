"""Bundled sample data (offline).

``sample_brain_t1.nii.gz``: a real T1-weighted brain MRI (256x256x25, 0.78x0.78x6.5 mm), converted
losslessly with SimpleITK from pyradiomics' ``brain1_image.nrrd`` (BSD-3-Clause, see
``LICENSE-pyradiomics.txt``).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

SAMPLES: dict[str, str] = {"brain-t1": "sample_brain_t1.nii.gz"}


def sample_path(name: str = "brain-t1") -> Path:
    """Path of a bundled sample scan; ``name`` is one of :data:`SAMPLES`."""
    try:
        return _HERE / SAMPLES[name]
    except KeyError:
        raise ValueError(f"unknown sample {name!r}; choose one of {sorted(SAMPLES)}") from None
