"""The plugin API: everything a learner or dataset plugin may import from fewshot-bench, and nothing else.

This package is the bottom layer of the harness (above only :mod:`fewshot_bench.errors`):
it imports no other part of fewshot-bench, and plugins import no other part of it (the
``import-linter`` contracts in ``.importlinter`` enforce both; docs/architecture.md).

* the contract: :class:`Learner`, :class:`LearnerConfig`, :class:`TaskSpec`,
  :class:`LossOutput`, :class:`Adaptation` (what ``Learner.adaptation`` reports), the
  batch types :class:`EpisodeBatch` (labelled) and :class:`PredictionBatch` (what
  ``predict`` sees), task kinds, and the search-space declarations ``Float``, ``Int``,
  ``Choice``;
* the plugin hooks: :data:`hookimpl` and the ``register`` callbacks' hook specifications;
* counter-based noise: :class:`Noise` (``Learner.noise``), which every random number a
  learner draws in meta-training comes from, and :func:`episode_normal` (evaluation noise)
  with the hashes behind it;
* shared batched math: linear logits and support-loss gradients of softmax classifiers,
  and the functional regression :class:`MLP`;
* the errors a plugin raises: :class:`ConfigError`, :class:`DataError`.
"""

from fewshot_bench.api.batches import EpisodeBatch, PredictionBatch
from fewshot_bench.api.hooks import hookimpl
from fewshot_bench.api.learner import LEARNER_NAME, Adaptation, Learner, LearnerConfig, LossOutput, TaskSpec
from fewshot_bench.api.linear import flat, linear_logits, onehot_labels, support_loss_grad
from fewshot_bench.api.mlp import (
    MLP,
    PAPER_SIZES,
    gradient_steps,
    inner_gradient,
    mlp_for,
    support_mse,
    support_points,
)
from fewshot_bench.api.noise import episode_keys, episode_normal, hashed_normals, hashed_uniforms, mix64
from fewshot_bench.api.search_space import Choice, Float, Int
from fewshot_bench.api.tasks import CLASSIFICATION, REGRESSION, TaskKind, task_kind
from fewshot_bench.api.training_noise import Noise, step_key
from fewshot_bench.errors import ConfigError, DataError, FewshotBenchError

__all__ = [
    "CLASSIFICATION",
    "LEARNER_NAME",
    "MLP",
    "PAPER_SIZES",
    "REGRESSION",
    "Adaptation",
    "Choice",
    "ConfigError",
    "DataError",
    "EpisodeBatch",
    "FewshotBenchError",
    "Float",
    "Int",
    "Learner",
    "LearnerConfig",
    "LossOutput",
    "Noise",
    "PredictionBatch",
    "TaskKind",
    "TaskSpec",
    "episode_keys",
    "episode_normal",
    "flat",
    "gradient_steps",
    "hashed_normals",
    "hashed_uniforms",
    "hookimpl",
    "inner_gradient",
    "linear_logits",
    "mix64",
    "mlp_for",
    "onehot_labels",
    "step_key",
    "support_loss_grad",
    "support_mse",
    "support_points",
    "task_kind",
]
