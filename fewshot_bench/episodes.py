"""The episodic N-way K-shot protocol: episode batches and the seeded, counter-based sampler.

Episode ``i`` of a split at seed ``r`` is a pure function of (split contents, N, K, Q, r,
stream, i): it is computed from a hash of those numbers, not from a stateful random
generator, so any episode can be produced on its own, in any order, in batches of any
size, on any machine, and every learner is evaluated on exactly the same test episodes.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np
import torch
from torch import Tensor

from fewshot_bench.errors import DataError

if TYPE_CHECKING:
    from fewshot_bench.data.base import FeatureSplit

TRAIN_QUERY = 15  # queries per class during meta-training (paper, reference code)
# Example hashes per ``indices`` call above which its episodes are split over threads.
PARALLEL_MIN_HASHES = 1 << 18


# What ``predict`` may not read: the harness scores queries against these, the learner never sees them.
_HIDDEN = {"query_labels": "query labels", "classes": "the split's class ids"}


@dataclass(kw_only=True)
class PredictionBatch:
    """What ``predict`` and ``linear_readout`` see of B episodes: labelled supports, an unordered set of unlabelled queries.

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

        return replace(self, **{f.name: move(f.name, getattr(self, f.name)) for f in fields(self)})

    def select(self, index: Tensor | slice) -> Self:
        """The sub-batch of the episodes at ``index`` (a slice or index tensor)."""
        return replace(self, **{f.name: _pick(getattr(self, f.name), index) for f in fields(self)})


def _pick(t: Tensor | None, index: Tensor | slice) -> Tensor | None:
    return None if t is None else t[index]


@dataclass(kw_only=True)
class EpisodeBatch(PredictionBatch):
    """A labelled batch of B episodes: what the sampler draws, the harness scores and ``meta_loss`` trains on.

    Classification: ``query`` [B, M, D] with ``query_labels`` [B, M], the class slot of each
    query; ``classes`` [B, N] are the split's class ids of the slots. Meta-training batches
    hold the queries class by class (slot 0's Q queries, then slot 1's, ...); evaluation
    batches in each episode's hashed query order. Only :meth:`inputs` reaches ``predict``.

    Regression (see :mod:`fewshot_bench.tasks`): each episode is one function, N = 1;
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


class EpisodeSource(Protocol):
    """A split the harness can draw episodes from: class-sorted features or a generated task family.

    :class:`~fewshot_bench.data.base.FeatureSplit` returns an :class:`EpisodeSampler`; a
    generated family (e.g. ``sines-lines``) returns its own sampler with the same
    ``batch(start, size, device, dtype, shuffle=False)`` method, which with ``shuffle`` puts
    each episode's queries in :func:`query_order` (as ``EpisodeBatch.permute_queries`` does).
    """

    name: str

    @property
    def feature_dim(self) -> int:
        """Input dimension D."""

    def sampler(self, n_way: int, k_shot: int, n_query: int, seed: int, stream: str | None = None) -> Any:
        """A seeded sampler whose ``batch(start, size, device, dtype, shuffle)`` returns episodes ``start ..``."""

    def default_query(self, k_shot: int) -> int:
        """Queries per class (per problem) at evaluation."""


# --- counter-based hashing (splitmix64) ----------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CLASS_STREAM = np.uint64(0x5CA1AB1E)
_EXAMPLE_STREAM = np.uint64(0xE8A3B1E5)
_QUERY_ORDER_STREAM = np.uint64(0x0DE5C0DE)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective, well-mixed hash of uint64 arrays."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _uniform(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to float64 uniforms in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def episode_keys(seed: int, stream: str, episode_ids: np.ndarray) -> np.ndarray:
    """One uint64 key per episode: a pure function of (seed, stream, episode id)."""
    with np.errstate(over="ignore"):
        base = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) + np.uint64(zlib.crc32(stream.encode())))
        ids = np.asarray(episode_ids, dtype=np.uint64)
        return _mix(_mix(base + ids * _GOLDEN))


def query_order(seed: int, stream: str, episode_ids: np.ndarray, n_queries: int, salt: int = 0) -> np.ndarray:
    """Each episode's query order at evaluation: a permutation [B, M] of its M queries.

    A pure function of (seed, stream, episode id, ``salt``), the same for every learner; it
    mixes the classes, so a query's position says nothing about its label. Class-sorted
    splits salt it with their :attr:`~fewshot_bench.data.base.FeatureSplit.content_digest`,
    which no learner can compute, so the order cannot be rebuilt from the episode ids that
    ``predict`` receives (tests/plugin_fixtures/cheats: ``order-breaker``).
    """
    with np.errstate(over="ignore"):
        salted = _QUERY_ORDER_STREAM ^ _mix(np.array([salt & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    u = hashed_uniforms(episode_keys(seed, stream, episode_ids), salted, n_queries)
    return np.argsort(u, axis=1, kind="stable")


class EpisodeSampler:
    """Seeded N-way, K-shot, Q-query episodes from one split of a feature dataset.

    Classes are drawn without replacement, then K + Q distinct examples per class without
    replacement; labels follow the order in which classes were drawn. Rows are gathered by
    index from the split's feature matrix, which is never copied as a whole.
    """

    def __init__(
        self,
        split: FeatureSplit,
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int,
        stream: str | None = None,
    ) -> None:
        self.split = split
        self.n_way, self.k_shot, self.n_query, self.seed = n_way, k_shot, n_query, seed
        self.stream = stream or split.name
        if n_way < 1 or k_shot < 1 or n_query < 1:
            raise DataError(f"N, K and Q must be at least 1 (got N={n_way}, K={k_shot}, Q={n_query})")
        counts = split.counts
        if n_way > len(counts):
            raise DataError(
                f"{n_way}-way episodes need {n_way} classes but split {split.name!r} of "
                f"{split.dataset!r} has only {len(counts)}; lower --way"
            )
        need = k_shot + n_query
        small = np.flatnonzero(counts < need)
        if small.size:
            c = int(small[np.argmin(counts[small])])
            raise DataError(
                f"class {split.class_names[c]!r} of split {split.name!r} has {counts[c]} examples, "
                f"fewer than K + Q = {k_shot} + {n_query}; lower --shot or the number of queries"
            )
        self._counts = counts.astype(np.int64)
        self._offsets = split.offsets.astype(np.int64)

    def indices(self, episode_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids [B, N] and row indices [B, N, K + Q] of the given episodes.

        Large draws (evaluation: every row of each class is hashed and sorted) are split
        over the cores: episodes are independent and numpy releases the GIL, so the result
        is the same and a many-core machine feeding a GPU is not held up by one core.
        """
        ids = np.asarray(episode_ids, dtype=np.int64)
        parts = min(cpu_cores(), len(ids), len(ids) * self.n_way * int(self._counts.max()) // PARALLEL_MIN_HASHES)
        if parts < 2:
            return self._indices(ids)
        drawn = list(_sampler_pool().map(self._indices, np.array_split(ids, parts)))
        return np.concatenate([c for c, _ in drawn]), np.concatenate([r for _, r in drawn])

    def _indices(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = episode_keys(self.seed, self.stream, ids)
        n_classes = len(self._counts)
        with np.errstate(over="ignore"):
            class_hash = _mix(keys[:, None] ^ _mix(np.arange(n_classes, dtype=np.uint64) + _CLASS_STREAM))
        classes = np.argsort(_uniform(class_hash), axis=1, kind="stable")[:, : self.n_way]

        counts = self._counts[classes]  # [B, N]
        width = int(counts.max())
        j = np.arange(width, dtype=np.uint64)
        with np.errstate(over="ignore"):
            salt = _mix(classes.astype(np.uint64) * np.uint64(1 << 32) + _EXAMPLE_STREAM)
            example_hash = _mix((keys[:, None, None] ^ salt[..., None]) + j * _GOLDEN)
        u = _uniform(example_hash)
        u[j[None, None, :].astype(np.int64) >= counts[..., None]] = np.inf  # beyond the class's rows
        need = self.k_shot + self.n_query
        if need < width:  # the need smallest, in order (torch's top-k: ~4x numpy's argpartition on short rows)
            pos = torch.topk(torch.from_numpy(u), need, dim=2, largest=False, sorted=True).indices.numpy()
        else:
            pos = np.argsort(u, axis=2, kind="stable")[..., :need]
        rows = self._offsets[classes][..., None] + pos
        return classes, rows

    def batch(
        self,
        start: int,
        size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        shuffle: bool = False,
    ) -> EpisodeBatch:
        """Episodes ``start .. start + size - 1`` as one :class:`EpisodeBatch`.

        Queries come class by class, or with ``shuffle`` in each episode's :func:`query_order`
        (folded into the row gather: the same batch as ``permute_queries``, without a copy).
        """
        ids = np.arange(start, start + size, dtype=np.int64)
        classes, rows = self.indices(ids)
        k = self.k_shot
        query_rows = rows[..., k:].reshape(size, -1)  # [B, M], class by class
        labels = np.repeat(np.arange(self.n_way), self.n_query)[None, :]
        if shuffle:
            order = query_order(self.seed, self.stream, ids, query_rows.shape[1], self.split.content_digest)
            query_rows = np.take_along_axis(query_rows, order, axis=1)
            labels = np.take_along_axis(np.broadcast_to(labels, order.shape), order, axis=1)
        # Support and query are gathered apart, so each is contiguous: learners flatten them without a copy.
        support, query = self._gather(rows[..., :k], device, dtype), self._gather(query_rows, device, dtype)
        query_labels = torch.from_numpy(np.ascontiguousarray(labels)).to(support.device).expand(size, -1)
        return self._episodes(ids, classes, support, query, query_labels)

    def _gather(self, rows: np.ndarray, device: torch.device | str | None, dtype: torch.dtype | None) -> Tensor:
        """The features of split rows ``rows`` [..., M] as one contiguous [..., M, D] tensor on ``device``."""
        feats = self.split.features
        index = torch.from_numpy(np.ascontiguousarray(rows).reshape(-1)).to(feats.device)
        return feats.index_select(0, index).view(*rows.shape, feats.shape[1]).to(device=device, dtype=dtype)

    @staticmethod
    def _episodes(ids: np.ndarray, classes: np.ndarray, support: Tensor, query: Tensor, query_labels: Tensor) -> EpisodeBatch:
        """An EpisodeBatch of gathered features, labelled by class slot."""
        b, n, k = support.shape[:3]
        return EpisodeBatch(
            support=support,
            query=query,
            support_labels=torch.arange(n, device=support.device).view(1, n, 1).expand(b, n, k),
            query_labels=query_labels,
            classes=torch.from_numpy(classes),
            episode_ids=torch.from_numpy(ids),
        )

    def support_batch(
        self,
        start: int,
        size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[EpisodeBatch, np.ndarray]:
        """Episodes ``start .. start + size - 1`` with only their support rows gathered, and all their row indices.

        The batch is :meth:`batch`'s with no queries (``query`` [B, 0, D]); ``rows``
        ``[B, N, K + Q]`` are the split rows of each (episode, class slot), so ``rows[b, n, K:]``
        are slot n's queries. For evaluators that score queries straight from the
        class-sorted split instead of copying them per episode.
        """
        ids = np.arange(start, start + size, dtype=np.int64)
        classes, rows = self.indices(ids)
        support = self._gather(rows[..., : self.k_shot], device, dtype)
        no_query = support.new_empty(size, 0, support.shape[-1])
        no_labels = torch.empty(size, 0, dtype=torch.int64, device=support.device)
        return self._episodes(ids, classes, support, no_query, no_labels), rows


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@cache
def _sampler_pool() -> ThreadPoolExecutor:
    """One process-wide thread pool for large episode draws."""
    return ThreadPoolExecutor(max_workers=cpu_cores(), thread_name_prefix="fewshot-sampler")


def hashed_uniforms(keys: np.ndarray, salt: np.uint64, count: int) -> np.ndarray:
    """``count`` hashed uniforms in [0, 1) per uint64 key: ``[B, count]``, entry j independent of ``count``."""
    j = np.arange(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _uniform(_mix((keys[:, None] ^ _mix(np.array([salt], dtype=np.uint64))) + j * _GOLDEN))


def hashed_normals(keys: np.ndarray, salt: np.uint64, count: int) -> np.ndarray:
    """``count`` hashed standard normals per uint64 key (Box-Muller on pairs of hashed uniforms)."""
    u = hashed_uniforms(keys, salt, 2 * count)
    # 1 - u lies in (0, 1], so the log is finite.
    return np.sqrt(-2.0 * np.log1p(-u[:, 0::2])) * np.cos(2.0 * np.pi * u[:, 1::2])


def episode_normal(episode_ids: Tensor, draw: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Standard normals [B, *shape] that are a pure function of (episode id, draw, element).

    For learners that sample at evaluation: an episode's noise then does not depend on its
    position in the batch, the batch size or the other episodes, so evaluation stays
    reproducible and paired across learners.
    """
    keys = _mix(episode_ids.cpu().numpy().astype(np.uint64))
    z = hashed_normals(keys, np.uint64(draw), int(np.prod(shape)))
    return torch.from_numpy(z.reshape(len(keys), *shape)).to(device=like.device, dtype=like.dtype)
