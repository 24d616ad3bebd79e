"""One batch case on the worker side (an isolated worker process or a Ray actor): read it, then segment and
write it through :mod:`medseg.pipeline`; errors become one summary line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import MedsegError, ReadError

if TYPE_CHECKING:  # pragma: no cover
    from medseg.batch.discover import Case
    from medseg.batch.settings import BatchSettings
    from medseg.types import Volume

__all__ = ["read_case", "segment_case", "format_error", "is_oom", "free_accelerator_memory"]

log = logging.getLogger("medseg.batch")


def read_case(case: Case, settings: BatchSettings) -> Volume:
    """Read a case (:func:`medseg.pipeline.read_case`): a problem found at discovery fails it unread; an
    nnU-Net case's channel files are read and stacked in channel order (:func:`medseg.channels.stack_channels`).

    Raises:
        ReadError: the case's problem, an unreadable input, or DICOM output formats for a non-DICOM case.
    """
    from medseg.pipeline import read_case as read

    if case.problem:
        raise ReadError(case.problem, case.path)
    if case.channel_files:
        from medseg.channels import stack_channels

        return stack_channels([(p.name, read(p, None, settings.irregular, settings.output_formats()))
                               for p in case.channel_files])
    return read(case.path, case.series, settings.irregular, settings.output_formats())


def segment_case(predictor: Any, case: Case, volume: Volume, output: Path, overwrite: bool,
                 settings: BatchSettings) -> dict[str, float]:
    """Segment a read case and write every output (:func:`medseg.pipeline.segment_file`); the output's
    folders are created only once its labels exist. Returns the label volumes in mL."""
    from medseg.pipeline import segment_file

    result = segment_file(
        case.path, output, predictor, overwrite=overwrite, series=case.series, formats=settings.output_formats(),
        roi=settings.roi, split=settings.split, stats=settings.stats, seg_type=settings.seg_type, volume=volume,
        irregular=settings.irregular, force=settings.force, modality=settings.modality, make_parents=True,
    )
    for warning in result.input_warnings:
        log.warning("%s: %s", volume.source.path, warning)
    return result.volumes_ml


def format_error(err: BaseException) -> str:
    """One line for the summary: medseg errors as ``path: problem``, out-of-memory named as such."""
    if is_oom(err):
        return f"out of memory: {type(err).__name__}: {err}".strip()
    if isinstance(err, MedsegError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def is_oom(err: BaseException) -> bool:
    """``err`` is an out-of-memory error (host or accelerator)."""
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_types = tuple(
        t for t in (getattr(torch, "OutOfMemoryError", None), getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)) if t
    )
    if oom_types and isinstance(err, oom_types):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def free_accelerator_memory() -> None:
    """Return cached accelerator memory after an out-of-memory case (no-op without torch/CUDA)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
