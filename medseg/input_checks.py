"""Does this input fit this model? Checks that run before inference, and a plausibility look after it.

* :func:`select_volume` picks one volume of a 4D scan (``--volume N`` or ``--volume mean``);
  :func:`check_channels` refuses a 4D scan for a one-channel model before any model loads.
* :func:`check_modality` compares the model's modality with the scan's (DICOM Modality, else the one
  intensity rule in :mod:`medseg.modality`) and refuses a mismatch unless ``--force`` is given.
* :func:`result_warnings` flags results a reviewer should look at first: nothing found, or a structure whose
  volume is outside the range its spec declares plausible (``labels[i].volume_ml``).

Every message is in command-line syntax (``--volume``, ``--force``), since that is where users meet it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import InputError
from medseg.modality import clearly_not_hu, resolve_modality
from medseg.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    from medseg.config import ModelSpec

__all__ = ["VOLUME_MEAN", "parse_volume_choice", "select_volume", "check_channels", "check_modality", "result_warnings"]

#: ``--volume mean``: the average over the 4th axis (e.g. repeated acquisitions of the same contrast)
VOLUME_MEAN = "mean"

# spec modality -> the DICOM Modality values that satisfy it
_DICOM_OF = {"CT": {"CT"}, "MR": {"MR"}, "PET": {"PT"}, "US": {"US"}}


def parse_volume_choice(text: str | int | None) -> int | str | None:
    """``--volume`` value: a 0-based index, ``"mean"`` or ``None`` (not given)."""
    if text is None or isinstance(text, int):
        if isinstance(text, int) and text < 0:
            raise ValueError(f"--volume must be >= 0 or 'mean', got {text}.")
        return text
    t = str(text).strip().lower()
    if t == VOLUME_MEAN:
        return VOLUME_MEAN
    try:
        value = int(t)
    except ValueError:
        raise ValueError(f"--volume must be a 0-based volume number or 'mean', got {text!r}.") from None
    if value < 0:
        raise ValueError(f"--volume must be >= 0 or 'mean', got {value}.")
    return value


def select_volume(volume: Volume, choice: int | str | None) -> Volume:
    """One 3D volume of a 4D scan.

    Args:
        volume: ``(I, J, K)`` or ``(I, J, K, T)``.
        choice: volume number (0-based, as ``medseg info`` lists them), ``"mean"``, or ``None`` to keep
            the volume as it is.

    Raises:
        InputError: the number is out of range, or a choice was given for a 3D scan other than 0/mean.
    """
    if choice is None:
        return volume
    arr = volume.array
    path = volume.source.path
    n = arr.shape[3] if arr.ndim == 4 else 1
    if choice == VOLUME_MEAN:
        if arr.ndim == 3:
            return volume
        return volume.replace(array=arr.mean(axis=3, dtype=np.float32))
    if not isinstance(choice, (int, np.integer)) or isinstance(choice, bool):
        raise TypeError(f"volume choice must be an int or 'mean', got {choice!r}.")
    if not 0 <= int(choice) < n:
        raise InputError(f"--volume {choice} is out of range: this scan has {n} volume(s) (0..{n - 1})", path)
    if arr.ndim == 3:
        return volume
    return volume.replace(array=np.ascontiguousarray(arr[..., int(choice)]))


def check_channels(volume: Volume, channels: int, model: str) -> None:
    """Refuse a 4D scan for a model that takes a different number of channels (before any model loads).

    A 4D scan whose 4th axis has exactly ``channels`` volumes is a ready multi-channel stack.
    """
    arr = volume.array
    if arr.ndim != 4 or arr.shape[3] == channels:
        return
    n = arr.shape[3]
    if channels == 1:
        raise InputError(
            f"this scan is 4D with {n} volumes and model {model} takes one; choose one with --volume N "
            f"(0..{n - 1}, as `medseg info` lists them) or --volume mean",
            volume.source.path,
        )
    raise InputError(
        f"this scan is 4D with {n} volumes and model {model} takes {channels} channels; give a {channels}-volume "
        "stack, or choose one volume with --volume N",
        volume.source.path,
    )


def check_modality(volume: Volume, spec: ModelSpec, force: bool = False, modality: str = "auto") -> str | None:
    """Refuse a scan whose modality is not the model's (``--force`` turns the error into a warning).

    Args:
        volume: the scan (its DICOM Modality, or its intensities, decide; see :mod:`medseg.modality`).
        spec: the model; ``spec.input.modality`` ``"any"`` accepts everything.
        force: run anyway; the mismatch is returned as a warning instead.
        modality: ``--modality`` override (``auto``, ``ct``, ``mr``).

    Returns:
        ``None`` when the scan fits, else (with ``force``) the warning text.

    Raises:
        InputError: the modalities differ and ``force`` is false.
    """
    wanted = (spec.input.modality or "any").upper()
    if wanted == "ANY":
        return None
    decision = resolve_modality(volume, modality)
    accepted = _DICOM_OF.get(wanted, {wanted})
    if decision.how == "intensity" and wanted == "CT":
        # A CT cropped inside the body has no air, so "not recognised as CT" is no proof: refuse only
        # intensities that cannot be Hounsfield units at all.
        fits = not clearly_not_hu(volume.array)
    elif decision.how == "intensity":
        fits = not decision.is_ct  # a non-CT model refuses what is recognised as CT (air and bone in HU)
    else:
        fits = decision.modality in accepted
    if fits:
        return None
    how = {"dicom": "DICOM Modality", "intensity": "intensities", "user": "--modality"}[decision.how]
    if decision.how == "intensity" and wanted == "CT":
        seen = "not CT (intensities are not Hounsfield units: no fat, lung or air below -50)"
    elif decision.how == "intensity":
        seen = "CT (intensities look like Hounsfield units)"
    else:
        seen = f"{decision.modality} (from {how})"
    message = f"model {spec.name} expects {wanted}, this scan is {seen}"
    if force:
        return message + "; run anyway (--force)"
    hint = "pass --force to run anyway"
    if decision.how == "intensity":
        hint = "pass --modality ct|mr if the intensity test is wrong, or --force to run anyway"
    raise InputError(f"{message}; {hint}", volume.source.path)


def result_warnings(
    model: str, volumes_ml: Mapping[str, float], expected_ml: Mapping[str, tuple[float, float]] | None = None
) -> list[str]:
    """Warnings about a result a reviewer should see (never errors).

    Args:
        model: the model's name (for the message).
        volumes_ml: volume of each structure found, by label name.
        expected_ml: plausible ``(low, high)`` volume in mL by label name (a spec's ``labels[i].volume_ml``);
            a structure found outside it is flagged. Absent structures are not (a scan may not show them);
            a model that found nothing at all is.

    >>> result_warnings("brain-mri", {"brain": 13123.8}, {"brain": (800.0, 2200.0)})
    ['brain: 13123.8 mL is outside the plausible 800-2200 mL of model brain-mri: check the scan and the result']
    """
    if not volumes_ml or not any(v > 0 for v in volumes_ml.values()):
        return [f"model {model} found nothing in this scan: check that the scan shows what the model segments"]
    out = []
    for name, (lo, hi) in (expected_ml or {}).items():
        v = volumes_ml.get(name, 0.0)
        if v > 0 and not lo <= v <= hi:
            out.append(f"{name}: {v:.1f} mL is outside the plausible {lo:g}-{hi:g} mL of model {model}: "
                       "check the scan and the result")
    return out
