"""Where a sweep's runs are computed: in the driver, in a local process pool, or on Ray.

Every executor takes jobs (a RunSpec and the key the driver expects, or a population of them) and yields
``(job, RunOutcome or exception)`` as runs finish. Workers never write the results store;
the driver does (see :mod:`fewshot_bench.sweep`).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import torch

from fewshot_bench import plugin_host
from fewshot_bench.errors import ConfigError
from fewshot_bench.protocol.runner import RunContext, RunOutcome, compute, compute_population
from fewshot_bench.protocol.spec import Job, PopulationJob

# Each job with its outcome (a population job's: one per member), as it finishes.
Finished = Iterator[tuple[Job | PopulationJob, RunOutcome | list[RunOutcome] | BaseException]]


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs besides the job: data location, device, checkpoints, threads."""

    data_dir: str | None = None
    device: str = "cpu"
    checkpoint_dir: str | None = None
    threads: int = 1


_CONTEXTS: dict[WorkerSettings, RunContext] = {}


def worker_context(settings: WorkerSettings) -> RunContext:
    """This process's run context for ``settings``: plugins loaded and datasets cached once."""
    if settings not in _CONTEXTS:
        device = torch.device(settings.device)
        if device.type == "cpu":
            torch.set_flush_denormal(True)  # inner loops can produce subnormals: ~100x slower on CPU
        torch.set_num_threads(settings.threads)
        _CONTEXTS[settings] = RunContext(
            host=plugin_host.load_plugins(),  # looked up per call: tests give workers their own plugins
            store_path=Path(os.devnull),  # never written: results go back to the driver
            data_dir=Path(settings.data_dir) if settings.data_dir else None,
            device=device,
            checkpoint_dir=Path(settings.checkpoint_dir) if settings.checkpoint_dir else None,
            max_threads=settings.threads,  # a run may choose fewer threads (fewshot_bench.protocol.threads), never more
        )
    return _CONTEXTS[settings]


def compute_job(job: Job | PopulationJob, settings: WorkerSettings) -> RunOutcome | list[RunOutcome]:
    """Compute one job in this process (the function every executor ships to its workers).

    A :class:`PopulationJob` meta-trains its members as one population and returns one
    outcome per member, in its order.
    """
    if isinstance(job, PopulationJob):
        specs, keys = [m.spec for m in job.members], [m.key for m in job.members]
        return compute_population(specs, worker_context(settings), expected_keys=keys)
    return compute(job.spec, worker_context(settings), expected_key=job.key, on_validation=job.validation_hook())


class Executor(ABC):
    """Runs jobs and yields each with its outcome (or the exception it raised) as it finishes."""

    @abstractmethod
    def run(self, jobs: Iterable[Job | PopulationJob], in_flight: int | None = None) -> Finished:
        """Start the jobs; yield (job, outcome or exception) in completion order.

        ``in_flight`` None starts every job at once; a number keeps at most that many running
        and draws the next job from ``jobs`` only when one finishes, after its outcome was
        yielded (a search asks its sampler for the next trial knowing every finished one).
        """

    @abstractmethod
    def close(self) -> None:
        """Stop outstanding work and release workers."""

    @property
    @abstractmethod
    def description(self) -> str:
        """A short description for the sweep's plan line."""


class InlineExecutor(Executor):
    """Computes jobs one after another in the driver process (``--workers 1``)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    @property
    def description(self) -> str:
        return "this process, one run after another"

    def run(self, jobs: Iterable[Job | PopulationJob], in_flight: int | None = None) -> Finished:
        for job in jobs:  # one at a time: in flight is always 1
            try:
                outcome: RunOutcome | list[RunOutcome] | BaseException = compute_job(job, self.settings)
            except Exception as exc:  # reported per cell by the driver
                outcome = exc
            yield job, outcome

    def close(self) -> None:
        pass  # nothing runs between jobs


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when the driver dies, even by SIGKILL (no orphans left training)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(1)

    def watch() -> None:  # portable fallback where prctl is unavailable
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init_worker(parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C reaches the whole process group; the driver alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor(Executor):
    """A pool of worker processes on this machine (spawned, so each has a clean torch)."""

    def __init__(self, workers: int, settings: WorkerSettings) -> None:
        self.workers, self.settings = workers, settings
        self.pool: cf.ProcessPoolExecutor | None = None
        self.outstanding = 0

    @property
    def description(self) -> str:
        return f"a local pool of {self.workers} workers ({self.settings.threads} torch thread(s) each)"

    def run(self, jobs: Iterable[Job | PopulationJob], in_flight: int | None = None) -> Finished:
        self.pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            initargs=(os.getpid(),),
        )
        source = iter(jobs)
        futures = {self.pool.submit(compute_job, job, self.settings): job for job in islice(source, in_flight)}
        self.outstanding = len(futures)
        while futures:
            future = next(cf.as_completed(futures))
            job = futures.pop(future)
            self.outstanding -= 1
            exc = future.exception()
            yield job, exc if exc is not None else future.result()
            for job in islice(source, 1 if in_flight else 0):
                futures[self.pool.submit(compute_job, job, self.settings)] = job
                self.outstanding += 1

    def close(self) -> None:
        if self.pool is None:
            return
        if not self.outstanding:
            self.pool.shutdown(wait=True)
            self.pool = None
            return
        # Runs still in flight are stopped, not waited for: their checkpoints let the next
        # sweep resume them. The pool has no public way to stop running workers.
        workers = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            if process.is_alive():
                process.kill()
        for process in workers:
            process.join(timeout=10)
        self.pool = None


class RayExecutor(Executor):
    """Ray tasks (one CPU each) on a local Ray instance or a cluster at ``address``.

    Each task ships (learner, config key, seed) as the job and returns the outcome to the
    driver. Every node needs the same fewshot-bench and plugin versions installed, and the
    data at the same path (``--data-dir``); a node that resolves a different config refuses.
    """

    def __init__(self, address: str | None, settings: WorkerSettings, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: python -m pip install 'ray[default]>=2.9'") from None
        self.ray = ray
        self.settings = settings
        self.started_here = False
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False} if address in (None, "local") else {}
            if num_cpus is not None and address in (None, "local"):
                kwargs["num_cpus"] = num_cpus
            try:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(f"could not connect to Ray at {address or 'a new local instance'}: {exc}") from None
            self.started_here = True
        self.pending: list = []

    @property
    def description(self) -> str:
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        return f"Ray ({cpus} CPUs in the cluster)"

    def run(self, jobs: Iterable[Job | PopulationJob], in_flight: int | None = None) -> Finished:
        task = self.ray.remote(num_cpus=1)(compute_job)
        source = iter(jobs)
        by_ref = {task.remote(job, self.settings): job for job in islice(source, in_flight)}
        self.pending = list(by_ref)
        while self.pending:
            ready, self.pending = self.ray.wait(self.pending, num_returns=1)
            ref = ready[0]
            try:
                outcome: RunOutcome | list[RunOutcome] | BaseException = self.ray.get(ref)
            except Exception as exc:  # a task error carries the original exception as its cause
                outcome = getattr(exc, "cause", None) or exc
            yield by_ref.pop(ref), outcome
            for job in islice(source, 1 if in_flight else 0):
                ref = task.remote(job, self.settings)
                by_ref[ref] = job
                self.pending.append(ref)

    def close(self) -> None:
        for ref in self.pending:  # stopped, not waited for: checkpoints let the next sweep resume
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or gone: nothing to stop
                pass
        self.pending = []
        if self.started_here:
            self.ray.shutdown()


def make_executor(
    kind: str, workers: int | None, settings: WorkerSettings, ray_address: str | None = None, device: str = "cpu"
) -> Executor:
    """The executor ``kind`` (``local`` or ``ray``) with ``workers`` (default: one per core)."""
    cores = os.cpu_count() or 1
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be at least 1")
    if kind == "local":
        n = workers or cores
        threads = max(1, cores // n)
        s = WorkerSettings(settings.data_dir, device, settings.checkpoint_dir, threads)
        return InlineExecutor(s) if n == 1 else LocalExecutor(n, s)
    if kind == "ray":
        s = WorkerSettings(settings.data_dir, device, settings.checkpoint_dir, 1)
        return RayExecutor(ray_address, s, num_cpus=workers)
    raise ConfigError(f"unknown executor {kind!r}; use local, ray or slurm")
