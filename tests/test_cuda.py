"""CUDA paths: the captured meta-training step and evaluation on the GPU (skipped without CUDA)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.protocol.evaluate import evaluate
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def trainer(host, splits, name, device, cuda_graph, seed=0, **changes):
    cls = host.learner(name)
    torch.manual_seed(seed)
    config = dataclasses.replace(cls.default_config("synthetic", 1), **changes)
    learner = cls(config, TaskSpec(5, 1, 640)).to(device).train()
    return MetaTrainer(learner, splits["train"], splits["val"], RunSpec(name, seed=seed),
                       TrainOptions(cuda_graph=cuda_graph), device)


@pytest.mark.equivalence
@pytest.mark.parametrize("name", ["leo", "metasgd", "maml"])
def test_graphed_steps_reproduce_eager_steps(host, synthetic, name):
    """Same seed, same steps: the CUDA graph replays give the eager parameters (and do replay)."""
    splits = synthetic.to(CUDA).splits
    # Without dropout and sampling the steps involve no random numbers at all.
    changes = {"dropout_rate": 0.0, "stochastic": False} if name == "leo" else {}
    eager = trainer(host, splits, name, CUDA, cuda_graph=False, **changes)
    graphed = trainer(host, splits, name, CUDA, cuda_graph=True, **changes)
    for step in range(8):
        a, b = eager.step(step), graphed.step(step)
        torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-4, atol=1e-6)
    assert graphed.graphed is not None and eager.graphed is None
    for p, q in zip(eager.params, graphed.params):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)


@pytest.mark.equivalence
def test_graphed_stochastic_leo_is_reproducible_per_step(host, synthetic):
    """With sampling and dropout, two graphed runs of the same seed agree, and differ from another seed."""
    splits = synthetic.to(CUDA).splits
    runs = [trainer(host, splits, "leo", CUDA, cuda_graph=True, seed=s) for s in (0, 0, 1)]
    losses = [[float(t.step(i)["loss"]) for i in range(6)] for t in runs]
    assert losses[0] == losses[1] and losses[0] != losses[2]
    assert all(np.isfinite(losses[0]))


@pytest.mark.equivalence
def test_evaluation_on_cuda_matches_cpu(host, synthetic):
    cls = host.learner("metasgd")
    torch.manual_seed(0)
    config = dataclasses.replace(cls.default_config("synthetic", 1), dtype="float64")
    learner = cls(config, TaskSpec(5, 1, 640)).to(torch.float64)
    cpu = evaluate(learner, synthetic.split("test"), 5, 1, seed=0, episodes=300)
    gpu_split = synthetic.to(CUDA).split("test")
    gpu = evaluate(learner.to(CUDA), gpu_split, 5, 1, seed=0, episodes=300, device=CUDA)
    # Same predictions; the float32 accuracies may differ in their last bit (1e-7), while a
    # single changed prediction would move an episode's accuracy by 1 / (5 * 599) = 3e-4.
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-6)


@pytest.mark.parametrize("graph", ["--cuda-graph", "--no-cuda-graph"])
def test_run_cli_on_cuda(cli, graph):
    args = ["--steps", "20", "--val-every", "10", "--val-episodes", "50", "--episodes", "200", "--json"]
    res = cli("run", "--learner", "leo", "--device", "cuda", *args, *([graph] if graph.startswith("--no") else []))
    assert res.code == 0, res.err
    assert 0.2 < res.json()["accuracy"] <= 1.0
