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
from bench_setup import DEVICE, THREADS
from metasgd_loop import LoopMetaSGD, LoopTrainer

from fewshot_bench.api.learner import Learner, TaskSpec
from fewshot_bench.api.linear import flat, onehot_labels
from fewshot_bench.episodes import TRAIN_QUERY
from fewshot_bench.protocol.evaluate import evaluate
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions

N_WAY, META_BATCH, EVAL_EPISODES = 5, 12, 1_000
SHOTS = pytest.mark.parametrize("k_shot", [1, 5], ids=["1shot", "5shot"])

CUDA = DEVICE.type == "cuda"
# FEWSHOT_BENCH_CUDA_GRAPH=0 times eager CUDA steps (the baseline the captured graph is compared with).
CUDA_GRAPH = os.environ.get("FEWSHOT_BENCH_CUDA_GRAPH", "1") != "0"
if CUDA:
    EVAL_EPISODES = 50_000  # the paper's protocol: a GPU should do all of it in seconds


def synced(fn):
    """``fn`` followed, on CUDA, by a synchronisation, so a call's time includes its kernels."""
    if not CUDA:
        return fn

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return out

    return call


def make_learner(host, name: str, k_shot: int) -> Learner:
    """``name``'s synthetic-default config for 5-way ``k_shot``, seeded, in training mode."""
    cls = host.learner(name)
    torch.manual_seed(0)
    learner = cls(cls.default_config("synthetic", k_shot), TaskSpec(N_WAY, k_shot, 640))
    return learner.to(DEVICE).train()


def train_batch(synthetic, k_shot: int):
    """One fixed meta-batch of training episodes (15 queries per class)."""
    sampler = synthetic.split("train").sampler(N_WAY, k_shot, TRAIN_QUERY, seed=0, stream="train")
    return sampler.batch(0, META_BATCH, DEVICE)


def record(benchmark, episodes: int) -> None:
    """Store episodes per second at the median time of one call (nothing to store under --benchmark-disable)."""
    if benchmark.stats is None:
        return
    benchmark.extra_info["episodes_per_s"] = episodes / benchmark.stats.stats.median
    benchmark.extra_info["episodes_per_call"] = episodes
    benchmark.extra_info["threads"] = THREADS
    benchmark.extra_info["device"] = str(DEVICE)


# --- inner loops (forward in training mode: the graph the meta-gradient needs is recorded) ---


def leo_inner_loop_inputs(host, synthetic, k_shot):
    """LEO in training mode, a fixed meta-batch's flattened support and one-hot labels, and its encoded latents."""
    leo = make_learner(host, "leo", k_shot)
    batch = train_batch(synthetic, k_shot)
    support = flat(batch.support)
    onehot = onehot_labels(batch.support_labels, N_WAY, support.dtype)
    with torch.no_grad():
        z = leo.encode(batch.support)[0]
    return leo, support, onehot, z


@SHOTS
def test_leo_latent_inner_loop(benchmark, host, synthetic, k_shot):
    leo, support, onehot, z_init = leo_inner_loop_inputs(host, synthetic, k_shot)
    z = benchmark(synced(leo.leo_inner_loop), support, onehot, z_init.requires_grad_())
    assert z.shape == z_init.shape and z.requires_grad and torch.isfinite(z).all()
    record(benchmark, META_BATCH)


@SHOTS
def test_leo_finetune_loop(benchmark, host, synthetic, k_shot):
    leo, support, onehot, z = leo_inner_loop_inputs(host, synthetic, k_shot)
    with torch.no_grad():
        weights = leo.decoder(z).weights
    copies = z.shape[2]
    out = benchmark(synced(leo.finetuning_inner_loop), support, onehot, weights.requires_grad_(), copies)
    assert out.shape == (META_BATCH, N_WAY, 640) and out.requires_grad
    record(benchmark, META_BATCH)


@SHOTS
def test_metasgd_inner_loop(benchmark, host, synthetic, k_shot):
    learner = make_learner(host, "metasgd", k_shot)
    w = benchmark(synced(learner.adapt), train_batch(synthetic, k_shot))
    assert w.shape == (META_BATCH, N_WAY, 640) and w.requires_grad
    record(benchmark, META_BATCH)


@SHOTS
def test_maml_inner_loop(benchmark, host, synthetic, k_shot):
    learner = make_learner(host, "maml", k_shot)
    params = benchmark(synced(learner.adapt), train_batch(synthetic, k_shot))
    assert params[-1].shape == (META_BATCH, N_WAY, 640) and params[-1].requires_grad
    record(benchmark, META_BATCH)


# --- one full MetaTrainer step: sampling, meta_loss, backward, NaN guard, clipping, Adam ---


def trainer_for(host, synthetic, name: str, k_shot: int) -> MetaTrainer:
    """A MetaTrainer on the synthetic train split (validation is never run here)."""
    learner = make_learner(host, name, k_shot)
    return MetaTrainer(
        learner, synthetic.split("train"), synthetic.split("val"), RunSpec(name, way=N_WAY, shot=k_shot),
        TrainOptions(cuda_graph=CUDA_GRAPH), DEVICE,
    )


# On CUDA a call is this many consecutive steps, as a run makes them: the host samples the
# next meta-batch while the GPU replays the last step; one synchronisation at the end.
STEPS_PER_CALL = 10 if CUDA else 1


def bench_train_step(benchmark, trainer) -> None:
    """Time ``trainer.step`` on fresh meta-batches (new step indices every call)."""
    steps = itertools.count()

    def consecutive_steps():
        for _ in range(STEPS_PER_CALL):
            metrics = trainer.step(next(steps))
        return metrics

    metrics = benchmark(synced(consecutive_steps))
    assert torch.isfinite(metrics["loss"]) and metrics["nan_step"] == 0
    record(benchmark, META_BATCH * STEPS_PER_CALL)


@SHOTS
def test_leo_meta_train_step(benchmark, host, synthetic, k_shot):
    bench_train_step(benchmark, trainer_for(host, synthetic, "leo", k_shot))


@SHOTS
def test_metasgd_meta_train_step(benchmark, host, synthetic, k_shot):
    bench_train_step(benchmark, trainer_for(host, synthetic, "metasgd", k_shot))


@SHOTS
def test_maml_meta_train_step(benchmark, host, synthetic, k_shot):
    bench_train_step(benchmark, trainer_for(host, synthetic, "maml", k_shot))


@SHOTS
def test_metasgd_meta_train_step_loop(benchmark, host, synthetic, k_shot):
    """The per-episode-loop reference: same math, same sampling, clipping and Adam, one episode at a time."""
    batched = make_learner(host, "metasgd", k_shot)
    cfg = batched.config
    loop = LoopMetaSGD(batched.init_weights, batched.inner_lr, cfg.inner_steps).to(DEVICE)
    # Same meta-gradient as the batched learner on a fixed batch, or the ratio would compare different work.
    batch = train_batch(synthetic, k_shot)
    expected = torch.autograd.grad(batched.meta_loss(batch).loss, [batched.init_weights, batched.inner_lr])
    loop.accumulate_meta_gradient(batch)
    for got, want in zip((loop.model.weight.grad, loop.inner_lr.grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    loop.zero_grad()
    sampler = synthetic.split("train").sampler(N_WAY, k_shot, TRAIN_QUERY, seed=0, stream="train")
    trainer = LoopTrainer(loop, sampler, META_BATCH, cfg.outer_lr, cfg.grad_clip_value, cfg.grad_clip_norm, DEVICE)
    steps = itertools.count()
    loss = benchmark.pedantic(synced(lambda: trainer.step(next(steps))), rounds=10, iterations=1, warmup_rounds=1)
    assert torch.isfinite(loss)
    record(benchmark, META_BATCH)


# --- evaluation: 1,000 test episodes (50,000 on CUDA), 600 - K queries per class -----------


@SHOTS
def test_leo_evaluate_1000(benchmark, host, synthetic, k_shot):
    leo = make_learner(host, "leo", k_shot)
    test = synthetic.split("test")
    assert test.default_query(k_shot) == 600 - k_shot
    acc = benchmark.pedantic(
        synced(evaluate), args=(leo, test, N_WAY, k_shot),
        kwargs={"seed": 0, "episodes": EVAL_EPISODES, "device": DEVICE},
        rounds=3, iterations=1, warmup_rounds=1,
    )
    assert acc.shape == (EVAL_EPISODES,) and 0.2 < acc.mean() <= 1.0
    record(benchmark, EVAL_EPISODES)
