"""Segment a case and write it: read → checks → predict → label map + sidecars, all or nothing.

The one place that does it, for ``medseg segment``, ``medseg batch`` (local workers and Ray actors), ``medseg
prompt``/``convert`` (their writing) and the napari plugin: :func:`read_case`, :func:`segment_case`,
:func:`provenance_record` and :func:`write_segmentation`; :func:`segment_file` chains them.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from dataclasses import dataclass, field
from enum import Enum
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.errors import MedsegError, ReadError, WriteError

if TYPE_CHECKING:  # pragma: no cover
    from medseg.predictor import Predictor
    from medseg.progress import ProgressFn
    from medseg.types import Volume

__all__ = ["SegmentResult", "Segmentation", "segment_file", "read_case", "segment_case", "provenance_record",
           "write_segmentation", "OutputFormat", "parse_formats", "OutputPlan", "plan_outputs", "select_labels",
           "algorithm_info", "predictor_info", "PREDICTOR_OPTIONS"]

#: keywords of :func:`medseg.predictor.load_predictor` that configure a run, as ``medseg segment`` and
#: ``medseg batch`` take them (``--device --precision --overlap --tta/--no-tta --threads --runtime
#: --trust-model-code``). ``medseg.engine``'s ``RunOptions`` owns their validation.
PREDICTOR_OPTIONS = ("device", "precision", "overlap", "tta", "threads", "runtime", "trust_model_code")


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
    input_warnings: tuple[str, ...] = ()  # the part of ``warnings`` about the scan not fitting the model


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


def predictor_info(predictor: Predictor) -> dict[str, Any]:
    """JSON-able description of a loaded predictor (name, spec, fingerprint, labels), for batch provenance
    and resume fingerprints."""
    spec = predictor.spec
    return {
        "name": spec.name,
        "spec_path": spec.source_path,
        "fingerprint": predictor.fingerprint,
        "labels": [{"id": lab.id, "name": lab.name, "color": list(lab.color)} for lab in spec.labels],
        "spec": spec.to_dict(),
    }


def _write_planned(
    labels: Volume,
    plan: OutputPlan,
    provenance: dict[str, Any] | None,
    *,
    source: str | PathLike[str] | None,
    series: str | None,
    algorithm: Any,
    image: Volume | None,
    seg_type: str,
    overwrite: bool,
    quality: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Build every output of ``plan`` in memory, write each to a hidden temporary file, then rename them all."""
    import json

    from medseg.io import atomic_output, write
    from medseg.io.sidecar import render_sidecars
    from medseg.labels import label_volumes_ml

    volumes = label_volumes_ml(labels)
    texts = render_sidecars(labels, plan.label_map.name, volumes, provenance, quality)
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


def write_segmentation(
    labels: Volume,
    path: str | PathLike[str],
    provenance: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    formats: tuple[OutputFormat, ...] = (OutputFormat.NIFTI,),
    stats: bool = False,
    split: bool = False,
    source: str | PathLike[str] | None = None,
    series: str | None = None,
    algorithm: Any = None,
    image: Volume | None = None,
    seg_type: str = "binary",
    make_parents: bool = False,
    quality: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Write a label map and everything that goes with it, all or nothing: the label map, its sidecars
    (``.json`` with ``provenance``, ``.ctbl``, ``.txt``) and, on request, the DICOM SEG, the RTSTRUCT, the
    statistics and one NIfTI per label (``--split``). The one writer of ``segment``, ``batch``, ``prompt``,
    ``convert`` and the napari plugin.

    Every output is checked first (:func:`plan_outputs`), built in memory, written to hidden temporary
    files, then renamed; if any step fails no output of the case is left behind (files that existed
    before are only replaced with ``overwrite``).

    Args:
        labels: the label map (on the source grid).
        path: the label map's path (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).
        provenance: extra keys of the JSON sidecar (see :func:`provenance_record`).
        overwrite: replace existing outputs.
        formats: :class:`OutputFormat` s (DICOM ones need ``source``).
        stats: also write ``OUT.stats.json`` (:func:`medseg.stats.label_statistics`, intensities from ``image``).
        split: also write ``OUT/<label>.nii.gz`` per label.
        source: the DICOM input (file, folder, zip) the SEG/RTSTRUCT reference.
        series: its series, when the input holds several.
        algorithm: :class:`~medseg.io.dicom_seg.AlgorithmInfo` (see :func:`algorithm_info`).
        image: the scan, for intensity statistics.
        seg_type: ``"binary"`` (default) or ``"fractional"``.
        make_parents: create the label map's missing parent folders first.
        quality: per-structure quality scores (:attr:`Segmentation.quality`), written next to each label's
            ``volume_ml`` in the JSON sidecar.

    Returns:
        ``{kind: path}`` of every file written (kinds: ``label_map``, ``json``, ``ctbl``, ``txt``, ``seg``,
        ``rtstruct``, ``stats``, ``split:<label>``).

    Raises:
        WriteError: unsupported suffix, missing directory, an existing output without ``overwrite``, I/O error.
    """
    if make_parents:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    plan = plan_outputs(path, overwrite, tuple(formats), stats=stats, split=split)
    return _write_planned(labels, plan, provenance, source=source, series=series, algorithm=algorithm, image=image,
                          seg_type=seg_type, overwrite=overwrite, quality=quality)


def read_case(
    input: str | PathLike[str],
    series: str | None = None,
    irregular: str = "error",
    formats: tuple[OutputFormat, ...] = (OutputFormat.NIFTI,),
) -> Volume:
    """Read one case; DICOM SEG/RTSTRUCT ``formats`` need a DICOM input, checked before reading.

    Raises:
        ReadError: unreadable input, or a DICOM output format for another input.
    """
    from medseg.io import read

    check_dicom_input(input, formats)
    return read(input, series=series, irregular=irregular)


@dataclass(frozen=True)
class Segmentation:
    """What :func:`segment_case` found: the label map on the input's grid and what to report about it."""

    labels: Volume
    volumes_ml: dict[str, float]
    input_warnings: tuple[str, ...] = ()  # the scan does not fit the model (e.g. modality, with ``force``)
    result_warnings: tuple[str, ...] = ()  # the result looks wrong (e.g. nothing found, implausible volume)
    #: label name -> quality score (mean decision margin, 0..1, higher = more confident; README "Quality
    #: score") of each structure found, when the predictor measures it (``last_quality``)
    quality: dict[str, float] = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.input_warnings + self.result_warnings


def segment_case(
    volume: Volume,
    predictor: Predictor,
    *,
    roi: list[str] | tuple[str, ...] | None = None,
    force: bool = False,
    modality: str = "auto",
    progress: ProgressFn | None = None,
) -> Segmentation:
    """Check that ``volume`` fits the model (channels, modality; see :mod:`medseg.input_checks`), predict,
    keep the ``roi`` labels.

    Raises:
        InputError: the scan does not fit the model, before inference.
        MedsegError: an unknown ``roi`` name.
    """
    from medseg.input_checks import check_channels, check_modality, result_warnings
    from medseg.labels import label_volumes_ml

    check_roi_names(predictor.spec.labels, roi)
    check_channels(volume, predictor.spec.input.channels, predictor.spec.name)
    mismatch = check_modality(volume, predictor.spec, force=force, modality=modality)
    labels = select_labels(predictor.predict(volume, progress=progress), roi)
    volumes_ml = label_volumes_ml(labels)
    spec = predictor.spec
    expected = {lab.name: spec.volume_ranges_ml[lab.id] for lab in labels.labels
                if lab.id in getattr(spec, "volume_ranges_ml", {})}
    measured = getattr(predictor, "last_quality", None) or {}
    quality = {lab.name: float(measured[lab.id]) for lab in labels.labels
               if lab.id in measured and volumes_ml.get(lab.name, 0.0) > 0}
    return Segmentation(labels, volumes_ml, (mismatch,) if mismatch else (),
                        tuple(result_warnings(spec.name, volumes_ml, expected)), quality)


def provenance_record(
    input: str | PathLike[str] | None,
    volume: Volume | None = None,
    predictor: Predictor | None = None,
    *,
    modality: str = "auto",
    warnings: tuple[str, ...] | list[str] = (),
    roi: list[str] | tuple[str, ...] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance keys of a label map's JSON sidecar: the one record every writer uses.

    Args:
        input: what was segmented (path, URL), or ``None`` when unknown (a layer drawn in napari).
        volume: the scan that was segmented (its series UID and modality are recorded).
        predictor: the model that made the labels (``None``: labels edited or drawn by hand).
        modality: the ``--modality`` choice the modality is resolved with.
        warnings: what the user was warned about.
        roi: the ``--roi`` label names kept.
        extra: the command's arguments (recorded under ``arguments``).
    """
    from medseg import __version__

    record: dict[str, Any] = {"input": None if input is None else str(input)}
    if volume is not None:
        record["series_uid"] = volume.source.series_uid
    if predictor is not None:
        # autocast_dtype is not in the predictor contract (medseg.engine owns it): recorded when present
        autocast = getattr(predictor, "autocast_dtype", None)
        record.update({
            "model": predictor.spec.name,
            "fingerprint": predictor.fingerprint,
            "device": str(predictor.device),
            "autocast": str(autocast).replace("torch.", "") if autocast else "float32",
        })
        info = getattr(predictor, "runtime_info", None)  # medseg.engine.backends.RuntimeInfo (provenance)
        if info is not None:
            record["runtime"] = info.to_dict()
    record["medseg_version"] = __version__
    if predictor is not None and volume is not None:
        from medseg.modality import resolve_modality

        record["input_modality"] = resolve_modality(volume, modality).as_dict()
        record["warnings"] = list(warnings)
        record["spec"] = predictor.spec.to_dict()
    if roi:
        record["roi"] = list(roi)
    if extra:
        record["arguments"] = extra
    return record


def segment_file(
    input: str | PathLike[str],
    output: str | PathLike[str],
    predictor: Predictor,
    overwrite: bool = False,
    series: str | None = None,
    progress: ProgressFn | None = None,
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
    make_parents: bool = False,
) -> SegmentResult:
    """Segment one file/series and write the label map with its sidecars (``.json``, ``.ctbl``, ``.txt``)
    and, on request, a DICOM SEG / RTSTRUCT, statistics and one file per label. All or nothing:
    :func:`read_case` → :func:`segment_case` → :func:`write_segmentation` with :func:`provenance_record`.

    Args:
        input: NIfTI/NRRD/MHA file, DICOM file, folder or zip.
        output: label map path (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``); its directory must exist.
        predictor: any predictor of the contract (``spec``, ``fingerprint``, ``device``, ``predict``).
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
        make_parents: create the output's missing folders, only once the labels are there (``medseg
            batch``); otherwise the outputs are checked before any work.

    Raises:
        InputError: the scan does not fit the model (modality, channels), before inference.
    """
    fmts = formats if isinstance(formats, tuple) else parse_formats(formats)
    t0 = time.perf_counter()
    if not make_parents:
        plan_outputs(output, overwrite, fmts, stats=stats, split=split)  # fail before any work
    check_dicom_input(input, fmts)
    check_roi_names(predictor.spec.labels, roi)
    if volume is None:
        from medseg.io import read

        volume = read(input, series=series, irregular=irregular)
    t_read = time.perf_counter()
    seg = segment_case(volume, predictor, roi=roi, force=force, modality=modality, progress=progress)
    t_pred = time.perf_counter()
    provenance = provenance_record(input, volume, predictor, modality=modality, warnings=seg.warnings, roi=roi,
                                   extra=extra)
    timings = stage_timings(predictor, t_read - t0)
    provenance["timings"] = timings
    written = write_segmentation(
        seg.labels, output, provenance, overwrite=overwrite, formats=fmts, stats=stats, split=split, source=input,
        series=series, algorithm=algorithm_info(predictor), image=volume, seg_type=seg_type,
        make_parents=make_parents, quality=seg.quality,
    )
    label_map = written["label_map"]
    t_end = time.perf_counter()
    timings["write"] = t_end - t_pred
    record_write_seconds(written.get("json"), timings)
    return SegmentResult(
        input=str(input),
        output=label_map,
        sidecars={k: written[k] for k in ("json", "ctbl", "txt")},
        volumes_ml=seg.volumes_ml,
        seconds=t_end - t0,
        model=predictor.spec.name,
        fingerprint=predictor.fingerprint,
        timings={"read": t_read - t0, "predict": t_pred - t_read, "write": t_end - t_pred,
                 **{k: v for k, v in timings.items() if k not in ("read", "write") and v is not None}},
        extra_outputs={k: v for k, v in written.items() if k not in ("label_map", "json", "ctbl", "txt")},
        warnings=seg.warnings,
        input_warnings=seg.input_warnings,
    )


#: predictors whose load time a case has already reported
_LOAD_REPORTED: weakref.WeakSet[Any] = weakref.WeakSet()


def stage_timings(predictor: Predictor, read_seconds: float) -> dict[str, float | None]:
    """The sidecar's ``"timings"``: ``load`` (reported by the first case a loaded predictor serves, 0 after),
    ``read``, ``preprocess``, ``network``, ``export`` (the predictor's
    own stages of its last :meth:`predict`, when it measures them) and ``write`` (None until
    :func:`record_write_seconds`)."""
    stages = dict(getattr(predictor, "timings", None) or {})
    load = stages.get("load")
    if load is not None:
        try:  # the model is loaded once: its first case carries the load, later ones 0 (batch sums stay true)
            if predictor in _LOAD_REPORTED:
                load = 0.0
            else:
                _LOAD_REPORTED.add(predictor)
        except TypeError:  # not weak-referenceable: report as measured
            pass
    return {"load": load, "read": read_seconds, "preprocess": stages.get("preprocess"),
            "network": stages.get("network"), "export": stages.get("export"), "write": None}


def record_write_seconds(json_path: Path | None, timings: dict[str, Any]) -> None:
    """Put the ``write`` stage's seconds into the JSON sidecar just written, replacing it atomically (the
    time is known only once every output is on disk). Timings are provenance: left out of byte comparisons."""
    import json

    from medseg.io.atomic import atomic_output

    if json_path is None or not Path(json_path).is_file():
        return
    doc = json.loads(Path(json_path).read_text())
    doc["timings"] = timings
    with atomic_output(json_path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2) + "\n")
