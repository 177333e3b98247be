"""Batched evaluation on fixed, seeded episodes: one metric value per episode (accuracy, or MSE for regression)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from fewshot_bench.episodes import EpisodeBatch, EpisodeSource
from fewshot_bench.learner import Learner
from fewshot_bench.tasks import task_kind

PAPER_TEST_EPISODES = 50_000
# Elements of episode features gathered per evaluation batch (128 MB of float32).
EVAL_BATCH_ELEMENTS = 1 << 25


def all_remaining_queries(split: EpisodeSource, k_shot: int) -> int:
    """The split's evaluation Q: for class-sorted features every class's non-support rows, min rows per class - K."""
    return split.default_query(k_shot)


def auto_batch_size(n_way: int, k_shot: int, n_query: int, feature_dim: int, cap: int = 1000) -> int:
    """Episodes per evaluation batch so that gathered features stay within a fixed memory budget."""
    per_episode = n_way * (k_shot + n_query) * feature_dim
    return max(1, min(cap, EVAL_BATCH_ELEMENTS // per_episode))


def episode_accuracy(logits: torch.Tensor, batch: EpisodeBatch) -> torch.Tensor:
    """Fraction of correct query predictions per episode, [B]."""
    correct = logits.argmax(-1) == batch.query_labels
    return correct.flatten(1).float().mean(1)


def evaluate(
    learner: Learner,
    split: EpisodeSource,
    n_way: int,
    k_shot: int,
    seed: int,
    episodes: int = PAPER_TEST_EPISODES,
    n_query: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    stream: str = "test",
    progress: bool = False,
    desc: str = "evaluate",
) -> np.ndarray:
    """Per-episode metric values of ``learner`` on episodes ``0 .. episodes - 1`` of ``split``.

    The metric is the learner's task kind's (accuracy for classification, MSE for regression).
    ``n_query`` defaults to the split's evaluation queries: all remaining examples of each
    class for class-sorted features (the paper's protocol).
    The learner is put in evaluation mode (no dropout, no sampling) and restored after.
    """
    q = all_remaining_queries(split, k_shot) if n_query is None else n_query
    sampler = split.sampler(n_way, k_shot, q, seed, stream=stream)
    metric = task_kind(learner.task.kind).episode_metric
    size = batch_size or auto_batch_size(n_way, k_shot, q, split.feature_dim)
    out = np.empty(episodes, dtype=np.float32)
    was_training = learner.training
    learner.eval()
    try:
        with tqdm(total=episodes, desc=desc, unit="ep", disable=not progress, leave=False) as bar:
            for start in range(0, episodes, size):
                n = min(size, episodes - start)
                batch = sampler.batch(start, n, device=device, dtype=learner.dtype)
                predictions = learner.predict(batch).detach()
                out[start : start + n] = metric(predictions, batch.query_labels).cpu().numpy()
                bar.update(n)
    finally:
        learner.train(was_training)
    return out
