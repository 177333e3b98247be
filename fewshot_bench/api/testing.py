"""Batches for a plugin's unit tests: seeded episodes of any shape, built the way the harness builds its own.

``make_episode_batch(TaskSpec(n_way=5, k_shot=1, feature_dim=16))`` is what ``meta_loss``
receives (labelled, queries class by class), ``make_prediction_batch(...)`` what ``predict``
receives at evaluation (no query labels, each episode's queries in a shuffled order).
Classification episodes hold N well-separated Gaussian classes, so a working learner
classifies them far above chance; regression episodes hold one noisy linear function each.
Every number comes from a local generator seeded by ``seed``: torch's global generator is
left as it was.
"""

from __future__ import annotations

import torch

from fewshot_bench.api.batches import EpisodeBatch, PredictionBatch
from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.api.tasks import REGRESSION

# Spread of the class means relative to the examples' spread around them (both per dimension): classes far
# enough apart that nearest centroid classifies 1-shot episodes almost always right from D = 16 on.
CLASS_SEPARATION = 2.0
REGRESSION_NOISE = 0.1


def make_episode_batch(
    task: TaskSpec,
    *,
    batch_size: int = 4,
    n_query: int = 3,
    seed: int = 0,
    shuffle: bool = False,
    dtype: torch.dtype = torch.float32,
) -> EpisodeBatch:
    """``batch_size`` seeded labelled episodes of ``task``'s shape, what ``meta_loss`` receives.

    Classification: ``support`` [B, N, K, D] and ``support_labels`` [B, N, K] (slot n holds
    class n's examples), ``query`` [B, N * n_query, D] with ``query_labels`` class by class
    (with ``shuffle``, each episode's queries in a seeded random order, as at evaluation),
    ``classes`` [B, N] and ``episode_ids`` [B] = 0 .. B - 1. Regression (``task.kind ==
    "regression"``, N = 1): each episode is ``y = x @ w + b + noise`` with ``x`` [K or
    n_query, D] inputs, float targets ``support_labels`` [B, 1, K, 1] and ``query_labels``
    [B, n_query, 1].
    """
    g = torch.Generator().manual_seed(seed)
    b, n, k, d = batch_size, task.n_way, task.k_shot, task.feature_dim
    if task.kind == REGRESSION.name:
        return _regression_batch(g, b, k, n_query, d, dtype, shuffle)
    means = CLASS_SEPARATION * torch.randn(b, n, 1, d, generator=g)
    examples = means + torch.randn(b, n, k + n_query, d, generator=g)
    support, query = examples[:, :, :k], examples[:, :, k:].reshape(b, n * n_query, d)
    query_labels = torch.arange(n).repeat_interleave(n_query).expand(b, -1)
    batch = EpisodeBatch(
        support=support.to(dtype),
        support_labels=torch.arange(n).view(1, n, 1).expand(b, n, k),
        query=query.to(dtype),
        query_labels=query_labels,
        classes=torch.arange(n).expand(b, n),
        episode_ids=torch.arange(b),
    )
    return batch.permute_queries(_orders(g, b, n * n_query)) if shuffle else batch


def make_prediction_batch(
    task: TaskSpec,
    *,
    batch_size: int = 4,
    n_query: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PredictionBatch:
    """What ``predict`` receives at evaluation: :func:`make_episode_batch` with shuffled queries, without labels.

    To score its predictions, build the labelled batch and take ``batch.inputs()``:
    ``labelled = make_episode_batch(task, shuffle=True)``; ``predict(labelled.inputs())``
    against ``labelled.query_labels``.
    """
    return make_episode_batch(task, batch_size=batch_size, n_query=n_query, seed=seed, shuffle=True,
                              dtype=dtype).inputs()


def _orders(g: torch.Generator, batch_size: int, n_queries: int) -> torch.Tensor:
    """A seeded random permutation of each episode's queries, [B, M]."""
    return torch.rand(batch_size, n_queries, generator=g).argsort(dim=1)


def _regression_batch(g: torch.Generator, b: int, k: int, n_query: int, d: int, dtype: torch.dtype,
                      shuffle: bool) -> EpisodeBatch:
    """One noisy linear function per episode, its K support and n_query query points."""
    w, bias = torch.randn(b, 1, d, generator=g), torch.randn(b, 1, 1, generator=g)
    x = 10 * torch.rand(b, k + n_query, d, generator=g) - 5  # inputs in [-5, 5), as sines-lines draws them
    y = x @ w.transpose(1, 2) + bias + REGRESSION_NOISE * torch.randn(b, k + n_query, 1, generator=g)
    batch = EpisodeBatch(
        support=x[:, None, :k].to(dtype),
        support_labels=y[:, None, :k].to(dtype),
        query=x[:, k:].to(dtype),
        query_labels=y[:, k:].to(dtype),
        classes=torch.zeros(b, 1, dtype=torch.int64),
        episode_ids=torch.arange(b),
    )
    return batch.permute_queries(_orders(g, b, n_query)) if shuffle else batch
