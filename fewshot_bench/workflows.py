"""The Python face of fewshot-bench: ``run``, ``sweep``, ``tune``, ``compare``, ``table`` and ``results`` as functions.

Each does what the command of the same name does, and the commands are thin shells over
these functions: the same checks and one-line :class:`~fewshot_bench.errors.FewshotBenchError`
errors, the same rows in the results store under the same run keys, and a run the store
already has is reused, not computed again. Results come back typed: a :class:`RunResult`
carries the per-episode values as a numpy array, ``results`` is a pandas DataFrame.

``results`` and ``compare`` read the store without importing torch (``compare`` loads plugins, and
so torch, only to resolve ``datasets`` names): the torch-backed modules are imported by the
functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fewshot_bench.errors import ConfigError, ConfigValueError, FewshotBenchError
from fewshot_bench.locations import checkpoint_folder, data_root
from fewshot_bench.protocol.spec import (
    TUNE_STAGE,
    RunSettings,
    RunSpec,
    hparams_source,
    seed_values,
    settings_of,
    whole_number,
)
from fewshot_bench.records.store import DEFAULT_STORE, ResultStore, RunRecord
from fewshot_bench.reports import report
from fewshot_bench.reports.combining import (
    Protocol,
    data_id_of,
    execution_of,
    execution_text,
    is_transductive,
    overrides_of,
    overrides_text,
    protocol_of,
)
from fewshot_bench.reports.figure_files import Provenance
from fewshot_bench.reports.paired import PairedReport
from fewshot_bench.reports.paired import compare as paired_compare
from fewshot_bench.reports.tables import PAPER_DATASETS, Setting, TableSpec, get_table
from fewshot_bench.reports.tables import settings as table_columns
from fewshot_bench.tracking.destination import Tracking
from fewshot_bench.tracking.session import Logged, TrackingSession

if TYPE_CHECKING:  # annotations only: these modules import torch, which reading the store does not need
    from fewshot_bench.plugin_host import PluginHost
    from fewshot_bench.search.executors import Executor, WorkerSettings
    from fewshot_bench.search.sweep import Plan
    from fewshot_bench.search.tune import SearchReport, SearchRequest

def worker_settings(store: Path, data_dir: str | Path | None, checkpoint_dir: str | Path | None) -> WorkerSettings:
    """What every sweep or search worker needs: the data and checkpoint folders, absolute.

    Absolute, because a Ray worker may start elsewhere.
    """
    from fewshot_bench.search.executors import WorkerSettings

    root = data_root(data_dir)
    return WorkerSettings(
        data_dir=str(root.resolve()) if root else None,
        checkpoint_dir=str(checkpoint_folder(store, checkpoint_dir).resolve()),
    )


def _executor(kind: str, workers: int | None, places: WorkerSettings, ray_address: str | None, device: str,
              slurm: Mapping[str, Any] | None, progress: bool) -> Executor:
    """Where a sweep's or a search's jobs run: a local pool, Ray, or Slurm (with the ``slurm`` options)."""
    if slurm and kind != "slurm":
        raise ConfigError(f"Slurm options were given, but the executor is {kind}; add --executor slurm")
    if kind == "slurm":
        from fewshot_bench.console.progress import log_interval
        from fewshot_bench.search.slurm import make_slurm_executor

        return make_slurm_executor(slurm, places, device, progress=progress, log_every=log_interval())
    from fewshot_bench.search.executors import make_executor

    return make_executor(kind, workers, places, ray_address, device)


def texts(values: Mapping[str, Any] | None) -> dict[str, str]:
    """``--set`` values as the command line gives them (text), from Python values."""
    return {key: value if isinstance(value, str) else _text(value) for key, value in (values or {}).items()}


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _host(host: PluginHost | None) -> PluginHost:
    from fewshot_bench.plugin_host import load_plugins

    return host if host is not None else load_plugins()


# --- run -------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One stored run: its metric with the 95% CI, every test episode's value, and how it was made."""

    run_id: str
    run_key: str  # the run's identity: equal keys are the same run
    learner: str
    dataset: str
    way: int
    shot: int
    seed: int
    metric: str  # what ``mean`` and ``per_episode`` hold: "accuracy" (0..1), or "mse" for regression
    mean: float
    ci95: float  # half-width of the 95% confidence interval of the mean over episodes
    per_episode: np.ndarray  # the metric of each test episode, in episode order
    config: dict[str, Any]  # the learner's resolved config
    options: dict[str, Any]  # the protocol (the run's RunSpec) and what the runner adds
    summary: dict[str, Any]  # std, and what meta-training did (steps, best validation, history)
    provenance: dict[str, Any]  # versions, hardware, timings
    store: Path
    reused: bool = False  # the store had this run already: nothing was computed
    stored_by_other: bool = False  # another process stored the same run first: its row is kept

    @property
    def steps(self) -> int:
        """Meta-training steps taken (0 for a learner that is not meta-trained)."""
        return int(self.summary.get("train", {}).get("steps", 0))

    @property
    def data_id(self) -> str | None:
        """The content id of the data the run read (None: stored before data ids)."""
        return self.options.get("data_id")

    @property
    def best_val(self) -> float | None:
        """The best validation metric of meta-training (early stopping's pick), if meta-trained."""
        return self.summary.get("train", {}).get("best_val_metric")

    @classmethod
    def from_record(
        cls, store: Path, record: RunRecord, values: np.ndarray, reused: bool = False, stored_by_other: bool = False
    ) -> RunResult:
        """The result of a stored run, with its per-episode values."""
        return cls(
            run_id=record.run_id, run_key=record.run_key, learner=record.learner, dataset=record.dataset,
            way=record.way, shot=record.shot, seed=record.seed, metric=record.metric, mean=record.mean,
            ci95=record.ci95, per_episode=values, config=record.config, options=record.options, summary=record.summary,
            provenance={"versions": record.versions, "hardware": record.hardware, "timings": record.timings},
            store=store, reused=reused, stored_by_other=stored_by_other,
        )


@dataclass
class CheckedRun:
    """A run that passed every check, about to be reused from the store or computed."""

    spec: RunSpec
    run_key: str
    stored: RunRecord | None  # the stored run with this key, reused unless ``rerun``
    meta_trained: bool = True  # False: the learner has nothing to meta-train (or no steps): only evaluated


def run_spec(
    host: PluginHost, learner: str, settings: RunSettings | None = None, seed: int = 0, **fields: Any
) -> RunSpec:
    """The spec of one run, as ``fewshot-bench run`` builds it from the same options.

    ``fields`` (the :class:`RunSettings` fields as keywords) are given over ``settings``:
    ``way``/``shot`` None: 5-way 1-shot, or what the dataset's task kind fixes and its default
    shot; ``budget`` ("quick" or "paper") gives the steps and episodes not given; ``patience``
    0 or None never stops early; ``overrides`` are ``--set`` values of the learner's Config.
    """
    from fewshot_bench.protocol.runner import episode_shape

    given = settings_of(settings, **fields)
    way, shot = episode_shape(host, given.dataset, given.way, given.shot)
    return replace(given, way=way, shot=shot, overrides=texts(given.overrides)).spec(learner, seed)


def run(
    learner: str,
    dataset: str | None = None,
    *,
    settings: RunSettings | None = None,
    seed: int | None = None,
    seeds: Iterable[int] | None = None,
    store: str | Path = DEFAULT_STORE,
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | str | None = None,
    rerun: bool = False,
    restart: bool = False,
    profile: bool = False,
    cuda_graph: bool = True,
    progress: bool = False,
    progress_every: float | None = None,
    host: PluginHost | None = None,
    on_checked: Callable[[CheckedRun], None] | None = None,
    population: bool = True,
    population_size: int | None = None,
    tracking: Tracking | str | None = None,
    **fields: Any,
) -> RunResult | list[RunResult]:
    """Meta-train and evaluate one learner on one setting and seed, store it, and return its result.

    ``settings`` (:class:`~fewshot_bench.protocol.spec.RunSettings`), or its fields as keywords
    over it (way, shot, budget, steps, episodes, val_every, val_episodes, patience, eval_query,
    train_on_val, hparams, overrides, crop; ``dataset``): what ``fewshot-bench run`` takes as
    options. A run the store has already (same run key) is returned without computing, unless
    ``rerun``. ``on_checked`` is called once every check passed, before any work.

    ``seeds`` (in place of ``seed``): one run per seed, returned as a list in that order and
    stored exactly as separate runs would be; the seeds the store lacks are meta-trained
    together as a population (:mod:`fewshot_bench.protocol.population`) of at most ``population_size``
    members, or one after another with ``population=False``.

    ``tracking`` (``"tensorboard"`` or ``"mlflow"`` with their defaults, or a
    :meth:`Tracking.checked <fewshot_bench.tracking.destination.Tracking.checked>`) logs the run to TensorBoard or
    MLflow: one run live as it trains, ``seeds`` from their stored records; a run the destination shows already is
    not logged again.
    """
    import torch

    from fewshot_bench.protocol import preflight
    from fewshot_bench.protocol.runner import RunContext, drop_checkpoint, execute, prepare
    from fewshot_bench.protocol.threads import requested_threads
    from fewshot_bench.records.provenance import resolve_device
    from fewshot_bench.search.tune import with_tuned

    given = settings_of(settings, **fields, **({} if dataset is None else {"dataset": dataset}))
    tracking = tracked(tracking)
    seed_list = None if seeds is None else check_seeds(seeds, seed, given.allow_large)
    seed = 0 if seed is None else whole_number("seed", seed)
    if population_size is not None:
        population_size = whole_number("population_size", population_size)
    host = _host(host)
    store = Path(store)
    spec = with_tuned(run_spec(host, learner, given, seed), store, host)
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        torch.set_flush_denormal(True)  # inner loops can produce subnormals: ~100x slower on CPU
    host.learner(spec.learner)  # fail fast on an unknown learner
    requested_threads(threads)  # and on a malformed thread count or $FEWSHOT_BENCH_THREADS
    ctx = RunContext(
        host=host, store_path=store, data_dir=data_root(data_dir), device=torch_device,
        checkpoint_dir=checkpoint_folder(store, checkpoint_dir), progress=progress, progress_every=progress_every,
        profile=profile, cuda_graph=cuda_graph, restart=restart, threads=threads,
    )
    if seed_list is not None:
        specs = [replace(spec, seed=seed) for seed in seed_list]
        return _run_seeds(specs, ctx, rerun, on_checked, population, population_size, tracking)
    # Everything the options, the config, the store and the checkpoint folder can tell, before any work.
    run_key = prepare(spec, ctx)
    stored = None if rerun else preflight.stored_run(store, run_key)
    if on_checked is not None:
        on_checked(CheckedRun(spec, run_key, stored, meta_trains(host, spec)))
    if stored is not None:  # one run key, one complete row: reuse it
        drop_checkpoint(ctx.checkpoint_dir, run_key)
        _track_stored(tracking, store, [stored.run_id])
        return _stored_result(store, stored, None)
    if tracking is None:
        return _stored_result(store, None, execute(spec, ctx, rerun=rerun))
    session = TrackingSession(tracking)
    live = session.live(spec.learner, host.dataset(spec.dataset).name, spec.way, spec.shot, spec.seed, run_key)
    try:
        out = execute(spec, ctx, rerun=rerun, tracking=live)
    except BaseException:
        live.close(failed=True)
        raise
    result = _stored_result(store, None, out)
    with ResultStore(store, create=False) as db:
        record = db.run(result.run_id)
    session.finish(live, record, protocol_of(record).id)
    return result


def tracked(tracking: Tracking | str | None) -> Tracking | None:
    """A tracking destination as given: a checked :class:`Tracking`, a tracker's name (its defaults), or None."""
    return Tracking.checked(tracking) if isinstance(tracking, str) else tracking


def _track_stored(tracking: Tracking | None, store: Path, run_ids: list[str]) -> Logged | None:
    """Log the stored runs ``run_ids`` the tracking destination does not show yet (None: no tracking)."""
    if tracking is None:
        return None
    with ResultStore(store, create=False) as db:
        records = [db.run(run_id) for run_id in run_ids]
    return _log_records(TrackingSession(tracking), records)


def _log_records(session: TrackingSession, records: list[RunRecord], artifacts: Iterable[Path] = ()) -> Logged:
    """Log ``records`` the session's destination lacks, saying where."""
    import logging

    logged = session.stored(records, lambda record: protocol_of(record).id, artifacts)
    logging.getLogger(__name__).info("tracking: %d run(s) logged to %s, %d there already", len(logged.logged),
                                     logged.where, len(logged.skipped))
    return logged


def _stored_result(store: Path, stored: RunRecord | None, out: dict[str, Any] | None) -> RunResult:
    """The stored row of a run: the reused one, or the one just computed (another process's, if it stored first)."""
    with ResultStore(store, create=False) as db:
        record = stored or db.run(out.run_id)
        values = db.episode_values(record.run_id)
    return RunResult.from_record(
        store, record, values, reused=stored is not None, stored_by_other=bool(out and out.stored_by_other)
    )


def meta_trains(host: PluginHost, spec: RunSpec) -> bool:
    """Whether ``spec`` meta-trains: its learner has something to meta-train on its dataset's task kind, and steps."""
    kind = host.dataset(spec.dataset).kind
    return host.learner(spec.learner).for_kind(kind).meta_trainable and spec.steps > 0


def check_seeds(seeds: Iterable[int] | str, seed: int | None = None, allow_large: bool = False) -> list[int]:
    """``seeds`` as a list of distinct seeds (one-line errors for none, repeats, too many, or ``seed`` given too).

    ``seeds`` is an iterable of whole numbers, a ``range``, or text as ``--seeds`` takes it (``"0-4"``, ``"0,2"``);
    more than :data:`~fewshot_bench.protocol.spec.SEED_LIMIT` is refused before any list is made.
    """
    if seed is not None:
        raise ConfigError("give seed or seeds, not both")
    return seed_values(seeds, allow_large)


def _run_seeds(
    specs: list[RunSpec], ctx: Any, rerun: bool, on_checked: Callable[[CheckedRun], None] | None,
    population: bool, population_size: int | None, tracking: Tracking | None = None,
) -> list[RunResult]:
    """One run per spec (seeds of one cell), the ones the store lacks meta-trained together; results in spec order."""
    from fewshot_bench.protocol import preflight
    from fewshot_bench.protocol.population import configured_memory
    from fewshot_bench.protocol.runner import drop_checkpoint, execute_population, prepare_all

    if population_size is not None and population_size < 1:
        raise ConfigError("population size must be at least 1")
    if population:
        configured_memory()  # a bad FEWSHOT_BENCH_POPULATION_MEMORY: one line now, not after a trial step
    keys = prepare_all(specs, ctx)
    stored = [None if rerun else preflight.stored_run(ctx.store_path, key) for key in keys]
    if on_checked is not None:
        for spec, key, row in zip(specs, keys, stored):
            on_checked(CheckedRun(spec, key, row, meta_trains(ctx.host, spec)))
    for key, row in zip(keys, stored):
        if row is not None:
            drop_checkpoint(ctx.checkpoint_dir, key)
    session = TrackingSession(tracking) if tracking is not None else None  # a bad destination fails before training
    missing = [spec for spec, row in zip(specs, stored) if row is None]
    outs = iter(execute_population(missing, ctx, rerun, batched=population, size=population_size) if missing else [])
    results = [_stored_result(ctx.store_path, row, None if row is not None else next(outs)) for row in stored]
    if session is not None:  # from the stored records: a population's members train as one program
        with ResultStore(ctx.store_path, create=False) as db:
            _log_records(session, [db.run(r.run_id) for r in results])
    return results


# --- sweep -----------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What a sweep planned and did; ``runs`` are its cells' stored results once it has run."""

    learners: list[str]
    datasets: list[str]
    shots: list[int]
    seeds: list[int]
    protocol: dict[str, Any]  # the RunSpec fields every cell shares
    planned: int
    already_complete: int
    pending: list[str]  # labels of the cells to run
    store: Path
    executor: str | None = None  # where the pending cells run (None: nothing to run, or a dry run)
    ran: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (cell, error) of each cell that failed
    runs: list[RunResult] = field(default_factory=list)

    def raise_failures(self) -> None:
        """A one-line :class:`FewshotBenchError` if any cell failed (its completed cells are stored)."""
        if self.failed:
            label, error = self.failed[0]
            raise FewshotBenchError(
                f"{len(self.failed)} run(s) failed (first: {label}: {error}); completed runs are stored, "
                "run the same command to retry"
            )


# A sweep's own defaults: the paper's stage 3 (its budget, meta-train on train + val); `sweep` and fb.sweep share them.
SWEEP_DEFAULTS = {"budget": "paper", "train_on_val": True}
# Settings a sweep takes from its grid instead (datasets, shots), or never (a search trial's stage, --set).
NOT_SWEEP_SETTINGS = ("dataset", "shot", "overrides", "stage")


def sweep(
    learners: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
    shots: Iterable[int] | None = None,
    seeds: int = 5,
    *,
    first_seed: int = 0,
    table: str | int | None = None,
    settings: RunSettings | None = None,
    store: str | Path = DEFAULT_STORE,
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    executor: str = "local",
    workers: int | None = 1,
    ray_address: str | None = None,
    slurm: Mapping[str, Any] | None = None,
    device: str = "cpu",
    dry_run: bool = False,
    progress: bool = False,
    raise_failures: bool = True,
    host: PluginHost | None = None,
    on_plan: Callable[[SweepResult], None] | None = None,
    population: bool = True,
    population_size: int | None = None,
    tracking: Tracking | str | None = None,
    **fields: Any,
) -> SweepResult:
    """Run every (learner, dataset, shot, seed) cell the store does not have yet, as ``fewshot-bench sweep``.

    The grid is the LEO paper's ``table`` (1 or 2), or ``learners`` x ``datasets`` (default
    synthetic) x ``shots`` (default 1, 5) x ``seeds`` seeds from ``first_seed``; every cell
    shares ``settings`` (:class:`~fewshot_bench.protocol.spec.RunSettings`, or its fields as
    keywords: way, budget, steps, ...). The default is the paper's stage 3 (``budget="paper"``,
    meta-train on train + val). ``workers`` 1 computes in this process; N > 1 a local pool, None
    one worker per core. A failed cell raises after the others are stored (``raise_failures=False``:
    see ``failed``). ``on_plan`` is called once the plan is made, before any run starts. Each
    cell's missing seeds meta-train together as one population (of at most ``population_size``),
    storing the rows separate runs would; ``population=False`` runs every seed as its own job. ``tracking``
    logs every stored run of the grid the destination does not show yet, from its record, once the sweep ends
    (workers return records; the driver logs).
    ``executor="slurm"`` submits each population as a Slurm job, ``slurm`` holding the ``--slurm-*``
    options by name (partition, time, cpus, mem, gpus, gres, account, qos, constraint,
    array_parallelism, folder, extra; docs/clusters.md).
    """
    from fewshot_bench.protocol.runner import drop_checkpoint
    from fewshot_bench.search.sweep import run_plan

    if wrong := [name for name in NOT_SWEEP_SETTINGS if name in fields]:
        raise TypeError(f"sweep() got an unexpected keyword argument {wrong[0]!r} (a sweep's grid: datasets, shots)")
    store = Path(store)
    shared = settings_of(settings or RunSettings(**SWEEP_DEFAULTS), **fields)
    tracking = tracked(tracking)
    todo, result, torch_device, host = _plan_sweep(
        (learners, datasets, shots, seeds, first_seed, table), shared, store, data_dir, device, host
    )
    places = worker_settings(store, data_dir, checkpoint_dir)
    runner = None
    if todo.pending and not dry_run:
        if population:
            from fewshot_bench.protocol.population import configured_memory

            configured_memory()  # a bad FEWSHOT_BENCH_POPULATION_MEMORY: one line now, not in every worker
        runner = _executor(executor, workers, places, ray_address, str(torch_device), slurm, progress)
        result.executor = runner.description
    if on_plan is not None:
        on_plan(result)
    if dry_run:
        return result
    session = TrackingSession(tracking) if tracking is not None else None  # opened before any run: fails first
    checkpoints = Path(places.checkpoint_dir)
    for job in todo.done:  # left behind if a sweep was killed between storing a run and dropping its checkpoint
        drop_checkpoint(checkpoints, job.key)
    if runner is not None:
        outcome = run_plan(todo, runner, store, checkpoints, progress, population, population_size)
        result.ran, result.failed = outcome.ran, outcome.failed
    result.runs = _grid_results(store, todo)
    if session is not None and result.runs:
        with ResultStore(store, create=False) as db:
            _log_records(session, [db.run(r.run_id) for r in result.runs])
    if raise_failures:
        result.raise_failures()
    return result


def _plan_sweep(
    grid_of: tuple[Any, ...], shared: RunSettings, store: Path, data_dir: str | Path | None, device: str,
    host: PluginHost | None,
) -> tuple[Plan, SweepResult, Any, PluginHost]:
    """A sweep's checked cells split into pending and complete, what it plans, its torch device and plugins."""
    import torch

    from fewshot_bench.records.provenance import resolve_device
    from fewshot_bench.search.sweep import axes, grid, plan, seed_list
    from fewshot_bench.search.tune import apply_tuned

    learners, datasets, shots, seeds, first_seed, table = grid_of
    learner_list, dataset_list, shot_list = axes(
        None if table is None else str(table), _list(learners), _list(datasets), _list(shots)
    )
    protocol = {**shared.budget_fields(), "train_on_val": shared.train_on_val, "hparams": shared.hparams,
                "crop": shared.crop}
    seeds_of_cells = seed_list(seeds, first_seed, shared.allow_large)
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        torch.set_flush_denormal(True)  # for runs computed in this process (workers=1)
    host = _host(host)
    cells = grid(host, learner_list, dataset_list, shot_list, seeds_of_cells, shared.way, **protocol)
    todo: Plan = plan(host, apply_tuned(cells, store, host), store, data_root(data_dir))
    result = SweepResult(
        learners=learner_list, datasets=dataset_list, shots=shot_list, seeds=seeds_of_cells, protocol=protocol,
        planned=todo.total, already_complete=len(todo.done), pending=[job.label for job in todo.pending], store=store,
    )
    return todo, result, torch_device, host


def _grid_results(store: Path, todo: Plan) -> list[RunResult]:
    """The stored results of a sweep's cells, in grid order (those that failed left out)."""
    if not store.exists():
        return []
    done = {job.key for job in todo.done}
    with ResultStore(store, create=False) as db:
        records = [r for job in (*todo.done, *todo.pending) if (r := db.find_complete(job.key)) is not None]
        return [RunResult.from_record(store, r, db.episode_values(r.run_id), reused=r.run_key in done) for r in records]


def _list(values: Iterable[Any] | None) -> list[Any] | None:
    if values is None:
        return None
    return [values] if isinstance(values, (str, int)) else list(values)


# --- tune ------------------------------------------------------------------------------------------

# Settings a search trial does not take: it is scored on its validation episodes (the paper's stage 2, on train only).
NOT_TUNE_SETTINGS = ("episodes", "eval_query", "train_on_val", "hparams", "stage")


def search_request(
    learner: str | None,
    dataset: str | None = None,
    *,
    settings: RunSettings | None = None,
    space: Mapping[str, Any] | Iterable[str] = (),
    sampler: str = "random",
    seed: int = 0,
    score: str = "best",
    pruner: str = "none",
    pruner_warmup: int | None = None,
    pruner_startup: int | None = None,
    host: PluginHost | None = None,
    **fields: Any,
) -> SearchRequest:
    """The checked definition of a search, as :func:`tune` makes it (nothing is written); its ``study_name``.

    ``settings`` or its fields as keywords: the dataset, shape, per-trial budget (steps,
    val_every, val_episodes, patience), crop and ``overrides``, the Config keys fixed (not searched);
    ``space``: ranges replacing or adding to the learner's, as ``{"outer_lr": "log:1e-4..1e-2"}``
    or ``["outer_lr=log:1e-4..1e-2"]`` (``--space``).
    """
    from fewshot_bench.search.space import parse_space
    from fewshot_bench.search.tune import make_pruning, make_request

    if not learner:
        raise ConfigError("tune needs --learner NAME")
    if wrong := [name for name in NOT_TUNE_SETTINGS if name in fields]:
        raise TypeError(f"tune() got an unexpected keyword argument {wrong[0]!r} (trials are scored on validation)")
    given = settings_of(settings, **fields, **({} if dataset is None else {"dataset": dataset}))
    items = [f"{k}={v}" for k, v in space.items()] if isinstance(space, Mapping) else list(space)
    return make_request(
        _host(host), learner, replace(given, overrides=texts(given.overrides)), parse_space(items), sampler, seed,
        score, make_pruning(pruner, pruner_warmup, pruner_startup),
    )


def tune(
    learner: str,
    dataset: str | None = None,
    *,
    trials: int = 20,
    store: str | Path = DEFAULT_STORE,
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    executor: str = "local",
    workers: int | None = 1,
    ray_address: str | None = None,
    slurm: Mapping[str, Any] | None = None,
    device: str = "cpu",
    progress: bool = False,
    host: PluginHost | None = None,
    on_request: Callable[[SearchRequest], None] | None = None,
    tracking: Tracking | str | None = None,
    **options: Any,
) -> SearchReport:
    """Search ``learner``'s hyperparameters on the validation split until the study has ``trials`` finished trials,
    as ``fewshot-bench tune`` (the paper's stage 2; docs/tuning.md).

    ``options`` are :func:`search_request`'s (settings and their fields, space, sampler, seed,
    score, pruner, ...). The same call resumes or extends the same study; every completed
    trial is a stored run. ``workers`` 1 computes in this process, N > 1 a local pool, None one
    worker per core; ``executor="slurm"`` one Slurm job per trial (``slurm``: as :func:`sweep`'s).
    ``on_request`` is called with the checked request before any trial runs. ``tracking`` logs
    the study's stored trials the destination does not show yet, from their records, when the search ends.
    """
    import torch

    from fewshot_bench.records.provenance import resolve_device
    from fewshot_bench.search.tune import executor_capacity, search

    host = _host(host)
    tracking = tracked(tracking)
    request = search_request(learner, dataset, host=host, **options)
    if trials < 1:
        raise ConfigError("--trials must be at least 1")
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        torch.set_flush_denormal(True)  # for trials computed in this process (workers=1)
    store = Path(store)
    places = worker_settings(store, data_dir, checkpoint_dir)
    if on_request is not None:
        on_request(request)
    session = TrackingSession(tracking) if tracking is not None else None  # a bad destination fails before trials
    runner = _executor(executor, workers, places, ray_address, str(torch_device), slurm, progress)
    report = search(request, host, store, trials, runner, executor_capacity(runner), Path(places.checkpoint_dir),
                    progress, Path(places.data_dir) if places.data_dir else None)
    if session is not None:
        _log_records(session, _trial_records(store, report.study))
    return report


def _trial_records(store: Path, study: str) -> list[RunRecord]:
    """The stored runs of a study's trials (a pruned or failed trial stored none), in trial order."""
    from fewshot_bench.search.tune import load_study

    run_ids = [t.user_attrs["run_id"] for t in load_study(store, study).trials if "run_id" in t.user_attrs]
    with ResultStore(store, create=False) as db:
        stored = {r.run_id: r for r in db.runs()}
    return [stored[run_id] for run_id in run_ids if run_id in stored]


# --- reading the store -----------------------------------------------------------------------------


def dataset_names(host: PluginHost, name: str) -> set[str]:
    """Every name a dataset goes by (its canonical name and aliases), lower-cased."""
    names = {name.lower()}
    try:
        spec = host.dataset(name)
    except Exception:  # not installed here: the store may still hold its runs under this name
        return names
    return names | {spec.name.lower(), *(a.lower() for a in spec.aliases)}


def learner_overrides(overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, str]]:
    """``{"maml": {"hidden_sizes": (128, 128)}}`` as ``--set maml.hidden_sizes=128,128`` gives it."""
    return {learner: texts(values) for learner, values in (overrides or {}).items()}


def compare(
    a: str,
    b: str,
    *,
    datasets: Iterable[str] | None = None,
    shot: int | None = None,
    way: int | None = None,
    steps: int | None = None,
    protocol: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    store: str | Path = DEFAULT_STORE,
    host: PluginHost | None = None,
    data: str | None = None,
) -> PairedReport:
    """The paired per-episode difference A - B on the same test episodes, per setting, as ``fewshot-bench compare``.

    Only runs of one shared protocol are paired (the one with most paired seeds unless
    ``protocol`` or ``steps`` picks another); ``overrides`` picks a learner's runs made with
    these ``--set`` values (``{"maml": {"hidden_sizes": "128,128"}}``); runs of one dataset on
    different data are never paired (``data``, a data id prefix, picks the version; else the one
    with the most runs, named in the report's notes).
    """
    wanted = None
    if datasets is not None:
        host = _host(host)
        wanted = set().union(*(dataset_names(host, d) for d in _list(datasets) or []))
    with ResultStore(Path(store), create=False) as db:
        return paired_compare(
            db, a, b, wanted, shot, way, steps, protocol=protocol, overrides=learner_overrides(overrides), data=data
        )


@dataclass
class TableResult:
    """Table 1 or 2 of the LEO paper from the store: its cells beside the paper's numbers."""

    spec: TableSpec
    settings: list[Setting]
    data: report.TableRuns
    crop: str

    def render(self, fmt: str = "markdown", width: int | None = None) -> str:
        """The table as text, in one of :data:`fewshot_bench.reports.report.FORMATS` (markdown, latex, ...);
        markdown at most ``width`` characters wide where it can be (None: one table, however wide)."""
        return report.render(self.spec, self.data, self.settings, fmt, self.crop, width)

    def plot(self, path: str | Path, fmt: str | None = None) -> Path:
        """Draw the table as a grouped bar chart into ``path`` (PNG, PDF or SVG: ``fmt`` or the suffix's), its
        runs' provenance under it and in its metadata."""
        return report.plot(self.spec, self.data.cells, self.settings, Path(path), self.provenance(), fmt)

    def runs(self) -> list[RunRecord]:
        """The stored runs whose numbers fill the table."""
        used = {run_id for c in self.data.cells for run_id in c.run_ids}
        return [r for r in self.data.selection.runs if r.run_id in used]

    def provenance(self) -> Provenance | None:
        """Where the table's numbers came from (None: no runs yet)."""
        runs = self.runs()
        selected = self.data.selection.protocol
        return Provenance.of(runs, selected.id if selected else "") if runs else None


def table(
    number: str | int,
    *,
    datasets: Iterable[str] | None = None,
    crop: str = "center",
    steps: int | None = None,
    episodes: int | None = None,
    protocol: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    store: str | Path = DEFAULT_STORE,
    host: PluginHost | None = None,
    data: str | None = None,
) -> TableResult:
    """The LEO paper's Table ``number`` (1 or 2) from the stored runs, as ``fewshot-bench table``.

    ``datasets`` replace miniImageNet and tieredImageNet (as given to ``sweep``); the runs of
    one shared protocol are combined (chosen and named unless ``protocol``, ``steps`` or
    ``episodes`` picks another), and of each dataset one version of its data (``data``, a data
    id prefix, picks it; else the one with the most runs, named in the notes).
    """
    spec = get_table(str(number))
    host = _host(host)

    def names(name: str) -> set[str]:
        return dataset_names(host, name)

    def paper_of(name: str) -> str | None:
        return next((p for p in PAPER_DATASETS if names(name) & names(p)), None)

    columns = table_columns(spec, _list(datasets) or None, paper_of)
    with ResultStore(Path(store), create=False) as db:
        runs = db.runs()
    data = report.build_cells(
        spec, columns, runs, lambda setting_ds, run_ds: run_ds.lower() in names(setting_ds),
        crop=crop, steps=steps, episodes=episodes, protocol=protocol, overrides=learner_overrides(overrides),
        data=data,
    )
    return TableResult(spec, columns, data, crop)


@dataclass
class RekeyResult:
    """What ``rekey`` did: the data id given, the runs re-keyed, and those left as they were (and why)."""

    dataset: str
    data_id: str
    rekeyed: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)  # their new key is stored already (a run made since)
    elsewhere: dict[str, list[str]] = field(default_factory=dict)  # recorded data folder -> run ids


def rekey(
    dataset: str,
    *,
    data_dir: str | Path | None = None,
    crop: str = "center",
    store: str | Path = DEFAULT_STORE,
    dry_run: bool = False,
    host: PluginHost | None = None,
) -> RekeyResult:
    """Give the runs of ``dataset`` stored before data ids the id of the data as it is now (``fewshot-bench rekey``).

    Only for data that has not changed since those runs: their keys become the keys a run on
    this data gets (``spec.with_data``), so they are reused and combined with new runs. Runs
    whose recorded data folder is another one are left alone (pass that ``data_dir``).
    """
    from fewshot_bench.protocol.runner import RunContext, identify_data
    from fewshot_bench.protocol.spec import with_data

    host = _host(host)
    name = host.dataset(dataset).name
    root = data_root(data_dir)
    data = identify_data(RunContext(host=host, store_path=Path(store), data_dir=root), name, crop)
    result = RekeyResult(name, data.id)
    folder = str(root.resolve()) if root is not None else None
    changes = []
    with ResultStore(Path(store), create=False) as db:
        for run in db.runs(dataset=name):
            if data_id_of(run) is not None or run.options.get("crop", "center") != crop:
                continue
            recorded = run.options.get("data_dir")
            if recorded is not None and recorded != folder:
                result.elsewhere.setdefault(recorded, []).append(run.run_id)
                continue
            options = run.options | {"data_id": data.id, "data_digests": data.digests, "rekeyed": True}
            changes.append((run.run_id, with_data(run.run_key, data.id), options))
        if dry_run:
            result.rekeyed = [run_id for run_id, key, _ in changes if db.find_complete(key) is None]
        else:
            result.rekeyed = db.rekey(changes)
        result.taken = [run_id for run_id, _, _ in changes if run_id not in result.rekeyed]
    return result


@dataclass
class StoredRun:
    """A stored run with the shared protocol it was made under."""

    record: RunRecord
    protocol: Protocol

    @property
    def transductive(self) -> bool:
        """Whether the learner used the test episode's queries together (marked in every listing)."""
        return is_transductive(self.record)


STAGES = ("run", TUNE_STAGE)  # a run's stage: a run scored on test, or a search's trial scored on validation


def stored_runs(
    store: str | Path = DEFAULT_STORE,
    learner: str | None = None,
    dataset: str | None = None,
    protocol: str | None = None,
    *,
    shot: int | None = None,
    seed: int | None = None,
    steps: int | None = None,
    stage: str | None = None,
    data: str | None = None,
) -> list[StoredRun]:
    """The stored runs, oldest first, of ``learner``, ``dataset``, ``shot``, ``seed``, ``steps`` (meta-training
    steps asked), ``stage`` (``run`` or ``tune``), ``protocol`` and ``data`` (ids or their prefixes) when given."""
    where = {k: v for k, v in (("learner", learner), ("dataset", dataset)) if v}
    where |= {k: whole_number(k, v) for k, v in (("shot", shot), ("seed", seed)) if v is not None}
    steps = None if steps is None else whole_number("steps", steps)
    if stage is not None and stage not in STAGES:
        raise ConfigValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    with ResultStore(Path(store), create=False) as db:
        found = [StoredRun(r, protocol_of(r)) for r in db.runs(**where)]
    if steps is not None:
        found = [s for s in found if s.record.options.get("steps") == steps]
    if stage is not None:
        found = [s for s in found if s.record.options.get("stage", "run") == stage]
    if protocol:
        wanted = protocol.strip().lower()
        found = [s for s in found if s.protocol.id.startswith(wanted)]
    if data:
        wanted = data.strip().lower()
        found = [s for s in found if (data_id_of(s.record) or "").startswith(wanted)]
    return found


def results(
    store: str | Path = DEFAULT_STORE,
    learner: str | None = None,
    dataset: str | None = None,
    protocol: str | None = None,
    *,
    shot: int | None = None,
    seed: int | None = None,
    steps: int | None = None,
    stage: str | None = None,
    data: str | None = None,
) -> pd.DataFrame:
    """The stored runs as a DataFrame, one row per run, as ``fewshot-bench results`` lists them; only those of
    ``learner``, ``dataset``, ``shot``, ``seed``, ``steps``, ``stage``, ``protocol`` and ``data`` when given
    (:func:`stored_runs`).

    ``value`` holds each run's main metric (named by ``metric``: accuracy in 0..1, or mse);
    ``protocol`` is the id of the shared protocol (runs with equal ids may be combined);
    ``data_id`` the content id of the data the run read (None: stored before data ids; runs
    of one dataset with different ids read different data); ``execution`` how it was computed
    (instruction set, threads train/eval, population, device, torch: what can move the last digits).
    """
    rows = [
        {
            "run_id": s.record.run_id, "run_key": s.record.run_key, "learner": s.record.learner,
            "dataset": s.record.dataset, "way": s.record.way, "shot": s.record.shot, "seed": s.record.seed,
            "steps": s.record.options.get("steps"), "preset": hparams_source(s.record),
            "overrides": overrides_text(overrides_of(s.record)), "protocol": s.protocol.id,
            "data_id": data_id_of(s.record), "execution": execution_text(execution_of(s.record)),
            "transductive": s.transductive, "metric": s.record.metric, "value": s.record.mean,
            "ci95": s.record.ci95, "episodes": s.record.episodes, "created": s.record.created_at,
        }
        for s in stored_runs(store, learner, dataset, protocol, shot=shot, seed=seed, steps=steps, stage=stage,
                             data=data)
    ]
    columns = ["run_id", "run_key", "learner", "dataset", "way", "shot", "seed", "steps", "preset", "overrides",
               "protocol", "data_id", "execution", "transductive", "metric", "value", "ci95", "episodes", "created"]
    return pd.DataFrame(rows, columns=columns)


# --- experiment tracking ---------------------------------------------------------------------------


def export(
    to: str,
    *,
    store: str | Path = DEFAULT_STORE,
    learner: str | None = None,
    dataset: str | None = None,
    run_key: str | None = None,
    runs: Iterable[str] = (),
    protocol: str | None = None,
    log_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    artifacts: Iterable[str | Path] = (),
) -> Logged:
    """Log stored runs to TensorBoard or MLflow (``to``), as ``fewshot-bench export`` does: each run's parameters,
    its validation history as curves and its final metric with the CI, ``artifacts`` (figures) attached to each.

    The runs are those of ``learner``, ``dataset``, ``protocol``, ``run_key`` (a prefix) and ``runs`` (run ids or
    prefixes) when given; those the destination shows already are skipped (``Logged.skipped``).
    """
    if not to:
        raise ConfigError("export needs --to tensorboard or --to mlflow")
    tracking = Tracking.checked(to, log_dir, tracking_uri, experiment)
    assert tracking is not None
    files = tracking.check_artifacts(artifacts)
    wanted_ids = [r.strip().lower() for r in ([runs] if isinstance(runs, str) else runs)]
    found = [s.record for s in stored_runs(store, learner, dataset, protocol)
             if (not run_key or s.record.run_key.startswith(run_key.strip().lower()))
             and (not wanted_ids or any(s.record.run_id.startswith(r) for r in wanted_ids))]
    if not found:
        raise ConfigError(f"no stored run in {store} matches the filters; `fewshot-bench results` lists them")
    return TrackingSession(tracking).stored(found, lambda record: protocol_of(record).id, files)
