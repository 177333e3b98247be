"""Counter-based randomness: hashes, uniforms and normals that are pure functions of their keys.

Everything random in the protocol (which episodes, which examples, the query order, the
noise a learner draws at evaluation) is computed from a splitmix64 hash of integers such
as (seed, stream, episode id), never from a stateful generator: any part can be recomputed
on its own, in any order and batch size, on any machine.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor

# --- counter-based hashing (splitmix64) ----------------------------------------------------

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_QUERY_ORDER_STREAM = np.uint64(0x0DE5C0DE)


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective, well-mixed hash of uint64 arrays."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def uniform(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to float64 uniforms in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def episode_keys(seed: int, stream: str, episode_ids: np.ndarray) -> np.ndarray:
    """One uint64 key per episode: a pure function of (seed, stream, episode id)."""
    with np.errstate(over="ignore"):
        base = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) + np.uint64(zlib.crc32(stream.encode())))
        ids = np.asarray(episode_ids, dtype=np.uint64)
        return mix64(mix64(base + ids * GOLDEN))


def query_order(seed: int, stream: str, episode_ids: np.ndarray, n_queries: int, salt: int = 0) -> np.ndarray:
    """Each episode's query order at evaluation: a permutation [B, M] of its M queries.

    A pure function of (seed, stream, episode id, ``salt``), the same for every learner; it
    mixes the classes, so a query's position says nothing about its label. Class-sorted
    splits salt it with their :attr:`~fewshot_bench.data.base.FeatureSplit.content_digest`,
    which no learner can compute, so the order cannot be rebuilt from the episode ids that
    ``predict`` receives (tests/plugin_fixtures/cheats: ``order-breaker``).
    """
    with np.errstate(over="ignore"):
        salted = _QUERY_ORDER_STREAM ^ mix64(np.array([salt & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    u = hashed_uniforms(episode_keys(seed, stream, episode_ids), salted, n_queries)
    return np.argsort(u, axis=1, kind="stable")




def hashed_uniforms(keys: np.ndarray, salt: np.uint64, count: int) -> np.ndarray:
    """``count`` hashed uniforms in [0, 1) per uint64 key: ``[B, count]``, entry j independent of ``count``."""
    j = np.arange(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return uniform(mix64((keys[:, None] ^ mix64(np.array([salt], dtype=np.uint64))) + j * GOLDEN))


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
    keys = mix64(episode_ids.cpu().numpy().astype(np.uint64))
    z = hashed_normals(keys, np.uint64(draw), int(np.prod(shape)))
    return torch.from_numpy(z.reshape(len(keys), *shape)).to(device=like.device, dtype=like.dtype)
