"""Run a batch: plan (discover, name, resume state), execute (local pipeline or Ray), summarise.

Local execution (default) runs each case in a supervised worker process that keeps the model loaded
(:mod:`medseg.batch.isolate`): a case that hangs (per-case time limits) or crashes its process becomes
that case's ``failed`` row and the batch goes on with a fresh worker. Every input found is in the
summary: done, failed (with its reason) or skipped (with its reason).

:func:`run_local` is the in-process alternative for library use (no isolation): a three-stage pipeline,
nnU-Net style, with bounded queues so memory stays flat:

    reader thread ──Queue(read_ahead)──▶ main thread: predictor.predict ──Queue(write_queue)──▶ writer thread

The model is loaded once. While case *n* is inferred, case *n+1* is read and case *n-1* is written.
Every stage catches per-case errors (unreadable input, wrong modality, out of memory, write failure):
the case becomes a ``failed`` row and the batch goes on. A worker thread that dies of anything else
stops the batch loudly.

Per case, the order of writes makes every interruption safe (see :mod:`medseg.batch.state`):
pending record → output (atomic) → sidecars (atomic) → completion record (atomic).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from medseg.batch.discover import Case, CaseFilter, discover_cases, filter_cases, group_channel_files
from medseg.batch.naming import ensure_inside, output_paths
from medseg.batch.settings import BatchSettings
from medseg.batch.state import STATE_DIRNAME, BatchState, run_fingerprint
from medseg.batch.summary import PROVENANCE_NAME, SUMMARY_NAME, CaseResult, CaseStatus, write_provenance, write_summary
from medseg.batch.worker import format_error
from medseg.errors import MedsegError, WriteError

__all__ = ["PlannedCase", "BatchPlan", "plan_batch", "run_batch", "run_local", "run_isolated", "dry_run"]

log = logging.getLogger("medseg.batch")


@dataclass(frozen=True)
class PlannedCase:
    case: Case
    output: Path
    overwrite: bool  # the output exists and may be replaced


@dataclass
class BatchPlan:
    input_dir: Path
    output_dir: Path
    todo: list[PlannedCase]
    results: dict[str, CaseResult]  # already known: skipped (done earlier) or failed before running
    order: list[str]  # case keys in discovery order
    notes: list[str] = field(default_factory=list)


def plan_batch(
    input_dir: Path,
    output_dir: Path,
    fingerprint: str,
    overwrite: bool = False,
    follow_outside_links: bool = False,
    select: CaseFilter | None = None,
    channels: tuple[int, str] = (1, ""),
) -> tuple[BatchPlan, BatchState]:
    """Discover cases, name outputs, take the output folder's lock, sort cases into done / to do.

    The caller releases the lock with ``state.unlock()``.

    Raises:
        MedsegError: no cases found; outputs from another model/settings exist and ``overwrite`` is false.
    """
    input_dir = Path(input_dir).expanduser().resolve()
    output_dir = Path(output_dir).expanduser()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"cannot create the output folder: {err.strerror or err}", output_dir) from err
    output_dir = output_dir.resolve()
    if output_dir == input_dir or output_dir in input_dir.parents:
        raise WriteError("the output folder must not be the input folder or contain it", output_dir)
    found = discover_cases(input_dir, exclude=[output_dir], follow_outside_links=follow_outside_links)
    found = group_channel_files(found, *channels)  # (model's channel count, model name): nnU-Net CASE_000N
    if select is not None:
        found = filter_cases(found, select)
    if not found.cases and not any(e.status == "failed" for e in found.entries):
        raise MedsegError("no images found (NIfTI, NRRD, MetaImage files or DICOM series)", input_dir)
    outputs = output_paths([(c.key, c.naming_rel, c.series_label) for c in found.cases], output_dir)
    state = BatchState(output_dir, fingerprint)
    state.lock()
    try:
        plan = _sort_cases(found, outputs, state, input_dir, output_dir, overwrite)
    except BaseException:
        state.unlock()
        raise
    return plan, state


def _sort_cases(found, outputs, state, input_dir, output_dir, overwrite) -> BatchPlan:  # noqa: ANN001
    todo: list[PlannedCase] = []
    known: dict[str, CaseResult] = {}
    stale: list[str] = []
    for case in found.cases:
        out = outputs[case.key]
        rel_out = out.relative_to(output_dir).as_posix()
        rec = state.done(case.key, out)
        if rec is not None:
            known[case.key] = CaseResult(
                case.key, str(case.rel), case.description, rel_out, CaseStatus.SKIPPED,
                rec.seconds or 0.0, dict(rec.volumes_ml), _with_note("done earlier with the same model and settings", case),
            )
            continue
        exists = out.exists() or out.is_symlink()
        if exists and state.stale(case.key, out) is not None and not overwrite:
            stale.append(rel_out)
            continue
        if exists and not overwrite and not state.owns(case.key, out):
            rec = state.load(case.key)
            why = (
                "output changed after this batch wrote it"
                if rec is not None and rec.status == "done"
                else "output already exists and was not written by this batch"
            )
            known[case.key] = CaseResult(
                case.key, str(case.rel), case.description, rel_out, CaseStatus.FAILED,
                error=f"{out}: {why} (pass --overwrite to replace it)",
            )
            continue
        todo.append(PlannedCase(case, out, overwrite=exists))
    if stale:
        listing = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise MedsegError(
            f"{len(stale)} output(s) here were made with another model or settings ({listing}); "
            "pass --overwrite to redo them, or choose another output folder",
            output_dir,
        )
    _remove_stale_temporaries(output_dir, [p.output for p in todo])
    order = [c.key for c in found.cases]
    for entry in found.entries:  # every other input found: skipped or failed, with its reason
        status = CaseStatus.FAILED if entry.status == "failed" else CaseStatus.SKIPPED
        known[entry.key] = CaseResult(entry.key, entry.rel, None, "", status, 0.0, {}, entry.reason)
        order.append(entry.key)
    return BatchPlan(input_dir, output_dir, todo, known, order, list(found.notes))


def _with_note(text: str, case: Case) -> str:
    """``text`` plus the case's discovery note (e.g. read through a symlink leaving INPUT_DIR)."""
    if not case.note:
        return text
    return f"{text}; {case.note}" if text else case.note


_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{6,}\.tmp")


def _remove_stale_temporaries(output_dir: Path, outputs: Sequence[Path]) -> None:
    """Delete hidden temporary files a killed run left next to the outputs it was writing."""
    stems = {}
    for out in outputs:
        stems.setdefault(out.parent, set()).add(out.name[: -len(".nii.gz")])
    stems.setdefault(output_dir / STATE_DIRNAME / "records", set()).add("")
    stems.setdefault(output_dir, set()).update({SUMMARY_NAME, PROVENANCE_NAME})
    for folder, names in stems.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = _TMP_RE.match(entry.name)
            if m and entry.is_file(follow_symlinks=False) and any(m["name"].startswith(n) for n in names):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass


# -------------------------------------------------------------------------------------------------
# local pipeline

_DONE = object()


@dataclass
class _Item:
    planned: PlannedCase
    seconds: float = 0.0
    volume: Any = None
    labels: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)
    volumes_ml: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    read_seconds: float = 0.0
    error: str | None = None


class _Stop(Exception):
    """Raised inside the pipeline threads when the batch stops."""


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Blocking put that gives up when the batch stops (so no thread hangs on a full queue)."""
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event, alive: Callable[[], bool]) -> Any:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            if not alive():
                raise RuntimeError("a batch worker thread died unexpectedly; see the log above") from None


def run_local(
    predictor: Any,
    todo: Sequence[PlannedCase],
    state: BatchState,
    settings: BatchSettings,
    on_result: Callable[[CaseResult], None],
) -> dict[str, float]:
    """Run ``todo`` through the read → predict → write pipeline; ``on_result`` is called once per case.

    Returns:
        Seconds spent in each stage, summed over cases (``read``, ``predict``, ``write``, and ``wall`` for
        the whole pipeline): with overlap, ``wall`` is less than the sum of the stages.
    """
    from medseg.batch.worker import free_accelerator_memory, is_oom, read_case
    from medseg.pipeline import (
        algorithm_info,
        provenance_record,
        record_write_seconds,
        segment_case,
        stage_timings,
        write_segmentation,
    )

    stages = {"read": 0.0, "predict": 0.0, "write": 0.0, "wall": 0.0}
    if not todo:
        return stages
    t_start = time.perf_counter()
    read_q: queue.Queue = queue.Queue(maxsize=settings.read_ahead)
    write_q: queue.Queue = queue.Queue(maxsize=settings.write_queue)
    stop = threading.Event()
    failures: list[BaseException] = []
    lock = threading.Lock()

    def report(item: _Item) -> None:
        case, rel_out = item.planned.case, item.planned.output.relative_to(state.output_dir).as_posix()
        status = CaseStatus.FAILED if item.error else CaseStatus.OK
        res = CaseResult(
            case.key, str(case.rel), case.description, rel_out, status, item.seconds, item.volumes_ml, item.error or ""
        )
        with lock:
            on_result(res)

    def reader() -> None:
        try:
            for planned in todo:
                item = _Item(planned)
                t0 = time.perf_counter()
                try:
                    item.volume = read_case(planned.case, settings)
                except Exception as err:  # noqa: BLE001 - per-case error capture
                    item.error = format_error(err)
                item.seconds = item.read_seconds = time.perf_counter() - t0
                stages["read"] += item.seconds
                _put(read_q, item, stop)
            _put(read_q, _DONE, stop)
        except _Stop:
            pass
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            failures.append(err)
            stop.set()

    def writer() -> None:
        try:
            while True:
                item = _get(write_q, stop, lambda: True)
                if item is _DONE:
                    return
                if item.error is None:
                    t0 = time.perf_counter()
                    try:
                        ensure_inside(state.output_dir, PurePosixPath(item.planned.output.relative_to(state.output_dir).as_posix()))
                        state.mark_pending(item.planned.case.key, item.planned.output)
                        case = item.planned.case
                        written = write_segmentation(
                            item.labels, item.planned.output, item.provenance, overwrite=item.planned.overwrite,
                            formats=settings.output_formats(), stats=settings.stats, split=settings.split,
                            source=case.path, series=case.series, algorithm=algorithm_info(predictor),
                            image=item.volume, seg_type=settings.seg_type, make_parents=True, quality=item.quality,
                        )
                        item.provenance["timings"]["write"] = time.perf_counter() - t0
                        record_write_seconds(written.get("json"), item.provenance["timings"])
                        item.seconds += time.perf_counter() - t0
                        state.mark_done(item.planned.case.key, item.planned.output, item.seconds, item.volumes_ml)
                    except Exception as err:  # noqa: BLE001 - per-case error capture
                        item.error = format_error(err)
                        item.seconds += time.perf_counter() - t0
                    stages["write"] += time.perf_counter() - t0
                    item.labels = item.volume = None
                report(item)
        except _Stop:
            pass
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            failures.append(err)
            stop.set()

    threads = [
        threading.Thread(target=reader, name="medseg-batch-reader", daemon=True),
        threading.Thread(target=writer, name="medseg-batch-writer", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while True:
            item = _get(read_q, stop, threads[0].is_alive)
            if item is _DONE:
                break
            if item.error is None:
                t0 = time.perf_counter()
                try:
                    seg = segment_case(item.volume, predictor, roi=settings.roi, force=settings.force,
                                       modality=settings.modality)
                    for warning in seg.input_warnings:
                        log.warning("%s: %s", item.volume.source.path, warning)
                    item.labels, item.volumes_ml, item.quality = seg.labels, seg.volumes_ml, seg.quality
                    item.provenance = provenance_record(
                        item.planned.case.path, item.volume, predictor, modality=settings.modality,
                        warnings=seg.warnings, roi=settings.roi,
                    )
                    item.provenance["timings"] = stage_timings(predictor, item.read_seconds)
                except Exception as err:  # noqa: BLE001 - per-case error capture (incl. out of memory)
                    item.error = format_error(err)
                    if is_oom(err):
                        free_accelerator_memory()
                if not settings.stats:  # intensity statistics need the scan in the writer
                    item.volume = None
                item.seconds += time.perf_counter() - t0
                stages["predict"] += time.perf_counter() - t0
            if not threads[1].is_alive():
                raise RuntimeError("the batch writer thread died unexpectedly")
            _put(write_q, item, stop)
        _put(write_q, _DONE, stop)
        threads[1].join()
    except _Stop:
        pass
    except BaseException:  # Ctrl-C or a dead thread: let the writer finish its current case, then stop
        stop.set()
        raise
    finally:
        for t in threads:
            t.join(timeout=60)
    if failures:
        raise RuntimeError(f"a batch worker failed: {format_error(failures[0])}") from failures[0]
    stages["wall"] = time.perf_counter() - t_start
    return stages


# -------------------------------------------------------------------------------------------------
# isolated execution (default): each case in a supervised worker process


def run_isolated(
    worker: Any,
    todo: Sequence[PlannedCase],
    state: BatchState,
    on_result: Callable[[CaseResult], None],
    settings: BatchSettings | None = None,
) -> dict[str, float]:
    """Run ``todo`` one case at a time in ``worker`` (a started :class:`medseg.batch.isolate.CaseWorker`).

    A case that fails, runs over its time limit or crashes the worker becomes a ``failed`` row with its
    reason, and the batch goes on (the worker is restarted when needed). Returns ``{"wall": seconds}``.
    """
    from medseg.batch.isolate import CaseFailed

    t_start = time.perf_counter()
    for planned in todo:
        case = planned.case
        rel_out = planned.output.relative_to(state.output_dir).as_posix()
        worker.ensure_started()  # a restart after a crash is not this case's time
        t0 = time.perf_counter()
        try:
            ensure_inside(state.output_dir, PurePosixPath(rel_out))
            state.mark_pending(case.key, planned.output)
            vols, _ = worker.run_case(case, planned.output, planned.overwrite, settings or BatchSettings())
            seconds = time.perf_counter() - t0
            state.mark_done(case.key, planned.output, seconds, vols)
            res = CaseResult(case.key, str(case.rel), case.description, rel_out, CaseStatus.OK, seconds, vols,
                             _with_note("", case))
        except (CaseFailed, WriteError) as err:
            res = CaseResult(case.key, str(case.rel), case.description, rel_out, CaseStatus.FAILED,
                             time.perf_counter() - t0, {}, _with_note(str(err), case))
        on_result(res)
    return {"wall": time.perf_counter() - t_start}


# -------------------------------------------------------------------------------------------------
# the whole run


class _Progress:
    """tqdm bar (cases done, failures, ETA) or, with ``quiet``, one log line per case."""

    def __init__(self, total: int, initial: int, failed: int, quiet: bool) -> None:
        self.total, self.done, self.failed, self.quiet = total, initial, failed, quiet
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="medseg batch", unit="case", dynamic_ncols=True,
                            file=sys.stderr)
            self.bar.set_postfix(failed=failed)

    def __call__(self, res: CaseResult) -> None:
        self.done += 1
        if res.status is CaseStatus.FAILED:
            self.failed += 1
        line = f"[{self.done}/{self.total}] {res.status.value} {res.input}" + (
            f" -> {res.output} ({res.seconds:.1f} s)" if res.status is CaseStatus.OK else f": {res.error}"
        )
        if self.bar is not None:
            if res.status is CaseStatus.FAILED:
                where = "" if res.input in res.error else f"{res.input}: "
                self.bar.write(f"failed: {where}{res.error}", file=sys.stderr)
            self.bar.set_postfix(failed=self.failed)
            self.bar.update(1)
        elif res.status is CaseStatus.FAILED:
            log.warning("%s", line)
        else:
            log.info("%s", line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_batch(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    settings: BatchSettings,
    *,
    ray_address: str | None = None,
    use_ray: bool = False,
    ray_workers: int | None = None,
    quiet: bool = False,
    command: Sequence[str] | None = None,
) -> tuple[int, list[CaseResult]]:
    """Segment every case under ``input_dir`` into ``output_dir``.

    Args:
        input_dir: folder searched for cases (:func:`medseg.batch.discover.discover_cases`).
        output_dir: created if needed; receives the label maps (mirroring the input tree), their sidecars,
            ``batch_summary.csv``, ``batch_provenance.json`` and the ``.medseg-batch`` resume state.
        settings: model and options.
        use_ray: run on a Ray cluster (``ray_address``; a local cluster when ``None``).
        ray_workers: number of model replicas on Ray (default: one per GPU, else per CPU).
        quiet: no progress bar; one log line per case instead.
        command: the command line, for the provenance file.

    Returns:
        ``(exit_code, results)``: exit code 0 when every case succeeded (or was done earlier), 1 when any
        failed; results in discovery order.

    Raises:
        MedsegError: nothing to do (no cases), model unavailable, outputs from another model without
            overwrite, Ray missing.
    """
    started = time.time()
    if not Path(input_dir).expanduser().is_dir():  # fail before the (slow) model load or cluster start
        from medseg.errors import ReadError

        raise ReadError("input is not a folder" if Path(input_dir).exists() else "no such folder", input_dir)
    backend = None
    worker = None
    state: BatchState | None = None
    try:
        if use_ray:
            from medseg.batch.ray_backend import RayBackend

            backend = RayBackend(settings, address=ray_address, workers=ray_workers)
            info = backend.start()
        else:
            from medseg.batch.isolate import CaseWorker, Limits

            worker = CaseWorker(settings.model, settings.predictor_kwargs(),
                                Limits(settings.read_timeout, settings.case_timeout))
            info = worker.start()
        if settings.roi:
            from medseg.pipeline import check_roi_names
            from medseg.types import Label

            check_roi_names(tuple(Label(int(d["id"]), str(d["name"])) for d in info["labels"]), settings.roi)
        fingerprint = run_fingerprint(info["fingerprint"], settings.output_settings())
        plan, state = plan_batch(Path(input_dir), Path(output_dir), fingerprint, settings.overwrite,
                                 settings.follow_outside_links, settings.case_filter(), _channels(info))
        for note in plan.notes:  # e.g. DICOM SEG/RTSTRUCT objects found next to the images: reported, not read
            log.info("note: %s", note)
        label_names = [lab["name"] for lab in info["labels"]]
        results: dict[str, CaseResult] = dict(plan.results)
        n_failed_before = sum(r.status is CaseStatus.FAILED for r in results.values())
        log.info(
            "%d case(s): %d to do, %d done earlier, %d not writable; model %s",
            len(plan.order), len(plan.todo), sum(r.status is CaseStatus.SKIPPED for r in results.values()),
            n_failed_before, info["name"],
        )
        progress = _Progress(len(plan.order), len(results), n_failed_before, quiet)

        def on_result(res: CaseResult) -> None:
            results[res.key] = res
            progress(res)

        interrupted: BaseException | None = None
        stages: dict[str, float] = {}
        try:
            if backend is not None:
                backend.run(plan.todo, state, on_result)
            else:
                stages = run_isolated(worker, plan.todo, state, on_result, settings)
                if plan.todo:
                    log.info("%d case(s) in %.1f s (%d worker restart(s))", len(plan.todo), stages["wall"],
                             worker.restarts)
        except KeyboardInterrupt as err:
            interrupted = err
        finally:  # the summary and provenance describe whatever was done, also after Ctrl-C or a crash
            progress.close()
            ordered = [results[k] for k in plan.order if k in results]
            write_summary(plan.output_dir / SUMMARY_NAME, ordered, label_names)
            if settings.stats:
                write_stats_table(plan.output_dir / STATS_NAME, ordered)
            counts = {s.value: sum(r.status is s for r in ordered) for s in CaseStatus}
            counts["not_run"] = len(plan.order) - len(ordered)
            write_provenance(
                plan.output_dir / PROVENANCE_NAME,
                model=info,
                settings={**asdict(settings), "ray": use_ray, "ray_address": ray_address, "ray_workers": ray_workers},
                command=list(command if command is not None else sys.argv),
                counts=counts,
                started=started,
                finished=time.time(),
                fingerprint=fingerprint,
                stage_seconds={k: round(v, 3) for k, v in stages.items()},
            )
        if interrupted is not None:
            raise interrupted
    finally:
        if state is not None:
            state.unlock()
        if backend is not None:
            backend.stop()
        if worker is not None:
            worker.stop()
    failed = counts["failed"]
    log.info(
        "done: %d ok, %d skipped (done earlier or not an image), %d failed; summary %s",
        counts["ok"], counts["skipped"], failed, plan.output_dir / SUMMARY_NAME,
    )
    return (1 if failed or counts["not_run"] else 0), ordered


STATS_NAME = "batch_stats.csv"


def write_stats_table(path: Path, results: list[CaseResult]) -> None:
    """One table of every case's per-label statistics (from each case's ``.stats.json``), atomically."""
    import json

    from medseg.io import atomic_output
    from medseg.pipeline import stats_path
    from medseg.stats import to_csv

    rows = []
    for r in results:
        if r.status is CaseStatus.FAILED or not r.output:
            continue
        out = Path(r.output) if Path(r.output).is_absolute() else path.parent / r.output
        stats = stats_path(out)
        if not stats.is_file():
            continue
        for row in json.loads(stats.read_text(encoding="utf-8"))["labels"]:
            rows.append({"input": r.input, "series": r.series or "", "output": str(r.output), **row})
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(to_csv(rows, extra_columns=("input", "series", "output")), encoding="utf-8")


def _channels(info: dict[str, Any]) -> tuple[int, str]:
    """``(channel count, name)`` of the loaded model from its :func:`medseg.pipeline.predictor_info`."""
    spec = info.get("spec") or {}
    return int((spec.get("input") or {}).get("channels", 1) or 1), str(info.get("name") or spec.get("name") or "")


def dry_run(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], settings: BatchSettings) -> list[tuple[str, str, str]]:
    """What a batch would do, touching nothing: ``(input, "run" | "skipped" | "failed", output or reason)``.

    Nothing is created (not even OUTPUT_DIR) and no model is loaded.
    """
    from medseg.errors import ReadError

    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise ReadError("input is not a folder" if root.exists() else "no such folder", root)
    out = Path(output_dir).expanduser().resolve()
    from medseg.model_input import model_contract

    contract = model_contract(settings.model)
    found = filter_cases(
        group_channel_files(
            discover_cases(root.resolve(), exclude=[out], follow_outside_links=settings.follow_outside_links),
            contract.channels, contract.name,
        ),
        settings.case_filter(),
    )
    outputs = output_paths([(c.key, c.naming_rel, c.series_label) for c in found.cases], out)
    rows = [(c.display, "run", str(outputs[c.key])) for c in found.cases]
    rows += [(e.rel, e.status, e.reason) for e in found.entries]
    return rows
