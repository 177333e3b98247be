"""Task kinds: what an episode asks of a learner, its query loss and its per-episode metric.

The protocol is the same for every kind (seeded episodes, outer loop, evaluation on fixed
episodes, statistics, store); only the loss, the metric and the metric's direction
differ. Harness code looks the kind up by name (``TaskSpec.kind``, ``FeatureDataset.kind``)
instead of branching on it.

* ``classification``: ``predict`` returns logits ``[B, M, N]`` for the M queries of each
  episode; the loss is the query cross-entropy, the metric per-episode accuracy (higher is
  better).
* ``regression``: ``predict`` returns outputs ``[B, M, 1]`` for float targets in
  ``query_labels`` ``[B, M, 1]``; the loss and the metric are the query mean squared error
  (``mse``, lower is better).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from fewshot_bench.errors import ConfigError


@dataclass(frozen=True)
class TaskKind:
    """A task kind: its query loss (a scalar over a batch), its per-episode metric and the metric's direction."""

    name: str
    metric: str
    higher_is_better: bool
    loss: Callable[[Tensor, Tensor], Tensor]  # (predictions, query targets) -> scalar mean loss
    episode_metric: Callable[[Tensor, Tensor], Tensor]  # (predictions, query targets) -> [B]
    fixed_way: int | None = None  # N every episode of this kind has (None: any)

    def better(self, a: float, b: float | None) -> bool:
        """Whether metric value ``a`` improves on ``b`` (anything improves on ``None``)."""
        return b is None or (a > b if self.higher_is_better else a < b)


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    return (logits.argmax(-1) == labels).flatten(1).float().mean(1)


def _mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs - targets).pow(2).mean()


def _episode_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs - targets).pow(2).flatten(1).float().mean(1)


CLASSIFICATION = TaskKind("classification", "accuracy", True, _cross_entropy, _accuracy)
REGRESSION = TaskKind("regression", "mse", False, _mse, _episode_mse, fixed_way=1)
KINDS: dict[str, TaskKind] = {k.name: k for k in (CLASSIFICATION, REGRESSION)}


def task_kind(name: str) -> TaskKind:
    """The task kind called ``name``, or a one-line error listing the known kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown task kind {name!r}; known kinds: {', '.join(KINDS)}") from None
