"""File-level segmentation: read → predict → write label map + sidecars, all or nothing."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import WriteError

if TYPE_CHECKING:  # pragma: no cover
    from medseg.predictor import Predictor
    from medseg.types import Volume

__all__ = ["SegmentResult", "segment_file", "check_outputs", "is_folder_output", "folder_output"]


@dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment_file` wrote."""

    input: str
    output: Path
    sidecars: dict[str, Path]
    volumes_ml: dict[str, float]
    seconds: float
    model: str
    fingerprint: str
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def is_folder_output(output: str | PathLike[str]) -> bool:
    """``-o`` names a folder: it ends with a path separator or is an existing directory."""
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).expanduser().is_dir()


def folder_output(folder: str | PathLike[str], volume: Volume, sample: bool = False) -> Path:
    """``-o FOLDER``: ``FOLDER/<name>_seg.nii.gz``, ``<name>`` being the case name ``medseg batch`` gives the input.

    The name is the file stem (``t1.nii.gz`` → ``t1``), the series number and description for DICOM
    (``s003_Abdomen``), or ``sample`` for the bundled sample.
    """
    from medseg.batch.naming import OUTPUT_SUFFIX, case_name

    src = volume.source
    if sample:
        name = "sample"
    elif src.format == "dicom":
        name = case_name(src.path or "", (src.series_number, src.series_description, src.series_uid or ""))
    else:
        name = case_name(src.path or "input")
        if "channels" in src.extra:  # an nnU-Net case read from CASE_0000.nii.gz ...: the case is CASE
            from medseg.channels import NNUNET_CHANNEL

            m = NNUNET_CHANNEL.match(Path(src.path or "").name)
            name = case_name(m.group("case")) if m else name
    return Path(folder).expanduser() / f"{name}{OUTPUT_SUFFIX}"


def check_outputs(output: str | PathLike[str], overwrite: bool = False) -> tuple[Path, dict[str, Path]]:
    """Fail before any work if the label map or a sidecar cannot be written."""
    from medseg.io import check_output
    from medseg.io.sidecar import sidecar_paths

    try:
        from medseg.io import check_writable  # suffix check (.nii.gz, .nii, .nrrd, .mha)
    except ImportError:  # pragma: no cover
        check_writable = check_output
    out = check_writable(output, overwrite)
    sides = sidecar_paths(out)
    for p in sides.values():
        check_output(p, overwrite)
    return out, sides


def segment_file(
    input: str | PathLike[str],
    output: str | PathLike[str],
    predictor: Predictor,
    overwrite: bool = False,
    series: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    volume: Volume | None = None,
    irregular: str = "error",
    force: bool = False,
    modality: str = "auto",
) -> SegmentResult:
    """Segment one file/series and write the label map with its sidecars (``.json``, ``.ctbl``, ``.txt``).

    Everything is written to temporary files first and renamed only when all succeeded: a failure
    leaves no output behind.

    Args:
        input: NIfTI/NRRD/MHA file, DICOM file, folder or zip.
        output: label map path (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``); its directory must exist.
        predictor: from :func:`medseg.predictor.load_predictor`.
        overwrite: replace existing outputs.
        series: DICOM SeriesInstanceUID when the input holds several series.
        progress: ``progress(done, total)`` callback for the network windows.
        extra: additional provenance for the JSON sidecar (e.g. CLI arguments).
        volume: the input, already read (and its 4D volume chosen); ``input`` then only names it.
        irregular: ``error`` or ``resample`` for irregular DICOM slice grids.
        force: run even when the scan's modality is not the model's (the mismatch becomes a warning).
        modality: ``auto``, ``ct`` or ``mr`` (see :mod:`medseg.modality`).

    Raises:
        InputError: the scan does not fit the model (modality, channels), before inference.
    """
    from medseg import __version__
    from medseg.input_checks import check_channels, check_modality, result_warnings
    from medseg.io import atomic_output, read, write
    from medseg.io.sidecar import render_sidecars
    from medseg.modality import resolve_modality
    from medseg.postprocess import label_volumes_ml

    t0 = time.perf_counter()
    out, sides = check_outputs(output, overwrite)
    if volume is None:
        volume = read(input, series=series, irregular=irregular)
    check_channels(volume, predictor.spec.input.channels, predictor.spec.name)
    warnings = [w for w in [check_modality(volume, predictor.spec, force=force, modality=modality)] if w]
    t_read = time.perf_counter()
    labels: Volume = predictor.predict(volume, progress=progress)
    t_pred = time.perf_counter()
    volumes = label_volumes_ml(labels)
    warnings += result_warnings(predictor.spec.name, volumes)
    provenance = {
        "input": str(input),
        "series_uid": volume.source.series_uid,
        "model": predictor.spec.name,
        "fingerprint": predictor.fingerprint,
        "device": str(predictor.device),
        "autocast": str(predictor.autocast_dtype).replace("torch.", "") if predictor.autocast_dtype else "float32",
        "medseg_version": __version__,
        "input_modality": resolve_modality(volume, modality).as_dict(),
        "warnings": warnings,
        "spec": predictor.spec.to_dict(),
    }
    if extra:
        provenance["arguments"] = extra
    texts = render_sidecars(labels, out.name, volumes, provenance)
    with contextlib.ExitStack() as stack:
        tmp_label = stack.enter_context(atomic_output(out, overwrite=overwrite))
        write(labels, tmp_label, overwrite=True)
        for key, path in sides.items():
            tmp = stack.enter_context(atomic_output(path, overwrite=overwrite))
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(texts[key])
                f.flush()
                os.fsync(f.fileno())
    if not out.is_file():  # pragma: no cover - atomic_output guarantees this
        raise WriteError("label map was not written", out)
    t_end = time.perf_counter()
    return SegmentResult(
        input=str(input),
        output=out,
        sidecars=sides,
        volumes_ml=volumes,
        seconds=t_end - t0,
        model=predictor.spec.name,
        fingerprint=predictor.fingerprint,
        timings={"read": t_read - t0, "predict": t_pred - t_read, "write": t_end - t_pred},
        warnings=tuple(warnings),
    )
