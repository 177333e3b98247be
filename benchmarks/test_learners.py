"""Throughput of the learners (issue 7): inner loops, meta-training steps and evaluation.

5-way, 640-d synthetic features (L2-normalised), meta-batch 12, 15 training queries per
class, 1-shot and 5-shot. Every benchmark stores ``extra_info["episodes_per_s"]`` (episodes
per call / the call's median time). ``test_metasgd_meta_train_step_loop`` is the
per-episode-loop reference (benchmarks/metasgd_loop.py): its ratio to
``test_metasgd_meta_train_step`` is the batching speed-up. ``FEWSHOT_BENCH_THREADS`` sets
torch's intra-op threads; ``FEWSHOT_BENCH_DEVICE=cuda`` runs the suite on the GPU (every
call then ends with a synchronisation, meta-training steps replay a captured CUDA graph,
``FEWSHOT_BENCH_CUDA_GRAPH=0`` for eager steps, and evaluation scores 50,000 episodes).
docs/speed.md has the figures.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from bench_setup import DEVICE
from metasgd_loop import LoopMetaSGD, LoopTrainer

from fewshot_bench.api.linear import flat, onehot_labels
from fewshot_bench.episodes import TRAIN_QUERY
from fewshot_bench.testing.pytest_plugin import record_episodes
from fewshot_bench.testing.timing import Bench

N_WAY, META_BATCH, EVAL_EPISODES = 5, 12, 1_000
SHOTS = pytest.mark.parametrize("k_shot", [1, 5], ids=["1shot", "5shot"])

CUDA = DEVICE.type == "cuda"
# FEWSHOT_BENCH_CUDA_GRAPH=0 times eager CUDA steps (the baseline the captured graph is compared with).
CUDA_GRAPH = os.environ.get("FEWSHOT_BENCH_CUDA_GRAPH", "1") != "0"
if CUDA:
    EVAL_EPISODES = 50_000  # the paper's protocol: a GPU should do all of it in seconds
# On CUDA a call is this many consecutive steps, as a run makes them: the host samples the
# next meta-batch while the GPU replays the last step; one synchronisation at the end.
STEPS_PER_CALL = 10 if CUDA else 1


@pytest.fixture(scope="module")
def bench(host, synthetic) -> Bench:
    """The library's workloads (what ``fewshot-bench bench`` and the kit's fixtures time) on this suite's device,
    threads as bench_setup set them."""
    return Bench(host=host, features=synthetic, device=DEVICE, eval_episodes=EVAL_EPISODES, cuda_graph=CUDA_GRAPH,
                 steps_per_call=STEPS_PER_CALL, run_threads=False)


def record(benchmark, episodes: int) -> None:
    """Store episodes per second at the median time of one call (nothing to store under --benchmark-disable)."""
    record_episodes(benchmark, episodes, str(DEVICE))


# --- inner loops (forward in training mode: the graph the meta-gradient needs is recorded) ---


def leo_inner_loop_inputs(bench, k_shot):
    """LEO in training mode, a fixed meta-batch's flattened support and one-hot labels, and its encoded latents."""
    leo = bench.learner("leo", k_shot)
    batch = bench.train_batch(k_shot, META_BATCH)
    support = flat(batch.support)
    onehot = onehot_labels(batch.support_labels, N_WAY, support.dtype)
    with torch.no_grad():
        z = leo.encode(batch.support)[0]
    return leo, support, onehot, z


@SHOTS
def test_leo_latent_inner_loop(benchmark, bench, k_shot):
    leo, support, onehot, z_init = leo_inner_loop_inputs(bench, k_shot)
    z_init.requires_grad_()
    z = benchmark(bench.synced(lambda: leo.leo_inner_loop(support, onehot, z_init)))
    assert z.shape == z_init.shape and z.requires_grad and torch.isfinite(z).all()
    record(benchmark, META_BATCH)


@SHOTS
def test_leo_finetune_loop(benchmark, bench, k_shot):
    leo, support, onehot, z = leo_inner_loop_inputs(bench, k_shot)
    with torch.no_grad():
        weights = leo.decoder(z).weights
    copies = z.shape[2]
    weights.requires_grad_()
    out = benchmark(bench.synced(lambda: leo.finetuning_inner_loop(support, onehot, weights, copies)))
    assert out.shape == (META_BATCH, N_WAY, 640) and out.requires_grad
    record(benchmark, META_BATCH)


@SHOTS
def test_metasgd_inner_loop(benchmark, bench, k_shot):
    work = bench.inner_loop("metasgd", k_shot)
    w = benchmark(work.call)
    assert w.shape == (META_BATCH, N_WAY, 640) and w.requires_grad
    record(benchmark, work.episodes)


@SHOTS
def test_maml_inner_loop(benchmark, bench, k_shot):
    work = bench.inner_loop("maml", k_shot)
    params = benchmark(work.call)
    assert params[-1].shape == (META_BATCH, N_WAY, 640) and params[-1].requires_grad
    record(benchmark, work.episodes)


# --- one full MetaTrainer step: sampling, meta_loss, backward, NaN guard, clipping, Adam ---


def bench_train_step(benchmark, bench, name: str, k_shot: int) -> None:
    """Time the trainer's step on fresh meta-batches (new step indices every call)."""
    work = bench.meta_train_step(name, k_shot)
    metrics = benchmark(work.call)
    assert torch.isfinite(metrics["loss"]) and metrics["nan_step"] == 0
    record(benchmark, work.episodes)


@SHOTS
def test_leo_meta_train_step(benchmark, bench, k_shot):
    bench_train_step(benchmark, bench, "leo", k_shot)


@SHOTS
def test_metasgd_meta_train_step(benchmark, bench, k_shot):
    bench_train_step(benchmark, bench, "metasgd", k_shot)


@SHOTS
def test_maml_meta_train_step(benchmark, bench, k_shot):
    bench_train_step(benchmark, bench, "maml", k_shot)


@SHOTS
def test_metasgd_meta_train_step_loop(benchmark, bench, k_shot):
    """The per-episode-loop reference: same math, same sampling, clipping and Adam, one episode at a time."""
    batched = bench.learner("metasgd", k_shot)
    cfg = batched.config
    loop = LoopMetaSGD(batched.init_weights, batched.inner_lr, cfg.inner_steps).to(DEVICE)
    # Same meta-gradient as the batched learner on a fixed batch, or the ratio would compare different work.
    batch = bench.train_batch(k_shot, META_BATCH)
    expected = torch.autograd.grad(batched.meta_loss(batch).loss, [batched.init_weights, batched.inner_lr])
    loop.accumulate_meta_gradient(batch)
    for got, want in zip((loop.model.weight.grad, loop.inner_lr.grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    loop.zero_grad()
    sampler = bench.dataset.split("train").sampler(N_WAY, k_shot, TRAIN_QUERY, seed=0, stream="train")
    trainer = LoopTrainer(loop, sampler, META_BATCH, cfg.outer_lr, cfg.grad_clip_value, cfg.grad_clip_norm, DEVICE)
    steps = itertools.count()
    loss = benchmark.pedantic(bench.synced(lambda: trainer.step(next(steps))), rounds=10, iterations=1,
                              warmup_rounds=1)
    assert torch.isfinite(loss)
    record(benchmark, META_BATCH)


# --- evaluation: 1,000 test episodes (50,000 on CUDA), 600 - K queries per class -----------


@SHOTS
def test_leo_evaluate_1000(benchmark, bench, k_shot):
    assert bench.dataset.split("test").default_query(k_shot) == 600 - k_shot
    work = bench.evaluation("leo", k_shot)
    acc = benchmark.pedantic(work.call, rounds=3, iterations=1, warmup_rounds=1)
    assert acc.shape == (EVAL_EPISODES,) and 0.2 < acc.mean() <= 1.0
    record(benchmark, work.episodes)
