"""The class-blocked evaluation path gives the generic path's per-episode accuracies exactly.

Learners compute in float64 here: the two paths form the same logits with different matrix
products (one per episode vs one per class), whose float32 rounding can flip the argmax of
a query whose two best logits tie to within an ulp. In float64 such ties do not occur on
these episodes, so any difference is a bug in the fast path (a wrong row, slot or episode).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import fewshot_bench.protocol.evaluate as evaluate_module
from fewshot_bench.api.learner import Learner, TaskSpec
from fewshot_bench.data.base import FeatureSplit
from fewshot_bench.learners.baselines import NearestCentroid
from fewshot_bench.protocol.evaluate import (
    READOUT_CHECK_EPISODES,
    class_blocked_applies,
    evaluate,
    readout_follows_predict,
)

N_WAY = 5


def make(host, name: str, k_shot: int, **overrides) -> Learner:
    """``name`` with its synthetic defaults in float64 (see the module docstring), seeded."""
    cls = host.learner(name)
    config = dataclasses.replace(cls.default_config("synthetic", k_shot), dtype="float64", **overrides)
    torch.manual_seed(0)
    return cls(config, TaskSpec(N_WAY, k_shot, 640))


def forbid_predict(learner: Learner, monkeypatch) -> list[int]:
    """Let ``predict`` run only as the readout check does (single episodes, a few per evaluation), so a
    passing evaluation proves the class-blocked path scored the queries; returns the calls' batch sizes."""
    calls: list[int] = []
    predict = learner.predict

    def checked(batch):
        calls.append(batch.batch_size)
        assert batch.batch_size == 1 and len(calls) <= READOUT_CHECK_EPISODES, \
            "the class-blocked path scored with predict"
        return predict(batch)

    monkeypatch.setattr(learner, "predict", checked)
    return calls


@pytest.fixture(scope="module")
def uneven(synthetic) -> FeatureSplit:
    """Seven synthetic test classes with 23 to 41 rows each: Q = 23 - K leaves some rows of most classes unqueried."""
    test = synthetic.split("test")
    counts = [30, 23, 41, 35, 26, 28, 33]
    parts = [test.features[int(test.offsets[c]) : int(test.offsets[c]) + n] for c, n in enumerate(counts)]
    return FeatureSplit(
        name="uneven",
        features=torch.cat(parts),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        class_names=[f"c{c}" for c in range(len(counts))],
        dataset="synthetic",
    )


@pytest.mark.parametrize(
    ("name", "k_shot"),
    [("leo", 1), ("leo", 5), ("metasgd", 1), ("nearest-centroid", 5), ("logreg", 1), ("maml", 1)],
)
@pytest.mark.equivalence
def test_fast_path_matches_generic_at_the_paper_protocol(host, synthetic, one_thread, monkeypatch, name, k_shot):
    test = synthetic.split("test")
    learner = make(host, name, k_shot)
    generic = evaluate(learner, test, N_WAY, k_shot, seed=3, episodes=24, fast=False)
    forbid_predict(learner, monkeypatch)
    # 600 - K queries: the rule applies
    fast = evaluate(learner, test, N_WAY, k_shot, seed=3, episodes=24, batch_size=10)
    np.testing.assert_array_equal(fast, generic)
    assert fast.dtype == np.float32 and len(np.unique(fast)) > 3  # real, varied accuracies, not a constant


@pytest.mark.equivalence
@pytest.mark.parametrize(("name", "k_shot"), [("leo", 1), ("metasgd", 5), ("nearest-centroid", 1)])
def test_fast_path_matches_generic_with_unequal_class_counts(host, uneven, one_thread, monkeypatch, name, k_shot):
    learner = make(host, name, k_shot)
    q = uneven.default_query(k_shot)  # 23 - K: fewer than the rows of six of the seven classes
    assert class_blocked_applies(uneven, "classification", q)
    generic = evaluate(learner, uneven, N_WAY, k_shot, seed=1, episodes=200, fast=False)
    forbid_predict(learner, monkeypatch)
    fast = evaluate(learner, uneven, N_WAY, k_shot, seed=1, episodes=200)
    np.testing.assert_array_equal(fast, generic)
    assert len(np.unique(fast)) > 3


@pytest.mark.equivalence
def test_chunked_class_blocks_give_the_same_accuracies(host, uneven, one_thread, monkeypatch):
    learner = make(host, "metasgd", 1)
    whole = evaluate(learner, uneven, N_WAY, 1, seed=5, episodes=60)
    monkeypatch.setattr(evaluate_module, "BLOCKED_LOGIT_ELEMENTS", 1)  # one (episode, slot) per product
    np.testing.assert_array_equal(evaluate(learner, uneven, N_WAY, 1, seed=5, episodes=60), whole)


def test_learner_without_readout_uses_predict(host, synthetic, one_thread):
    mlp_maml = make(host, "maml", 1, hidden_sizes=(16,))  # an MLP head: not a linear readout
    test = synthetic.split("test")
    batch = test.sampler(N_WAY, 1, 15, seed=0).batch(0, 2, dtype=torch.float64)
    assert mlp_maml.linear_readout(batch) is None
    calls = []
    predict = mlp_maml.predict
    mlp_maml.predict = lambda b: calls.append(b.batch_size) or predict(b)
    acc = evaluate(mlp_maml, test, N_WAY, 1, seed=0, episodes=12, batch_size=6)
    assert calls == [6, 6]
    reference = evaluate(mlp_maml, test, N_WAY, 1, seed=0, episodes=12, fast=False)
    np.testing.assert_array_equal(acc, reference)
    assert 0.0 <= acc.min() and acc.max() <= 1.0


def test_subclass_overriding_predict_is_not_scored_by_an_inherited_readout(host, synthetic, one_thread):
    class Farthest(NearestCentroid):  # predict changes; linear_readout is the parent's
        def predict(self, batch):
            return -super().predict(batch)

    test = synthetic.split("test")
    farthest = Farthest(Farthest.Config(dtype="float64"), TaskSpec(N_WAY, 1, 640))
    assert not readout_follows_predict(farthest) and readout_follows_predict(make(host, "nearest-centroid", 1))
    acc = evaluate(farthest, test, N_WAY, 1, seed=0, episodes=20)
    np.testing.assert_array_equal(acc, evaluate(farthest, test, N_WAY, 1, seed=0, episodes=20, fast=False))
    assert acc.mean() < 0.2  # the farthest centroid: below chance, so predict (not the readout) was scored


@pytest.mark.equivalence
def test_few_queries_take_the_generic_path_and_forcing_fast_agrees(host, synthetic, one_thread, monkeypatch):
    test = synthetic.split("test")
    assert not class_blocked_applies(test, "classification", 15)  # 15 of 600 rows: mostly unused logits
    leo = make(host, "leo", 1)
    calls = []
    predict = leo.predict
    monkeypatch.setattr(leo, "predict", lambda b: calls.append(b.batch_size) or predict(b))
    by_rule = evaluate(leo, test, N_WAY, 1, seed=2, episodes=50, n_query=15)
    assert sum(calls) == 50  # the rule chose the generic path
    before = len(calls)
    forced = evaluate(leo, test, N_WAY, 1, seed=2, episodes=50, n_query=15, fast=True)
    assert calls[before:] == [1] * READOUT_CHECK_EPISODES  # ... and fast=True called predict only to check the readout
    np.testing.assert_array_equal(forced, by_rule)


def test_rule_needs_classification_on_class_sorted_features(synthetic):
    test = synthetic.split("test")
    assert class_blocked_applies(test, "classification", 300)  # half the 600 rows per class
    assert not class_blocked_applies(test, "classification", 299)
    assert not class_blocked_applies(test, "regression", 599)


@pytest.mark.equivalence
def test_readout_reproduces_predict(host, synthetic):
    test = synthetic.split("test")
    batch = test.sampler(N_WAY, 5, 7, seed=0).batch(0, 4, dtype=torch.float64, shuffle=True).inputs()
    for name in ("leo", "metasgd", "maml", "nearest-centroid", "logreg"):
        learner = make(host, name, 5).eval()
        w, b = learner.linear_readout(batch)
        logits = torch.einsum("bqd,bmd->bqm", batch.query, w) + (0 if b is None else b[:, None, :])
        torch.testing.assert_close(logits, learner.predict(batch), msg=name)


@pytest.mark.equivalence
def test_support_batch_is_the_batch_without_queries(synthetic):
    test = synthetic.split("test")
    sampler = test.sampler(N_WAY, 2, 9, seed=4)
    full = sampler.batch(5, 7)
    supports, rows = sampler.support_batch(5, 7)
    assert torch.equal(supports.support, full.support) and supports.query.shape == (7, 0, 640)
    assert torch.equal(supports.classes, full.classes) and torch.equal(supports.episode_ids, full.episode_ids)
    assert torch.equal(test.features[torch.from_numpy(rows[..., 2:])].reshape(7, -1, 640), full.query)


@pytest.mark.parametrize("fast", [False, True])
def test_evaluation_records_nothing_for_autograd(host, synthetic, one_thread, fast):
    """Evaluation runs under torch.no_grad() once, on both paths; learners need no wrapper of their own."""
    learner = make(host, "metasgd", 1)
    grad_enabled: list[bool] = []
    for method in ("predict", "linear_readout"):
        original = getattr(learner, method)
        setattr(learner, method, lambda b, f=original: grad_enabled.append(torch.is_grad_enabled()) or f(b))
    evaluate(learner, synthetic.split("test"), N_WAY, 1, seed=0, episodes=6, fast=fast)
    assert grad_enabled and not any(grad_enabled) and torch.is_grad_enabled()
