"""Faithfulness tests of MAML (plugins/maml): second-order meta-gradients, first-order option, MLP head."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from fewshot_bench_maml import MAML, MAMLConfig
from helpers import one_line_error, tiny_batch

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.api.tasks import CLASSIFICATION


def tiny_maml(**changes) -> MAML:
    """A float64 MAML for 3-way 2-shot episodes on 5-d features, with a large init so steps matter."""
    torch.manual_seed(0)
    config = dataclasses.replace(MAMLConfig(), dtype="float64", init_std=0.5, inner_lr=0.7, **changes)
    learner = MAML(config, TaskSpec(3, 2, 5))
    learner.train()
    return learner


def finite_difference(learner: MAML, batch: EpisodeBatch, param: torch.Tensor, index: int, eps=1e-6) -> float:
    """Central difference of the meta-loss along one element of ``param``."""
    flat = param.data.view(-1)
    old = flat[index].item()
    flat[index] = old + eps
    up = learner.meta_loss(batch).loss.item()
    flat[index] = old - eps
    down = learner.meta_loss(batch).loss.item()
    flat[index] = old
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("hidden", [(), (4,)])
def test_second_order_meta_gradient_matches_finite_differences(hidden):
    learner, batch = tiny_maml(hidden_sizes=hidden), tiny_batch(q=3, d=5)
    params = list(learner.parameters())
    grads = torch.autograd.grad(learner.meta_loss(batch).loss, params)
    for p, g in zip(params, grads):
        for index in (0, p.numel() - 1):
            assert g.reshape(-1)[index].item() == pytest.approx(finite_difference(learner, batch, p, index),
                                                                rel=1e-5, abs=1e-9)


def test_first_order_drops_the_second_order_terms():
    batch = tiny_batch(q=3, d=5)
    second, first = tiny_maml(), tiny_maml(first_order=True)
    (g2,) = torch.autograd.grad(second.meta_loss(batch).loss, list(second.parameters()))
    (g1,) = torch.autograd.grad(first.meta_loss(batch).loss, list(first.parameters()))
    # First-order MAML: the meta-gradient is the query-loss gradient at the adapted weights, summed over episodes.
    adapted = first.adapt(batch)[0].detach().requires_grad_()
    logits = first.head(batch.query, [adapted])
    (at_adapted,) = torch.autograd.grad(CLASSIFICATION.loss(logits, batch.query_labels), adapted)
    torch.testing.assert_close(g1, at_adapted.sum(0))
    assert not torch.allclose(g1, g2)


def test_inner_learning_rate_is_one_fixed_scalar():
    learner = tiny_maml()
    assert [name for name, _ in learner.named_parameters()] == ["weights.0"]
    batch = tiny_batch(q=3, d=5)
    w0 = learner.weights[0].detach()
    learner.config.inner_steps = 1
    adapted = learner.adapt(batch)[0]
    x, y = batch.support.reshape(2, -1, 5), F.one_hot(batch.support_labels.reshape(2, -1), 3).double()
    grad = (torch.softmax(x @ w0.T, -1) - y).transpose(1, 2) @ x  # summed support cross-entropy
    torch.testing.assert_close(adapted, w0 - 0.7 * grad)


@pytest.mark.parametrize("hidden", [(), (4, 4)])
def test_evaluation_is_deterministic_and_keeps_no_graph(hidden):
    learner, batch = tiny_maml(hidden_sizes=hidden), tiny_batch(q=3, d=5)
    learner.eval()
    with torch.no_grad():  # as evaluation calls it: the inner loop's gradients leave no graph behind
        first, second = learner.predict(batch), learner.predict(batch)
    assert torch.equal(first, second) and not first.requires_grad
    assert first.shape == (2, 9, 3)


def test_cli_runs_maml_and_its_options(cli):
    common = ("--steps", "2", "--val-every", "2", "--val-episodes", "4", "--episodes", "10", "--eval-query", "5",
              "--json")
    for extra in ((), ("--set", "first_order=true"), ("--set", "hidden_sizes=16")):
        res = cli("run", "--learner", "maml", *extra, *common)
        assert res.code == 0, res.err
        assert res.json()["learner"] == "maml"
    bad = cli("run", "--learner", "maml", "--set", "hidden_sizes=0", *common)
    one_line_error(bad, "hidden_sizes=0: must be at least 1")
