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
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from fewshot_bench.errors import DataError

if TYPE_CHECKING:
    from fewshot_bench.data.base import FeatureSplit

TRAIN_QUERY = 15  # queries per class during meta-training (paper, reference code)
# Example hashes per ``indices`` call above which its episodes are split over threads.
PARALLEL_MIN_HASHES = 1 << 18


@dataclass
class EpisodeBatch:
    """A batch of B episodes: ``support`` [B, N, K, D], ``query`` [B, N, Q, D] and their labels.

    Classification: labels are the class's position in the draw order (0..N-1), so
    ``support_labels[b, n]`` and ``query_labels[b, n]`` are all ``n``; ``classes`` [B, N]
    are the split's class ids.

    Regression (see :mod:`fewshot_bench.tasks`): each episode is one function, N = 1;
    ``support`` [B, 1, K, D] holds the inputs and ``support_labels`` [B, 1, K, 1] the float
    targets (the same for the query); ``classes`` [B, 1] may name the problem's family.
    """

    support: Tensor
    query: Tensor
    support_labels: Tensor
    query_labels: Tensor
    classes: Tensor | None = None
    episode_ids: Tensor | None = None

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
    def n_query(self) -> int:
        """Query examples per class Q."""
        return self.query.shape[2]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EpisodeBatch:
        """This batch with features moved to ``device`` and cast to ``dtype``."""
        return replace(
            self,
            support=self.support.to(device=device, dtype=dtype),
            query=self.query.to(device=device, dtype=dtype),
            support_labels=self._labels_to(self.support_labels, device, dtype),
            query_labels=self._labels_to(self.query_labels, device, dtype),
        )

    @staticmethod
    def _labels_to(labels: Tensor, device: torch.device | str | None, dtype: torch.dtype | None) -> Tensor:
        # Class labels stay integers; regression targets follow the features' dtype.
        return labels.to(device=device, dtype=dtype if labels.is_floating_point() else None)

    def select(self, index: Tensor | slice) -> EpisodeBatch:
        """The sub-batch of the episodes at ``index`` (a slice or index tensor)."""
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index]

        return EpisodeBatch(
            support=self.support[index],
            query=self.query[index],
            support_labels=self.support_labels[index],
            query_labels=self.query_labels[index],
            classes=pick(self.classes),
            episode_ids=pick(self.episode_ids),
        )


class EpisodeSource(Protocol):
    """A split the harness can draw episodes from: class-sorted features or a generated task family.

    :class:`~fewshot_bench.data.base.FeatureSplit` returns an :class:`EpisodeSampler`; a
    generated family (e.g. ``sines-lines``) returns its own sampler with the same
    ``batch(start, size, device, dtype)`` method.
    """

    name: str

    @property
    def feature_dim(self) -> int:
        """Input dimension D."""

    def sampler(self, n_way: int, k_shot: int, n_query: int, seed: int, stream: str | None = None) -> Any:
        """A seeded sampler whose ``batch(start, size, device, dtype)`` returns episodes ``start ..``."""

    def default_query(self, k_shot: int) -> int:
        """Queries per class (per problem) at evaluation."""


# --- counter-based hashing (splitmix64) ----------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CLASS_STREAM = np.uint64(0x5CA1AB1E)
_EXAMPLE_STREAM = np.uint64(0xE8A3B1E5)


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
    ) -> EpisodeBatch:
        """Episodes ``start .. start + size - 1`` as one :class:`EpisodeBatch`."""
        ids = np.arange(start, start + size, dtype=np.int64)
        classes, rows = self.indices(ids)
        k = self.k_shot
        # Support and query are gathered apart, so each is contiguous: learners flatten them without a copy.
        support, query = self._gather(rows[..., :k], device, dtype), self._gather(rows[..., k:], device, dtype)
        return self._episodes(ids, classes, support, query)

    def _gather(self, rows: np.ndarray, device: torch.device | str | None, dtype: torch.dtype | None) -> Tensor:
        """The features of split rows ``rows`` [..., M] as one contiguous [..., M, D] tensor on ``device``."""
        feats = self.split.features
        index = torch.from_numpy(np.ascontiguousarray(rows).reshape(-1)).to(feats.device)
        return feats.index_select(0, index).view(*rows.shape, feats.shape[1]).to(device=device, dtype=dtype)

    @staticmethod
    def _episodes(ids: np.ndarray, classes: np.ndarray, support: Tensor, query: Tensor) -> EpisodeBatch:
        """An EpisodeBatch of gathered features, labelled by class position."""
        b, n = classes.shape
        labels = torch.arange(n, device=support.device).view(1, n, 1)
        return EpisodeBatch(
            support=support,
            query=query,
            support_labels=labels.expand(b, n, support.shape[2]),
            query_labels=labels.expand(b, n, query.shape[2]),
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

        The batch is :meth:`batch`'s with an empty query (``[B, N, 0, D]``); ``rows``
        ``[B, N, K + Q]`` are the split rows of each (episode, class slot), so ``rows[b, n, K:]``
        are the queries :meth:`batch` would gather. For evaluators that score queries straight
        from the class-sorted split instead of copying them per episode.
        """
        ids = np.arange(start, start + size, dtype=np.int64)
        classes, rows = self.indices(ids)
        support = self._gather(rows[..., : self.k_shot], device, dtype)
        return self._episodes(ids, classes, support, support[:, :, :0]), rows


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
