"""The batch's summary table (CSV, one row per case) and provenance file (JSON).

CSV columns: ``input, series, output, status, seconds, volume_ml:<label>..., min_quality, min_quality_label,
runtime, load_s, read_s, preprocess_s, network_s, export_s, write_s, warnings, error``. One row per input
found: ``status`` is ``ok`` (segmented in this run), ``skipped`` (finished by an earlier run with the same
model and settings, its volumes from the completion record; or not a case: not an image, hidden, a symlink
leaving INPUT_DIR that was not followed) or ``failed``. ``error`` gives the one-line reason of ``failed`` and
``skipped`` rows, and notes on ``ok`` rows (e.g. read through a followed symlink). ``min_quality`` is the
lowest per-structure quality score of the case's label map (see README "Quality score"; 0..1, higher = more
confident) and ``min_quality_label`` its structure: sorting by it lists the doubtful cases first.
``warnings`` are the case's warnings (``; ``-separated): modality run with ``--force``, nothing found, a
volume outside the spec's plausible range. Both come from the case's JSON sidecar, so resumed (``skipped``)
cases keep them.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "CaseStatus",
    "CaseResult",
    "SUMMARY_NAME",
    "PROVENANCE_NAME",
    "summary_columns",
    "sidecar_notes",
    "summary_text",
    "write_summary",
    "read_summary",
    "write_provenance",
]

SUMMARY_NAME = "batch_summary.csv"
PROVENANCE_NAME = "batch_provenance.json"
VOLUME_PREFIX = "volume_ml:"


class CaseStatus(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class CaseResult:
    """Outcome of one case; ``volumes_ml`` maps label name → mL, ``seconds`` is wall time for the case."""

    key: str
    input: str
    series: str | None
    output: str
    status: CaseStatus
    seconds: float = 0.0
    volumes_ml: dict[str, float] = field(default_factory=dict)
    error: str = ""
    warnings: tuple[str, ...] = ()
    quality: dict[str, float] = field(default_factory=dict)  # label name -> quality score (0..1)
    runtime: str = ""  # the sidecar's runtime name (torch, openvino)
    timings: dict[str, float] = field(default_factory=dict)  # the sidecar's stage seconds


#: The sidecar's stage timings, as summary columns ``<stage>_s``.
STAGES = ("load", "read", "preprocess", "network", "export", "write")


def sidecar_notes(label_map: Path) -> dict[str, Any]:
    """What a label map's JSON sidecar records for the summary: ``warnings``, ``quality`` ({label: score}),
    ``runtime`` (its name) and ``timings`` ({stage: seconds}); empty values when it has none."""
    from medseg.io.sidecar import sidecar_paths

    notes: dict[str, Any] = {"warnings": (), "quality": {}, "runtime": "", "timings": {}}
    try:
        doc = json.loads(sidecar_paths(Path(label_map))["json"].read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return notes
    if not isinstance(doc, dict):
        return notes
    prov = doc.get("provenance", doc)
    warns = prov.get("warnings") if isinstance(prov, dict) else None
    notes["warnings"] = tuple(str(w) for w in warns or ())
    for lab in doc.get("labels") or ():
        if isinstance(lab, dict) and isinstance(lab.get("quality"), (int, float)):
            notes["quality"][str(lab.get("name"))] = float(lab["quality"])
    runtime = doc.get("runtime")
    if isinstance(runtime, dict) and isinstance(runtime.get("name"), str):
        notes["runtime"] = runtime["name"]
    timings = doc.get("timings")
    if isinstance(timings, dict):
        notes["timings"] = {k: float(v) for k, v in timings.items() if k in STAGES and isinstance(v, (int, float))}
    return notes


def with_sidecar_notes(results: Iterable[CaseResult], output_dir: Path) -> list[CaseResult]:
    """``results`` with warnings, quality scores, runtime and stage timings read from the sidecars of their
    written label maps."""
    out = []
    for res in results:
        if CaseStatus(res.status) is not CaseStatus.FAILED and res.output and not res.warnings and not res.quality:
            notes = sidecar_notes(Path(output_dir) / res.output)
            res.warnings, res.quality = notes["warnings"], notes["quality"]
            res.runtime, res.timings = notes["runtime"], notes["timings"]
        out.append(res)
    return out


def summary_columns(label_names: Sequence[str]) -> list[str]:
    return ["input", "series", "output", "status", "seconds", *[VOLUME_PREFIX + n for n in label_names],
            "min_quality", "min_quality_label", "runtime", *[f"{k}_s" for k in STAGES], "warnings", "error"]


def _row(result: CaseResult, label_names: Sequence[str]) -> list[str]:
    vols = [f"{result.volumes_ml[n]:.4f}" if n in result.volumes_ml else "" for n in label_names]
    error = " ".join(result.error.split())  # one physical line per row
    worst = min(result.quality.items(), key=lambda kv: (kv[1], kv[0])) if result.quality else None
    return [
        result.input,
        result.series or "",
        result.output,
        CaseStatus(result.status).value,
        f"{result.seconds:.3f}",
        *vols,
        f"{worst[1]:.4f}" if worst else "",
        worst[0] if worst else "",
        result.runtime,
        *[f"{result.timings[k]:.3f}" if k in result.timings else "" for k in STAGES],
        "; ".join(" ".join(w.split()) for w in result.warnings),
        error,
    ]


def summary_text(results: Iterable[CaseResult], label_names: Sequence[str]) -> str:
    """The CSV text for ``results`` (in the given order)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(summary_columns(label_names))
    for res in results:
        writer.writerow(_row(res, label_names))
    return buf.getvalue()


def write_summary(path: Path, results: Iterable[CaseResult], label_names: Sequence[str]) -> None:
    """Write the summary CSV atomically (replacing an earlier summary of this output folder); warnings and
    quality scores of written cases are read from their sidecars (:func:`with_sidecar_notes`)."""
    from medseg.batch.state import write_bytes_atomic

    results = with_sidecar_notes(results, Path(path).parent)
    write_bytes_atomic(Path(path), summary_text(results, label_names).encode("utf-8"))


def read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of a summary CSV as dicts (column → text)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_provenance(
    path: Path,
    *,
    model: dict[str, Any],
    settings: dict[str, Any],
    command: Sequence[str],
    counts: dict[str, int],
    started: float,
    finished: float,
    fingerprint: str,
    stage_seconds: dict[str, float] | None = None,
) -> None:
    """Write ``batch_provenance.json``: medseg version, model, settings, command, host, timing, counts.

    ``stage_seconds``: time in read / predict / write summed over cases, and the pipeline's wall time.
    """
    from medseg import __version__
    from medseg.batch.state import write_bytes_atomic

    doc = {
        "medseg_version": __version__,
        "command": list(command),
        "model": model,
        "settings": settings,
        "run_fingerprint": fingerprint,
        "counts": counts,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
        "seconds": round(finished - started, 3),
        "stage_seconds": stage_seconds or {},
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": _package_versions(),
    }
    write_bytes_atomic(Path(path), json.dumps(doc, indent=2, default=str).encode("utf-8"))


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("torch", "monai", "numpy", "nibabel", "pydicom", "SimpleITK", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
