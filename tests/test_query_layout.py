"""The query-set contract: evaluation hands ``predict`` each episode's queries in a hashed order
without labels, and that changes no built-in learner's per-episode results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fewshot_bench.api.batches import PredictionBatch
from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.api.noise import query_order
from fewshot_bench.api.tasks import task_kind
from fewshot_bench.data.base import DataRequest
from fewshot_bench.protocol.evaluate import auto_batch_size, evaluate
from fewshot_bench.protocol.runner import build_learner
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions

SEED = 0
# (learner, dataset, way, shot, config changes, meta-training steps, test episodes, test queries per class)
CASES = [
    ("nearest-centroid", "synthetic", 5, 1, {}, 0, 40, 15),
    ("logreg", "synthetic", 5, 5, {"iterations": 20}, 0, 40, 15),
    ("metasgd", "synthetic", 5, 1, {}, 15, 40, 15),
    ("maml", "synthetic", 5, 5, {}, 15, 40, 15),
    ("maml", "synthetic", 5, 1, {"hidden_sizes": (16,)}, 15, 40, 15),
    ("leo", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo", "synthetic", 5, 5, {}, 10, 40, 15),
    ("leo-deterministic", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-random-prior", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-no-finetune", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-generator-only", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-generator-finetune", "synthetic", 5, 1, {}, 15, 40, 15),
    ("mlp-scratch", "sines-lines", 1, 5, {"fit_steps": 20}, 0, 20, 10),
    ("metasgd", "sines-lines", 1, 5, {}, 10, 20, 10),
    ("maml", "sines-lines", 1, 5, {}, 10, 20, 10),
    ("leo", "sines-lines", 1, 5, {}, 10, 20, 10),
]


def case_id(case: tuple) -> str:
    """A readable id: learner/dataset/N-way K-shot plus the config changes."""
    name, data, way, shot, changes = case[:5]
    extra = ",".join(f"{k}={v}" for k, v in changes.items())
    return f"{name}/{data}/{way}-way-{shot}-shot" + (f"/{extra}" if extra else "")


def trained(case: tuple, host):
    """The case's learner after its short seeded meta-training (none for 0 steps), and its dataset."""
    name, data, way, shot, changes, steps, _, query = case
    dataset = host.dataset(data).load(DataRequest())
    cls = host.learner(name).for_kind(dataset.kind)
    config = replace(cls.default_config(data, shot), meta_batch_size=4, **changes)
    torch.manual_seed(SEED)
    learner = build_learner(cls, config, TaskSpec(way, shot, dataset.feature_dim, dataset.kind, data),
                            torch.device("cpu"))
    if steps:
        spec = RunSpec(name, data, way, shot, SEED, steps=steps, val_every=steps, val_episodes=10, patience=None)
        MetaTrainer(learner, dataset.split("train"), dataset.split("val"), spec, TrainOptions(val_query=query),
                    torch.device("cpu")).run()
    return learner, dataset


def class_grouped_metrics(learner, split, way: int, shot: int, episodes: int, query: int) -> np.ndarray:
    """Per-episode metrics of ``learner.predict`` handed each episode's queries class by class, the layout
    before the query-set contract (commit 2f99443 gave ``predict`` them as ``[B, N, Q, D]``; here their
    ``[B, N * Q, D]`` view: slot 0's Q queries, then slot 1's, ...), scored against the labels in that order.

    Evaluation's generic path with the sampler's plain draw instead of its shuffled one: the same
    episodes, queries and batch sizes, under ``no_grad`` in evaluation mode."""
    sampler = split.sampler(way, shot, query, SEED, stream="test")
    metric = task_kind(learner.task.kind).episode_metric
    size = auto_batch_size(way, shot, query, split.feature_dim)
    out = np.empty(episodes, dtype=np.float32)
    was_training = learner.training
    learner.eval()
    try:
        with torch.no_grad():
            for start in range(0, episodes, size):
                n = min(size, episodes - start)
                batch = sampler.batch(start, n, dtype=learner.dtype)
                if learner.task.kind == "classification":  # the plain draw: slot by slot
                    assert torch.equal(batch.query_labels[0], torch.arange(way).repeat_interleave(query))
                out[start : start + n] = metric(learner.predict(batch.inputs()), batch.query_labels).numpy()
    finally:
        learner.train(was_training)
    return out


@pytest.mark.equivalence
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_per_episode_results_match_the_class_grouped_layout(case, host, one_thread):
    """Every built-in learner, trained on a fixed seed, scores each test episode under evaluation's hashed
    query order (the generic path and the default one) as ``predict`` scores it with the queries grouped
    by class. Both layouts are scored in this process from the same trained weights, so the check holds
    on any CPU (trained numbers themselves differ between CPUs at rounding level: docs/architecture.md,
    "What depends on the CPU")."""
    name, data, way, shot, _, _, episodes, query = case
    learner, dataset = trained(case, host)
    split = dataset.split("test")
    before = class_grouped_metrics(learner, split, way, shot, episodes, query)
    score = dict(split=split, n_way=way, k_shot=shot, seed=SEED, episodes=episodes, n_query=query)
    for now in (evaluate(learner, fast=False, **score), evaluate(learner, **score)):
        if data == "sines-lines":
            # An MSE is a mean over the queries, summed here in another order: that may move its last bits
            # (float32: 1e-6 is about 8 ulps); a prediction changed by the layout moves it far more.
            np.testing.assert_allclose(now, before, rtol=1e-6)
        else:  # accuracies are counts of correct queries: exactly equal
            np.testing.assert_array_equal(now, before)


@pytest.mark.equivalence
def test_meta_training_batches_keep_their_queries_class_by_class(host, synthetic):
    """Only evaluation shuffles: ``meta_loss`` gets the plain draw, so training runs are those of the
    class-grouped contract (dropout masks and reductions see the same order)."""
    cls = host.learner("metasgd")
    learner = cls(cls.default_config("synthetic", 1), TaskSpec(5, 1, synthetic.feature_dim))
    spec = RunSpec("metasgd", seed=SEED, steps=1, val_every=1, val_episodes=2, patience=None)
    trainer = MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"), spec, TrainOptions(),
                          torch.device("cpu"))
    got, plain = trainer.meta_batch(3), trainer.sampler.batch(3 * trainer.batch_size, trainer.batch_size)
    assert torch.equal(got.query, plain.query) and torch.equal(got.query_labels, plain.query_labels)
    assert torch.equal(got.query_labels[0], torch.arange(5).repeat_interleave(got.query_labels.shape[1] // 5))


@pytest.mark.equivalence
@pytest.mark.parametrize("dataset, way, shot, query", [("synthetic", 5, 1, 7), ("sines-lines", 1, 5, 9)])
def test_shuffled_batches_are_the_plain_batch_with_its_queries_permuted(host, dataset, way, shot, query):
    """The samplers' shuffled draw (folded into the gather) equals the class-grouped draw permuted by
    ``query_order``."""
    from fewshot_bench.data.base import DataRequest

    split = host.dataset(dataset).load(DataRequest()).split("test")
    sampler = split.sampler(way, shot, query, 3, stream="test")
    plain, shuffled = sampler.batch(5, 6), sampler.batch(5, 6, shuffle=True)
    salt = getattr(split, "content_digest", 0)  # class-sorted splits salt the order with their contents
    order = torch.from_numpy(query_order(3, "test", np.arange(5, 11), way * query, salt))
    expected = plain.permute_queries(order)
    assert torch.equal(shuffled.query, expected.query) and torch.equal(shuffled.query_labels, expected.query_labels)
    assert torch.equal(shuffled.support, plain.support) and torch.equal(shuffled.support_labels, plain.support_labels)
    # Episode 7 alone, or inside another batch, gets the same order: a pure function of the episode.
    alone = sampler.batch(7, 1, shuffle=True)
    assert (torch.equal(alone.query[0], shuffled.query[2])
            and torch.equal(alone.query_labels[0], shuffled.query_labels[2]))


def test_query_order_mixes_the_classes(host):
    """Meta-training batches hold queries class by class; evaluation's order leaves no run of one class by position."""
    from fewshot_bench.data.base import DataRequest

    sampler = host.dataset("synthetic").load(DataRequest()).split("test").sampler(5, 1, 15, 0, stream="test")
    labels = sampler.batch(0, 200, shuffle=True).query_labels
    grouped = torch.arange(5).repeat_interleave(15)
    assert torch.equal(sampler.batch(0, 1).query_labels[0], grouped)
    # Where a class's queries sit is uniform over positions: each position holds each class about 1/5 of the time.
    share = torch.stack([(labels == c).float().mean(0) for c in range(5)])  # [N, M]
    assert share.sub(0.2).abs().max() < 0.15
    assert not any(torch.equal(row, grouped) for row in labels)


def test_prediction_batch_holds_no_labels_and_says_why(host):
    """What predict receives has no query labels and no class ids; reading them names the rule."""
    from fewshot_bench.data.base import DataRequest

    batch = host.dataset("synthetic").load(DataRequest()).split("test").sampler(5, 1, 3, 0).batch(0, 2, shuffle=True)
    inputs = batch.inputs()
    assert type(inputs) is PredictionBatch
    assert {"query_labels", "classes"}.isdisjoint(vars(inputs))
    with pytest.raises(AttributeError, match="predict never sees query labels"):
        inputs.query_labels  # noqa: B018
    with pytest.raises(AttributeError, match="predict never sees the split's class ids"):
        inputs.classes  # noqa: B018
    assert inputs.query.shape == (2, 15, batch.support.shape[-1]) and inputs.n_queries == 15
