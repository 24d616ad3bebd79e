"""Run a batch on a Ray cluster: one model replica per worker (a Ray actor), same outputs and resume state.

The driver (``medseg batch --ray``) discovers the cases, names the outputs and keeps the resume state and
summary exactly as a local run does; each actor loads the model once and reads, segments and writes its
cases (atomically) — so INPUT_DIR and OUTPUT_DIR must be visible at the same paths on every node (a
shared file system, as on SLURM clusters). The driver writes a case's pending record before sending it
and its completion record after the actor reports success, so an interrupted Ray run resumes like a
local one. Each actor has at most two cases in flight (one running, one queued).

Ray is optional (``pip install 'medseg[distributed]'``) and imported only here, only when used.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from medseg.batch.naming import ensure_inside
from medseg.batch.state import BatchState
from medseg.batch.summary import CaseResult, CaseStatus
from medseg.errors import MedsegError, ModelError

__all__ = ["RayBackend", "SegmentWorker", "import_ray", "INSTALL_HINT"]

log = logging.getLogger("medseg.batch")

INSTALL_HINT = "pip install 'medseg[distributed]'  (or: pip install 'ray[default]')"
#: cases queued on one actor at a time (one running + one waiting, so it never idles between cases)
IN_FLIGHT_PER_WORKER = 2
#: dead actors replaced before the batch gives up
MAX_WORKER_RESTARTS = 3


def import_ray() -> Any:
    """``import ray``, or a :class:`MedsegError` with the install command when it is missing."""
    try:
        import ray
    except ImportError as err:
        raise MedsegError(f"--ray needs the Ray package, which is not installed: {INSTALL_HINT}") from err
    return ray


class SegmentWorker:
    """Body of a Ray actor: loads the predictor once, then reads → segments → writes one case per call."""

    def __init__(self, model: str, predictor_kwargs: dict[str, Any]) -> None:
        from medseg.predictor import load_predictor

        self.predictor = load_predictor(model, **predictor_kwargs)

    def info(self) -> dict[str, Any]:
        from medseg.pipeline import predictor_info

        return {**predictor_info(self.predictor), "host": os.uname().nodename, "pid": os.getpid()}

    def process(self, case: Any, output: str, overwrite: bool, settings: Any) -> dict[str, Any]:
        """Segment one case (:mod:`medseg.batch.worker`, through :mod:`medseg.pipeline`); never raises for a
        bad case: ``{"error": str|None, "volumes_ml", "seconds"}``."""
        from medseg.batch.worker import format_error, free_accelerator_memory, is_oom, read_case, segment_case

        t0 = time.perf_counter()
        try:
            volume = read_case(case, settings)
            vols = segment_case(self.predictor, case, volume, Path(output), overwrite, settings)
            return {"error": None, "volumes_ml": vols, "seconds": time.perf_counter() - t0}
        except Exception as err:  # noqa: BLE001 - per-case error capture (incl. out of memory)
            if is_oom(err):
                free_accelerator_memory()
            return {"error": format_error(err), "volumes_ml": {}, "seconds": time.perf_counter() - t0}


class RayBackend:
    """Start (or join) a Ray cluster, create the model replicas, run planned cases on them.

    Args:
        settings: :class:`~medseg.batch.settings.BatchSettings`.
        address: cluster address (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``); ``None`` starts
            a local cluster (or uses the one already initialised in this process).
        workers: number of replicas; default one per GPU when the cluster has GPUs, else one per
            ``threads`` CPUs (``threads`` defaults to 1: one replica per CPU).
    """

    def __init__(self, settings: Any, address: str | None = None, workers: int | None = None) -> None:
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}.")
        self.settings = settings
        self.address = address
        self.workers = workers
        self.ray = import_ray()
        self._owns_ray = False
        self.actors: list[Any] = []
        self._actor_cls: Any = None
        self.restarts = 0

    def start(self) -> dict[str, Any]:
        """Connect, create the actors (each loads the model), and return the model info (fingerprint...)."""
        ray = self.ray
        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, logging_level=logging.WARNING)
            elif os.environ.get("RAY_ADDRESS"):  # Ray's own convention: join the cluster it names
                ray.init(logging_level=logging.WARNING)
            else:  # a local cluster on this machine, for this run
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=logging.WARNING)
            self._owns_ray = True
        resources = ray.cluster_resources()
        n_gpus = int(resources.get("GPU", 0))
        n_cpus = max(1, int(resources.get("CPU", 1)))
        cpus_per_worker = min(self.settings.threads or 1, n_cpus)
        device = str(self.settings.device)
        use_gpu = n_gpus >= 1 and (device == "auto" or device.startswith("cuda"))
        n = self.workers or (n_gpus if use_gpu and n_gpus >= 1 else max(1, n_cpus // cpus_per_worker))
        options: dict[str, Any] = {"num_cpus": cpus_per_worker, "num_gpus": 1 if use_gpu and n_gpus >= 1 else 0}
        kwargs = dict(self.settings.predictor_kwargs())
        if options["num_gpus"] and kwargs.get("device") == "auto":
            kwargs["device"] = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU: cuda:0 there
        self._actor_cls = ray.remote(**options)(SegmentWorker)
        self._actor_args = (self.settings.model, kwargs)
        self._n_workers = n
        log.info("Ray: %d worker(s), %s CPU and %s GPU each", n, options["num_cpus"], options["num_gpus"])
        # create one replica first: a bad model fails once, clearly, instead of n times
        self.actors = [self._new_actor()]
        infos = [self._info(self.actors[0])]
        return infos[0]

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(*self._actor_args)

    def _info(self, actor: Any) -> dict[str, Any]:
        try:
            return self.ray.get(actor.info.remote())
        except self.ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err
            if isinstance(cause, MedsegError):
                raise cause from None
            raise ModelError(f"a Ray worker could not load model {self.settings.model!r}: {cause}") from err

    def run(self, todo: Sequence[Any], state: BatchState, on_result: Callable[[CaseResult], None]) -> None:
        """Run ``todo`` (PlannedCase list) on the actors; ``on_result`` once per case, in completion order."""
        ray = self.ray
        if not todo:
            return
        want = min(self._n_workers, len(todo))
        while len(self.actors) < want:
            self.actors.append(self._new_actor())
        fingerprint = self._info(self.actors[0])["fingerprint"]
        for actor in self.actors[1:]:
            other = self._info(actor)["fingerprint"]
            if other != fingerprint:
                raise ModelError(
                    f"Ray workers disagree on the model fingerprint ({fingerprint} vs {other}): "
                    "mixed devices or model files differ between nodes"
                )
        waiting = deque(todo)
        in_flight: dict[Any, tuple[Any, Any, float]] = {}  # ref -> (planned, actor, submitted)
        per_actor: dict[int, deque] = {id(a): deque() for a in self.actors}

        def submit(actor: Any) -> None:
            planned = waiting.popleft()
            rel = PurePosixPath(planned.output.relative_to(state.output_dir).as_posix())
            ensure_inside(state.output_dir, rel)
            state.mark_pending(planned.case.key, planned.output)
            ref = actor.process.remote(planned.case, str(planned.output), planned.overwrite, self.settings)
            in_flight[ref] = (planned, actor, time.perf_counter())
            per_actor[id(actor)].append(ref)

        def result(planned: Any, status: CaseStatus, seconds: float, vols: dict[str, float], error: str) -> CaseResult:
            rel_out = planned.output.relative_to(state.output_dir).as_posix()
            return CaseResult(planned.case.key, str(planned.case.rel), planned.case.description, rel_out, status,
                              seconds, vols, error)

        try:
            for actor in self.actors:
                for _ in range(IN_FLIGHT_PER_WORKER):
                    if waiting:
                        submit(actor)
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                ref = ready[0]
                planned, actor, t_sub = in_flight.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayActorError as err:
                    # the worker process died (killed, out of host memory, segfault): the oldest case sent to
                    # it was running and fails; the others never started and go to another worker
                    refs = per_actor.pop(id(actor), deque())
                    running = refs[0] if refs else ref
                    if running != ref:
                        waiting.appendleft(planned)
                        planned, _, t_sub = in_flight.pop(running)
                    for r in refs:
                        if r != ref and r != running:
                            waiting.appendleft(in_flight.pop(r)[0])
                    on_result(result(planned, CaseStatus.FAILED, time.perf_counter() - t_sub, {},
                                     f"Ray worker died while segmenting this case (out of memory?): {err}"))
                    self._replace(actor, per_actor)
                    self._refill(waiting, per_actor, submit)
                    continue
                except ray.exceptions.RayTaskError as err:  # a bug in the worker code, not a bad case
                    raise RuntimeError(f"a Ray worker failed: {err}") from err
                if ref in per_actor.get(id(actor), ()):
                    per_actor[id(actor)].remove(ref)
                if out["error"]:
                    on_result(result(planned, CaseStatus.FAILED, out["seconds"], {}, out["error"]))
                else:
                    state.mark_done(planned.case.key, planned.output, out["seconds"], out["volumes_ml"])
                    on_result(result(planned, CaseStatus.OK, out["seconds"], out["volumes_ml"], ""))
                self._refill(waiting, per_actor, submit)
        except BaseException:
            for ref in list(in_flight):
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
            raise

    def _refill(self, waiting: deque, per_actor: dict[int, deque], submit: Callable[[Any], None]) -> None:
        for actor in self.actors:
            while waiting and len(per_actor[id(actor)]) < IN_FLIGHT_PER_WORKER:
                submit(actor)

    def _replace(self, dead: Any, per_actor: dict[int, deque]) -> None:
        self.restarts += 1
        if self.restarts > MAX_WORKER_RESTARTS:
            raise RuntimeError(f"Ray workers died {self.restarts} times; giving up (see the Ray logs)")
        per_actor.pop(id(dead), None)
        self.actors = [a for a in self.actors if a is not dead]
        fresh = self._new_actor()
        self.actors.append(fresh)
        per_actor[id(fresh)] = deque()
        log.warning("a Ray worker died; started a replacement (%d/%d)", self.restarts, MAX_WORKER_RESTARTS)

    def stop(self) -> None:
        """Kill the actors; shut Ray down if this backend started it."""
        ray = self.ray
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - best effort
                pass
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        sys.stdout.flush()
