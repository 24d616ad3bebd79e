"""What configures a batch run: :class:`BatchSettings`, built once (by ``medseg batch`` from its options),
sent to every worker process or Ray actor, and recorded in ``batch_provenance.json``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from medseg.pipeline import PREDICTOR_OPTIONS, OutputFormat, parse_formats

if TYPE_CHECKING:  # pragma: no cover
    from medseg.batch.discover import CaseFilter

__all__ = ["BatchSettings", "OUTPUT_OPTIONS"]

#: fields that change a case's outputs beyond the label map (recorded in the resume fingerprint when set)
OUTPUT_OPTIONS = ("formats", "roi", "split", "stats", "seg_type")


def _comparable(name: str, value: Any) -> Any:
    """An output option as the resume fingerprint records it (formats besides NIfTI, sorted names)."""
    if name == "formats":
        return sorted(set(value) - {"nifti"})
    return sorted(value) if name == "roi" else value


@dataclass(frozen=True)
class BatchSettings:
    """Everything that configures a batch run.

    Args:
        model: registry name, spec YAML, bundle folder (see :func:`medseg.predictor.load_predictor`).
        device: ``auto``/``cpu``/``cuda``/``cuda:N``/``mps``.
        precision: ``auto``/``float32``/``bfloat16``/``float16`` (``--precision``).
        overlap: sliding-window overlap override in ``[0, 1)``; ``None`` keeps the spec's.
        tta: test-time flips on/off; ``None`` keeps the spec's.
        threads: torch CPU threads (``None``: torch's default).
        irregular: ``error`` or ``resample`` for irregular DICOM slice grids.
        force: segment cases whose modality is not the model's (else such a case fails with the reason).
        modality: ``auto``, ``ct`` or ``mr``: the cases' modality (see :mod:`medseg.modality`).
        overwrite: replace outputs this tool did not write, or wrote with another model/settings.
        read_ahead: cases read ahead of inference (queue bound, >= 1) in the in-process pipeline
            (:func:`run_local`); the default isolated run reads each case in its worker process.
        write_queue: results waiting for the writer (queue bound, >= 1), in-process pipeline only.
        formats: outputs besides the NIfTI label map (``"dicom-seg"``, ``"rtstruct"``; DICOM cases only).
        roi: keep only these label names.
        split: also write ``<output stem>/<label>.nii.gz`` per label.
        stats: also write per-label statistics (``<output stem>.stats.json``; all in ``batch_stats.csv``).
        seg_type: DICOM SEG type, ``"binary"`` or ``"fractional"``.
        trust_model_code: load TorchScript whose sha256 nothing pins (``--trust-model-code``).
        runtime: ``torch`` | ``openvino`` | ``auto`` (``--runtime``; :mod:`medseg.engine.backends`).
        read_timeout: seconds allowed to read one case (``None``: ``$MEDSEG_READ_TIMEOUT`` or 60).
        case_timeout: seconds allowed for one whole case (``None``: ``$MEDSEG_CASE_TIMEOUT`` or 1800).
        follow_outside_links: read inputs reached through symlinks that leave INPUT_DIR (reported either way).
        include, exclude: ``--include``/``--exclude`` globs (see :class:`medseg.batch.discover.CaseFilter`).
        skip_labels: skip image files that are label maps (``--keep-label-files`` turns it off).
    """

    model: str = "brain-mri"
    device: str = "auto"
    precision: str = "auto"
    overlap: float | None = None
    tta: bool | None = None
    threads: int | None = None
    irregular: str = "error"
    force: bool = False
    modality: str = "auto"
    overwrite: bool = False
    read_ahead: int = 1
    write_queue: int = 2
    formats: tuple[str, ...] = ("nifti",)
    roi: tuple[str, ...] = ()
    split: bool = False
    stats: bool = False
    seg_type: str = "binary"
    trust_model_code: bool = False
    runtime: str = "torch"
    read_timeout: float | None = None
    case_timeout: float | None = None
    follow_outside_links: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_labels: bool = True

    def __post_init__(self) -> None:
        for name in ("read_timeout", "case_timeout"):
            value = getattr(self, name)
            if value is not None and not float(value) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value}.")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}.")
        if self.irregular not in ("error", "resample"):
            raise ValueError(f"irregular must be 'error' or 'resample', got {self.irregular!r}.")
        if int(self.read_ahead) < 1 or int(self.write_queue) < 1:
            raise ValueError(f"read_ahead and write_queue must be >= 1, got {self.read_ahead}, {self.write_queue}.")

    def predictor_kwargs(self) -> dict[str, Any]:
        """The :func:`medseg.predictor.load_predictor` keywords of this batch (:data:`PREDICTOR_OPTIONS`).

        ``overlap`` is validated where the predictor is configured (``medseg.engine``'s ``RunOptions`` owns
        it; the CLI's ``--overlap`` type rejects bad values at parse time), not here.
        """
        return {name: getattr(self, name) for name in PREDICTOR_OPTIONS}

    def case_filter(self) -> CaseFilter:
        """The ``--include``/``--exclude``/label-file rule of this batch."""
        from medseg.batch.discover import CaseFilter

        return CaseFilter(tuple(self.include), tuple(self.exclude), self.skip_labels)

    def output_settings(self) -> dict[str, Any]:
        """Settings that change outputs beyond the predictor's own fingerprint."""
        out: dict[str, Any] = {"irregular": self.irregular, "format": "nifti-gz"}
        defaults = {f.name: f.default for f in fields(self)}
        for name in OUTPUT_OPTIONS:  # only what differs from the default: unchanged fingerprint by default
            value = _comparable(name, getattr(self, name))
            if value != _comparable(name, defaults[name]):
                out[name] = value
        return out

    def output_formats(self) -> tuple[OutputFormat, ...]:
        """:attr:`formats` parsed (the NIfTI label map first)."""
        return parse_formats(list(self.formats))
