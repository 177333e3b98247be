"""Batched evaluation on fixed, seeded episodes: one metric value per episode (accuracy, or MSE for regression).

Two paths give the same per-episode values:

* **generic**: gather each batch's support and query features (each episode's queries in
  its hashed query order, without labels), call ``learner.predict``, score the logits
  against the labels the learner never saw. Works for every learner and every episode source.
* **class-blocked** (classification on class-sorted features, for learners whose
  ``linear_readout`` gives per-episode classifier weights, when the queries cover most of
  each class): gather only the support rows, get the weights, then for each class of the
  batch score *all* its rows against the weights of every episode that drew it with one
  matrix product on a view of the split, and count the hits at each episode's query rows.
  No query feature is copied, which is where the generic path spends its time at the
  paper's protocol (600 - K queries per class: gigabytes per thousand episodes).

The class-blocked path trusts the learner's readout, so every evaluation checks it: on a
few episodes drawn at random (unpredictably, so a readout cannot special-case them), the
readout's predictions must be ``predict``'s; otherwise evaluation fails naming the learner
rather than storing a number ``predict`` would not give.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from fewshot_bench.api.batches import PredictionBatch
from fewshot_bench.api.learner import Learner
from fewshot_bench.api.linear import linear_logits
from fewshot_bench.api.tasks import task_kind
from fewshot_bench.console.progress import progress as progress_counter
from fewshot_bench.data.base import FeatureSplit
from fewshot_bench.episodes import EpisodeSampler, EpisodeSource
from fewshot_bench.errors import PluginError

PAPER_TEST_EPISODES = 50_000
# Elements of episode features gathered per evaluation batch (128 MB of float32).
EVAL_BATCH_ELEMENTS = 1 << 25
# The class-blocked path scores every row of a class for each episode that drew it, i.e.
# about mean(counts) / Q times the rows the generic path scores (classes are drawn
# uniformly). It still wins while that waste is at most 2x, since the generic path pays
# for copying every query row; below that it would compute mostly unused logits.
BLOCKED_MIN_QUERY_FRACTION = 0.5
# Episodes per class-blocked batch: only supports and weights are held, so batches are
# larger than the generic path's; 1,000 gives each class's product about 250 episodes'
# weights (5-way, 20 classes), large enough to run near the CPU's peak.
BLOCKED_BATCH_CAP = 1000
# Episodes per linear_readout call (fewer when their supports pass 2^21 elements): the
# learner's inner loop runs fastest on small batches whose intermediates stay in cache
# (LEO 5-shot: 0.35 s per 1,000 episodes in calls of 100, 0.64 s in calls of 200 and up),
# while scoring wants all of a batch's episodes per class for large matrix products.
BLOCKED_READOUT_EPISODES = 100
BLOCKED_READOUT_ELEMENTS = 1 << 21
# Logits of one class block computed at once (rows x episodes x N): 16 MB of float32.
BLOCKED_LOGIT_ELEMENTS = 1 << 22
# Episodes of every class-blocked evaluation on which the readout is checked against predict.
READOUT_CHECK_EPISODES = 4
# Two predictions of one query agree when they pick the same class, or classes whose logits
# in predict differ by at most this fraction of the logits' scale (a tie up to rounding).
TIE_RTOL = 1e-4


def all_remaining_queries(split: EpisodeSource, k_shot: int) -> int:
    """The split's evaluation Q: for class-sorted features every class's non-support rows, min rows per class - K."""
    return split.default_query(k_shot)


def auto_batch_size(n_way: int, k_shot: int, n_query: int, feature_dim: int, cap: int = 1000) -> int:
    """Episodes per evaluation batch so that gathered features stay within a fixed memory budget."""
    per_episode = n_way * (k_shot + n_query) * feature_dim
    return max(1, min(cap, EVAL_BATCH_ELEMENTS // per_episode))


def blocked_batch_size(n_way: int, k_shot: int, feature_dim: int, cap: int = BLOCKED_BATCH_CAP) -> int:
    """Episodes per class-blocked batch: up to ``cap``, fewer when the support features would pass the memory budget."""
    return max(1, min(cap, EVAL_BATCH_ELEMENTS // (n_way * k_shot * feature_dim)))


def class_blocked_applies(split: EpisodeSource, kind: str, n_query: int) -> bool:
    """Whether evaluation may take the class-blocked path: classification on class-sorted features with Q >= half
    the mean class size."""
    return (
        kind == "classification"
        and isinstance(split, FeatureSplit)
        and n_query >= BLOCKED_MIN_QUERY_FRACTION * float(split.counts.mean())
    )


def _defined_in(cls: type, attribute: str) -> type:
    """The class of ``cls``'s MRO whose body defines ``attribute``."""
    return next(k for k in cls.__mro__ if attribute in vars(k))


def readout_follows_predict(learner: Learner) -> bool:
    """Whether ``learner``'s ``linear_readout`` is defined no higher in its class hierarchy than its ``predict``.

    A subclass that overrides ``predict`` but inherits ``linear_readout`` (e.g. a scaled
    nearest centroid) would be scored by its parent's classifier; its readout is not used.
    """
    cls = type(learner)
    return issubclass(_defined_in(cls, "linear_readout"), _defined_in(cls, "predict"))


def readout_disagreements(logits: Tensor, readout_logits: Tensor) -> Tensor:
    """Per episode [B], the queries whose readout class is not predict's (up to a tie within ``TIE_RTOL``).

    ``logits`` are predict's [B, M, N]; ``readout_logits`` the readout's, which may differ
    from them by a per-query constant.
    """
    chosen = logits.gather(-1, readout_logits.argmax(-1, keepdim=True)).squeeze(-1)
    scale = logits.abs().amax(dim=(1, 2), keepdim=True).squeeze(-1).clamp_min(1.0)
    return (logits.amax(-1) - chosen > TIE_RTOL * scale).sum(1)


def class_blocked_correct(
    split: FeatureSplit, classes: np.ndarray, rows: np.ndarray, k_shot: int, weights: Tensor, bias: Tensor | None
) -> Tensor:
    """Correct query predictions per episode [B] of linear classifiers, scored class by class from the split.

    ``classes`` [B, N] and ``rows`` [B, N, K + Q] are the sampler's draw, ``weights``
    [B, N, D] and ``bias`` [B, N] (or None) each episode's classifier. For every class c of
    the batch, all rows of c get the logits of every (episode, slot) that drew c in one
    product, ``features[c] @ W_sel^T``; a row counts as correct for an episode when the
    argmax over that episode's N classes is c's slot and the row is one of its queries.
    """
    b_size, n_way, dim = weights.shape
    device, dtype = weights.device, weights.dtype
    correct = torch.zeros(b_size, dtype=torch.int64, device=device)
    queries = rows[..., k_shot:].reshape(b_size * n_way, -1)  # [B * N, Q] split rows
    flat = classes.reshape(-1)
    order = np.argsort(flat, kind="stable")  # (episode, slot) pairs grouped by class
    class_ids, starts = np.unique(flat[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for c, lo, hi in zip(class_ids.tolist(), starts.tolist(), ends.tolist()):
        first, last = int(split.offsets[c]), int(split.offsets[c + 1])
        block = split.features[first:last].to(device=device, dtype=dtype)  # a view when nothing changes
        chunk = max(1, BLOCKED_LOGIT_ELEMENTS // ((last - first) * n_way))
        for s in range(lo, hi, chunk):
            pairs = order[s : min(hi, s + chunk)]
            episodes = torch.from_numpy(pairs // n_way).to(device)
            slots = torch.from_numpy(pairs % n_way).to(device)
            w = weights[episodes]  # [E, N, D]
            logits = (block @ w.reshape(-1, dim).T).view(last - first, len(pairs), n_way)
            if bias is not None:
                logits = logits + bias[episodes]
            hits = logits.argmax(-1) == slots  # [rows of c, E]
            local = torch.from_numpy(queries[pairs] - first).to(device)  # [E, Q] rows within the block
            correct.index_add_(0, episodes, hits.gather(0, local.T).sum(0))
    return correct


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
    fast: bool | None = None,
    progress_every: float | None = None,
) -> np.ndarray:
    """Per-episode metric values of ``learner`` on episodes ``0 .. episodes - 1`` of ``split``.

    The metric is the learner's task kind's (accuracy for classification, MSE for regression).
    ``n_query`` defaults to the split's evaluation queries: all remaining examples of each
    class for class-sorted features (the paper's protocol).
    The learner is put in evaluation mode (no dropout, no sampling) and restored after, and
    runs under ``torch.no_grad()``.
    ``fast``: None takes the class-blocked path when :func:`class_blocked_applies` and the
    learner has a ``linear_readout`` (:func:`readout_follows_predict`); False forces the
    generic path (``predict``); True also ignores the query-fraction rule (still needs a
    readout, classification and class-sorted features).
    Both paths give the same accuracies (up to float rounding of exactly tied logits).
    """
    q = all_remaining_queries(split, k_shot) if n_query is None else n_query
    sampler = split.sampler(n_way, k_shot, q, seed, stream=stream)
    kind = learner.task.kind
    if fast is None:
        blocked = class_blocked_applies(split, kind, q)
    else:
        blocked = fast and kind == "classification" and isinstance(split, FeatureSplit)
    blocked = blocked and readout_follows_predict(learner)
    was_training = learner.training
    learner.eval()
    try:
        # Nothing is recorded for autograd here: a learner whose inner loop takes gradients at
        # evaluation turns them on around that loop itself (torch.enable_grad).
        # A bar on a terminal, else (``progress_every``) a line every so often for logs, and one at the end.
        with torch.no_grad(), progress_counter(episodes, desc, "ep", progress, progress_every, always=True,
                                               leave=False) as bar:
            if blocked:
                size = batch_size or blocked_batch_size(n_way, k_shot, split.feature_dim)
                out = _evaluate_blocked(learner, sampler, episodes, size, device, bar)
                if out is not None:
                    return out
            size = batch_size or auto_batch_size(n_way, k_shot, q, split.feature_dim)
            return _evaluate_generic(learner, sampler, task_kind(kind).episode_metric, episodes, size, device, bar)
    finally:
        learner.train(was_training)


def _evaluate_generic(
    learner: Learner,
    sampler: Any,
    metric: Callable[[Tensor, Tensor], Tensor],
    episodes: int,
    size: int,
    device: torch.device | str,
    bar: tqdm,
) -> np.ndarray:
    """Metric values of ``learner.predict`` on fully gathered episodes, its queries shuffled and unlabelled."""
    out = np.empty(episodes, dtype=np.float32)
    for start in range(0, episodes, size):
        n = min(size, episodes - start)
        batch = sampler.batch(start, n, device=device, dtype=learner.dtype, shuffle=True)
        predictions = learner.predict(batch.inputs())
        out[start : start + n] = metric(predictions, batch.query_labels).cpu().numpy()
        bar.update(n)
    return out


def _evaluate_blocked(
    learner: Learner, sampler: EpisodeSampler, episodes: int, size: int, device: torch.device | str, bar: tqdm
) -> np.ndarray | None:
    """Accuracies from the learner's linear readout, scored class by class; None when the learner has none.

    The readout of a few randomly chosen episodes is checked against ``predict``
    (:func:`check_readout`) before any result is returned.
    """
    out = np.empty(episodes, dtype=np.float32)
    # Fresh entropy, not the run's seed: which episodes are checked must not be predictable.
    checked = set(np.random.default_rng().choice(episodes, min(episodes, READOUT_CHECK_EPISODES),
                                                 replace=False).tolist())
    for start in range(0, episodes, size):
        n = min(size, episodes - start)
        batch, rows = sampler.support_batch(start, n, device=device, dtype=learner.dtype)
        readout = _linear_readout(learner, batch.inputs())
        if readout is None:  # decided on the first batch: the learner has no readout
            return None
        weights, bias = readout
        shape = (n, sampler.n_way, sampler.split.feature_dim)
        if tuple(weights.shape) != shape or (bias is not None and tuple(bias.shape) != shape[:2]):
            raise ValueError(
                f"linear_readout of {learner.name!r} returned weights {tuple(weights.shape)} and bias "
                f"{None if bias is None else tuple(bias.shape)}; expected {shape} and {shape[:2]} or None"
            )
        for i in sorted(e - start for e in checked if start <= e < start + n):
            check_readout(learner, sampler, start + i, weights[i : i + 1], None if bias is None else bias[i : i + 1])
        correct = class_blocked_correct(sampler.split, batch.classes.numpy(), rows, sampler.k_shot, weights, bias)
        # Divided in float32 like the generic path's mean of 0/1 values, so both give the same numbers.
        out[start : start + n] = (correct.float() / (sampler.n_way * sampler.n_query)).cpu().numpy()
        bar.update(n)
    return out


def check_readout(learner: Learner, sampler: Any, episode: int, weights: Tensor, bias: Tensor | None) -> None:
    """Raise a PluginError unless the readout ``weights``/``bias`` (as scored) predict episode ``episode`` as
    ``predict`` does."""
    batch = sampler.batch(episode, 1, device=weights.device, dtype=learner.dtype, shuffle=True).inputs()
    logits = learner.predict(batch)
    wrong = int(readout_disagreements(logits, linear_logits(batch.query, weights, bias))[0])
    if wrong:
        raise PluginError(
            f"learner {learner.name!r}: its linear_readout disagrees with its predict on {wrong} of "
            f"{batch.n_queries} queries of test episode {episode}; no result is stored. The readout must "
            "give predict's classes from each episode's support set alone (fix linear_readout, or delete it "
            "so evaluation calls predict)"
        )


def _linear_readout(learner: Learner, batch: PredictionBatch) -> tuple[Tensor, Tensor | None] | None:
    """The learner's readout of ``batch``, computed in calls of a few episodes and concatenated."""
    per_episode = batch.n_way * batch.k_shot * batch.support.shape[-1]
    step = max(1, min(BLOCKED_READOUT_EPISODES, BLOCKED_READOUT_ELEMENTS // per_episode))
    weights, biases = [], []
    for start in range(0, batch.batch_size, step):
        readout = learner.linear_readout(batch.select(slice(start, start + step)))
        if readout is None:
            return None
        weights.append(readout[0])
        biases.append(readout[1])
    if all(b is None for b in biases):
        return torch.cat(weights), None
    if any(b is None for b in biases):
        raise ValueError(f"linear_readout of {learner.name!r} returned a bias for some batches and None for others")
    return torch.cat(weights), torch.cat(biases)
