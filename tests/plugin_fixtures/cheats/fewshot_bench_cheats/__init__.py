"""Learners written as an adversarial plugin author would, from docs/plugins.md alone.

Each tries one way of scoring what it did not learn; the conformance checks (and, for the
readout, evaluation itself) must catch each with a message saying what to fix:

* ``label-reader`` returns the query labels it is handed (fails ``predict``: none are handed);
* ``slot-reader`` reads no label but assumes the queries arrive class by class and answers
  each query's slot from its position (fails ``query-order``; scores chance when evaluated);
* ``leaky-readout`` predicts honestly but its ``linear_readout``, which fast evaluation
  trusts, centres features on the mean of the whole batch (fails ``readout``, and
  evaluation refuses to store its number);
* ``query-centred`` centres features on the mean of the episode's queries, a transductive
  trick it does not declare (fails ``inductive``);
* ``transductive-centroid`` does the same and declares ``transductive = True`` (passes;
  tables mark its rows);
* ``order-breaker`` reverse-engineers the evaluation's query order from the episode ids it
  is given and guessed seeds and streams, using the harness's own hash, and answers each
  query's class from its original position when a guess fits (honest otherwise, so it passes
  every check); the order's dependence on the whole split, which no learner sees, defeats it.
"""

import numpy as np
import torch

from fewshot_bench.api import Learner, hookimpl
from fewshot_bench.api.noise import query_order  # a cheat reaches past the plugin API on purpose


def centroid_logits(support: torch.Tensor, query: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest-centroid logits [B, M, N], -||x - c||^2 up to a per-query constant, after subtracting
    ``centre`` [B, D]."""
    centre = support.new_zeros(support.shape[0], support.shape[-1]) if centre is None else centre
    centroids = support.mean(dim=2) - centre[:, None, :]  # [B, N, D]
    x = query - centre[:, None, :]
    return 2 * x @ centroids.transpose(1, 2) - centroids.pow(2).sum(-1)[:, None, :]


class LabelReader(Learner):
    """Returns one-hot query labels as its logits."""

    name = "label-reader"
    description = "cheat: reads the query labels"
    meta_trainable = False

    def predict(self, batch):
        return torch.nn.functional.one_hot(batch.query_labels, batch.n_way).to(batch.query.dtype)


class SlotReader(Learner):
    """Reads no label: assumes the M queries come class by class and predicts query m's class as m * N // M."""

    name = "slot-reader"
    description = "cheat: reads each query's class from its position"
    meta_trainable = False

    def predict(self, batch):
        b, m, n = batch.batch_size, batch.n_queries, batch.n_way
        slots = torch.arange(m, device=batch.query.device) * n // m
        return torch.nn.functional.one_hot(slots, n).to(batch.query.dtype).expand(b, m, n)


class LeakyReadout(Learner):
    """An honest nearest centroid whose fast-path readout centres features on the mean over the whole batch."""

    name = "leaky-readout"
    description = "cheat: linear_readout centred on a batch-wide mean"
    meta_trainable = False

    def predict(self, batch):
        return centroid_logits(batch.support, batch.query)

    def linear_readout(self, batch):
        centre = batch.support.mean(dim=(0, 1, 2))  # the leak: every episode of the batch
        centroids = batch.support.mean(dim=2) - centre
        return 2 * centroids, -centroids.pow(2).sum(-1)


class QueryCentred(Learner):
    """Centres features on the mean of the episode's queries without declaring itself transductive."""

    name = "query-centred"
    description = "cheat: centres on the query mean (undeclared transduction)"
    meta_trainable = False

    def predict(self, batch):
        return centroid_logits(batch.support, batch.query, batch.query.mean(dim=1))


class TransductiveCentroid(QueryCentred):
    """The same computation, declared transductive: allowed, and marked in tables."""

    name = "transductive-centroid"
    description = "nearest centroid centred on the query mean (transductive)"
    transductive = True


class OrderBreaker(Learner):
    """Honest nearest centroid, unless a guessed (seed, stream) turns the episode ids into the query order."""

    name = "order-breaker"
    description = "cheat: recomputes the evaluation's query order from the episode ids"
    meta_trainable = False
    guesses = [(seed, stream) for seed in range(5) for stream in ("test", "val")]

    def predict(self, batch):
        honest = centroid_logits(batch.support, batch.query)
        b, m, n = batch.batch_size, batch.n_queries, batch.n_way
        if batch.episode_ids is None or m % n:
            return honest
        ids = batch.episode_ids.cpu().numpy()
        guessed = honest.argmax(-1).cpu().numpy()
        # A guess fits an episode when its positions agree with honest predictions 4 standard errors above chance.
        chance = 1.0 / n
        threshold = chance + 4 * np.sqrt(chance * (1 - chance) / m)
        logits = honest.clone()
        found = np.zeros(b, dtype=bool)
        for seed, stream in self.guesses:
            # Position j holds the query that stood at order[j] in the class-by-class layout.
            slots = query_order(seed, stream, ids, m) // (m // n)
            fits = ~found & ((slots == guessed).mean(1) > threshold)
            for i in np.flatnonzero(fits):
                logits[i] = 1e3 * torch.nn.functional.one_hot(torch.from_numpy(slots[i]), n).to(honest)
            found |= fits
        return logits


@hookimpl
def fewshot_bench_register_learners(register):
    """Register the cheats."""
    for cls in (LabelReader, SlotReader, LeakyReadout, QueryCentred, TransductiveCentroid, OrderBreaker):
        register(cls)
