"""Where episodes come from: the episode-source protocol of a dataset's splits and the seeded, counter-based
sampler of class-sorted feature splits.

Episode ``i`` of a split at seed ``r`` is a pure function of (split contents, N, K, Q, r,
stream, i): it is computed from a hash of those numbers, not from a stateful random
generator, so any episode can be produced on its own, in any order, in batches of any
size, on any machine, and every learner is evaluated on exactly the same test episodes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.api.noise import GOLDEN, episode_keys, mix64, query_order, uniform
from fewshot_bench.errors import DataError

# Example hashes per ``indices`` call above which its episodes are split over threads.
PARALLEL_MIN_HASHES = 1 << 18


class EpisodeStream(Protocol):
    """Seeded episodes by number: what :meth:`EpisodeSource.sampler` returns (:class:`EpisodeSampler` for a
    class-sorted split)."""

    def batch(
        self,
        start: int,
        size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        shuffle: bool = False,
    ) -> EpisodeBatch:
        """Episodes ``start .. start + size - 1`` as one labelled batch; ``shuffle``: queries in :func:`query_order`.

        Episode ``i`` must be a pure function of (seed, stream, i): the same whatever ``start``
        and ``size`` it is drawn with, so every learner is scored on the same episodes.
        """
        ...


class EpisodeSource(Protocol):
    """A split the harness can draw episodes from: class-sorted features or a generated task family.

    :class:`~fewshot_bench.api.FeatureSplit` is one (its sampler is :class:`EpisodeSampler`);
    a generated family (e.g. ``sines-lines``, regression) implements these four members
    itself, its ``sampler`` returning an :class:`EpisodeStream` whose ``batch(start, size,
    device, dtype, shuffle=False)`` with ``shuffle`` puts each episode's queries in
    :func:`~fewshot_bench.api.noise.query_order` (as ``EpisodeBatch.permute_queries`` does).
    """

    name: str

    @property
    def feature_dim(self) -> int:
        """Input dimension D."""
        ...

    def sampler(
        self, n_way: int, k_shot: int, n_query: int, seed: int, stream: str | None = None
    ) -> EpisodeStream:
        """The seeded N-way K-shot sampler with Q queries per class (per problem) of this split; ``stream`` (default:
        the split's name) keeps the streams of train, val and test apart."""
        ...

    def default_query(self, k_shot: int) -> int:
        """Queries per class (per problem) at evaluation."""
        ...


_CLASS_STREAM = np.uint64(0x5CA1AB1E)
_EXAMPLE_STREAM = np.uint64(0xE8A3B1E5)


class ClassSortedSplit(Protocol):
    """What :class:`EpisodeSampler` reads of a split: rows sorted by class
    (see :class:`~fewshot_bench.api.FeatureSplit`)."""

    name: str
    dataset: str
    features: Tensor  # [rows, D], class by class
    offsets: np.ndarray  # [C + 1]: class c is rows offsets[c]:offsets[c + 1]
    class_names: Sequence[str]

    @property
    def counts(self) -> np.ndarray:
        """Rows per class."""
        ...

    @property
    def content_digest(self) -> int:
        """A digest of the whole split that salts the evaluation's query order."""
        ...


class EpisodeSampler:
    """Seeded N-way, K-shot, Q-query episodes from one split of a feature dataset.

    Classes are drawn without replacement, then K + Q distinct examples per class without
    replacement; labels follow the order in which classes were drawn. Rows are gathered by
    index from the split's feature matrix, which is never copied as a whole.
    """

    def __init__(
        self,
        split: ClassSortedSplit,
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
            class_hash = mix64(keys[:, None] ^ mix64(np.arange(n_classes, dtype=np.uint64) + _CLASS_STREAM))
        classes = np.argsort(uniform(class_hash), axis=1, kind="stable")[:, : self.n_way]

        counts = self._counts[classes]  # [B, N]
        width = int(counts.max())
        j = np.arange(width, dtype=np.uint64)
        with np.errstate(over="ignore"):
            salt = mix64(classes.astype(np.uint64) * np.uint64(1 << 32) + _EXAMPLE_STREAM)
            example_hash = mix64((keys[:, None, None] ^ salt[..., None]) + j * GOLDEN)
        u = uniform(example_hash)
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
    def _episodes(ids: np.ndarray, classes: np.ndarray, support: Tensor, query: Tensor,
                  query_labels: Tensor) -> EpisodeBatch:
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
