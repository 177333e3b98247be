"""The query-set contract: evaluation hands ``predict`` each episode's queries in a hashed order
without labels, and that changes no built-in learner's per-episode results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from golden.make_query_layout_golden import CASES, GOLDEN, case_id, metrics

from fewshot_bench.api.batches import PredictionBatch
from fewshot_bench.api.noise import query_order

GOLDEN_METRICS = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_per_episode_results_match_the_class_grouped_layout(case, host, one_thread):
    """Every built-in learner, trained and evaluated on a fixed seed, scores each test episode as it did
    when ``predict`` received the queries grouped by class (golden file written by that code)."""
    now = metrics(case, host)
    before = GOLDEN_METRICS[case_id(case)]
    for path in ("generic", "default"):
        if case[1] == "sines-lines":  # an MSE is a sum over the queries: their order may move its last bit
            np.testing.assert_allclose(now[path], before[path], rtol=1e-6)
        else:  # accuracies are counts of correct queries: exactly equal
            assert now[path] == before[path]


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
