"""The two batch types of the contract: what ``predict`` sees and what ``meta_loss`` and the scorer see."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Self

import torch
from torch import Tensor

# What ``predict`` may not read: the harness scores queries against these, the learner never sees them.
_HIDDEN = {"query_labels": "query labels", "classes": "the split's class ids"}


@dataclass(kw_only=True)
class PredictionBatch:
    """What ``predict`` and ``linear_readout`` see of B episodes: labelled supports, an unordered set of
    unlabelled queries.

    ``support`` [B, N, K, D] with ``support_labels`` [B, N, K] (the class slot 0..N-1 of each
    example; for regression, float targets [B, 1, K, 1]). ``query`` [B, M, D]: each episode's
    M queries in a hashed order that is a pure function of the episode (see
    :func:`query_order`), so neither their labels nor their classes can be read from the
    batch or its layout. ``episode_ids`` [B] (may be None): for learners that sample at
    evaluation and need noise that is a pure function of the episode (:func:`episode_normal`).
    """

    support: Tensor
    support_labels: Tensor
    query: Tensor
    episode_ids: Tensor | None = None

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: say why a prediction batch has no labels.
        if name in _HIDDEN:
            raise AttributeError(
                f"{type(self).__name__} has no {name!r}: predict never sees {_HIDDEN[name]} "
                "(integrity rule, see docs/plugins.md); meta_loss receives a labelled EpisodeBatch"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def batch_size(self) -> int:
        """Number of episodes B."""
        return self.support.shape[0]

    @property
    def n_way(self) -> int:
        """Classes per episode N."""
        return self.support.shape[1]

    @property
    def k_shot(self) -> int:
        """Support examples per class K."""
        return self.support.shape[2]

    @property
    def n_queries(self) -> int:
        """Queries per episode M (all classes together)."""
        return self.query.shape[1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Self:
        """This batch with features (and float targets) moved to ``device`` and cast to ``dtype``; ids stay."""
        def move(name: str, t: Tensor | None) -> Tensor | None:
            if t is None or name in ("classes", "episode_ids"):
                return t
            # Class labels stay integers; regression targets follow the features' dtype.
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        moved: dict[str, Any] = {f.name: move(f.name, getattr(self, f.name)) for f in fields(self)}
        return replace(self, **moved)

    def select(self, index: Tensor | slice) -> Self:
        """The sub-batch of the episodes at ``index`` (a slice or index tensor)."""
        picked: dict[str, Any] = {f.name: _pick(getattr(self, f.name), index) for f in fields(self)}
        return replace(self, **picked)


def _pick(t: Tensor | None, index: Tensor | slice) -> Tensor | None:
    return None if t is None else t[index]


@dataclass(kw_only=True)
class EpisodeBatch(PredictionBatch):
    """A labelled batch of B episodes: what the sampler draws, the harness scores and ``meta_loss`` trains on.

    Classification: ``query`` [B, M, D] with ``query_labels`` [B, M], the class slot of each
    query; ``classes`` [B, N] are the split's class ids of the slots. Meta-training batches
    hold the queries class by class (slot 0's Q queries, then slot 1's, ...); evaluation
    batches in each episode's hashed query order. Only :meth:`inputs` reaches ``predict``.

    Regression (see :mod:`fewshot_bench.api.tasks`): each episode is one function, N = 1;
    ``support`` [B, 1, K, D] holds the inputs and ``support_labels`` [B, 1, K, 1] the float
    targets; ``query`` [B, M, D] and ``query_labels`` [B, M, 1] likewise; ``classes`` [B, 1]
    may name the problem's family.
    """

    query_labels: Tensor
    classes: Tensor | None = None

    def inputs(self) -> PredictionBatch:
        """What a learner may see to predict this batch: everything but the query labels and class ids."""
        return PredictionBatch(
            support=self.support, support_labels=self.support_labels, query=self.query, episode_ids=self.episode_ids
        )

    def permute_queries(self, order: Tensor) -> EpisodeBatch:
        """This batch with each episode's queries (and labels) reordered: ``order`` [B, M] indexes its queries."""
        index = order.to(self.query.device)
        features = self.query.gather(1, index[..., None].expand(-1, -1, self.query.shape[-1]))
        labels = self.query_labels
        shape = index.shape + labels.shape[2:]
        labels = labels.gather(1, index.view(*index.shape, *([1] * (labels.dim() - 2))).expand(shape))
        return replace(self, query=features, query_labels=labels)
