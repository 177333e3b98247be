"""Sweeps: a declared grid of (learner, dataset, shot, seed) runs, run wherever they are missing.

The driver resolves every cell's run key (the spec plus the learner's resolved config),
skips cells already complete in the store, hands the rest to an executor (a local
process pool or Ray), and is the only process that writes the store. Each result is
written in one transaction the moment it comes back, and a partially trained run keeps
its checkpoint, so a sweep killed at any moment and started again loses no completed run,
resumes unfinished ones, and never stores a cell twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fewshot_bench.config import config_to_dict
from fewshot_bench.errors import ConfigError, ConfigValueError, FewshotBenchError
from fewshot_bench.plugin_host import PluginHost
from fewshot_bench.protocol import preflight
from fewshot_bench.protocol.runner import (
    RunContext,
    RunOutcome,
    episode_shape,
    resolve_config,
    run_key,
    store_run,
)
from fewshot_bench.protocol.spec import MAX_SEED, TUNED, Job, PopulationJob, RunSpec, cell_of, seed_count, whole_number
from fewshot_bench.records.stats import metric_text, stop_text
from fewshot_bench.records.store import ResultStore
from fewshot_bench.reports.tables import get_table
from fewshot_bench.search.executors import Executor

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """The grid split into cells still to run and cells already complete in the store."""

    pending: list[Job]
    done: list[Job]

    @property
    def total(self) -> int:
        """Number of distinct cells in the grid."""
        return len(self.pending) + len(self.done)


@dataclass
class SweepReport:
    """What a sweep did."""

    planned: int
    already_complete: int
    ran: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def check_installed(host: PluginHost, learners: Iterable[str], what: str = "the sweep") -> None:
    """Fail with one line naming every missing learner and what is installed."""
    missing = [name for name in learners if name not in host.learners]
    if missing:
        raise ConfigError(
            f"{what} needs learners that are not installed: {', '.join(missing)}; installed: "
            f"{', '.join(sorted(host.learners))} (install their plugin, e.g. `pip install -e plugins/leo`, "
            f"or run a subset with --learners)"
        )


def axes(
    table: str | None, learners: list[str] | None, datasets: list[str] | None, shots: list[int] | None
) -> tuple[list[str], list[str], list[int]]:
    """Learners, datasets and shots of a sweep: the LEO paper's table ``table`` (its learners a subset), or as given."""
    if table:
        spec = get_table(table)
        chosen = spec.learners
        if learners:
            outside = [name for name in learners if name not in chosen]
            if outside:
                raise ConfigError(
                    f"--learners {', '.join(outside)} not in table {spec.number}; its learners: {', '.join(chosen)}"
                )
            chosen = [name for name in chosen if name in learners]
        return chosen, list(datasets or spec.datasets), list(shots or spec.shots)
    if not learners:
        raise ConfigError("pass --table 1|2 or --learners NAME[,NAME...]")
    return list(learners), list(datasets or ["synthetic"]), list(shots or [1, 5])


def grid(
    host: PluginHost,
    learners: list[str],
    datasets: list[str],
    shots: list[int],
    seeds: list[int],
    way: int | None = None,
    **protocol: Any,
) -> list[RunSpec]:
    """Every (learner, dataset, shot, seed) spec, datasets under their canonical names, each checked.

    ``protocol`` holds the :class:`RunSpec` fields every cell shares (steps, episodes, validation,
    patience, eval_query, train_on_val, hparams, crop); ``way`` None is each dataset's default.
    """
    check_installed(host, learners)
    canonical = [host.dataset(d).name for d in datasets]  # also fails fast on unknown names
    for learner in learners:
        for name in canonical:
            kind = host.dataset(name).kind
            if kind not in host.learner(learner).kinds:
                raise ConfigError(
                    f"learner {learner!r} cannot solve the {kind} tasks of dataset {name!r}; drop one of them"
                )
    hparams = protocol.pop("hparams", None)
    specs = []
    for learner in learners:
        # A preset (e.g. LEO's paper vs reference hyperparameters) applies to learners that have presets;
        # "tuned" to every learner (fewshot_bench.search.tune.apply_tuned looks each cell's preset up).
        tuned = (hparams or "").split(":")[0] == TUNED
        preset = hparams if hparams and (tuned or host.learner(learner).presets) else None
        for dataset in canonical:
            for shot in shots:
                cell_way, _ = episode_shape(host, dataset, way, shot)
                for seed in seeds:
                    spec = RunSpec(
                        learner=learner, dataset=dataset, way=cell_way, shot=shot, seed=seed, hparams=preset, **protocol
                    )
                    preflight.check_spec(spec, host.dataset(dataset).kind)
                    specs.append(spec)
    return specs


def plan(host: PluginHost, specs: list[RunSpec], store_path: Path, data_dir: Path | None = None) -> Plan:
    """Resolve each spec's key (its config and the content of its data under ``data_dir``) and split the grid into
    pending and already-complete cells."""
    ctx = RunContext(host=host, store_path=store_path, data_dir=data_dir)  # caches the data's digests
    jobs: dict[str, Job] = {}
    configs: dict[tuple, dict] = {}  # the config does not depend on the seed: resolve it once per cell
    for spec in specs:
        cell = (spec.learner, spec.dataset, spec.shot, spec.hparams, tuple(sorted(spec.overrides.items())))
        if cell not in configs:
            kind = host.dataset(spec.dataset).kind
            configs[cell] = config_to_dict(resolve_config(host.learner(spec.learner), spec, kind))
        key, _ = run_key(spec, ctx, configs[cell])
        jobs.setdefault(key, Job(spec, key))  # equal keys are the same run: keep one
    if not store_path.exists():
        return Plan(list(jobs.values()), [])
    pending, done = [], []
    with ResultStore(store_path, create=False) as store:
        for job in jobs.values():
            (done if store.find_complete(job.key) is not None else pending).append(job)
    return Plan(pending, done)


def run_plan(
    plan_: Plan,
    executor: Executor,
    store_path: Path,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    population: bool = True,
    population_size: int | None = None,
) -> SweepReport:
    """Run the pending cells on ``executor``, storing each result as it arrives.

    With ``population`` each cell's pending seeds meta-train together, as populations of at
    most ``population_size`` (:func:`populations`); their rows are those separate runs store.

    A user error in a cell (missing data, a bad config) stops the sweep, since every other
    cell would hit it too; any other failure is recorded and the sweep goes on.
    """
    report = SweepReport(planned=plan_.total, already_complete=len(plan_.done))
    if not plan_.pending:
        return report
    jobs = populations(plan_.pending, population_size) if population else plan_.pending
    with logging_redirect_tqdm(), tqdm(total=len(plan_.pending), desc="sweep", unit="run", disable=not progress) as bar:
        try:
            for job, result in executor.run(jobs):
                members = job.members if isinstance(job, PopulationJob) else (job,)
                if isinstance(result, FewshotBenchError):
                    raise type(result)(f"{job.label}: {result}")
                if isinstance(result, BaseException):
                    for member in members:
                        report.failed.append((member.label, f"{type(result).__name__}: {result}"))
                    log.warning("%s failed: %s: %s", job.label, type(result).__name__, result)
                else:
                    for member, outcome in zip(members, result if isinstance(result, list) else [result]):
                        _store(outcome, member, store_path, checkpoint_dir)
                        report.ran += 1
                        record = outcome.record
                        value = metric_text(record.metric, record.mean)
                        stopped = stop_text(record.summary.get("train", {}), record.options["steps"],
                                            record.options.get("patience"))
                        log.info("%s: %s over %d episodes%s", member.label, value, record.episodes,
                                 f"; {stopped}" if stopped else "")
                        bar.set_postfix_str(f"{member.label}: {value}")
                bar.update(len(members))
        finally:
            executor.close()
    return report


def populations(jobs: list[Job], size: int | None = None) -> list[Job | PopulationJob]:
    """The jobs with each cell's seeds grouped into populations of at most ``size`` (a lone seed stays a job)."""
    if size is not None and size < 1:
        raise ConfigError("--population-size must be at least 1")
    cells: dict[str, list[Job]] = {}
    for job in jobs:
        cells.setdefault(cell_of(job.spec), []).append(job)
    grouped: list[Job | PopulationJob] = []
    for members in cells.values():
        step = size or len(members)
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            grouped.append(PopulationJob(tuple(chunk)) if len(chunk) > 1 else chunk[0])
    return grouped


def _store(outcome: RunOutcome, job: Job, store_path: Path, checkpoint_dir: Path | None) -> None:
    if outcome.record.run_key != job.key:  # a worker with other plugin versions
        raise ConfigError(
            f"{job.label}: the worker stored key {outcome.record.run_key}, the driver expected {job.key}"
        )
    store_run(outcome, store_path, checkpoint_dir)


def seed_list(seeds: int, first: int = 0, allow_large: bool = False) -> list[int]:
    """Seeds ``first .. first + seeds - 1`` (the paper uses 5), bounded before the list is made."""
    seeds, first = whole_number("seeds", seeds), whole_number("first_seed", first)
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    seed_count(seeds, allow_large)
    if first < 0 or first + seeds - 1 > MAX_SEED:
        raise ConfigValueError(f"--first-seed {first} --seeds {seeds}: seeds run from 0 to {MAX_SEED:,}")
    return list(range(first, first + seeds))
