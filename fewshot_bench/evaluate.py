"""Batched evaluation on fixed, seeded episodes: one accuracy per episode."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from fewshot_bench.data.base import FeatureSplit
from fewshot_bench.episodes import EpisodeBatch, EpisodeSampler
from fewshot_bench.learner import Learner

PAPER_TEST_EPISODES = 50_000
# Elements of episode features gathered per evaluation batch (128 MB of float32).
EVAL_BATCH_ELEMENTS = 1 << 25


def all_remaining_queries(split: FeatureSplit, k_shot: int) -> int:
    """Q such that every class contributes all its non-support rows: min rows per class - K."""
    return int(split.counts.min()) - k_shot


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
    split: FeatureSplit,
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
    """Per-episode accuracies of ``learner`` on episodes ``0 .. episodes - 1`` of ``split``.

    ``n_query`` defaults to all remaining examples of each class (the paper's protocol).
    The learner is put in evaluation mode (no dropout, no sampling) and restored after.
    """
    q = all_remaining_queries(split, k_shot) if n_query is None else n_query
    sampler = EpisodeSampler(split, n_way, k_shot, q, seed, stream=stream)
    size = batch_size or auto_batch_size(n_way, k_shot, q, split.feature_dim)
    out = np.empty(episodes, dtype=np.float32)
    was_training = learner.training
    learner.eval()
    try:
        with tqdm(total=episodes, desc=desc, unit="ep", disable=not progress, leave=False) as bar:
            for start in range(0, episodes, size):
                n = min(size, episodes - start)
                batch = sampler.batch(start, n, device=device, dtype=learner.dtype)
                logits = learner.predict(batch).detach()
                out[start : start + n] = episode_accuracy(logits, batch).cpu().numpy()
                bar.update(n)
    finally:
        learner.train(was_training)
    return out
