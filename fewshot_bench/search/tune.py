"""Hyperparameter search on the validation split (the paper's stage 2) and the tuned presets it leaves.

A *study* searches one learner's Config for one (dataset, way, shot) under one budget:
Optuna samples each trial's values (random search as in the paper's appendix B.5, or
TPE), the trial is an ordinary run with ``stage="tune"`` (meta-trained on the train
split with early stopping on validation, then scored on the same validation episodes:
the test split is never read), computed by the executors of ``sweep`` (in process, a
local pool, Ray), and the driver alone writes the results store (every finished trial is
a stored run carrying its study and trial number) and the Optuna study (an SQLite file
beside the store).

Resuming is exact: a study is named by a hash of everything that defines it, so running
the same command again continues it; ``--trials T`` asks for T completed trials in all.
A trial a killed driver left running is computed again with the same number and values
(its run checkpoint resumes it; if its run was already stored, it is only told), and a
trial killed while its values were being written is marked failed and replaced. Sampling
is seeded per trial number, so a search gives the same trials whether or not it was
interrupted (with one worker; in parallel TPE also depends on which trials had finished).

A study may *prune* (``--pruner median|hyperband``): a trial that validates worse than the
finished ones at the same step is stopped there. Workers cannot reach the study, so each
trial ships a snapshot of the trials finished when it was asked (:class:`PruningPlan`);
the worker replays its validations into an in-memory copy of the study and stops when
Optuna's pruner says so, and the driver replays the same snapshot to record the trial as
pruned. A pruned trial is in the study only (state PRUNED, its validation curve), never
in the results store: the store holds finished runs, and a preset is never a pruned trial.

The best trial of a study is a *tuned preset*: ``run --hparams tuned`` and ``sweep
--hparams tuned`` look it up in the results store (:func:`with_tuned`), so any worker
resolves the same config from the spec alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fewshot_bench.api.search_space import Param
from fewshot_bench.api.tasks import task_kind
from fewshot_bench.atomic import save_figure
from fewshot_bench.config import config_to_dict
from fewshot_bench.errors import ConfigError, FewshotBenchError
from fewshot_bench.plugin_host import PluginHost
from fewshot_bench.protocol.preflight import check_seed
from fewshot_bench.protocol.runner import (
    RunContext,
    RunOutcome,
    drop_checkpoint,
    episode_shape,
    resolve_config,
    run_key,
    store_run,
)
from fewshot_bench.protocol.spec import TUNE_STAGE, TUNED, Job, RunSettings, RunSpec, is_trial
from fewshot_bench.records.stats import metric_text
from fewshot_bench.records.store import ResultStore, RunRecord
from fewshot_bench.reports import palette
from fewshot_bench.search.executors import Executor
from fewshot_bench.search.space import check_space, override_problem, space_text, to_optuna, value_text
from fewshot_bench.search.study_file import check_study_file, lock_path, study_lock

log = logging.getLogger(__name__)

SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median", "hyperband")
# What a trial scores: "best", the best validation accuracy (its best checkpoint's: early stopping's pick,
# the paper's criterion); "last", the validation accuracy at the end of training (favours runs that stay good).
SCORES = ("best", "last")
TPE_STARTUP = 10  # random trials before TPE models the results (Optuna's default)


def storage_path(store_path: Path) -> Path:
    """The Optuna study file beside a results store: ``fewshot-results.db`` -> ``fewshot-results.tune.db``."""
    return store_path.with_name(store_path.stem + ".tune.db")


def trial_budget(trial: RunSpec) -> dict[str, Any]:
    """How a study's trials are trained and scored, as its definition records it (hashed into the study's name)."""
    return {"steps": trial.steps, "val_every": trial.val_every, "val_episodes": trial.val_episodes,
            "patience": trial.patience}


def budget_text(budget: dict[str, Any]) -> str:
    """``500 steps, validation every 50 on 300 episodes``, from :func:`trial_budget`."""
    return f"{budget['steps']:,} steps, validation every {budget['val_every']} on {budget['val_episodes']:,} episodes"


@dataclass(frozen=True)
class Pruning:
    """How a study stops unpromising trials at a validation (Optuna's pruners); ``none`` never does.

    ``warmup``: a trial is never pruned at its first ``warmup`` validations. ``startup``
    (median only): no trial is pruned before that many trials have completed.
    """

    kind: str = "none"
    warmup: int = 0
    startup: int | None = None

    def definition(self) -> dict[str, Any]:
        """The pruner as stored in the study's definition (and hashed into its name)."""
        return {"kind": self.kind, "warmup": self.warmup} | ({"startup": self.startup} if self.kind == "median" else {})

    def text(self) -> str:
        """``median pruning (after 5 complete trials, from validation 2)``."""
        if self.kind == "none":
            return "no pruning"
        startup = f"after {self.startup} complete trials, " if self.kind == "median" else ""
        return f"{self.kind} pruning ({startup}from validation {self.warmup + 1})"

    def make(self, trial: RunSpec) -> Any:
        """The Optuna pruner of ``trial``'s run; steps are meta-training steps, validations come every ``val_every``."""
        optuna = _optuna()
        first = (self.warmup + 1) * trial.val_every  # the step of the first validation that may prune
        if self.kind == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.startup, n_warmup_steps=first)
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=trial.steps, reduction_factor=3)


def make_pruning(kind: str = "none", warmup: int | None = None, startup: int | None = None) -> Pruning:
    """A checked :class:`Pruning`: median starts after 5 complete trials unless ``startup`` says otherwise."""
    if kind not in PRUNERS:
        raise ConfigError(f"unknown pruner {kind!r}; use {', '.join(PRUNERS)}")
    if kind == "none" and (warmup or startup):
        raise ConfigError("--pruner-warmup and --pruner-startup need --pruner median or hyperband")
    if kind == "hyperband" and startup is not None:
        raise ConfigError("--pruner-startup is the median pruner's; hyperband starts pruning from its first trials")
    for name, value in (("warmup", warmup), ("startup", startup)):
        if value is not None and value < 0:
            raise ConfigError(f"--pruner-{name} must be at least 0")
    if kind == "none":
        return Pruning()
    return Pruning(kind, warmup or 0, (5 if startup is None else startup) if kind == "median" else None)


@dataclass
class SearchRequest:
    """Everything that defines a study, checked: its name is a hash of all of it."""

    base: RunSpec  # every trial's run but its values: stage tune, its budget, the fixed keys as overrides
    space: dict[str, Param]
    sampler: str = "random"
    direction: str = "maximize"
    score: str = "best"
    pruning: Pruning = field(default_factory=Pruning)
    metric: str = "accuracy"  # what a trial scores on validation (mse for regression)

    @property
    def learner(self) -> str:
        """The learner searched."""
        return self.base.learner

    @property
    def dataset(self) -> str:
        """The dataset's canonical name."""
        return self.base.dataset

    @property
    def seed(self) -> int:
        """The seed of the sampler and of every trial's run."""
        return self.base.seed

    def definition(self) -> dict[str, Any]:
        """The study's definition as stored in the study and hashed into its name."""
        b = self.base
        return {
            "learner": b.learner, "dataset": b.dataset, "way": b.way, "shot": b.shot, "budget": trial_budget(b),
            "space": space_text(self.space), "fixed": dict(sorted(b.overrides.items())),
            "sampler": self.sampler, "seed": b.seed, "crop": b.crop,
        } | ({} if self.score == "best" else {"score": self.score}) | (  # studies made before them keep their names:
            {} if self.pruning.kind == "none" else {"pruner": self.pruning.definition()}  # --score, --pruner
        )

    @property
    def study_name(self) -> str:
        """``metasgd-features-5way-1shot-1a2b3c4d``."""
        digest = hashlib.sha256(json.dumps(self.definition(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.learner}-{self.dataset}-{self.base.way}way-{self.base.shot}shot-{digest}"

    def spec(self, values: dict[str, str]) -> RunSpec:
        """The run of one trial: the learner's defaults, the fixed keys and the trial's values."""
        return replace(self.base, overrides={**self.base.overrides, **values})


def trial_base(host: PluginHost, learner: str, settings: RunSettings, seed: int = 0) -> RunSpec:
    """The run every trial of a search under ``settings`` shares: the paper's stage 2 (meta-train on train, the
    learner's defaults, scored on validation), the dataset's shape, the budget checked for a trial."""
    way, shot = episode_shape(host, settings.dataset, settings.way, settings.shot)
    trial = replace(settings, way=way, shot=shot, stage=TUNE_STAGE, train_on_val=False, hparams=None, eval_query=None)
    return trial.spec(learner, seed)


def make_request(
    host: PluginHost, learner: str, settings: RunSettings, space: dict[str, Param] | None = None,
    sampler: str = "random", seed: int = 0, score: str = "best", pruning: Pruning | None = None,
) -> SearchRequest:
    """A checked request: the learner's declared space, ``space`` overriding ranges, the ``settings``' overrides fixed.

    Every error (unknown learner or key, bad range, empty space, impossible budget) is a
    one-line :class:`ConfigError` raised before anything is written.
    """
    check_seed(seed)  # the sampler's seed too: numpy's range
    base = trial_base(host, learner, settings, seed)
    cls = host.learner(learner)
    spec = host.dataset(base.dataset)
    kind = spec.kind
    if kind not in cls.kinds:
        raise ConfigError(f"learner {learner!r} cannot solve the {kind} tasks of dataset {spec.name!r}")
    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}; use {' or '.join(SCORES)}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; use {' or '.join(SAMPLERS)}")
    if base.way < 2 and task_kind(kind).fixed_way is None:
        raise ConfigError("--way must be at least 2")
    impl = cls.for_kind(kind)
    merged = {**dict(getattr(impl, "search_space", {}) or {}), **(space or {})}
    searched = {k: p for k, p in merged.items() if k not in base.overrides}
    check_space(resolve_config(cls, RunSpec(learner=learner, dataset=spec.name, shot=base.shot), kind), searched,
                dict(base.overrides), learner)
    if not searched:
        why = "all its keys are fixed with --set" if merged else "it declares no search space"
        raise ConfigError(f"nothing to search for learner {learner!r}: {why}; add ranges with --space KEY=SPEC")
    base = replace(base, dataset=spec.name, steps=base.steps if impl.meta_trainable else 0)  # else: only scored on val
    check_pruning(pruning or Pruning(), base)
    direction = "maximize" if task_kind(kind).higher_is_better else "minimize"
    return SearchRequest(base, searched, sampler, direction, score, pruning or Pruning(), task_kind(kind).metric)


def check_pruning(pruning: Pruning, base: RunSpec) -> None:
    """A one-line error when the trials of ``base`` have no validation ``pruning`` could prune at."""
    if pruning.kind == "none":
        return
    if not base.steps:
        raise ConfigError(f"learner {base.learner!r} is not meta-trained: a trial has no validations to prune at; "
                          "drop --pruner")
    if (pruning.warmup + 1) * base.val_every > base.steps:
        raise ConfigError(f"--pruner-warmup {pruning.warmup} leaves no validation to prune at "
                          f"({budget_text(trial_budget(base))})")


# --- the study ---------------------------------------------------------------------------------


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(path: Path) -> Any:
    """The Optuna RDB storage in ``path`` (SQLite; each write is one transaction), once the file is checked to be
    an intact study file of this Optuna (or absent)."""
    optuna = _optuna()
    check_study_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}", engine_kwargs={"connect_args": {"timeout": 60}})


def make_sampler(kind: str, seed: int, parallel: bool = False) -> Any:
    """A seeded Optuna sampler: random search (the paper's) or TPE."""
    optuna = _optuna()
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP, constant_liar=parallel)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed for trial ``number``: a search gives the same values however often it was resumed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


@dataclass(frozen=True)
class FinishedTrial:
    """A finished trial as a pruner sees it: its state, value, validation curve and the pruner's marks."""

    number: int
    complete: bool  # else pruned
    value: float | None
    curve: tuple[tuple[int, float], ...]  # (meta-training step, validation metric)
    marks: tuple[tuple[str, Any], ...]  # Optuna system attributes (Hyperband's rungs)

    @classmethod
    def of(cls, trial: Any) -> FinishedTrial:
        """The finished Optuna ``trial``."""
        from optuna.trial import TrialState

        return cls(trial.number, trial.state == TrialState.COMPLETE, trial.value,
                   tuple(sorted(trial.intermediate_values.items())), tuple(sorted(trial.system_attrs.items())))


@dataclass(frozen=True)
class PruningPlan:
    """What prunes trial ``number`` where the study cannot be reached: its pruner and the trials finished when it was
    asked. A pure function of the trial's validations, so the worker (which stops the trial) and the driver (which
    records it) decide alike, and a resumed trial is decided as it was."""

    study: str
    direction: str
    pruning: Pruning
    base: RunSpec  # the trial's run: its steps and validation interval
    number: int
    finished: tuple[FinishedTrial, ...]

    def replay(self, history: list[dict[str, Any]]) -> tuple[int | None, dict[str, Any]]:
        """Report ``history`` to an in-memory copy of the study, asking the pruner after each validation.

        Returns the step the trial is pruned at (None: never) and the system attributes the pruner wrote.
        """
        optuna = _optuna()
        from optuna.trial import TrialState, create_trial

        storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(  # its sampler samples nothing (no parameters)
            study_name=self.study, storage=storage, direction=self.direction, pruner=self.pruning.make(self.base),
            sampler=optuna.samplers.RandomSampler(seed=0))
        finished = {t.number: t for t in self.finished}
        for number in range(self.number):  # in-memory trial numbers count up: the same numbers as the study's
            t = finished.get(number)
            if t is None:  # failed, or running when this trial was asked: no pruner reads a failed trial
                study.add_trial(create_trial(state=TrialState.FAIL))
            else:
                study.add_trial(create_trial(
                    state=TrialState.COMPLETE if t.complete else TrialState.PRUNED, value=t.value,
                    intermediate_values=dict(t.curve), system_attrs=dict(t.marks)))
        trial = study.ask()
        pruned = None
        for point in history:
            trial.report(float(point["val_metric"]), int(point["step"]))
            if trial.should_prune():
                pruned = int(point["step"])
                break
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(self.study),
                                                                    trial.number)
        return pruned, dict(storage.get_trial_system_attrs(trial_id))

    def __call__(self, result: Any) -> bool:
        """The trainer's callback after each validation (``TrainOptions.on_validation``): go on unless pruned."""
        return self.replay(result.history)[0] is None


@dataclass(frozen=True)
class TrialJob(Job):
    """A study's trial as an executor job."""

    number: int = -1
    study: str = ""
    pruning: PruningPlan | None = None  # None: never pruned

    @property
    def label(self) -> str:
        """``trial 7 of metasgd-features-5way-1shot-1a2b3c4d``."""
        return f"trial {self.number} of {self.study}"

    def validation_hook(self) -> PruningPlan | None:
        """The trial's pruner, asked by the trainer after each validation."""
        return self.pruning


@dataclass
class SearchReport:
    """What a search did."""

    study: str
    storage: str
    complete: int
    pruned: int = 0
    ran: int = 0
    resumed: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def _values(trial: Any, request: SearchRequest) -> dict[str, str]:
    return {k: value_text(trial.params[k]) for k in sorted(request.space)}


def search(
    request: SearchRequest,
    host: PluginHost,
    store_path: Path,
    trials: int,
    executor: Executor,
    in_flight: int = 1,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    data_dir: Path | None = None,
) -> SearchReport:
    """Run ``request``'s study until it has ``trials`` finished (completed or pruned), storing each completed one.

    ``data_dir`` is where the trials read their data (its content is part of each trial's run key).
    """
    if trials < 1:
        raise ConfigError("--trials must be at least 1")
    study_file = storage_path(store_path)
    check_study_file(study_file)  # before a lock file is made beside it
    with study_lock(lock_path(study_file, request.study_name)):
        driver = Search.open(request, host, store_path, executor, in_flight, checkpoint_dir, data_dir)
        return driver.run(trials, progress)


Pruned = tuple[int | None, dict[str, Any]]  # the step a trial was pruned at (None: it was not), the pruner's marks


class Search:
    """The driver of one study while it holds the study's lock: asks trials as jobs, tells their results.

    It alone writes the study and the results store; the executor's workers compute the trials.
    """

    def __init__(self, request: SearchRequest, host: PluginHost, store_path: Path, executor: Executor, study: Any,
                 storage: Any, in_flight: int = 1, checkpoint_dir: Path | None = None,
                 data_dir: Path | None = None) -> None:
        self.request = request
        self.host = host
        self.store_path = store_path
        self.executor = executor
        self.study = study
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.in_flight = in_flight
        self.checkpoint_dir = checkpoint_dir
        self.kind = host.dataset(request.dataset).kind
        self.data_ctx = RunContext(host=host, store_path=store_path, data_dir=data_dir)  # caches the data's digests
        self.prunes = request.pruning.kind != "none"
        self.running: set[int] = set()  # trial numbers asked and not yet told
        from optuna.trial import TrialState

        states = [t.state for t in study.get_trials(deepcopy=False)]
        self.report = SearchReport(study.study_name, str(storage_path(store_path)),
                                   states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED))

    @classmethod
    def open(cls, request: SearchRequest, host: PluginHost, store_path: Path, executor: Executor, in_flight: int = 1,
             checkpoint_dir: Path | None = None, data_dir: Path | None = None) -> Search:
        """The study named by ``request`` (created, or loaded to be continued) in the study file beside the store."""
        optuna = _optuna()
        storage = open_storage(storage_path(store_path))
        study = optuna.create_study(
            study_name=request.study_name, storage=storage, direction=request.direction, load_if_exists=True,
            sampler=make_sampler(request.sampler, request.seed),
        )
        if "definition" not in study.user_attrs:
            study.set_user_attr("definition", request.definition())
        return cls(request, host, store_path, executor, study, storage, in_flight, checkpoint_dir, data_dir)

    def run(self, trials: int, progress: bool = False) -> SearchReport:
        """Resume the trials a killed driver left, then ask and tell trials until ``trials`` have finished."""
        stale = self.resume_stored(self.stale_trials())
        with logging_redirect_tqdm(), self.progress_bar(trials, progress) as bar:
            try:
                for job, result in self.executor.run(self.jobs(stale, trials), in_flight=self.in_flight):
                    line = self.finish(job, result)
                    if line is not None:
                        bar.update(1)
                        bar.set_postfix_str(line)
            finally:
                self.executor.close()
        if self.report.complete:
            best = self.study.best_trial
            self.report.best = {"trial": best.number, "value": best.value, "values": _values(best, self.request),
                                "run_id": best.user_attrs.get("run_id")}
        return self.report

    def progress_bar(self, trials: int, progress: bool) -> tqdm:
        """A bar of finished trials out of ``trials``, starting at those finished before (off unless ``progress``)."""
        initial = self.report.complete + self.report.pruned
        return tqdm(total=max(trials, initial), initial=initial, desc=f"tune {self.request.learner}", unit="trial",
                    disable=not progress)

    # --- trials a killed driver left running ---

    def stale_trials(self) -> list[Any]:
        """The trials a killed driver left running with all their values (this driver holds the lock, so nobody runs
        them); one killed while its values were being written is marked failed, to be replaced by a new trial."""
        from optuna.trial import TrialState

        stale = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if set(t.params) == set(self.request.space):
                stale.append(t)
            else:
                trial_id = self.trial_id(t.number)
                self.storage.set_trial_user_attr(trial_id, "failed", "interrupted while sampling")
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        return stale

    def resume_stored(self, stale: list[Any]) -> list[Any]:
        """Tell the stale trials whose run was stored before the driver died; the others, to compute again."""
        todo = []
        with ResultStore(self.store_path) as store:
            for t in stale:
                key = t.user_attrs.get("run_key")
                found = store.find_complete(key) if key else None
                if found is None:
                    todo.append(t)
                    continue
                drop_checkpoint(self.checkpoint_dir, key)
                pruned = self.decide(t.number, found)
                self.tell_finished(t.number, found, pruned)
                self.count(pruned)
                self.report.resumed += 1
        return todo

    # --- asking ---

    def jobs(self, stale: list[Any], trials: int) -> Iterator[TrialJob]:
        """The stale trials, then new ones until ``trials`` are finished or in flight (drawn as the executor asks)."""
        for t in stale:
            job = self.job_or_fail(t)
            self.running.add(t.number)
            self.report.resumed += 1
            yield job
        report = self.report
        while report.complete + report.pruned + len(self.running) < trials:
            if len(report.failed) >= max(3, trials):  # a learner that keeps failing: stop asking
                return
            yield self.ask()

    def ask(self) -> TrialJob:
        """A new trial, sampled with the seed of its number, as a job; its run key and pruning snapshot pinned."""
        request = self.request
        number = len(self.study.get_trials(deepcopy=False))
        parallel = self.in_flight > 1
        self.study.sampler = make_sampler(request.sampler, trial_seed(request.seed, number), parallel=parallel)
        trial = self.study.ask({k: to_optuna(p) for k, p in request.space.items()})
        if self.prunes:
            trial.set_user_attr("pruning_snapshot", sorted(self.finished()))
        job = self.job_or_fail(self.frozen(trial.number))
        trial.set_user_attr("run_key", job.key)
        self.running.add(trial.number)
        return job

    def job_or_fail(self, trial: Any) -> TrialJob:
        """:meth:`job_for`; when the learner's Config refuses the trial's values, the trial is marked failed (never
        left running, to be drawn again by every rerun) and the search ends with one line naming it."""
        try:
            return self.job_for(trial)
        except ConfigError as exc:
            values = " ".join(f"{k}={v}" for k, v in _values(trial, self.request).items())
            text = f"the learner refuses its values {values}: {override_problem(exc)}"
            self.tell_failed(trial.number, text)
            raise ConfigError(f"trial {trial.number} of {self.study.study_name}: {text}") from None

    def job_for(self, trial: Any) -> TrialJob:
        """The job that computes ``trial`` (a frozen trial with all its values)."""
        spec = self.request.spec(_values(trial, self.request))
        cls = self.host.learner(spec.learner)
        key, _ = run_key(spec, self.data_ctx, config_to_dict(resolve_config(cls, spec, self.kind)))
        return TrialJob(spec, key, number=trial.number, study=self.study.study_name, pruning=self.plan_for(trial))

    # --- pruning ---

    def finished(self) -> dict[int, Any]:
        """The study's complete and pruned trials by number."""
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return {t.number: t for t in done}

    def plan_for(self, trial: Any) -> PruningPlan | None:
        """What prunes ``trial`` (None: the study does not prune).

        The trials finished when it was asked are pinned then: a resumed trial is judged against the same ones (one
        killed before the pin, against those finished before its number).
        """
        if not self.prunes:
            return None
        done = self.finished()
        numbers = trial.user_attrs.get("pruning_snapshot", sorted(n for n in done if n < trial.number))
        request = self.request
        return PruningPlan(self.study.study_name, request.direction, request.pruning, request.base, trial.number,
                           tuple(FinishedTrial.of(done[n]) for n in numbers))

    def decide(self, number: int, record: RunRecord) -> Pruned:
        """Where trial ``number`` is pruned (None: it is not) and the pruner's marks, as its worker decided."""
        plan = self.plan_for(self.frozen(number))
        return (None, {}) if plan is None else plan.replay(record.summary["train"].get("history", []))

    # --- telling ---

    def finish(self, job: TrialJob, result: Any) -> str | None:
        """Tell the study what became of ``job`` (storing a complete trial); the progress line, None if it failed.

        A user error in a trial (the same in every trial) ends the search as one line naming the trial.
        """
        self.running.discard(job.number)
        if isinstance(result, FewshotBenchError):
            if isinstance(result, ConfigError):  # its values refused: never to be resumed (a data error may be fixed)
                self.tell_failed(job.number, str(result))
            raise type(result)(f"{job.label}: {result}")
        if isinstance(result, BaseException):
            text = f"{type(result).__name__}: {result}"
            log.warning("%s failed: %s", job.label, text)
            self.tell_failed(job.number, text)
            self.report.failed.append((job.number, text))
            return None
        pruned = self.decide(job.number, result.record)
        if pruned[0] is None:
            _store_trial(result, job, self.request, self.store_path, self.checkpoint_dir)
        self.tell_finished(job.number, result.record, pruned)
        if pruned[0] is not None:  # not a finished run: nothing to resume
            drop_checkpoint(self.checkpoint_dir, job.key)
        self.report.ran += 1
        self.count(pruned)
        return self.progress_line(job.number, result.record, pruned)

    def tell_failed(self, number: int, error: str) -> None:
        """Record trial ``number`` as failed with ``error``."""
        from optuna.trial import TrialState

        self.storage.set_trial_user_attr(self.trial_id(number), "failed", error)
        self.study.tell(number, state=TrialState.FAIL)

    def tell_finished(self, number: int, record: RunRecord, pruned: Pruned) -> None:
        """Record trial ``number`` as pruned at step ``pruned[0]``, or complete with its score and run id."""
        from optuna.trial import TrialState

        trial_id = self.trial_id(number)
        step, marks = pruned
        for point in record.summary["train"].get("history", []):  # the validation curve, for Optuna's plots
            if step is None or point["step"] <= step:
                self.storage.set_trial_intermediate_value(trial_id, int(point["step"]), float(point["val_metric"]))
        for key, value in marks.items():  # the pruner's own bookkeeping (Hyperband's rungs), as the worker's
            self.storage.set_trial_system_attr(trial_id, key, value)
        if step is not None:
            self.study.tell(number, state=TrialState.PRUNED)  # its value: the last validation (Optuna's rule)
            return
        self.storage.set_trial_user_attr(trial_id, "run_id", record.run_id)
        self.study.tell(number, trial_score(record, self.request.score))

    def count(self, pruned: Pruned) -> None:
        """Count a told trial as complete or pruned."""
        self.report.complete += pruned[0] is None
        self.report.pruned += pruned[0] is not None

    def progress_line(self, number: int, record: RunRecord, pruned: Pruned) -> str:
        """``trial 3: 61.20%, best 64.00% (trial 1)``: the trial just told and the best so far."""
        metric = self.request.metric
        done = (f"pruned at step {pruned[0]}" if pruned[0] is not None
                else metric_text(metric, trial_score(record, self.request.score)))
        leader = self.study.best_trial if self.report.complete else None
        best = f", best {metric_text(metric, leader.value)} (trial {leader.number})" if leader is not None else ""
        return f"trial {number}: {done}{best}"

    # --- the study's storage ---

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` of this study."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def frozen(self, number: int) -> Any:
        """Trial ``number`` as stored now (its values, user attributes and state)."""
        return self.storage.get_trial(self.trial_id(number))


def _store_trial(outcome: RunOutcome, job: TrialJob, request: SearchRequest, store_path: Path,
                 checkpoint_dir: Path | None) -> None:
    if outcome.record.run_key != job.key:  # a worker with other plugin versions
        raise ConfigError(f"{job.label}: the worker computed key {outcome.record.run_key}, "
                          f"the driver expected {job.key}")
    # The trial's values with the study's fixed keys: what its tuned preset applies.
    values = dict(sorted(job.spec.overrides.items()))
    outcome.record.options["tune"] = {
        "study": job.study, "trial": job.number, "sampler": request.sampler, "values": values,
        "objective": request.score, "score": trial_score(outcome.record, request.score),
    }
    outcome.record.run_id = store_run(outcome, store_path, checkpoint_dir).run_id


# --- tuned presets ------------------------------------------------------------------------------


def trial_score(record: RunRecord, score: str) -> float:
    """A trial's objective: its best validation metric (the stored mean) or its last validation's."""
    history = record.summary["train"].get("history") or []
    return float(history[-1]["val_metric"] if score == "last" and history else record.mean)


def _better(a: RunRecord, b: RunRecord) -> bool:
    higher = a.metric == "accuracy"
    sa, sb = (r.options["tune"].get("score", r.mean) for r in (a, b))
    if sa != sb:
        return (sa > sb) if higher else (sa < sb)
    return a.options["tune"]["trial"] < b.options["tune"]["trial"]


def study_trials(store: ResultStore, learner: str, dataset: str, way: int, shot: int) -> dict[str, list[RunRecord]]:
    """The stored trials of every study of (learner, dataset, way, shot), by study, oldest study first."""
    studies: dict[str, list[RunRecord]] = {}
    for run in store.runs(learner=learner, dataset=dataset, way=way, shot=shot):
        if is_trial(run) and "tune" in run.options:
            studies.setdefault(run.options["tune"]["study"], []).append(run)
    return studies


def tuned_preset(store_path: Path, learner: str, dataset: str, way: int, shot: int,
                 study: str | None = None) -> dict[str, Any]:
    """The tuned preset of (learner, dataset, way, shot): the best trial of ``study`` or of the latest study.

    Returns ``{"values", "study", "trial", "trials", "val_metric", "budget", "run_id"}``;
    a one-line :class:`ConfigError` when there is no such study.
    """
    how = f"fewshot-bench tune --learner {learner} --dataset {dataset} --way {way} --shot {shot} --trials N"
    if not store_path.exists():
        raise ConfigError(f"--hparams tuned: no tuned hyperparameters for {learner} on {dataset} {way}-way {shot}-shot "
                          f"(no store {store_path}); run `{how}` first")
    with ResultStore(store_path, create=False) as store:
        studies = study_trials(store, learner, dataset, way, shot)
    if study is not None:
        matches = [s for s in studies if s.startswith(study)]
        if len(matches) != 1:
            raise ConfigError(f"--hparams tuned:{study}: {'no' if not matches else 'more than one'} "
                              f"study of {learner} on {dataset} {way}-way {shot}-shot matches; "
                              f"studies: {', '.join(studies) or 'none'}")
        name = matches[0]
    elif studies:
        name = max(studies, key=lambda s: max(r.created_at for r in studies[s]))
    else:
        raise ConfigError(f"--hparams tuned: no tuned hyperparameters for {learner} on {dataset} {way}-way {shot}-shot "
                          f"in {store_path}; run `{how}` first")
    runs = studies[name]
    best = runs[0]
    for run in runs[1:]:
        if _better(run, best):
            best = run
    o = best.options
    return {
        "values": dict(o["tune"]["values"]), "study": name, "trial": o["tune"]["trial"], "trials": len(runs),
        "val_metric": best.mean, "objective": o["tune"].get("objective", "best"),
        "score": o["tune"].get("score", best.mean), "run_id": best.run_id,
        "budget": {"steps": o["steps"], "val_every": min(o["val_every"], o["steps"]) if o["steps"] else o["val_every"],
                   "val_episodes": o["val_episodes"]},
    }


def with_tuned(spec: RunSpec, store_path: Path, host: PluginHost) -> RunSpec:
    """``spec`` with its tuned preset looked up when ``hparams`` is ``tuned`` or ``tuned:STUDY`` (else unchanged).

    A learner with nothing to search runs its defaults under ``tuned`` (so it sits in the same
    protocol as the tuned rows of a table); one that has a search space needs a study.
    """
    if spec.hparams is None or spec.hparams.split(":")[0] != TUNED:
        return spec
    study = spec.hparams.partition(":")[2] or None
    cls = host.learner(spec.learner)
    impl = cls.for_kind(host.dataset(spec.dataset).kind)
    if not getattr(impl, "search_space", None) and study is None:
        return replace(spec, hparams=TUNED, tuned={"values": {}, "source": "nothing to tune: the learner's defaults"})
    dataset = host.dataset(spec.dataset).name
    preset = tuned_preset(store_path, spec.learner, dataset, spec.way, spec.shot, study)
    log.info("%s: tuned hyperparameters of study %s (best of %d trials: trial %d, validation %.4f at %d steps): %s",
             spec.learner, preset["study"], preset["trials"], preset["trial"], preset["val_metric"],
             preset["budget"]["steps"], " ".join(f"{k}={v}" for k, v in preset["values"].items()))
    return replace(spec, hparams=TUNED, tuned=preset)


def apply_tuned(specs: list[RunSpec], store_path: Path, host: PluginHost) -> list[RunSpec]:
    """:func:`with_tuned` for every spec; one error naming every setting that has no study."""
    out, missing = [], []
    for spec in specs:
        try:
            out.append(with_tuned(spec, store_path, host))
        except ConfigError:
            missing.append(f"{spec.learner} {spec.dataset} {spec.way}-way {spec.shot}-shot")
    if missing:
        unique = list(dict.fromkeys(missing))
        raise ConfigError(f"--hparams tuned: no study in {store_path} for {', '.join(unique)}; "
                          "run `fewshot-bench tune` for each first")
    return out


# --- reports --------------------------------------------------------------------------------------


def load_study(store_path: Path, name: str) -> Any:
    """An existing study from the study file beside ``store_path`` (a prefix of its name is enough)."""
    optuna = _optuna()
    path = storage_path(store_path)
    if not path.exists():
        raise ConfigError(f"no search studies beside {store_path} ({path} does not exist); "
                          "run `fewshot-bench tune` first")
    storage = open_storage(path)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    matches = [n for n in names if n.startswith(name)]
    if len(matches) != 1:
        raise ConfigError(f"{'no' if not matches else 'more than one'} study {name!r} in {path}; "
                          f"studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=matches[0], storage=storage)


def study_names(store_path: Path) -> list[str]:
    """Names of the studies beside ``store_path`` (empty when there is no study file)."""
    path = storage_path(store_path)
    if not path.exists():
        return []
    optuna = _optuna()
    return [s.study_name for s in optuna.get_all_study_summaries(open_storage(path), include_best_trial=False)]


def trials_table(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, validation score, best so far, each hyperparameter, run id.

    A pruned trial's score is its last validation (Optuna's rule), never the best so far;
    a study that pruned has a column ``pruned at`` (the step).
    """
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    pruned = any(t.state == TrialState.PRUNED for t in trials)
    rows, best = [], None
    maximize = study.direction.name == "MAXIMIZE"
    for t in trials:
        if t.state == TrialState.COMPLETE and (best is None or (t.value > best if maximize else t.value < best)):
            best = t.value
        row = {"trial": t.number, "state": t.state.name.lower(), "val": t.value, "best so far": best}
        if pruned:
            row["pruned at"] = t.last_step if t.state == TrialState.PRUNED else None
        row.update({k: t.params.get(k) for k in sorted(t.distributions)})
        row["run"] = t.user_attrs.get("run_id", "-")
        rows.append(row)
    return rows


def steps_trained(study: Any) -> tuple[int, int]:
    """Meta-training steps the finished trials took (to their last validation) and what they would without pruning.

    A trial that early stopping ended counts the steps it took in both.
    """
    from optuna.trial import TrialState

    budget = study.user_attrs.get("definition", {}).get("budget", {}).get("steps", 0)
    took = full = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        took += t.last_step or 0
        full += budget if t.state == TrialState.PRUNED else t.last_step or 0
    return took, full


def plot_study(study: Any, path: Path) -> Path:
    """Validation score over trials (with the best so far) and against each hyperparameter, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    from optuna.trial import TrialState

    finished = sorted((t for t in study.get_trials(deepcopy=False) if t.value is not None), key=lambda t: t.number)
    done = [t for t in finished if t.state == TrialState.COMPLETE]
    pruned = [t for t in finished if t.state == TrialState.PRUNED]  # drawn at their last validation
    params = sorted({k for t in finished for k in t.params})
    cols = min(3, len(params) + 1)
    rows = math.ceil((len(params) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    maximize = study.direction.name == "MAXIMIZE"
    xs = [t.number for t in done]
    ys = [t.value for t in done]
    running, best = [], None
    for y in ys:
        best = y if best is None or (y > best if maximize else y < best) else best
        running.append(best)
    # The tuned learner's colour and marker, as in every figure (fewshot_bench.reports.palette).
    look = palette.style(study.user_attrs.get("definition", {}).get("learner", ""))
    ax = flat[0]
    ax.plot(xs, ys, look.marker, ms=4, color=look.colour, label="trial")
    if pruned:
        ax.plot([t.number for t in pruned], [t.value for t in pruned], "x", ms=5, color="0.55",
                label="pruned (last validation)")
    ax.step(xs, running, where="post", color="k", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation score")
    ax.legend(fontsize=8)
    for ax, key in zip(flat[1:], params):
        pts = [(t.params[key], t.value) for t in done if key in t.params]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=look.colour, marker=look.marker)
        cut = [(t.params[key], t.value) for t in pruned if key in t.params]
        if cut:
            ax.scatter([p[0] for p in cut], [p[1] for p in cut], s=18, marker="x", color="0.55")
        dist = next((t.distributions[key] for t in finished if key in t.distributions), None)
        if getattr(dist, "log", False):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # narrow log ranges: no crowded labels
        ax.set_xlabel(key)
        ax.set_ylabel("validation score")
    for ax in flat[len(params) + 1:]:
        ax.axis("off")
    fig.suptitle(study.study_name, fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def executor_capacity(executor: Executor) -> int:
    """How many trials to keep in flight on ``executor``: its workers, or the Ray cluster's CPUs."""
    if hasattr(executor, "workers"):
        return int(executor.workers)
    ray = getattr(executor, "ray", None)
    if ray is not None:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return 1
