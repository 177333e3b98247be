"""The noise a learner draws in meta-training: counter-based, a pure function of (seed, step, draw, element).

A learner draws every random number of its meta-training step (dropout masks, sampled
latents and weights) from its :class:`Noise`, ``self.noise``, never from torch's global
generator. Each value is a splitmix64 hash of (key, draw, element), computed with torch
int64 tensor operations:

* the **key** is an int64 tensor on the run's device, a hash of (seed, step) that the
  trainer sets in place at every step (:meth:`Noise.start`): no host synchronisation, and
  a step captured in a CUDA graph draws new noise at every replay;
* the **draw** is a Python counter that every call advances; it restarts at 0 with each
  step, so the same code path makes the same draws in every run;
* the **element** is the value's flat index within the draw: elements ``j`` come from
  hash ``j // 2`` (float32 and smaller: the hash's two 32-bit halves, in the order of its
  int32 view), ``j // 4`` (dropout: four 16-bit quarters) or ``j`` (float64), where hash
  ``i`` mixes ``(key ^ salt(draw)) + i * golden ratio`` (splitmix64's own counter sequence).

So a step's noise can be recomputed alone (resuming after a kill replays it exactly), and
S runs batched as one program draw what each would draw alone: either with a key of shape
``[S]`` and a leading member dimension on the tensors drawn like, or under
``torch.func.vmap`` with the batched key swapped in (:meth:`Noise.keyed`).

Integer arithmetic wraps (two's complement multiplication); the logical right shifts of
splitmix64 are arithmetic shifts masked to their low bits. :func:`mix64_` gives exactly the
bits of :func:`fewshot_bench.api.noise.mix64` on the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

_U64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """The int64 (two's complement) with the same 64 bits as ``value`` mod 2^64."""
    value &= _U64
    return value - (1 << 64) if value >= 1 << 63 else value


GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
# Stream constants: the training noise's keys and draws share no value with the numpy streams.
_KEY_STREAM = 0x7452_4149_4E4E_4F49  # "tRAINNOI"
_DRAW_STREAM = 0x4452_4157_5354_524D  # "DRAWSTRM"


def mix64_int(value: int) -> int:
    """splitmix64's finaliser on one Python int (as uint64); returns the signed int64 of the result."""
    x = value & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return _signed(x ^ (x >> 31))


def mix64_(x: Tensor, scratch: Tensor | None = None) -> Tensor:
    """splitmix64's finaliser in place on an int64 tensor (any shape, under vmap too); returns ``x``.

    ``scratch``, an int64 tensor shaped like ``x``, holds the shifted copies instead of a
    fresh tensor per round (not under vmap, whose batched tensors cannot be written ``out=``).
    """
    for shift, multiplier in ((30, _M1), (27, _M2), (31, None)):
        high = x >> shift if scratch is None else torch.bitwise_right_shift(x, shift, out=scratch)
        high &= (1 << (64 - shift)) - 1  # a logical shift: drop the copies of the sign bit
        x ^= high
        if multiplier is not None:
            x *= multiplier
    return x


def seed_base(seed: int) -> int:
    """The per-seed part of every key of run ``seed``."""
    return mix64_int(seed ^ _KEY_STREAM)


def step_key(seed: int, step: int) -> int:
    """The key (as int64) of meta-training step ``step`` of run ``seed``: what :meth:`Noise.start` puts in ``key``."""
    return mix64_int(seed_base(seed) + step * GOLDEN)


def draw_salt(draw: int) -> int:
    """The int64 that draw number ``draw`` of a step XORs into the key."""
    return mix64_int(draw ^ _DRAW_STREAM)


def value_bits(dtype: torch.dtype) -> int:
    """Random bits per uniform of ``dtype``: its significand (24 for float32, 53 for float64)."""
    return round(-math.log2(torch.finfo(dtype).eps)) + 1


def bits_to_uniform(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """Uniforms in [0, 1) of ``dtype`` from signed integers in [-2^(b-1), 2^(b-1)), b = :func:`value_bits`.

    ``bits * 2^-b + 1/2`` is exact in ``dtype``: never rounds up to 1.
    """
    return bits.to(dtype).mul_(2.0 ** -value_bits(dtype)).add_(0.5)


class Noise:
    """Where a learner's meta-training noise comes from: ``rand_like``, ``randn_like``, ``randn``, ``dropout``.

    Built by the trainer for the run's seed on the run's device and assigned to
    ``learner.noise``; every :class:`~fewshot_bench.api.Learner` starts with ``Noise()``
    (seed 0, step 0, on the CPU), so code that calls ``meta_loss`` outside the trainer
    draws reproducible noise too. ``seed`` may be a sequence of S seeds: the key then has
    shape ``[S]`` and every tensor drawn like has a leading member dimension of size S.
    """

    def __init__(self, seed: int | Sequence[int] = 0, device: torch.device | str | None = None) -> None:
        seeds = [seed_base(s) for s in seed] if isinstance(seed, Sequence) else seed_base(seed)
        self._base = torch.tensor(seeds, dtype=torch.int64, device=device)
        self.key = self._own_key = self._base.clone()
        self.draws = 0
        # (count, device) -> element counters, and the output and scratch buffers of hashes()
        self._buffers: dict[tuple[int, torch.device], tuple[Tensor, Tensor | None, Tensor | None]] = {}
        self.start(0)

    def start(self, step: int) -> None:
        """Key the noise for meta-training step ``step``, in place on the key's device; draws restart at 0."""
        mix64_(self.key.copy_(self._base).add_(_signed(step * GOLDEN)))
        self.draws = 0

    @contextmanager
    def keyed(self, key: Tensor) -> Iterator[Noise]:
        """Draw with ``key`` in place of :attr:`key` inside the block (e.g. a member's key under ``torch.func.vmap``).

        The draw counter runs on, so S members vmapped over the rows of a ``[S]`` key draw
        what each draws alone with its own key.
        """
        own, self.key = self.key, key
        try:
            yield self
        finally:
            self.key = own

    # --- drawing ------------------------------------------------------------------------------

    def hashes(self, count: int, device: torch.device) -> Tensor:
        """The next draw's ``count`` hashes per key: int64 ``[*key.shape, count]``; advances the draw counter.

        With the noise's own key the result is a buffer kept for the next draw of this size
        (allocating a few large temporaries per draw costs more than hashing on the CPU):
        use it before drawing again. With a key from :meth:`keyed` (e.g. vmapped) it is fresh.
        """
        key = self.key if self.key.device == device else self.key.to(device)
        base = (key ^ draw_salt(self.draws)).unsqueeze(-1)
        self.draws += 1
        cached = self._buffers.get((count, device))
        if cached is None:  # element j's counter j * GOLDEN, kept: the same every step
            counters = torch.arange(count, device=device).mul_(GOLDEN)
            cached = self._buffers[(count, device)] = (counters, None, None)
        counters, out, scratch = cached
        if self.key is not self._own_key:
            return mix64_(counters + base)
        if out is None or out.shape[:-1] != key.shape:
            out, scratch = (counters.new_empty((*key.shape, count)) for _ in range(2))
            self._buffers[(count, device)] = (counters, out, scratch)
        return mix64_(torch.add(counters, base, out=out), scratch)

    def _members(self, x: Tensor) -> int:
        """The number of values per member of a tensor like ``x`` (after the key's leading member dims)."""
        lead = self.key.dim()
        if tuple(x.shape[:lead]) != tuple(self.key.shape):
            raise ValueError(f"a tensor of shape {tuple(x.shape)} has no leading member dims {tuple(self.key.shape)}")
        return math.prod(x.shape[lead:])

    @staticmethod
    def _like(x: Tensor, values: Tensor, n: int) -> Tensor:
        """``values`` [*members, >= n] cut to n per member and shaped like ``x``."""
        return (values if values.shape[-1] == n else values[..., :n]).reshape(x.shape)

    def _uniform_bits(self, count: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """At least ``count`` signed integers of :func:`value_bits` bits per member, for uniforms of ``dtype``.

        One value per hash for float64; two for smaller types: the hash's two 32-bit halves
        (its int32 view), each as well mixed as the whole.
        """
        if value_bits(dtype) > 32:
            return self.hashes(count, device) >> (64 - value_bits(dtype))
        return self.hashes((count + 1) // 2, device).view(torch.int32) >> (32 - value_bits(dtype))

    def rand_like(self, x: Tensor) -> Tensor:
        """Uniforms in [0, 1) shaped like ``x`` (its dtype and device), with :func:`value_bits` random bits each."""
        n = self._members(x)
        return self._like(x, bits_to_uniform(self._uniform_bits(n, x.dtype, x.device), x.dtype), n)

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normals shaped like ``x``: ``sqrt(2) erfinv(v)``, v uniform on the centres of 2^b cells of (-1, 1).

        The inverse of the normal CDF, one value per uniform (float16 and bfloat16 are drawn
        in float32 and rounded). ``v = (2 k + 1) 2^-b`` is exact, never -1 or 1.
        """
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        n, b = self._members(x), value_bits(dtype)
        centred = self._uniform_bits(n, dtype, x.device).to(dtype).mul_(2.0 ** (1 - b)).add_(2.0**-b)
        return self._like(x, centred.erfinv_().mul_(math.sqrt(2.0)), n).to(x.dtype)

    def randn(self, shape: Sequence[int], like: Tensor) -> Tensor:
        """Standard normals of ``shape`` (after the key's member dims) with ``like``'s dtype and device."""
        return self.randn_like(like.new_empty((*self.key.shape, *shape)))

    def dropout(self, x: Tensor, rate: float) -> Tensor:
        """``x`` with each element kept with probability ``1 - rate`` and scaled by ``1 / (1 - rate)``.

        The distribution of ``torch.nn.functional.dropout`` up to the keep probability's
        rounding to a multiple of 2^-16 (an error below 2^-17).
        Each hash's four 16-bit quarters (its int16 view) decide four elements: a quarter of
        the hashing of one value per hash, and dropout is most of a LEO step's noise.
        Differentiable in ``x``.
        """
        if rate == 0.0:
            return x
        n = self._members(x)
        quarters = self.hashes((n + 3) // 4, x.device).view(torch.int16)
        keep = quarters >= round(rate * 2**16) - 2**15  # a signed 16-bit uniform at or above the rate
        return x * self._like(x, keep, n).to(x.dtype).mul_(1.0 / (1.0 - rate))
