"""One run of the protocol: load data, build the learner, meta-train, evaluate, store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewshot_bench.api.learner import Learner, TaskSpec
from fewshot_bench.api.tasks import task_kind
from fewshot_bench.checkpoints import load_torch_file, plain, save_atomic
from fewshot_bench.config import apply_overrides, config_to_dict
from fewshot_bench.data import identity
from fewshot_bench.data.base import DataRequest, FeatureDataset, merge_splits
from fewshot_bench.errors import CheckpointError, ConfigError, DataError, FewshotBenchError, PluginError
from fewshot_bench.plugin_host import PluginHost
from fewshot_bench.protocol import preflight
from fewshot_bench.protocol.evaluate import all_remaining_queries, evaluate
from fewshot_bench.protocol.population import Population, population_report
from fewshot_bench.protocol.profiling import Profiler
from fewshot_bench.protocol.spec import TUNE_STAGE, TUNED, RunSpec
from fewshot_bench.protocol.threads import (
    ThreadChoice,
    apply_threads,
    choose_eval_threads,
    choose_threads,
    requested_threads,
)
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions, TrainResult
from fewshot_bench.records import stats
from fewshot_bench.records.provenance import execution, hardware, versions
from fewshot_bench.records.store import ResultStore, RunRecord
from fewshot_bench.tracking.run_log import TrainingLog, run_params

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Where and how to run: data location, device, store, progress and profiling."""

    host: PluginHost
    store_path: Path
    data_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_dir: Path | None = None
    progress: bool = False
    progress_every: float | None = None  # without a bar: seconds between one-line progress records (logs)
    profile: bool = False
    cuda_graph: bool = True  # capture the meta-training step on CUDA (no effect on CPU)
    restart: bool = False  # delete the run's checkpoint, unread, and meta-train from the start
    dataset_cache: dict = field(default_factory=dict)
    # torch threads: a number, "auto" or None (then $FEWSHOT_BENCH_THREADS, else chosen per run: protocol.threads)
    threads: int | str | None = None
    max_threads: int | None = None  # ceiling of the automatic choice (a sweep worker's share of the cores)


def load_dataset(ctx: RunContext, name: str, crop: str = "center") -> FeatureDataset:
    """Load (once per context) the dataset registered as ``name``."""
    spec = ctx.host.dataset(name)
    cache_key = (spec.name, crop, str(ctx.data_dir))
    if cache_key not in ctx.dataset_cache:
        ctx.dataset_cache[cache_key] = spec.load(DataRequest(data_dir=ctx.data_dir, crop=crop)).to(ctx.device)
    return ctx.dataset_cache[cache_key]


@dataclass(frozen=True)
class DataIdentity:
    """The data a run reads: the content digest of each split of its dataset and their combined id (in its key)."""

    id: str
    digests: dict[str, str]


def identify_data(
    ctx: RunContext, name: str, crop: str = "center", splits: tuple[str, ...] | None = None,
) -> DataIdentity:
    """The content identity of dataset ``name`` as the context finds it (cached per context, and beside the files).

    The id covers every split (``splits`` None), not only those a run reads (a baseline reads
    only test): so every learner's runs on the same data share one id, and tables can tell
    data versions apart. A search's trials name their splits (train and val): they never read test.
    """
    dataset = ctx.host.dataset(name)
    cache_key = ("data identity", dataset.name, crop, str(ctx.data_dir), splits)
    if cache_key not in ctx.dataset_cache:
        if dataset.identify is not None:
            try:
                digests = dict(dataset.identify(DataRequest(data_dir=ctx.data_dir, crop=crop, splits=splits)))
            except FewshotBenchError:
                raise
            except Exception as exc:  # a plugin's bug: one line naming it, the traceback at debug level
                log.debug("traceback of dataset %r's identify:", dataset.name, exc_info=True)
                raise DataError(f"dataset {dataset.name!r} could not identify its data: {type(exc).__name__}: {exc} "
                                "(rerun with -v for the traceback; fix the dataset plugin's identify hook)") from exc
        else:  # a dataset that cannot say cheaply: hash what it loads
            loaded = load_dataset(ctx, name, crop)
            digests = {split: identity.loaded_digest(loaded.split(split)) for split in splits or loaded.splits}
        digests = {split: digest for split, digest in digests.items() if splits is None or split in splits}
        if not digests or not all(isinstance(v, str) and v for v in digests.values()):
            raise DataError(f"dataset {dataset.name!r} gave no content digests for its splits ({digests!r}); "
                            "fix the dataset plugin's identify hook")
        ctx.dataset_cache[cache_key] = DataIdentity(identity.data_id(digests), digests)
    return ctx.dataset_cache[cache_key]


def run_key(spec: RunSpec, ctx: RunContext, config_dict: dict[str, Any]) -> tuple[str, DataIdentity]:
    """``spec``'s run key for its resolved config and the data it reads, with that data's identity."""
    data = identify_data(ctx, spec.dataset, spec.crop, ("train", "val") if spec.stage == TUNE_STAGE else None)
    return spec.key(config_dict, data.id), data


def episode_shape(host: PluginHost, dataset: str, way: int | None, shot: int | None) -> tuple[int, int]:
    """(N, K) of ``dataset``'s episodes: 5-way 1-shot unless given, or what its task kind fixes and its default shot."""
    spec = host.dataset(dataset)
    fixed = task_kind(spec.kind).fixed_way
    if fixed is not None and way not in (None, fixed):
        raise ConfigError(f"{spec.name} is a {spec.kind} dataset with {fixed}-way episodes; drop --way {way}")
    return (way if way is not None else (fixed or 5)), (shot if shot is not None else (spec.default_shot or 1))


def resolve_config(cls: type[Learner], spec: RunSpec, kind: str = "classification") -> Any:
    """The learner's defaults for (dataset, shot) and preset, with ``--set`` overrides applied.

    ``kind`` is the dataset's task kind: a learner may implement another kind with another
    class and config (``Learner.implementations``).
    """
    cls = cls.for_kind(kind)
    if spec.hparams == TUNED:  # the learner's defaults with a search's best values (fewshot_bench.search.tune)
        if spec.tuned is None:
            raise ConfigError("--hparams tuned: the tuned preset was not looked up (search.tune.with_tuned)")
        config = apply_overrides(cls.default_config(spec.dataset, spec.shot), spec.tuned["values"], cls.name)
    elif spec.hparams is not None and cls.presets:
        config = cls.default_config(spec.dataset, spec.shot, preset=spec.hparams)
    elif spec.hparams not in (None, "paper"):
        raise ConfigError(f"learner {cls.name!r} has no hyperparameter presets; drop --hparams {spec.hparams}")
    else:
        config = cls.default_config(spec.dataset, spec.shot)
    return apply_overrides(config, spec.overrides, cls.name)


def build_learner(cls: type[Learner], config: Any, task: TaskSpec, device: torch.device) -> Learner:
    """Instantiate the learner's class for ``task.kind``, naming it and its plugin in any error it raises."""
    cls = cls.for_kind(task.kind)
    try:
        learner = cls(config, task)
    except FewshotBenchError:
        raise
    except Exception as exc:
        raise ConfigError(f"learner {cls.name!r} could not be built with this config: "
                          f"{type(exc).__name__}: {exc}") from exc
    return learner.to(device=device, dtype=learner.dtype)


def save_model(learner: Learner, config: dict[str, Any], task: TaskSpec, path: Path) -> Path:
    """Keep a meta-trained learner's final (best) weights with what rebuilds it; returns the absolute path.

    Saved by run key (equal keys give equal weights), so figures and analyses of a stored
    run can reload its model: see :func:`load_model`.
    """
    path = path.resolve()
    state = {k: v.detach().cpu() for k, v in learner.state_dict().items()}
    save_atomic({"learner": learner.name, "config": plain(config), "task": plain(asdict(task)), "state_dict": state},
                path)
    return path


def load_model(host: PluginHost, path: Path, device: torch.device | str = "cpu") -> Learner:
    """Rebuild a learner saved by :func:`save_model` (evaluation mode, on ``device``).

    The file is loaded with ``weights_only=True``: nothing in it can run. A file that is
    unreadable, foreign or malformed is a one-line :class:`CheckpointError` naming it.
    """
    way_out = "rerun the run with `fewshot-bench run` to save it again"
    saved = load_torch_file(path, "cpu", "saved model", way_out)

    def malformed(why: str) -> CheckpointError:
        return CheckpointError(f"saved model {path} is not a model saved by fewshot-bench ({why}); {way_out}")

    if not isinstance(saved, dict):
        raise malformed(f"it holds {type(saved).__name__}")
    for key, kind in (("learner", str), ("config", dict), ("task", dict), ("state_dict", dict)):
        if not isinstance(saved.get(key), kind):
            raise malformed(f"{key!r} is missing or not a {kind.__name__}")
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in saved["state_dict"].items()):
        raise malformed("'state_dict' holds more than named tensors")
    try:
        task = TaskSpec(**saved["task"])
    except TypeError as exc:
        raise malformed(f"'task': {exc}") from None
    impl = host.learner(saved["learner"]).for_kind(task.kind)
    try:
        config = impl.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()})
    except TypeError as exc:
        raise malformed(f"'config': {exc}") from None
    learner = build_learner(impl, config, task, torch.device(device))
    try:
        learner.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        raise malformed(f"its weights do not fit learner {saved['learner']!r}: "
                        f"{str(exc).splitlines()[0][:120]}") from None
    return learner.eval()


@contextmanager
def learner_errors(learner: str, distribution: str, stage: str) -> Iterator[None]:
    """Re-raise a learner's own exception as a one-line error naming the learner and its distribution.

    The original traceback is logged at debug level, so ``fewshot-bench -v`` shows it.
    """
    try:
        yield
    except FewshotBenchError:
        raise
    except Exception as exc:
        log.debug("traceback of the error in learner %r:", learner, exc_info=True)
        raise PluginError(
            f"learner {learner!r} from distribution {distribution!r} failed during {stage}: "
            f"{type(exc).__name__}: {exc} (rerun with -v for the traceback)"
        ) from exc


@dataclass
class Resolved:
    """A run's learner, resolved config and run key (with the data it reads): what checking and setting up share."""

    spec: RunSpec
    cls: type[Learner]
    distribution: str
    kind: str
    config: Any
    config_dict: dict[str, Any]
    run_key: str
    data: DataIdentity


def resolve(spec: RunSpec, ctx: RunContext) -> Resolved:
    """Resolve ``spec``'s learner (for its dataset's task kind), config and run key; reads no episode."""
    cls = ctx.host.learner(spec.learner)
    kind = ctx.host.dataset(spec.dataset).kind
    check_kind(spec, cls, kind)
    config = resolve_config(cls, spec, kind)
    config_dict = config_to_dict(config)
    key, data = run_key(spec, ctx, config_dict)
    return Resolved(spec, cls, ctx.host.learner_plugin(spec.learner).distribution, kind, config, config_dict, key, data)


def prepare(spec: RunSpec, ctx: RunContext) -> str:
    """Check ``spec`` against its learner, config, data, store and checkpoint folder; returns its run key.

    Trains nothing; identifies the data (a file's digest comes from its parse cache, so a file
    is parsed here the first time it is used): what fails here fails before the run header.
    """
    return prepare_all([spec], ctx)[0]


def prepare_all(specs: list[RunSpec], ctx: RunContext) -> list[str]:
    """:func:`prepare` for several runs of one store (the seeds of a cell); the store and the checkpoint folder
    are proved writable once, not once a seed."""
    keys = []
    for spec in specs:
        dataset = ctx.host.dataset(spec.dataset)
        preflight.check_spec(spec, dataset.kind)
        preflight.check_crop(spec, dataset.crops)
        keys.append(resolve(spec, ctx).run_key)
    preflight.check_store(Path(ctx.store_path))  # opened, migrated and proved writable now, not after training
    preflight.check_checkpoint_dir(ctx.checkpoint_dir, *keys)
    return keys


def check_kind(spec: RunSpec, cls: type[Learner], kind: str) -> None:
    """The learner solves the dataset's task kind (one line naming both if not)."""
    if kind not in cls.kinds:
        raise ConfigError(
            f"learner {spec.learner!r} solves {' and '.join(cls.kinds)} tasks, but dataset {spec.dataset!r} "
            f"poses {kind}; pick another learner (see `fewshot-bench learners`)"
        )


@dataclass
class RunOutcome:
    """A finished but not yet stored run: the record to store and its per-episode values."""

    record: RunRecord
    values: np.ndarray


@dataclass
class Prepared(Resolved):
    """One run set up to meta-train: resolved, with its data loaded and its learner built from its seed."""

    dataset: FeatureDataset
    scored: str  # the split it is scored on: test, or val for a search's trial
    eval_query: int
    task: TaskSpec
    learner: Learner

    @property
    def meta_trained(self) -> bool:
        """Whether this run meta-trains (a learner with something to train, and steps to train it)."""
        return self.cls.for_kind(self.kind).meta_trainable and self.spec.steps > 0


def setup(spec: RunSpec, ctx: RunContext, expected_key: str | None = None) -> Prepared:
    """Resolve ``spec``'s config and key, load its data, check its episodes and build its learner (seeded).

    ``expected_key``, when given, must equal the key this process resolves: a worker whose
    installed plugins resolve a different config refuses to run rather than store a mislabelled run.
    """
    resolved = resolve(spec, ctx)
    if expected_key is not None and resolved.run_key != expected_key:
        raise ConfigError(
            f"{spec.learner}: this worker resolves a different config or reads other data than the driver (key "
            f"{resolved.run_key} != {expected_key}, data {resolved.data.id[:8]}); install the same versions of "
            "fewshot-bench and its plugins and give every worker the same data"
        )
    dataset = load_dataset(ctx, spec.dataset, spec.crop)
    # A search trial is scored on validation episodes (those early stopping used): it never reads the test split.
    scored = "val" if spec.stage == "tune" else "test"
    test = dataset.split(scored)
    task = TaskSpec(spec.way, spec.shot, dataset.feature_dim, dataset.kind, dataset.name)
    eval_query = spec.eval_query if spec.eval_query is not None else all_remaining_queries(test, spec.shot)
    preflight.check_episodes(dataset, spec, eval_query, test.name)  # the scored split too, before any training
    torch.manual_seed(spec.seed)
    learner = build_learner(resolved.cls, resolved.config, task, ctx.device)
    return Prepared(**vars(resolved), dataset=dataset, scored=scored, eval_query=eval_query, task=task, learner=learner)


def use_threads(learner: Learner, ctx: RunContext, meta_trained: bool = True) -> ThreadChoice:
    """Set torch's threads for meta-training ``learner`` as the context asks (protocol.threads); returns the
    choice (said in the log only when there is meta-training to use it)."""
    threads = apply_threads(choose_threads(learner, *requested_threads(ctx.threads), cap=ctx.max_threads))
    if meta_trained:
        log.info("torch threads: %d (%s)", threads.threads, threads.reason)
    return threads


def use_eval_threads(run: Prepared, ctx: RunContext) -> ThreadChoice:
    """Set torch's threads for evaluating ``run`` (its own choice, for its episodes: fewshot_bench.protocol.threads)."""
    spec = run.spec
    threads = apply_threads(choose_eval_threads(
        spec.episodes, spec.way, spec.shot, run.eval_query, run.task.feature_dim, *requested_threads(ctx.threads),
        cap=ctx.max_threads,
    ))
    log.info("torch threads for evaluation: %d (%s)", threads.threads, threads.reason)
    return threads


def make_trainer(
    run: Prepared, ctx: RunContext, profiler: Profiler, on_validation: Callable[[TrainResult], bool] | None = None,
    on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> MetaTrainer:
    """The run's trainer, resumed from its checkpoint if it has one (``ctx.restart``: deleted unread); the
    callbacks: :class:`TrainOptions`."""
    spec, dataset = run.spec, run.dataset
    train_split = dataset.split("train")
    val_split = dataset.split("val")
    if spec.train_on_val:
        train_split = merge_splits("train+val", train_split, val_split)
    checkpoint = None
    if ctx.checkpoint_dir is not None:
        checkpoint = ctx.checkpoint_dir / f"{run.run_key}.pt"
    options = TrainOptions(
        checkpoint=checkpoint,
        run_key=run.run_key,
        progress=ctx.progress,
        progress_every=ctx.progress_every,
        cuda_graph=ctx.cuda_graph,
        on_validation=on_validation,
        on_step=on_step,
    )
    trainer = MetaTrainer(run.learner, train_split, val_split, spec, options, ctx.device, profiler)
    if trainer.try_resume(restart=ctx.restart):
        log.info("resuming %s from step %d (seed %d)", spec.learner, trainer.result.steps, spec.seed)
    return trainer


def trained_summary(run: Prepared, ctx: RunContext, result: TrainResult) -> dict[str, Any]:
    """What a run stores of its meta-training; saves its model beside the checkpoints (not a search's trials)."""
    summary = {"meta_trained": True, **asdict(result)}
    if ctx.checkpoint_dir is not None and run.spec.stage != "tune":  # a search's trials keep no model files
        path = ctx.checkpoint_dir / f"{run.run_key}.model.pt"
        summary["model"] = str(save_model(run.learner, run.config_dict, run.task, path))
    return summary


def compute(
    spec: RunSpec, ctx: RunContext, expected_key: str | None = None,
    on_validation: Callable[[TrainResult], bool] | None = None, tracking: TrainingLog | None = None,
) -> RunOutcome:
    """Meta-train and evaluate ``spec`` without touching the store.

    Meta-training checkpoints after each validation; computing the same spec again resumes.
    ``expected_key``: see :func:`setup`. ``on_validation`` is the trainer's callback after each
    validation (:class:`TrainOptions`; a search's pruner). ``tracking`` logs the run's parameters and its
    meta-training as it happens (:mod:`fewshot_bench.tracking`); it changes nothing the run computes.
    """
    run = setup(spec, ctx, expected_key)
    threads = use_threads(run.learner, ctx, run.meta_trained)
    profiler = Profiler(ctx.profile, ctx.device)
    train_summary: dict[str, Any] = {"meta_trained": False}
    if tracking is not None:
        options = {**asdict(spec), "dataset": run.dataset.name, "data_id": run.data.id}
        tracking.params(run_params(options, run.config_dict, run.run_key, task_kind(run.kind).metric))
    t0 = time.perf_counter()
    if run.meta_trained:
        if tracking is None:
            trainer = make_trainer(run, ctx, profiler, on_validation)
        else:
            trainer = make_trainer(run, ctx, profiler, tracking.then(on_validation), tracking.step)
            tracking.begin(trainer.result)
        with learner_errors(spec.learner, run.distribution, "meta-training"):
            result = trainer.run()
        train_summary = trained_summary(run, ctx, result)
    return score(run, ctx, threads, profiler, train_summary, {"train_s": time.perf_counter() - t0})


def compute_population(
    specs: list[RunSpec], ctx: RunContext, expected_keys: list[str] | None = None, batched: bool = True,
) -> list[RunOutcome]:
    """Meta-train the runs ``specs`` (seeds of one cell) as one population, then evaluate each as alone.

    Every member trains, validates, stops and checkpoints as its run alone would
    (:mod:`fewshot_bench.protocol.population`), so each outcome is the one :func:`compute` gives its
    spec. ``batched`` False trains the members one after another. The record's timings say
    how the population trained (members, path, peak memory); ``train_s`` is the population's.
    """
    runs = [setup(spec, ctx, None if expected_keys is None else expected_keys[i]) for i, spec in enumerate(specs)]
    threads = use_threads(runs[0].learner, ctx, runs[0].meta_trained)
    profiler = Profiler(ctx.profile, ctx.device)
    summaries: list[dict[str, Any]] = [{"meta_trained": False} for _ in runs]
    report: dict[str, Any] = {"members": len(runs)}
    together = [1] * len(runs)  # how many members each one meta-trained with in one batched program (1: alone)
    t0 = time.perf_counter()
    if runs[0].meta_trained:
        population = Population([make_trainer(run, ctx, profiler) for run in runs], profiler, not batched)
        with learner_errors(specs[0].learner, runs[0].distribution, "meta-training"):
            results = population.run()
        summaries = [trained_summary(run, ctx, result) for run, result in zip(runs, results)]
        report = population_report(population)
        together = [population.trained_with.get(i, 1) for i in range(len(runs))]
    train_s = time.perf_counter() - t0
    return [score(run, ctx, threads, profiler, summary, {"train_s": train_s, "population": report},
                   {"size": size, "members": len(runs), "path": report.get("path", "none")})
            for run, summary, size in zip(runs, summaries, together)]


def score(
    run: Prepared, ctx: RunContext, threads: ThreadChoice, profiler: Profiler, train_summary: dict[str, Any],
    timings: dict[str, Any], together: dict[str, Any] | None = None,
) -> RunOutcome:
    """Evaluate a (meta-trained) run on its scored split and build the record to store.

    ``together``: the population it meta-trained in (``size``: the members of its batched group; None: alone).
    """
    spec, kind = run.spec, run.kind
    eval_threads = use_eval_threads(run, ctx)  # evaluation chooses for its own work; training's choice after
    t0 = time.perf_counter()
    try:
        with profiler.section("evaluation"), learner_errors(spec.learner, run.distribution, "evaluation"):
            acc = evaluate(
                run.learner, run.dataset.split(run.scored), spec.way, spec.shot, seed=spec.seed,
                episodes=spec.episodes, n_query=run.eval_query, device=ctx.device, progress=ctx.progress,
                desc=f"{run.scored} {spec.learner}", stream=run.scored, progress_every=ctx.progress_every,
            )
    finally:
        apply_threads(threads)
    timings["eval_s"] = time.perf_counter() - t0
    summary = stats.summarize_run(acc)
    record = RunRecord.new(
        run_key=run.run_key,
        learner=spec.learner,
        dataset=run.dataset.name,
        way=spec.way,
        shot=spec.shot,
        seed=spec.seed,
        status="complete",
        metric=task_kind(kind).metric,
        mean=summary.mean,
        ci95=summary.ci95,
        episodes=summary.episodes,
        config=run.config_dict,
        options={
            # eval_query as declared (None: all remaining rows): the protocol is the user's; the resolved count beside.
            **asdict(spec), "eval_query_resolved": run.eval_query, "plugin": run.distribution,
            # The content of the dataset the run read (part of its identity; fewshot_bench.data.identity).
            "data_id": run.data.id, "data_digests": run.data.digests,
            # Where the data was read (provenance, not identity): figures reload it from there.
            "data_dir": str(ctx.data_dir.resolve()) if ctx.data_dir is not None else None,
            # Marked in tables, `results` and `compare` (see fewshot_bench.reports.combining).
            "transductive": bool(getattr(run.cls.for_kind(kind), "transductive", False)),
        },
        summary={"std": summary.std, "train": train_summary},
        versions=versions(run.distribution),
        # torch_threads (hardware(), read after the restore above) and threads_reason: meta-training's choice.
        hardware=hardware(ctx.device) | {"threads_reason": threads.reason, "eval_threads": eval_threads.threads,
                                            "eval_threads_reason": eval_threads.reason,
                                            "execution": execution(ctx.device, threads.threads, eval_threads.threads,
                                                                   together)},
        timings=timings | ({"profile": profiler.table()} if ctx.profile else {}),
    )
    return RunOutcome(record, acc)


@dataclass
class Stored:
    """Where a computed run ended up: the stored run's id, and whether another process had stored it first."""

    run_id: str
    stored_by_other: bool


def store_run(outcome: RunOutcome, store_path: Path, checkpoint_dir: Path | None = None, rerun: bool = False) -> Stored:
    """Write a computed run to the store, then drop its checkpoint.

    One run key has one complete row: a run whose key another process (an earlier run, a
    sweep's other worker) stored already is not written again, and the stored row is kept;
    with ``rerun`` this run takes the stored one's place (``run --rerun``). The checkpoint goes
    only after the store commit, so a kill in between costs at most a re-evaluation.
    """
    with ResultStore(store_path) as db:
        run_id = db.add_run(outcome.record, outcome.values, if_absent=not rerun, replace=rerun)
    drop_checkpoint(checkpoint_dir, outcome.record.run_key)
    return Stored(run_id, run_id != outcome.record.run_id)


def drop_checkpoint(checkpoint_dir: Path | None, run_key: str) -> None:
    """Remove a run's training checkpoint, once its run is stored (nothing will resume from it).

    A kill between the store commit and this leaves the file behind, so whoever next finds
    the run complete (a resumed sweep, a reused run, a search telling a stale trial) calls it too.
    """
    if checkpoint_dir is not None:
        (checkpoint_dir / f"{run_key}.pt").unlink(missing_ok=True)


def execute(spec: RunSpec, ctx: RunContext, rerun: bool = False, tracking: TrainingLog | None = None) -> Stored:
    """Compute ``spec`` and store it (:func:`store_run`); rerunning the same spec resumes its meta-training.
    ``tracking``: see :func:`compute`."""
    return store_run(compute(spec, ctx, tracking=tracking), ctx.store_path, ctx.checkpoint_dir, rerun)


def execute_population(
    specs: list[RunSpec], ctx: RunContext, rerun: bool = False, batched: bool = True, size: int | None = None,
) -> list[Stored]:
    """Compute ``specs`` (seeds of one cell) as populations of at most ``size`` members and store each run, as
    :func:`execute` stores one; returns where each was stored, in the order of ``specs``."""
    step = size or len(specs)
    return [store_run(outcome, ctx.store_path, ctx.checkpoint_dir, rerun) for start in range(0, len(specs), step)
            for outcome in compute_population(specs[start:start + step], ctx, batched=batched)]
