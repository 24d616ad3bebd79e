"""File-level segmentation: read → predict → write label map + sidecars, all or nothing."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import MedsegError, ReadError, WriteError

if TYPE_CHECKING:  # pragma: no cover
    from medseg.predictor import Predictor
    from medseg.types import Volume

__all__ = ["SegmentResult", "segment_file", "check_outputs", "OutputFormat", "parse_formats", "OutputPlan",
           "plan_outputs", "write_outputs", "select_labels", "algorithm_info", "is_folder_output", "folder_output"]


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
    extra_outputs: dict[str, Path] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def is_folder_output(output: str | PathLike[str]) -> bool:
    """``-o`` names a folder: it ends with a path separator or is an existing directory."""
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).expanduser().is_dir()


def folder_output(folder: str | PathLike[str], volume: Volume, sample: bool = False) -> Path:
    """``-o FOLDER``: ``FOLDER/<name>_seg.nii.gz``, ``<name>`` being the case name ``medseg batch`` gives the input.

    The name is the file stem (``t1.nii.gz`` → ``t1``), the series number and description for DICOM
    (``s003_Abdomen``), the case of an nnU-Net file set (``case7_0000.nii.gz`` → ``case7``), or ``sample``
    for the bundled sample.
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


class OutputFormat(str, Enum):
    """Output formats of ``--format`` (the NIfTI label map is always written)."""

    NIFTI = "nifti"
    DICOM_SEG = "dicom-seg"
    RTSTRUCT = "rtstruct"


def parse_formats(value: str | list[str] | tuple[str, ...] | None) -> tuple[OutputFormat, ...]:
    """``"nifti,dicom-seg"`` (or a list) -> formats; ``None`` -> ``(NIFTI,)``. NIfTI is always included.

    Raises:
        ValueError: an unknown format, naming the valid ones.
    """
    if value is None:
        return (OutputFormat.NIFTI,)
    items = value.split(",") if isinstance(value, str) else [x for v in value for x in str(v).split(",")]
    out = [OutputFormat.NIFTI]
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        try:
            fmt = OutputFormat(item)
        except ValueError:
            choices = ", ".join(f.value for f in OutputFormat)
            raise ValueError(f"unknown output format {item!r}; choose from {choices} (comma-separated).") from None
        if fmt not in out:
            out.append(fmt)
    return tuple(out)


@dataclass(frozen=True)
class OutputPlan:
    """Every file one case writes: the label map, its sidecars and the optional extras.

    For ``-o OUT.nii.gz``: ``OUT.json/.ctbl/.txt`` (sidecars), ``OUT.seg.dcm`` (DICOM SEG),
    ``OUT.rtstruct.dcm`` (RTSTRUCT), ``OUT.stats.json`` (statistics) and ``OUT/<label>.nii.gz`` (split).
    """

    label_map: Path
    sidecars: dict[str, Path]
    formats: tuple[OutputFormat, ...] = (OutputFormat.NIFTI,)
    stats: Path | None = None
    split_dir: Path | None = None

    @property
    def seg(self) -> Path | None:
        return _with_suffix(self.label_map, ".seg.dcm") if OutputFormat.DICOM_SEG in self.formats else None

    @property
    def rtstruct(self) -> Path | None:
        return _with_suffix(self.label_map, ".rtstruct.dcm") if OutputFormat.RTSTRUCT in self.formats else None

    @property
    def dicom(self) -> bool:
        return self.seg is not None or self.rtstruct is not None

    def files(self) -> list[Path]:
        """Every single file of the plan (split files excluded: they depend on the labels)."""
        out = [self.label_map, *self.sidecars.values()]
        out += [p for p in (self.seg, self.rtstruct, self.stats) if p is not None]
        return out


def _stem(path: Path) -> str:
    from medseg.io.atomic import full_suffix

    suffix = full_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(_stem(path) + suffix)


def stats_path(label_map: str | PathLike[str]) -> Path:
    """``OUT.stats.json`` for ``OUT.nii.gz``."""
    return _with_suffix(Path(label_map), ".stats.json")


def split_path(split_dir: Path, name: str) -> Path:
    """``split_dir/<name>.nii.gz`` with the label name made safe as a file name."""
    import re

    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "label"
    return split_dir / f"{safe}.nii.gz"


def plan_outputs(
    output: str | PathLike[str],
    overwrite: bool = False,
    formats: tuple[OutputFormat, ...] = (OutputFormat.NIFTI,),
    stats: bool = False,
    split: bool = False,
) -> OutputPlan:
    """Check, before any work, that every output of a case can be written; return their paths.

    Raises:
        WriteError: unsupported suffix, missing directory, an existing output without ``overwrite``.
    """
    from medseg.io import check_output
    from medseg.io.sidecar import sidecar_paths

    try:
        from medseg.io import check_writable  # suffix check (.nii.gz, .nii, .nrrd, .mha)
    except ImportError:  # pragma: no cover
        check_writable = check_output
    out = check_writable(output, overwrite)
    plan = OutputPlan(out, sidecar_paths(out), tuple(formats), stats_path(out) if stats else None,
                      out.parent / _stem(out) if split else None)
    for p in plan.files()[1:]:
        check_output(p, overwrite)
    if plan.split_dir is not None and plan.split_dir.exists():
        if not plan.split_dir.is_dir():
            raise WriteError("exists and is not a folder (needed for --split)", plan.split_dir)
        if not overwrite and any(plan.split_dir.iterdir()):
            raise WriteError("split folder exists and is not empty (pass --overwrite to replace its files)", plan.split_dir)
    return plan


def check_outputs(output: str | PathLike[str], overwrite: bool = False) -> tuple[Path, dict[str, Path]]:
    """Fail before any work if the label map or a sidecar cannot be written."""
    plan = plan_outputs(output, overwrite)
    return plan.label_map, plan.sidecars


def check_dicom_input(input: str | PathLike[str], formats: tuple[OutputFormat, ...]) -> None:
    """DICOM SEG/RTSTRUCT outputs need a DICOM input: fail before inference otherwise."""
    if not any(f in (OutputFormat.DICOM_SEG, OutputFormat.RTSTRUCT) for f in formats):
        return
    from medseg.io import detect_format

    fmt = detect_format(input)
    if fmt != "dicom":
        wanted = ", ".join(f.value for f in formats if f is not OutputFormat.NIFTI)
        raise ReadError(f"--format {wanted} needs a DICOM series as input; this is a {fmt} file", input)


def select_labels(labels: Volume, names: list[str] | tuple[str, ...] | None) -> Volume:
    """Keep only the labels named in ``names`` (others become background), with their original ids.

    Raises:
        MedsegError: an unknown name; the message lists the model's label names.
    """
    if not names:
        return labels
    by_name = {lab.name.lower(): lab for lab in labels.labels}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise MedsegError(
            f"unknown label name(s) {', '.join(map(repr, unknown))} for --roi; this model's labels are: "
            + ", ".join(lab.name for lab in labels.labels)
        )
    keep = [by_name[n.lower()] for n in dict.fromkeys(names)]
    keep.sort(key=lambda lab: lab.id)
    arr = np.asarray(labels.array)
    lut = np.zeros(int(max(int(arr.max()), *(lab.id for lab in labels.labels))) + 1, dtype=arr.dtype)
    for lab in keep:
        lut[lab.id] = lab.id
    return labels.replace(array=lut[arr], labels=tuple(keep))


def check_roi_names(model_labels: tuple, names: list[str] | tuple[str, ...] | None) -> None:
    """Fail before inference when ``--roi`` names a label the model does not have."""
    if not names:
        return
    known = {lab.name.lower() for lab in model_labels}
    unknown = [n for n in names if n.lower() not in known]
    if unknown:
        raise MedsegError(
            f"unknown label name(s) {', '.join(map(repr, unknown))} for --roi; this model's labels are: "
            + ", ".join(lab.name for lab in model_labels)
        )


def algorithm_info(predictor: Predictor) -> Any:
    """:class:`medseg.io.dicom_seg.AlgorithmInfo` of a predictor (model, medseg version, weights sha256)."""
    from medseg import __version__
    from medseg.io.dicom_seg import AlgorithmInfo

    digest = getattr(predictor, "_weights_digest", None)
    return AlgorithmInfo(predictor.spec.name, __version__, str(digest) if digest else None, predictor.fingerprint)


def write_outputs(
    labels: Volume,
    plan: OutputPlan,
    *,
    provenance: dict[str, Any] | None = None,
    source: str | PathLike[str] | None = None,
    series: str | None = None,
    algorithm: Any = None,
    image: Volume | None = None,
    seg_type: str = "binary",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write every output of one case, all or nothing: the label map, its sidecars and, as the plan
    says, the DICOM SEG, the RTSTRUCT, the statistics and one NIfTI per label (``--split``).

    Everything is built in memory first, then written to hidden temporary files, then renamed; if any
    step fails, no output of the case is left behind (files that existed before are only replaced
    with ``overwrite``).

    Args:
        labels: the label map (on the source grid).
        plan: from :func:`plan_outputs`.
        provenance: extra keys of the JSON sidecar.
        source: the DICOM input (file, folder, zip) the SEG/RTSTRUCT reference.
        series: its series, when the input holds several.
        algorithm: :class:`~medseg.io.dicom_seg.AlgorithmInfo` (see :func:`algorithm_info`).
        image: the scan, for intensity statistics.
        seg_type: ``"binary"`` (default) or ``"fractional"``.

    Returns:
        ``{kind: path}`` of every file written (kinds: ``label_map``, ``json``, ``ctbl``, ``txt``, ``seg``,
        ``rtstruct``, ``stats``, ``split:<label>``).
    """
    import json

    from medseg.io import atomic_output, write
    from medseg.io.sidecar import render_sidecars
    from medseg.postprocess import label_volumes_ml

    volumes = label_volumes_ml(labels)
    texts = render_sidecars(labels, plan.label_map.name, volumes, provenance)
    blobs: dict[str, tuple[Path, Any]] = {}
    if plan.dicom:
        from medseg.io.dicom_seg import AlgorithmInfo, build_seg, load_source
        from medseg.io.rtstruct import build_rtstruct

        if source is None:
            raise ValueError("source must name the DICOM input when DICOM outputs are planned.")
        algo = algorithm or AlgorithmInfo("medseg", "unknown")
        src = load_source(source, series)
        if plan.seg is not None:
            blobs["seg"] = (plan.seg, build_seg(labels, src, algo, seg_type=seg_type))
        if plan.rtstruct is not None:
            blobs["rtstruct"] = (plan.rtstruct, build_rtstruct(labels, src, algo))
    if plan.stats is not None:
        from medseg.stats import label_statistics

        rows = label_statistics(labels, image)
        texts["stats"] = json.dumps({"label_map": plan.label_map.name, "labels": rows}, indent=2) + "\n"
    split: dict[str, Path] = {}
    if plan.split_dir is not None:
        for lab in labels.labels:
            split[lab.name] = split_path(plan.split_dir, lab.name)
        if len(set(split.values())) != len(split):
            raise WriteError("two label names map to the same file name for --split", plan.split_dir)
    written: dict[str, Path] = {}
    targets = [plan.label_map, *plan.sidecars.values(), *(p for p, _ in blobs.values()), *split.values()]
    if plan.stats is not None:
        targets.append(plan.stats)
    existed = {p: p.exists() for p in targets}
    made_dir = False
    try:
        if plan.split_dir is not None and not plan.split_dir.exists():
            plan.split_dir.mkdir()
            made_dir = True
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(plan.label_map, overwrite=overwrite))
            write(labels, tmp, overwrite=True)
            written["label_map"] = plan.label_map
            text_paths = dict(plan.sidecars)
            if plan.stats is not None:
                text_paths["stats"] = plan.stats
            for key, path in text_paths.items():
                tmp = stack.enter_context(atomic_output(path, overwrite=overwrite))
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(texts[key])
                written[key] = path
            for key, (path, ds) in blobs.items():
                tmp = stack.enter_context(atomic_output(path, overwrite=overwrite))
                ds.save_as(tmp, enforce_file_format=True)
                written[key] = path
            arr = np.asarray(labels.array)
            for lab in labels.labels:
                path = split[lab.name] if split else None
                if path is None:
                    continue
                tmp = stack.enter_context(atomic_output(path, overwrite=overwrite))
                mask = labels.replace(array=(arr == lab.id).astype(np.uint8), labels=(lab,))
                write(mask, tmp, overwrite=True)
                written[f"split:{lab.name}"] = path
    except BaseException:
        for p in targets:  # a rename failed part-way: remove the outputs this call created
            if not existed[p] and p.exists():
                with contextlib.suppress(OSError):
                    p.unlink()
        if made_dir:
            with contextlib.suppress(OSError):
                plan.split_dir.rmdir()  # type: ignore[union-attr]
        raise
    return written


def segment_file(
    input: str | PathLike[str],
    output: str | PathLike[str],
    predictor: Predictor,
    overwrite: bool = False,
    series: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    extra: dict[str, Any] | None = None,
    formats: tuple[OutputFormat, ...] | str | None = None,
    roi: list[str] | tuple[str, ...] | None = None,
    split: bool = False,
    stats: bool = False,
    seg_type: str = "binary",
    *,
    volume: Volume | None = None,
    irregular: str = "error",
    force: bool = False,
    modality: str = "auto",
) -> SegmentResult:
    """Segment one file/series and write the label map with its sidecars (``.json``, ``.ctbl``, ``.txt``)
    and, on request, a DICOM SEG / RTSTRUCT, statistics and one file per label. All or nothing.

    Args:
        input: NIfTI/NRRD/MHA file, DICOM file, folder or zip.
        output: label map path (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``); its directory must exist.
        predictor: from :func:`medseg.predictor.load_predictor`.
        overwrite: replace existing outputs.
        series: DICOM SeriesInstanceUID when the input holds several.
        progress: ``progress(done, total)`` callback for the network windows.
        extra: additional provenance for the JSON sidecar (e.g. CLI arguments).
        formats: ``"nifti,dicom-seg,rtstruct"`` or parsed :class:`OutputFormat` s (DICOM ones need a
            DICOM input).
        roi: keep only these label names (the network runs once on the whole volume).
        split: also write ``OUT/<label>.nii.gz`` per label.
        stats: also write ``OUT.stats.json`` (:func:`medseg.stats.label_statistics`).
        seg_type: DICOM SEG type, ``"binary"`` or ``"fractional"``.
        volume: the input, already read (its 4D volume chosen, channels stacked); ``input`` then only names it.
        irregular: ``error`` or ``resample`` for irregular DICOM slice grids.
        force: run even when the scan's modality is not the model's (the mismatch becomes a warning).
        modality: ``auto``, ``ct`` or ``mr`` (see :mod:`medseg.modality`).

    Raises:
        InputError: the scan does not fit the model (modality, channels), before inference.
    """
    from medseg import __version__
    from medseg.input_checks import check_channels, check_modality, result_warnings
    from medseg.io import read
    from medseg.modality import resolve_modality

    fmts = formats if isinstance(formats, tuple) else parse_formats(formats)
    t0 = time.perf_counter()
    plan = plan_outputs(output, overwrite, fmts, stats=stats, split=split)
    check_dicom_input(input, fmts)
    check_roi_names(predictor.spec.labels, roi)
    if volume is None:
        volume = read(input, series=series, irregular=irregular)
    check_channels(volume, predictor.spec.input.channels, predictor.spec.name)
    warnings = [w for w in [check_modality(volume, predictor.spec, force=force, modality=modality)] if w]
    t_read = time.perf_counter()
    labels: Volume = predictor.predict(volume, progress=progress)
    labels = select_labels(labels, roi)
    t_pred = time.perf_counter()
    from medseg.postprocess import label_volumes_ml

    volumes_ml = label_volumes_ml(labels)
    warnings += result_warnings(predictor.spec.name, volumes_ml)
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
    if roi:
        provenance["roi"] = list(roi)
    if extra:
        provenance["arguments"] = extra
    written = write_outputs(
        labels, plan, provenance=provenance, source=input, series=series, algorithm=algorithm_info(predictor),
        image=volume, seg_type=seg_type, overwrite=overwrite,
    )
    if not plan.label_map.is_file():  # pragma: no cover - atomic_output guarantees this
        raise WriteError("label map was not written", plan.label_map)
    t_end = time.perf_counter()
    return SegmentResult(
        input=str(input),
        output=plan.label_map,
        sidecars=plan.sidecars,
        volumes_ml=volumes_ml,
        seconds=t_end - t0,
        model=predictor.spec.name,
        fingerprint=predictor.fingerprint,
        timings={"read": t_read - t0, "predict": t_pred - t_read, "write": t_end - t_pred},
        extra_outputs={k: v for k, v in written.items() if k not in ("label_map", "json", "ctbl", "txt")},
        warnings=tuple(warnings),
    )
