"""Which modality a volume is, and the intensity window it is shown with: one rule each, shared by SAM's
intensity preparation, model input checks and napari (so SAM sees the contrast the user sees).

The DICOM ``Modality`` wins when present. Without it (NIfTI, NRRD, MetaImage) one intensity test decides
whether values look like Hounsfield units: the volume's 1st percentile lies within 150 of -1000 (air around
the patient) and its maximum is above 300 (bone, contrast). MR intensities are arbitrary positive numbers
and fail the first condition; a CT cropped inside the body (no air) fails it too and is then treated as
"not CT", so callers that know better pass an explicit modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from medseg.types import Volume

__all__ = [
    "Modality", "ModalityDecision", "looks_like_ct", "clearly_not_hu", "resolve_modality", "CT_AIR_HU",
    "CT_AIR_TOLERANCE", "CT_MAX_ABOVE", "NOT_HU_P1", "DEFAULT_CT_WINDOW", "DEFAULT_PERCENTILES", "IntensityWindow",
    "default_window",
]

CT_AIR_HU = -1000.0
CT_AIR_TOLERANCE = 150.0
CT_MAX_ABOVE = 300.0
#: a 1st percentile at or above this is no CT in Hounsfield units (no fat, lung or air at all)
NOT_HU_P1 = -50.0
_SAMPLE_VOXELS = 2_000_000
#: CT soft-tissue window ``(width, level)`` in HU: what CT volumes are shown with and what SAM sees.
DEFAULT_CT_WINDOW = (400.0, 40.0)
#: percentiles of the non-zero voxels that bound the window of any other modality.
DEFAULT_PERCENTILES = (0.5, 99.5)


class Modality(str, Enum):
    """``--modality`` choices: ``auto`` decides from DICOM Modality, else from the intensity test."""

    AUTO = "auto"
    CT = "ct"
    MR = "mr"


@dataclass(frozen=True)
class ModalityDecision:
    """The modality used and how it was decided (``"dicom"``, ``"intensity"`` or ``"user"``)."""

    modality: str  # "CT", "MR" or another DICOM Modality value ("PT", ...)
    how: str

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"

    def as_dict(self) -> dict[str, str]:
        return {"modality": self.modality, "decided_by": self.how}


def _sample(array: np.ndarray) -> np.ndarray:
    flat = np.asarray(array).reshape(-1)
    step = max(1, flat.size // _SAMPLE_VOXELS)
    return flat[::step]


def looks_like_ct(array: np.ndarray) -> bool:
    """True when intensities look like Hounsfield units (1st percentile ~ -1000, maximum > 300).

    The test reads a regular subsample of at most 2 M voxels, so it is bounded on any volume.

    >>> import numpy as np
    >>> looks_like_ct(np.r_[np.full(50, -1000.0), np.linspace(-100, 1200, 50)])
    True
    >>> looks_like_ct(np.linspace(0, 800, 100))
    False
    """
    stats = _p1_and_max(array)
    if stats is None:
        return False
    p1, top = stats
    return abs(p1 - CT_AIR_HU) <= CT_AIR_TOLERANCE and top > CT_MAX_ABOVE


def _p1_and_max(array: np.ndarray) -> tuple[float, float] | None:
    a = np.asarray(array)
    if a.size == 0 or not np.issubdtype(a.dtype, np.number):
        return None
    sample = _sample(a).astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    return float(np.percentile(sample, 1.0)), float(sample.max())


def clearly_not_hu(array: np.ndarray) -> bool:
    """True when intensities cannot be a CT in Hounsfield units: the 1st percentile is at or above -50.

    Any CT of a body holds fat (about -100 HU), lung or air; MR, PET and other non-HU images are (nearly)
    non-negative. A CT cropped inside the body fails :func:`looks_like_ct` (no air) but not this test, so
    callers use this one to *refuse* a scan for a CT model, and :func:`looks_like_ct` to *recognise* CT.
    """
    stats = _p1_and_max(array)
    return stats is not None and stats[0] >= NOT_HU_P1


def resolve_modality(volume: Volume, override: str | Modality = Modality.AUTO) -> ModalityDecision:
    """The modality of ``volume``: the user's choice, else DICOM Modality, else :func:`looks_like_ct`.

    Args:
        volume: the scan.
        override: ``"auto"`` (default), ``"ct"`` or ``"mr"``.

    Raises:
        ValueError: ``override`` is not one of the choices.
    """
    try:
        choice = override if isinstance(override, Modality) else Modality(str(override).lower())
    except ValueError:
        raise ValueError(f"modality must be one of auto, ct, mr; got {override!r}.") from None
    if choice is not Modality.AUTO:
        return ModalityDecision(choice.value.upper(), "user")
    dicom = (volume.source.modality or "").strip().upper()
    if dicom:
        return ModalityDecision(dicom, "dicom")
    return ModalityDecision("CT" if looks_like_ct(volume.array) else "MR", "intensity")


@dataclass(frozen=True)
class IntensityWindow:
    """An intensity window ``low..high`` and how it was chosen.

    ``kind`` is ``"window"`` (a CT width/level, then ``width_level`` is set) or ``"percentile"`` (the
    percentiles of the non-zero voxels). ``low == high == 0`` when a volume has no non-zero voxel.
    """

    low: float
    high: float
    kind: str
    decision: ModalityDecision
    width_level: tuple[float, float] | None = None


def default_window(
    volume: Volume, modality: str | Modality = Modality.AUTO,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> IntensityWindow:
    """The one default intensity window of a volume: napari's display contrast and SAM's model input.

    CT (by :func:`resolve_modality`): the soft-tissue window W400/L40 HU, i.e. ``(-160, 240)``. Any other
    modality: the ``percentiles`` (default 0.5 and 99.5) of the non-zero voxels, over the whole volume
    (exact, no subsampling: LiteMedSAM's reference preprocessing does the same). A 4D ``(I, J, K, T)``
    volume uses its first time point, as SAM does.

    Args:
        volume: the scan.
        modality: ``auto`` (default), ``ct`` or ``mr``.
        percentiles: ``(low, high)`` with ``0 <= low < high <= 100``.

    Raises:
        ValueError: a bad ``modality`` or ``percentiles``.

    >>> from medseg.types import Geometry, SourceInfo
    >>> ct = Volume(np.zeros((2, 2, 2)), Geometry(np.eye(4), (2, 2, 2)), SourceInfo(modality="CT"))
    >>> w = default_window(ct)
    >>> (w.low, w.high, w.kind)
    (-160.0, 240.0, 'window')
    """
    lo_p, hi_p = (float(v) for v in percentiles)
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    decision = resolve_modality(volume, modality)
    if decision.is_ct:
        width, level = DEFAULT_CT_WINDOW
        return IntensityWindow(level - width / 2.0, level + width / 2.0, "window", decision, (width, level))
    a = np.asarray(volume.array)
    if a.ndim == 4:
        a = a[..., 0]
    nz = a[a != 0]
    if nz.size == 0:
        return IntensityWindow(0.0, 0.0, "percentile", decision)
    lo, hi = (float(v) for v in np.percentile(nz, [lo_p, hi_p]))
    return IntensityWindow(lo, hi, "percentile", decision)
