"""The sampler's guarantees: without replacement, draw-order labels, purity, determinism."""

import numpy as np
import pytest
import torch

from fewshot_bench.data.base import FeatureSplit
from fewshot_bench.episodes import EpisodeSampler
from fewshot_bench.errors import DataError


def make_split(counts, dim=4):
    """A split whose row r has feature value r in every column, so rows are identifiable."""
    rows = int(sum(counts))
    x = torch.arange(rows, dtype=torch.float32)[:, None].expand(rows, dim).contiguous()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return FeatureSplit("test", x, offsets, [f"c{i}" for i in range(len(counts))], dataset="toy")


def test_classes_and_examples_are_distinct_and_labels_follow_draw_order():
    split = make_split([30] * 10 + [25] * 5)
    sampler = EpisodeSampler(split, n_way=5, k_shot=3, n_query=7, seed=1)
    classes, rows = sampler.indices(np.arange(200))
    assert classes.shape == (200, 5) and rows.shape == (200, 5, 10)
    labels = split.labels
    for c, r in zip(classes, rows):
        assert len(set(c.tolist())) == 5  # classes without replacement
        assert len(set(r.ravel().tolist())) == 50  # examples without replacement
        assert (labels[r] == c[:, None]).all()  # row n comes from the n-th drawn class
    batch = sampler.batch(0, 8)
    assert batch.support.shape == (8, 5, 3, 4) and batch.query.shape == (8, 35, 4)
    assert (batch.support_labels == torch.arange(5).view(1, 5, 1)).all()
    assert (batch.query_labels == torch.arange(5).repeat_interleave(7)).all()  # meta-training: class by class
    # the gathered features are exactly the sampled rows
    _, r = sampler.indices(np.arange(8))
    assert torch.equal(batch.support[..., 0], torch.from_numpy(r[..., :3]).float())
    assert torch.equal(batch.query[..., 0], torch.from_numpy(r[..., 3:].reshape(8, 35)).float())


def test_episode_is_a_pure_function_of_its_inputs():
    split = make_split([20] * 12)
    a = EpisodeSampler(split, 5, 1, 5, seed=3)
    b = EpisodeSampler(split, 5, 1, 5, seed=3)
    whole = a.batch(0, 50)
    # the same episodes, drawn in another order and batch size, by another sampler
    part = b.batch(17, 9)
    assert torch.equal(whole.support[17:26], part.support)
    assert torch.equal(whole.query[17:26], part.query)
    other_seed = EpisodeSampler(split, 5, 1, 5, seed=4).batch(0, 50)
    assert not torch.equal(whole.support, other_seed.support)
    other_stream = EpisodeSampler(split, 5, 1, 5, seed=3, stream="val").batch(0, 50)
    assert not torch.equal(whole.support, other_stream.support)


def test_more_queries_keep_the_same_support():
    split = make_split([40] * 8)
    few = EpisodeSampler(split, 5, 2, 3, seed=0).batch(0, 10)
    many = EpisodeSampler(split, 5, 2, 38, seed=0).batch(0, 10)
    assert torch.equal(few.support, many.support)
    assert torch.equal(few.query.view(10, 5, 3, -1), many.query.view(10, 5, 38, -1)[:, :, :3])


def test_sampling_is_uniform_over_classes_and_examples():
    split = make_split([10] * 10)
    _, rows = EpisodeSampler(split, 2, 1, 1, seed=0).indices(np.arange(20_000))
    freq = np.bincount(rows.ravel(), minlength=100) / rows.size
    assert np.allclose(freq, 0.01, atol=0.002)
    first_support = np.bincount(rows[:, 0, 0] % 10, minlength=10) / len(rows)
    assert np.allclose(first_support, 0.1, atol=0.015)  # the support is not biased to early rows


def test_ragged_classes_only_draw_existing_rows():
    split = make_split([3, 50, 4, 7, 3])
    classes, rows = EpisodeSampler(split, 5, 1, 2, seed=0).indices(np.arange(300))
    assert (split.labels[rows] == classes[..., None]).all()


def test_too_many_classes_and_too_small_class_are_clear_errors():
    split = make_split([20] * 4 + [6])
    with pytest.raises(DataError, match="5-way episodes need 5 classes.*only 4|has only"):
        EpisodeSampler(make_split([20] * 4), 5, 1, 1, seed=0)
    with pytest.raises(DataError, match="class 'c4' .* has 6 examples, fewer than K \\+ Q = 1 \\+ 15"):
        EpisodeSampler(split, 5, 1, 15, seed=0)


@pytest.mark.equivalence
def test_large_draws_split_over_threads_give_the_same_episodes(synthetic):
    """An evaluation-sized draw (hashing every row of every class) equals the same episodes drawn in small calls."""
    sampler = synthetic.split("test").sampler(5, 1, 599, seed=3, stream="test")
    ids = np.arange(400)
    classes, rows = sampler.indices(ids)
    parts = [sampler.indices(ids[i : i + 50]) for i in range(0, 400, 50)]
    assert np.array_equal(classes, np.concatenate([c for c, _ in parts]))
    assert np.array_equal(rows, np.concatenate([r for _, r in parts]))
