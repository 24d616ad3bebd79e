"""Prompt files for ``medseg prompt``: parse and check them, run them with LiteMedSAM, write the label map.

A prompts file is JSON::

    {"prompts": [
        {"label": 1, "name": "tumour", "box": [i0, j0, k0, i1, j1, k1]},          # 3D box, slices along k
        {"label": 2, "name": "kidney", "slice": 40, "box": [i0, j0, i1, j1]},     # 2D box on slice k = 40
        {"label": 3, "points": [[i, j, k, 1], [i, j, k, 0]], "window": [1500, -600]},
        {"label": 4, "axis": 1, "box": [i0, k0, j0, i1, k1, j1]}                  # slices along j
    ]}

Indices are voxel indices of the scan as medseg reads it, inclusive. A box lists the plane's column axis,
its row axis, then (3D) the slice axis, mins then maxes: along k that is ``i, j, k``; along j ``i, k, j``;
along i ``j, k, i`` (see :func:`medseg.sam.protocol.plane`). Points are always ``[i, j, k, 1 | 0]``
(1 = object, 0 = background); with a box they refine it on their slice, alone they prompt their slice.
``"stop_when_empty": true`` ends a 3D box's propagation at the first empty slice. Later prompts win
where objects overlap.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ReadError, WriteError
from medseg.types import Label, Volume

__all__ = ["Prompt", "parse_prompts", "load_prompts", "run_prompts", "prompt_file", "PromptResult"]

_KEYS = {"label", "name", "slice", "box", "points", "window", "axis", "stop_when_empty"}
_AXES = {0: 0, 1: 1, 2: 2, "i": 0, "j": 1, "k": 2}
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


@dataclass(frozen=True)
class Prompt:
    """One object to segment (validated against the volume's shape).

    Args:
        label: label value written into the map (1..65535).
        name: label name.
        axis: slice axis (0, 1, 2 = i, j, k).
        box: plane box ``(x0, y0, x1, y1)`` with ``slices = (z, z)``, or ``(x0, y0, z0, x1, y1, z1)``; ``None``
            for points alone.
        slices: first and last slice along ``axis``.
        points: ``{slice: (xy (N, 2), labels (N,))}`` in plane pixels.
        window: CT ``(width, level)`` or ``None``.
        stop_when_empty: end a 3D box's propagation at the first empty slice.
    """

    label: int
    name: str
    axis: int
    box: tuple[int, ...] | None
    slices: tuple[int, int]
    points: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    window: tuple[float, float] | None = None
    stop_when_empty: bool = False
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def is_3d(self) -> bool:
        return self.box is not None and len(self.box) == 6


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"{what} must be an integer, got {v!r}")
    return int(v)


def _plane_axes(axis: int) -> tuple[int, int]:
    """(column axis, row axis) of a plane normal to ``axis``."""
    lo, hi = (a for a in (0, 1, 2) if a != axis)
    return lo, hi


def _parse_one(p: Any, n: int, shape: tuple[int, int, int]) -> Prompt:
    where = f"prompt {n}"
    if not isinstance(p, dict):
        raise ValueError(f"{where} must be an object, got {type(p).__name__}")
    unknown = sorted(set(p) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    if "label" not in p:
        raise ValueError(f"{where}: missing 'label'")
    label = _int(p["label"], f"{where} label")
    if not 1 <= label <= 65535:
        raise ValueError(f"{where}: label must be in 1..65535, got {label}")
    name = p.get("name", f"label_{label}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: name must be a non-empty string, got {name!r}")
    axis_v = p.get("axis", 2)
    if isinstance(axis_v, bool) or axis_v not in _AXES:
        raise ValueError(f"{where}: axis must be 0, 1, 2 (or i, j, k), got {axis_v!r}")
    axis = _AXES[axis_v]
    cax, rax = _plane_axes(axis)
    ncol, nrow, nsl = shape[cax], shape[rax], shape[axis]
    window = None
    if "window" in p:
        w = p["window"]
        if not isinstance(w, list) or len(w) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in w):
            raise ValueError(f"{where}: window must be [width, level], got {w!r}")
        if not (np.isfinite(w).all() and w[0] > 0):
            raise ValueError(f"{where}: window width must be > 0 and finite, got {w!r}")
        window = (float(w[0]), float(w[1]))
    stop = p.get("stop_when_empty", False)
    if not isinstance(stop, bool):
        raise ValueError(f"{where}: stop_when_empty must be true or false, got {stop!r}")
    box = None
    slices: tuple[int, int] | None = None
    if "box" in p:
        b = p["box"]
        if not isinstance(b, list) or len(b) not in (4, 6):
            raise ValueError(f"{where}: box must list 4 (with 'slice') or 6 integers, got {b!r}")
        b = [_int(v, f"{where} box value") for v in b]
        if len(b) == 4:
            if "slice" not in p:
                raise ValueError(f"{where}: a 2D box needs 'slice'")
            z = _int(p["slice"], f"{where} slice")
            b = [b[0], b[1], z, b[2], b[3], z]
        elif "slice" in p:
            raise ValueError(f"{where}: 'slice' goes with a 2D box [c0, r0, c1, r1], not a 3D box")
        names = ("column", "row", "slice")
        for d, size in enumerate((ncol, nrow, nsl)):
            lo, hi = b[d], b[d + 3]
            if lo > hi:
                raise ValueError(f"{where}: inverted box: {names[d]} min {lo} > max {hi}")
            if lo < 0 or hi >= size:
                raise ValueError(f"{where}: box {names[d]} range {lo}..{hi} is outside the volume (0..{size - 1})")
        slices = (b[2], b[5])
        box = tuple(b) if len(p["box"]) == 6 else (b[0], b[1], b[3], b[4])
    elif "slice" in p:
        raise ValueError(f"{where}: 'slice' without a box")
    points: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if "points" in p:
        pts = p["points"]
        if not isinstance(pts, list) or not pts:
            raise ValueError(f"{where}: points must be a non-empty list of [i, j, k, 1 or 0]")
        groups: dict[int, list[tuple[float, float, int]]] = {}
        for q in pts:
            if not isinstance(q, list) or len(q) != 4:
                raise ValueError(f"{where}: each point must be [i, j, k, 1 or 0], got {q!r}")
            ijk = [_int(v, f"{where} point coordinate") for v in q[:3]]
            flag = _int(q[3], f"{where} point label")
            if flag not in (0, 1):
                raise ValueError(f"{where}: point label must be 1 (object) or 0 (background), got {flag}")
            for d in range(3):
                if not 0 <= ijk[d] < shape[d]:
                    raise ValueError(f"{where}: point {q[:3]} is outside the volume {list(shape)}")
            z = ijk[axis]
            if slices is not None and not slices[0] <= z <= slices[1]:
                raise ValueError(f"{where}: point {q[:3]} lies outside the box's slices {slices[0]}..{slices[1]}")
            groups.setdefault(z, []).append((ijk[cax], ijk[rax], flag))
        for z, g in groups.items():
            a = np.array(g, dtype=np.float64)
            points[z] = (a[:, :2], a[:, 2].astype(np.int64))
        if slices is None:
            slices = (min(points), max(points))
    if box is None and not points:
        raise ValueError(f"{where}: needs a 'box' and/or 'points'")
    return Prompt(label, name, axis, box, slices or (0, 0), points, window, stop, dict(p))


def parse_prompts(doc: Any, shape: tuple[int, ...]) -> list[Prompt]:
    """Validate a prompts document against a volume ``shape`` ``(I, J, K)``; ``ValueError`` names the problem."""
    if not isinstance(doc, dict):
        raise ValueError(f"the document must be an object with a 'prompts' list, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"prompts"})
    if unknown:
        raise ValueError(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; only 'prompts' is allowed")
    items = doc.get("prompts")
    if not isinstance(items, list) or not items:
        raise ValueError("'prompts' must be a non-empty list")
    shp = tuple(int(s) for s in shape[:3])
    return [_parse_one(p, n, shp) for n, p in enumerate(items)]  # type: ignore[arg-type]


def load_prompts(path: str | PathLike[str], shape: tuple[int, ...]) -> list[Prompt]:
    """Read and validate a prompts JSON file; :class:`ReadError` names the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise ReadError("prompts file not found", p)
    if p.stat().st_size > 16 * 1024 * 1024:
        raise ReadError("prompts file is larger than 16 MiB", p)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(f"not valid JSON ({exc})", p) from None
    try:
        return parse_prompts(doc, shape)
    except ValueError as exc:
        raise ReadError(str(exc), p) from None


def run_prompts(
    session: Any, prompts: list[Prompt], progress: Callable[[str, int, int], None] | None = None
) -> np.ndarray:
    """Segment every prompt with a :class:`~medseg.sam.protocol.BoxSession`; returns the ``(I, J, K)`` label
    array (uint8, or uint16 for labels above 255), later prompts winning overlaps. The seconds spent putting
    masks into the label array go to ``session.timings["export"]``."""
    from medseg.sam.protocol import put_plane

    dtype = np.uint8 if max(p.label for p in prompts) < 256 else np.uint16
    labels = np.zeros(session.shape, dtype=dtype)
    export = 0.0
    for p in prompts:
        cb = (lambda d, t, _n=p.name: progress(_n, d, t)) if progress is not None else None
        if p.is_3d:
            mask = session.box3d(p.axis, p.box, window=p.window, points=p.points,
                                 stop_when_empty=p.stop_when_empty, progress=cb)
        else:
            mask = np.zeros(session.shape, dtype=bool)
            zs = [p.slices[0]] if p.box is not None else sorted(p.points)
            for z in zs:
                xy, lab = p.points.get(z, ((), ()))
                m = session.slice2d(p.axis, z, box=p.box, points=xy, labels=lab, window=p.window)
                t0 = time.perf_counter()
                put_plane(mask, p.axis, z, m)
                export += time.perf_counter() - t0
        t0 = time.perf_counter()
        labels[mask] = p.label
        export += time.perf_counter() - t0
    session.timings["export"] = session.timings.get("export", 0.0) + export
    return labels


@dataclass(frozen=True)
class PromptResult:
    """What :func:`prompt_file` wrote."""

    output: Path
    sidecars: dict[str, Path]
    document: dict[str, Any]
    seconds: float
    extra_outputs: dict[str, Path] = field(default_factory=dict)


def check_prompt_outputs(
    input: str | PathLike[str],
    prompts: str | PathLike[str],
    output: str | PathLike[str],
    overwrite: bool,
    formats: tuple[Any, ...] | None = None,
) -> Any:
    """Fail before any work: outputs that are the input or the prompts file, or exist without overwrite.

    Returns the :class:`medseg.pipeline.OutputPlan` (label map, sidecars, DICOM objects of ``formats``).
    """
    from medseg.pipeline import OutputFormat, plan_outputs

    out = Path(output).expanduser()
    plan = plan_outputs(out, overwrite, tuple(formats or (OutputFormat.NIFTI,)))
    protected = {"input": Path(input), "prompts file": Path(prompts)}
    for target in plan.files():
        for what, src in protected.items():
            same = os.path.abspath(target) == os.path.abspath(src)
            if not same and target.exists() and src.exists():
                with contextlib.suppress(OSError):
                    same = os.path.samefile(target, src)
            if same:
                raise WriteError(f"output would overwrite the {what}", target)
    return plan


def prompt_file(
    input: str | PathLike[str],
    prompts: str | PathLike[str],
    output: str | PathLike[str],
    model: str = "litemedsam",
    modality: str = "auto",
    overwrite: bool = False,
    series: str | None = None,
    device: str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    irregular: str = "error",
    volume: int | str | None = None,
    formats: tuple[Any, ...] | None = None,
    seg_type: str = "binary",
    runtime: str = "torch",
    threads: int | None = None,
) -> PromptResult:
    """Read a scan, segment its prompts with LiteMedSAM, write the label map on the input grid + sidecars.

    Outputs go through :func:`medseg.pipeline.write_segmentation` (the one writer of ``segment`` and ``batch``):
    all of them or none, the DICOM SEG / RTSTRUCT of ``formats`` included.

    Args:
        irregular: ``error`` or ``resample`` for irregular DICOM slice grids.
        volume: volume of a 4D scan (``--volume N`` or ``"mean"``); a 4D scan without it is an error.
        formats: :class:`medseg.pipeline.OutputFormat` s (DICOM ones need a DICOM input).
        seg_type: DICOM SEG type, ``"binary"`` or ``"fractional"``.
        runtime: the image encoder's runtime, ``torch`` | ``openvino`` | ``auto`` (:mod:`medseg.engine.backends`;
            said in one line on stderr unless torch was asked for).
        threads: CPU threads of the OpenVINO encoder (torch's are the caller's setting).

    Raises:
        ReadError: unreadable scan or invalid prompts file. WriteError: bad output path.
        ModelError: LiteMedSAM unavailable.
    """
    from medseg import __version__
    from medseg.errors import InputError, ModelError
    from medseg.input_checks import select_volume
    from medseg.io import read
    from medseg.io.dicom_seg import AlgorithmInfo
    from medseg.pipeline import write_segmentation
    from medseg.sam.protocol import BoxSession, LiteMedSAM

    from medseg.pipeline import record_write_seconds, stage_timings

    t0 = time.perf_counter()
    if model != "litemedsam":
        raise ModelError(f"medseg prompt runs the LiteMedSAM protocol; unknown model {model!r} (choices: litemedsam)")
    plan = check_prompt_outputs(input, prompts, output, overwrite, formats)
    if not Path(input).exists():
        raise ReadError("no such file or directory", input)
    scan = select_volume(read(input, series=series, irregular=irregular), volume)
    if scan.array.ndim != 3:
        n = scan.shape[3]
        raise InputError(f"this scan is 4D with {n} volumes; choose one with --volume N (0..{n - 1}) or --volume mean",
                         input)
    volume = scan
    t_read = time.perf_counter()
    items = load_prompts(prompts, volume.shape)
    try:
        from medseg.modality import resolve_modality

        resolve_modality(volume, modality)
    except ValueError as exc:
        raise ReadError(str(exc), input) from None
    t_load = time.perf_counter()
    sam = LiteMedSAM.load(device=device)
    info = sam.use_runtime(runtime, threads)  # the image encoder on torch or OpenVINO (medseg.engine.backends)
    if info.note is not None or info.name != "torch":
        print(info.line(), file=sys.stderr)
    session = BoxSession(sam, volume, modality=modality)
    session.timings["load"] = time.perf_counter() - t_load
    arr = run_prompts(session, items, progress)
    t_pred = time.perf_counter()
    seen: dict[int, Label] = {}
    for p in items:
        seen[p.label] = Label(p.label, p.name, _PALETTE[(p.label - 1) % len(_PALETTE)])
    labels = Volume(arr, volume.geometry, is_label=True, labels=tuple(sorted(seen.values(), key=lambda lb: lb.id)))
    rules = {"default" if p.window is None else f"window {p.window[0]:g}/{p.window[1]:g}":
             session.intensities(p.window)[1].as_dict() for p in items}
    doc: dict[str, Any] = {
        "input": str(input),
        "series_uid": volume.source.series_uid,
        "model": model,
        "model_id": sam.model_id,
        "protocol": "CVPR24 LiteMedSAM reference inference (3D box: middle slice, then previous-mask boxes "
                    "widened by 3 px; slices z0..z1 inclusive)",
        "intensity": rules,
        "prompts": [p.source for p in items],
        "encoder_runs": session.encoded,
        "seconds": round(t_pred - t0, 3),
        "runtime": info.to_dict(),
        "medseg_version": __version__,
    }
    if extra:
        doc["arguments"] = extra
    # segment's stages (one definition, medseg.pipeline.stage_timings): load = the model and its encoder
    # runtime, read, preprocess = uint8 intensities and model inputs, network = encoder + decoder, export =
    # masks into the label map, write
    timings = stage_timings(session, t_read - t0)
    doc["timings"] = timings
    written = write_segmentation(
        labels, plan.label_map, doc, formats=plan.formats, source=input, series=series, image=volume,
        seg_type=seg_type, algorithm=AlgorithmInfo(sam.model_id, __version__), overwrite=overwrite,
    )
    timings["write"] = time.perf_counter() - t_pred
    record_write_seconds(written.get("json"), timings)
    document = json.loads(plan.sidecars["json"].read_text(encoding="utf-8"))
    extra_outputs = {k: v for k, v in written.items() if k not in ("label_map", "json", "ctbl", "txt")}
    return PromptResult(plan.label_map, plan.sidecars, document, time.perf_counter() - t0, extra_outputs)
