"""Throughput of populations (issue 14): S seeds of one learner meta-trained as one batched program.

5-way, 640-d synthetic features, meta-batch 12, 15 training queries per class, 1- and 5-shot,
as in benchmarks/test_learners.py. ``test_population_step`` times one batched step of S
members (S = 1, 2, 5, 10) and stores ``extra_info["member_episodes_per_s"]`` (S x 12 / the
median step time). ``test_five_seeds_population_vs_separate`` meta-trains five seeds for a
few steps as one population and as five separate trainers, interleaved in this process, and
stores both wall times and their ratio. ``FEWSHOT_BENCH_THREADS`` sets torch's threads (as
in bench_setup.py); ``FEWSHOT_BENCH_DEVICE=cuda`` runs on the GPU. docs/speed.md has the figures.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import pytest
import torch
from bench_setup import DEVICE, THREADS

from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.protocol.population import BATCHED, Population
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions

N_WAY, META_BATCH = 5, 12
SHOTS = pytest.mark.parametrize("k_shot", [1, 5], ids=["1shot", "5shot"])
LEARNERS = pytest.mark.parametrize("name", ["metasgd", "leo"])



def synced() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def member(host, synthetic, name: str, k_shot: int, seed: int, meta_batch: int = META_BATCH) -> MetaTrainer:
    """A trainer of ``name`` for seed ``seed``, as a run builds it (validation is never run here)."""
    cls = host.learner(name)
    torch.manual_seed(seed)
    config = dataclasses.replace(cls.default_config("synthetic", k_shot), meta_batch_size=meta_batch)
    learner = cls(config, TaskSpec(N_WAY, k_shot, synthetic.feature_dim))
    learner = learner.to(DEVICE)
    return MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"),
                       RunSpec(name, way=N_WAY, shot=k_shot, seed=seed), TrainOptions(cuda_graph=False), DEVICE)


def population(host, synthetic, name: str, k_shot: int, size: int) -> Population:
    """A population of seeds 0 .. size - 1, stacked and checked to take the batched path."""
    pop = Population([member(host, synthetic, name, k_shot, seed) for seed in range(size)])
    why = pop.probe()
    assert why is None, why
    pop.stack()
    for m in pop.members:
        m.learner.train()
    return pop


def time_steps(benchmark, step_at, episodes: int, rate: str, **info) -> dict:
    """Benchmark ``step_at(0), step_at(1), ...``; store ``rate`` (``episodes`` / the median step) and ``info``."""
    steps = itertools.count()

    def step():
        metrics = step_at(next(steps))
        synced()
        return metrics

    metrics = benchmark(step)
    assert torch.isfinite(metrics["loss"]).all()
    if benchmark.stats is not None:
        benchmark.extra_info.update({rate: episodes / benchmark.stats.stats.median, "threads": THREADS,
                                     "device": str(DEVICE), **info})
    return metrics


@LEARNERS
@SHOTS
@pytest.mark.parametrize("size", [1, 2, 5, 10])
def test_population_step(benchmark, host, synthetic, name, k_shot, size):
    pop = population(host, synthetic, name, k_shot, size)
    assert pop.path == BATCHED
    time_steps(benchmark, pop.step, size * META_BATCH, "member_episodes_per_s", members=size)


@LEARNERS
@SHOTS
@pytest.mark.parametrize("size", [1, 2, 5, 10])
def test_one_run_at_a_population_meta_batch(benchmark, host, synthetic, name, k_shot, size):
    """The ceiling of batching S members: one run whose meta-batch holds S x 12 episodes.

    Its step does a population step's arithmetic (S x 12 episodes) with one set of parameters
    and no ``vmap``: no population of S can take more member-episodes/s than its episodes/s.
    """
    trainer = member(host, synthetic, name, k_shot, 0, meta_batch=size * META_BATCH)
    trainer.learner.train()
    time_steps(benchmark, trainer.step, size * META_BATCH, "episodes_per_s", meta_batch=size * META_BATCH)


FIVE, STEPS, ROUNDS = 5, 20, 3


@LEARNERS
@SHOTS
def test_five_seeds_population_vs_separate(benchmark, host, synthetic, name, k_shot):
    """Five seeds for STEPS steps: one population against five trainers one after another, interleaved ROUNDS times."""
    pop = population(host, synthetic, name, k_shot, FIVE)
    alone = [member(host, synthetic, name, k_shot, seed) for seed in range(FIVE)]
    for m in alone:
        m.learner.train()
    times: dict[str, list[float]] = {"population": [], "separate": []}

    def compare():
        start = itertools.count()
        for _ in range(ROUNDS):
            first = next(start) * STEPS
            t0 = time.perf_counter()
            for step in range(first, first + STEPS):
                pop.step(step)
            synced()
            times["population"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for m in alone:
                for step in range(first, first + STEPS):
                    m.step(step)
            synced()
            times["separate"].append(time.perf_counter() - t0)

    benchmark.pedantic(compare, rounds=1, iterations=1)
    together, separate = min(times["population"]), min(times["separate"])
    benchmark.extra_info.update({
        "population_s": together, "separate_s": separate, "speedup": separate / together,
        "member_episodes_per_s": FIVE * STEPS * META_BATCH / together,
        "separate_episodes_per_s": FIVE * STEPS * META_BATCH / separate, "threads": THREADS, "device": str(DEVICE),
    })
