"""What the conformance checks share: options, one small embedded problem per task kind, fresh learners.

Classification is checked on the embedded ``synthetic`` features (5-way, K = 1 and 5),
regression on the generated ``sines-lines`` functions (K = 5); both need no files, so the
checks run anywhere in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from fewshot_bench.api.batches import EpisodeBatch, PredictionBatch
from fewshot_bench.api.learner import Learner, TaskSpec
from fewshot_bench.data.base import DataRequest, FeatureDataset
from fewshot_bench.errors import ConfigError
from fewshot_bench.plugin_host import PluginHost, load_plugins
from fewshot_bench.protocol.runner import build_learner

BUDGET_ENV = "FEWSHOT_BENCH_CHECK_BUDGET"
# The built-ins a learner's speed is compared with: LEO (latent inner loop) and Meta-SGD (a linear one).
REFERENCES = ("leo", "metasgd")
DEFAULT_CPU_BUDGET_S = 120.0


def _env_budget() -> float:
    """The CPU budget from ``FEWSHOT_BENCH_CHECK_BUDGET`` (seconds), or the default."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_CPU_BUDGET_S
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{BUDGET_ENV}={text!r} is not a number of seconds; set it to e.g. 120") from None
    if value <= 0:
        raise ConfigError(f"{BUDGET_ENV} must be positive, got {text}")
    return value


def chance_logits(batch: PredictionBatch) -> Tensor:
    """Equal logits for every class, [B, M, N]: argmax picks class 0, right for exactly 1/N of the queries."""
    return batch.query.new_zeros(batch.batch_size, batch.n_queries, batch.n_way)


def support_mean(batch: PredictionBatch) -> Tensor:
    """Every query predicted as the mean of its episode's support targets, [B, M, 1]."""
    mean = batch.support_labels.reshape(batch.batch_size, 1, -1).mean(dim=2, keepdim=True)
    return mean.expand(-1, batch.n_queries, -1)


@dataclass(frozen=True)
class KindSetting:
    """How the checks pose one task kind: an embedded dataset, N, the shots, Q and a trivial predictor."""

    kind: str
    dataset: str
    n_way: int
    shots: tuple[int, ...]
    train_shot: int
    n_query: int
    score_query: int
    # What a learner that learned nothing predicts; the meta-training check must beat it.
    trivial: Callable[[PredictionBatch], Tensor]


KIND_SETTINGS: dict[str, KindSetting] = {
    "classification": KindSetting("classification", "synthetic", 5, (1, 5), 1, 3, 15, chance_logits),
    "regression": KindSetting("regression", "sines-lines", 1, (5,), 5, 10, 100, support_mean),
}


@dataclass
class CheckOptions:
    """Sizes, seeds and limits of the conformance checks (small, so every check takes seconds)."""

    batch_episodes: int = 4
    seed: int = 0
    # Meta-training check: steps of the harness's outer loop on meta-batches of train_batch
    # episodes (None: the learner's meta_batch_size), then test episodes to score it.
    train_steps: int = 30
    train_batch: int | None = 4
    score_episodes: int = 200
    # CPU-budget check: this workload must finish within cpu_budget_s seconds.
    budget_steps: int = 5
    budget_episodes: int = 100
    cpu_budget_s: float = field(default_factory=_env_budget)
    # ... whose evaluation is compared with these installed learners' (the built-ins).
    speed_references: tuple[str, ...] = REFERENCES
    # Two predictions agree when max |a - b| <= rtol * max(1, max |a|).
    rtol: float = 1e-4
    host: PluginHost | None = None

    def plugin_host(self) -> PluginHost:
        """The installed plugins (loaded on first use and kept)."""
        if self.host is None:
            self.host = load_plugins()
        return self.host


_defaults: CheckOptions | None = None


def default_options() -> CheckOptions:
    """The options a check uses when given none (the pytest plugin sets them from its flags)."""
    return replace(_defaults) if _defaults is not None else CheckOptions()


def set_default_options(options: CheckOptions | None) -> None:
    """Make ``options`` the default of every check (``None`` restores the built-in defaults)."""
    global _defaults
    _defaults = options


_datasets: dict[str, FeatureDataset] = {}


def dataset(options: CheckOptions, setting: KindSetting) -> FeatureDataset:
    """The setting's embedded dataset, loaded once per process through the plugin registry."""
    if setting.dataset not in _datasets:
        _datasets[setting.dataset] = options.plugin_host().dataset(setting.dataset).load(DataRequest())
    return _datasets[setting.dataset]


def make_learner(
    cls: type[Learner], options: CheckOptions, setting: KindSetting, k_shot: int, seed: int | None = None, **changes
) -> Learner:
    """A fresh learner for the setting's kind with its defaults (and config ``changes``), built right after
    ``torch.manual_seed``."""
    config = replace(cls.for_kind(setting.kind).default_config(setting.dataset, k_shot), **changes)
    task = TaskSpec(setting.n_way, k_shot, dataset(options, setting).feature_dim, setting.kind, setting.dataset)
    torch.manual_seed(options.seed if seed is None else seed)
    return build_learner(cls, config, task, torch.device("cpu"))


def episodes(
    options: CheckOptions,
    setting: KindSetting,
    k_shot: int,
    learner: Learner,
    size: int | None = None,
    split: str = "test",
) -> EpisodeBatch:
    """``size`` seeded episodes of one split of the setting's dataset, in the learner's dtype, queries shuffled
    as at evaluation."""
    source = dataset(options, setting).split(split)
    sampler = source.sampler(setting.n_way, k_shot, setting.n_query, options.seed, stream="checks")
    return sampler.batch(0, size or options.batch_episodes, dtype=learner.dtype, shuffle=True)


def concat(batches: list[EpisodeBatch]) -> EpisodeBatch:
    """One batch holding the episodes of ``batches`` in order."""

    def cat(name: str) -> Tensor | None:
        parts = [getattr(b, name) for b in batches]
        return None if any(p is None for p in parts) else torch.cat(parts)

    return EpisodeBatch(**{f.name: cat(f.name) for f in fields(EpisodeBatch)})


def max_diff(a: Tensor, b: Tensor) -> float:
    """Largest absolute difference between two predictions (infinite when the shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def close(a: Tensor, b: Tensor, rtol: float) -> bool:
    """Whether two predictions agree up to float rounding, relative to their scale."""
    scale = max(1.0, float(a.detach().abs().max())) if a.numel() else 1.0
    return max_diff(a, b) <= rtol * scale
