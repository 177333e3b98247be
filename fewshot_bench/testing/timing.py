"""Timing a learner beside the built-ins: its meta-training step, its inner loop and its evaluation.

One standard episode shape (5-way, K-shot on the embedded 640-d ``synthetic`` features;
meta-batches of the learner's ``meta_batch_size`` with 15 queries per class; evaluation
with every remaining example of a class as a query, the paper's protocol) and one
definition of what each phase runs, a :class:`Workload`. Three clocks read them:
``fewshot-bench bench`` (:func:`measure`, :func:`speed_table`), the pytest-benchmark
fixtures of the kit's pytest plugin, and the project's own benchmarks (``benchmarks/``); the
``cpu-budget`` check compares evaluation speed with the built-ins through :func:`measure`.
"""

from __future__ import annotations

import inspect
import itertools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fewshot_bench.api.batches import EpisodeBatch, PredictionBatch
from fewshot_bench.api.learner import Learner, TaskSpec
from fewshot_bench.data.base import FeatureDataset
from fewshot_bench.episodes import TRAIN_QUERY
from fewshot_bench.errors import ConfigError
from fewshot_bench.plugin_host import PluginHost, load_plugins
from fewshot_bench.protocol.evaluate import evaluate, readout_follows_predict
from fewshot_bench.protocol.runner import build_learner
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.threads import (
    ThreadChoice,
    apply_threads,
    choose_eval_threads,
    choose_threads,
    requested_threads,
)
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions
from fewshot_bench.testing.harness import KIND_SETTINGS, REFERENCES, CheckOptions
from fewshot_bench.testing.harness import dataset as embedded_dataset

STEP, INNER, EVALUATION = "meta-train step", "inner loop", "evaluation"
PHASES = (STEP, INNER, EVALUATION)
N_WAY = 5
EVAL_EPISODES = 200
# A learner this many times slower than every built-in at evaluation, without a readout, is told to add one.
READOUT_HINT_RATIO = 10.0
READOUT_HINT = (
    "define linear_readout(batch) returning each episode's classifier weights [B, N, D] and bias [B, N] "
    "(or None): evaluation then scores the queries class by class without gathering them (docs/plugins.md, "
    "'Timing your learner')"
)


@dataclass
class Workload:
    """One phase of one learner: ``call()`` does the work once, on ``episodes`` episodes."""

    learner: str
    phase: str
    shot: int
    episodes: int
    call: Callable[[], Any]
    threads: int = 0  # torch's intra-op threads during the call, as a run would choose them (0: unchanged)


@dataclass
class Timing:
    """A workload's measured time: the median of ``rounds`` calls, and the episodes per second it gives."""

    workload: Workload
    seconds: float
    rounds: int

    @property
    def episodes_per_s(self) -> float:
        """Episodes of one call over the call's median time."""
        return self.workload.episodes / self.seconds if self.seconds > 0 else float("inf")


class Bench:
    """Builds the workloads of the standard episode shape for any learner (a class or an installed name).

    ``features``: the dataset to draw from (default: the embedded ``synthetic`` dataset, loaded
    once per process, as the conformance checks load it); ``device``: where learners and
    episodes live (on CUDA every call ends with a synchronisation, and a meta-training call is
    ``steps_per_call`` consecutive steps replaying a captured CUDA graph unless
    ``cuda_graph=False``); ``run_threads``: each call on the intra-op threads a run would choose
    for it (``FEWSHOT_BENCH_THREADS`` overrides), else on whatever torch is set to.
    """

    def __init__(
        self,
        host: PluginHost | None = None,
        features: FeatureDataset | None = None,
        device: torch.device | str = "cpu",
        eval_episodes: int = EVAL_EPISODES,
        cuda_graph: bool = True,
        steps_per_call: int = 1,
        run_threads: bool = True,
    ) -> None:
        self._host = host
        self._dataset = features
        self.device = torch.device(device)
        self.eval_episodes = eval_episodes
        self.cuda_graph = cuda_graph
        self.steps_per_call = steps_per_call
        self.run_threads = run_threads

    @property
    def host(self) -> PluginHost:
        """The installed plugins (loaded on first use)."""
        if self._host is None:
            self._host = load_plugins()
        return self._host

    @property
    def dataset(self) -> FeatureDataset:
        """The features episodes are drawn from."""
        if self._dataset is None:
            self._dataset = embedded_dataset(CheckOptions(host=self.host), KIND_SETTINGS["classification"])
        return self._dataset

    def learner_class(self, learner: str | type[Learner]) -> type[Learner]:
        """The learner's class: ``learner`` itself, or the installed learner of that name."""
        return self.host.learner(learner) if isinstance(learner, str) else learner

    def learner(self, learner: str | type[Learner], shot: int) -> Learner:
        """The learner's classification default config for the dataset and ``shot``, built after
        ``torch.manual_seed(0)``, on the device, in training mode."""
        cls = self.learner_class(learner).for_kind("classification")
        config = cls.default_config(self.dataset.name, shot)
        torch.manual_seed(0)
        task = TaskSpec(N_WAY, shot, self.dataset.feature_dim, "classification", self.dataset.name)
        return build_learner(cls, config, task, self.device).train()

    def train_batch(self, shot: int, size: int, dtype: torch.dtype = torch.float32) -> EpisodeBatch:
        """One fixed meta-batch of ``size`` training episodes (15 queries per class)."""
        sampler = self.dataset.split("train").sampler(N_WAY, shot, TRAIN_QUERY, seed=0, stream="train")
        return sampler.batch(0, size, self.device, dtype=dtype)

    def trainer(self, learner: str | type[Learner], shot: int) -> MetaTrainer:
        """A MetaTrainer of the learner on the train split (validation is never run)."""
        built = self.learner(learner, shot)
        spec = RunSpec(built.name, way=N_WAY, shot=shot)
        return MetaTrainer(built, self.dataset.split("train"), self.dataset.split("val"), spec,
                           TrainOptions(cuda_graph=self.cuda_graph), self.device)

    def _count(self, threads: ThreadChoice) -> int:
        """The threads a call runs on: the run's choice, or torch's setting when the bench keeps it."""
        return threads.threads if self.run_threads else torch.get_num_threads()

    def synced(self, fn: Callable[[], Any], threads: ThreadChoice | None = None) -> Callable[[], Any]:
        """``fn`` on ``threads`` intra-op threads (as a run sets them; unchanged when None), followed on CUDA by a
        synchronisation, so a call's time includes its kernels."""
        cuda = self.device.type == "cuda"
        threads = threads if self.run_threads else None

        def call() -> Any:
            if threads is not None:
                apply_threads(threads)
            out = fn()
            if cuda:
                torch.cuda.synchronize(self.device)
            return out

        return call if cuda or threads is not None else fn

    # --- the three phases -----------------------------------------------------------------

    def meta_train_step(self, learner: str | type[Learner], shot: int = 1) -> Workload | None:
        """The harness's whole meta-training step (sampling, meta_loss, backward, NaN guard, clipping, Adam) on a
        fresh meta-batch each call; None for a learner with nothing to meta-train."""
        cls = self.learner_class(learner)
        if not cls.for_kind("classification").meta_trainable:
            return None
        trainer = self.trainer(cls, shot)
        steps = itertools.count()

        def consecutive_steps() -> dict:
            for _ in range(self.steps_per_call):
                metrics = trainer.step(next(steps))
            return metrics

        threads = choose_threads(trainer.learner, *requested_threads())
        return Workload(cls.name, STEP, shot, trainer.batch_size * self.steps_per_call,
                        self.synced(consecutive_steps, threads), self._count(threads))

    def inner_loop(
        self,
        learner: str | type[Learner],
        shot: int = 1,
        inner_loop: Callable[[Learner, PredictionBatch], Any] | None = None,
    ) -> Workload | None:
        """The learner's inner loop on a fixed meta-batch, in training mode with autograd recording (the graph
        the meta-gradient needs): ``inner_loop(learner, batch)``, by default the learner's ``adapt(batch)``;
        None when the learner has no ``adapt`` taking a batch and no ``inner_loop`` is given."""
        cls = self.learner_class(learner)
        built = self.learner(cls, shot)
        if inner_loop is None:
            adapt = getattr(built, "adapt", None)
            if adapt is None or not _takes_one_argument(adapt):
                return None
            inner_loop = type(built).adapt
        batch = self.train_batch(shot, built.config.meta_batch_size, built.dtype)
        threads = choose_threads(built, *requested_threads())  # the inner loop runs inside meta-training
        return Workload(cls.name, INNER, shot, batch.batch_size, self.synced(lambda: inner_loop(built, batch), threads),
                        self._count(threads))

    def evaluation(self, learner: str | type[Learner], shot: int = 1, episodes: int | None = None) -> Workload:
        """Evaluation as a run makes it: ``episodes`` test episodes, every remaining example of a class a query."""
        cls = self.learner_class(learner)
        built = self.learner(cls, shot)
        count = episodes or self.eval_episodes
        test = self.dataset.split("test")

        def call() -> Any:
            return evaluate(built, test, N_WAY, shot, seed=0, episodes=count, device=self.device)

        threads = choose_eval_threads(count, N_WAY, shot, test.default_query(shot), test.feature_dim,
                                      *requested_threads())
        return Workload(cls.name, EVALUATION, shot, count, self.synced(call, threads), self._count(threads))

    def workload(self, learner: str | type[Learner], phase: str, shot: int = 1) -> Workload | None:
        """The workload of ``phase`` (one of :data:`PHASES`), None where the learner has none."""
        if phase == STEP:
            return self.meta_train_step(learner, shot)
        if phase == INNER:
            return self.inner_loop(learner, shot)
        if phase == EVALUATION:
            return self.evaluation(learner, shot)
        raise ConfigError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")


def _takes_one_argument(fn: Callable) -> bool:
    try:
        inspect.signature(fn).bind(None)
    except (TypeError, ValueError):
        return False
    return True


def measure(workload: Workload, min_rounds: int = 3, min_seconds: float = 0.5, max_rounds: int = 100) -> Timing:
    """Time ``workload.call`` after one warm-up call: the median of at least ``min_rounds`` calls, more until
    ``min_seconds`` have passed (at most ``max_rounds``)."""
    torch.set_flush_denormal(True)  # inner loops can produce subnormals, ~100x slower on CPU; runs flush them too
    workload.call()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_rounds and (len(times) < min_rounds or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        workload.call()
        times.append(time.perf_counter() - t0)
    return Timing(workload, statistics.median(times), len(times))


def speed_table(
    bench: Bench,
    learners: Sequence[str | type[Learner]],
    references: Sequence[str] = REFERENCES,
    phases: Iterable[str] = PHASES,
    shots: Iterable[int] = (1,),
    timer: Callable[[Workload], Timing] = measure,
) -> list[dict[str, Any]]:
    """One row per learner (then each reference), phase and shot: episodes per call, median time, episodes per
    second and the ratio of its episodes per second to each reference's (``-`` where a learner has no such
    phase)."""
    names = list(dict.fromkeys([*learners, *references]))
    rows = []
    for shot in shots:
        for phase in phases:
            timings = {}
            for learner in names:
                work = bench.workload(learner, phase, shot)
                timings[learner] = None if work is None else timer(work)
            for learner in names:
                t = timings[learner]
                name = bench.learner_class(learner).name
                row: dict[str, Any] = {"learner": name, "phase": phase, "shot": shot}
                row["episodes"] = t.workload.episodes if t else "-"
                row["threads"] = t.workload.threads if t else "-"
                row["median_ms"] = round(1000 * t.seconds, 2) if t else "-"
                row["episodes_per_s"] = round(t.episodes_per_s, 1) if t else "-"
                for ref in references:
                    r = timings[ref]
                    row[f"x_{ref}"] = round(t.episodes_per_s / r.episodes_per_s, 3) if t and r else "-"
                rows.append(row)
    return rows


def has_readout(learner: Learner, batch: PredictionBatch) -> bool:
    """Whether evaluation takes the learner's class-blocked path: a ``linear_readout`` defined no higher than its
    ``predict`` that returns weights."""
    if not readout_follows_predict(learner):
        return False
    learner.eval()
    with torch.no_grad():
        return learner.linear_readout(batch) is not None


def readout_hint(slower: dict[str, float], readout: bool, ratio: float = READOUT_HINT_RATIO) -> str | None:
    """What to add when evaluation is at least ``ratio`` times slower than every built-in (``slower``: times
    slower than each) and takes no readout; None otherwise."""
    if readout or not slower or min(slower.values()) < ratio:
        return None
    than = " and ".join(f"{t:.0f}x slower than {name}" for name, t in slower.items())
    return f"evaluation is {than} and has no linear_readout: {READOUT_HINT}"
