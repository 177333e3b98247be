"""The plugin API: everything a learner, dataset or backbone plugin may import from fewshot-bench, and nothing else.

This package is the bottom layer of the harness (above only :mod:`fewshot_bench.errors`):
it imports no other part of fewshot-bench, and plugins import no other part of it (the
``import-linter`` contracts in ``.importlinter`` enforce both; docs/architecture.md).

* the contract: :class:`Learner`, :class:`LearnerConfig`, :class:`TaskSpec`,
  :class:`LossOutput`, :class:`Adaptation` (what ``Learner.adaptation`` reports), the
  batch types :class:`EpisodeBatch` (labelled) and :class:`PredictionBatch` (what
  ``predict`` sees), task kinds, and the search-space declarations ``Float``, ``Int``,
  ``Choice``;
* datasets: :class:`DatasetSpec` (what a dataset plugin registers), :class:`DataRequest`
  (what its loader is asked), :class:`FeatureDataset` of class-sorted :class:`FeatureSplit` s
  or generated :class:`EpisodeSource` s (with an :class:`EpisodeStream` sampler);
* backbones: :class:`Backbone` (what a backbone plugin's factory builds);
* the plugin hooks: :data:`hookimpl` and the typed ``register`` callbacks
  (:class:`RegisterLearner`, :class:`RegisterDataset`, :class:`RegisterBackbone`);
* test helpers: :func:`make_episode_batch`, :func:`make_prediction_batch` (seeded batches of
  any shape for a learner's unit tests);
* counter-based noise: :class:`Noise` (``Learner.noise``), which every random number a
  learner draws in meta-training comes from, and :func:`episode_normal` (evaluation noise)
  with the hashes behind it;
* shared batched math: linear logits and support-loss gradients of softmax classifiers,
  and the functional regression :class:`MLP`;
* the errors a plugin raises: :class:`ConfigError`, :class:`DataError`.
"""

from fewshot_bench.api.backbones import Backbone
from fewshot_bench.api.batches import EpisodeBatch, PredictionBatch
from fewshot_bench.api.datasets import DataRequest, DatasetSpec, FeatureDataset, FeatureSplit, l2_normalize
from fewshot_bench.api.episodes import EpisodeSource, EpisodeStream
from fewshot_bench.api.hooks import BackboneFactory, RegisterBackbone, RegisterDataset, RegisterLearner, hookimpl
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
from fewshot_bench.api.noise import episode_keys, episode_normal, hashed_normals, hashed_uniforms, mix64, query_order
from fewshot_bench.api.search_space import Choice, Float, Int
from fewshot_bench.api.tasks import CLASSIFICATION, REGRESSION, TaskKind, task_kind
from fewshot_bench.api.testing import make_episode_batch, make_prediction_batch
from fewshot_bench.api.training_noise import Noise, step_key
from fewshot_bench.errors import ConfigError, DataError, FewshotBenchError

__all__ = [
    "CLASSIFICATION",
    "LEARNER_NAME",
    "MLP",
    "PAPER_SIZES",
    "REGRESSION",
    "Adaptation",
    "Backbone",
    "BackboneFactory",
    "Choice",
    "ConfigError",
    "DataError",
    "DataRequest",
    "DatasetSpec",
    "EpisodeBatch",
    "EpisodeSource",
    "EpisodeStream",
    "FeatureDataset",
    "FeatureSplit",
    "FewshotBenchError",
    "Float",
    "Int",
    "Learner",
    "LearnerConfig",
    "LossOutput",
    "Noise",
    "PredictionBatch",
    "RegisterBackbone",
    "RegisterDataset",
    "RegisterLearner",
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
    "l2_normalize",
    "linear_logits",
    "make_episode_batch",
    "make_prediction_batch",
    "mix64",
    "mlp_for",
    "onehot_labels",
    "query_order",
    "step_key",
    "support_loss_grad",
    "support_mse",
    "support_points",
    "task_kind",
]
