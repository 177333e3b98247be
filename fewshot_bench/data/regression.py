"""The ``sines-lines`` task family: 1-D few-shot regression with noisy targets (LEO paper §4.1, appendix A.1).

Following Finn et al. (2018) as the LEO paper describes it: inputs ``x ~ U[-5, 5]``; half
of the problems are sinusoids ``A sin(x - phi)`` with ``A ~ U[0.1, 5]``, ``phi ~ U[0, pi]``,
half are lines ``a x + b`` with ``a, b ~ U[-3, 3]``; Gaussian noise with standard deviation
0.3 is added to every target (support and query). 5-shot by default.

There are no stored rows: a split *generates* its episodes. Like the class-sorted
:class:`~fewshot_bench.episodes.EpisodeSampler`, episode ``i`` at seed ``r`` is a pure
function of (r, stream, i) computed from splitmix64 hashes, so episodes can be drawn alone,
in any order and batch size, and every learner sees the same test problems. Point ``j`` of
an episode (its input and its noise) does not depend on how many points are drawn, so the
K support points are the same whatever Q is. The train/val/test splits are the same
distribution drawn from independent streams.

An episode is one function ("N = 1 way"): ``support`` ``[B, 1, K, 1]`` inputs with float
targets in ``support_labels`` ``[B, 1, K, 1]``; the Q query points ``query`` ``[B, Q, 1]`` with
targets ``query_labels`` ``[B, Q, 1]``; ``classes`` ``[B, 1]`` holds the problem's mode (0 = sine,
1 = line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.api.hooks import RegisterDataset, hookimpl
from fewshot_bench.api.noise import episode_keys, hashed_normals, hashed_uniforms, query_order
from fewshot_bench.data.base import DataRequest, DatasetSpec, FeatureDataset
from fewshot_bench.data.identity import generated_digest
from fewshot_bench.errors import DataError

NAME = "sines-lines"
SINE, LINE = 0, 1
MODES = ("sine", "line")
X_RANGE = (-5.0, 5.0)
AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
LINE_RANGE = (-3.0, 3.0)
NOISE_STD = 0.3
DEFAULT_SHOT = 5
# Query points per test/validation problem: enough for a low-variance MSE per episode.
EVAL_QUERY = 100

# Salts of the independent per-episode hash streams.
_TASK_SALT = np.uint64(0x7A5C0DE5)
_X_SALT = np.uint64(0x1B873593)
_NOISE_SALT = np.uint64(0xCC9E2D51)


@dataclass(frozen=True)
class Problems:
    """The drawn functions of a batch of episodes: mode [B] (0 sine, 1 line) and two parameters [B].

    For a sine ``p1`` is the amplitude and ``p2`` the phase; for a line the slope and the intercept.
    """

    mode: np.ndarray
    p1: np.ndarray
    p2: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Noise-free targets ``[B, M]`` at inputs ``x`` [B, M] (or [M], shared by all episodes)."""
        x = np.broadcast_to(x, (len(self.mode), np.shape(x)[-1]))
        sine = self.p1[:, None] * np.sin(x - self.p2[:, None])
        line = self.p1[:, None] * x + self.p2[:, None]
        return np.where(self.mode[:, None] == SINE, sine, line)


def _between(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    return lo + (hi - lo) * u


class SinesLinesSampler:
    """Seeded sines-and-lines problems with the ``batch(start, size, device, dtype)`` interface of EpisodeSampler."""

    def __init__(self, k_shot: int, n_query: int, seed: int, stream: str, n_way: int = 1) -> None:
        if n_way != 1:
            raise DataError(f"{NAME} episodes hold one function each (N = 1), got N = {n_way}; pass --way 1")
        if k_shot < 1 or n_query < 1:
            raise DataError(f"K and Q must be at least 1 (got K={k_shot}, Q={n_query})")
        self.n_way, self.k_shot, self.n_query, self.seed, self.stream = 1, k_shot, n_query, seed, stream

    def problems(self, episode_ids: np.ndarray) -> Problems:
        """The functions of the given episodes."""
        u = hashed_uniforms(episode_keys(self.seed, self.stream, episode_ids), _TASK_SALT, 3)
        mode = np.where(u[:, 0] < 0.5, SINE, LINE)
        p1 = np.where(mode == SINE, _between(u[:, 1], AMPLITUDE), _between(u[:, 1], LINE_RANGE))
        p2 = np.where(mode == SINE, _between(u[:, 2], PHASE), _between(u[:, 2], LINE_RANGE))
        return Problems(mode, p1, p2)

    def points(self, episode_ids: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``[B, count]`` and noisy targets ``[B, count]`` of the first ``count`` points of each episode."""
        keys = episode_keys(self.seed, self.stream, episode_ids)
        x = _between(hashed_uniforms(keys, _X_SALT, count), X_RANGE)
        return x, self.problems(episode_ids)(x) + NOISE_STD * hashed_normals(keys, _NOISE_SALT, count)

    def batch(
        self,
        start: int,
        size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        shuffle: bool = False,
    ) -> EpisodeBatch:
        """Episodes ``start .. start + size - 1`` as one :class:`EpisodeBatch` (N = 1, D = 1).

        ``shuffle``: each episode's query points in :func:`~fewshot_bench.api.noise.query_order`.
        """
        ids = np.arange(start, start + size, dtype=np.int64)
        x, y = self.points(ids, self.k_shot + self.n_query)
        as_tensor = lambda a: torch.from_numpy(a).to(device=device, dtype=dtype or torch.float32)  # noqa: E731
        x, y = as_tensor(x), as_tensor(y)
        k = self.k_shot
        batch = EpisodeBatch(
            support=x[:, None, :k, None],
            query=x[:, k:, None],
            support_labels=y[:, None, :k, None],
            query_labels=y[:, k:, None],
            classes=torch.from_numpy(self.problems(ids).mode).view(size, 1),
            episode_ids=torch.from_numpy(ids),
        )
        if not shuffle:
            return batch
        # Unsalted: a problem's query points are i.i.d., so their order carries no information.
        return batch.permute_queries(torch.from_numpy(query_order(self.seed, self.stream, ids, self.n_query)))


@dataclass
class SinesLinesSplit:
    """One split of the family: no rows, a stream of generated problems (an episode source)."""

    name: str
    dataset: str = NAME
    feature_dim: int = 1

    def sampler(self, n_way: int, k_shot: int, n_query: int, seed: int, stream: str | None = None) -> SinesLinesSampler:
        """The seeded sampler of this split's problems."""
        return SinesLinesSampler(k_shot, n_query, seed, stream or self.name, n_way=n_way)

    def default_query(self, k_shot: int) -> int:
        """Query points per evaluation problem."""
        return EVAL_QUERY


def generate() -> FeatureDataset:
    """The sines-and-lines family with train, val and test streams."""
    splits = {name: SinesLinesSplit(name) for name in ("train", "val", "test")}
    info = {"x_range": X_RANGE, "amplitude": AMPLITUDE, "phase": PHASE, "line": LINE_RANGE, "noise_std": NOISE_STD}
    return FeatureDataset(NAME, splits, kind="regression", info=info)


def load(request: DataRequest) -> FeatureDataset:
    """Loader for the registry: nothing to read from disk."""
    return generate()


# The generator's version: bump it when the episodes drawn would change (runs on the old ones are not reused).
GENERATOR = 1


def identify(request: DataRequest) -> dict[str, str]:
    """Each split's digest: of the task family's definition (its episodes follow from it and the seed)."""
    definition = {"generator": GENERATOR, **generate().info, "eval_query": EVAL_QUERY}
    return {split: generated_digest(NAME, split, **definition) for split in ("train", "val", "test")}


def fit_lines(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares lines through each row of (x, y) [B, M]: (coefficients [B, 2], RMS residual [B])."""
    return _least_squares(np.stack([x, np.ones_like(x)], axis=-1), y)


def fit_sines(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares unit-frequency sinusoids ``a sin x + b cos x`` through each row: (coefficients, RMS residual)."""
    return _least_squares(np.stack([np.sin(x), np.cos(x)], axis=-1), y)


def _least_squares(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gram = np.einsum("bmi,bmj->bij", design, design) + 1e-9 * np.eye(design.shape[-1])
    rhs = np.einsum("bmi,bm->bi", design, y)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    resid = y - np.einsum("bmi,bi->bm", design, coef)
    return coef, np.sqrt((resid**2).mean(-1))


def ambiguous(x: np.ndarray, y: np.ndarray, tolerance: float = 1.5 * NOISE_STD) -> np.ndarray:
    """Which problems' points ``[B, K]`` both a clearly sloped line and a clearly non-flat sinusoid fit within
    ``tolerance`` RMS: [B] bool.

    Nearly flat data (a small sine, a level line) fits both trivially and is left out.
    """
    line, line_rms = fit_lines(x, y)
    sine, sine_rms = fit_sines(x, y)
    shaped = (np.abs(line[:, 0]) >= 0.3) & (np.linalg.norm(sine, axis=1) >= 1.0)
    return shaped & (line_rms <= tolerance) & (sine_rms <= tolerance)


@hookimpl
def fewshot_bench_register_datasets(register: RegisterDataset) -> None:
    """Register ``sines-lines`` (a regression task family)."""
    register(
        DatasetSpec(
            name=NAME,
            load=load,
            identify=identify,
            description="5-shot 1-D regression: noisy sines and lines (LEO paper §4.1), generated per episode",
            aliases=("sines", "sinusoid-lines"),
            kind="regression",
            default_shot=DEFAULT_SHOT,
        )
    )
