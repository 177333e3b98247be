"""The Learner contract: what a meta-learning method implements to run in the harness."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fewshot_bench.api.batches import EpisodeBatch, PredictionBatch
from fewshot_bench.api.training_noise import Noise
from fewshot_bench.errors import ConfigError

LEARNER_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class TaskSpec:
    """The shape of the problems a learner instance is built for."""

    n_way: int
    k_shot: int
    feature_dim: int
    kind: str = "classification"
    dataset: str = "synthetic"


@dataclass
class LearnerConfig:
    """Hyperparameters the harness's outer loop reads; learner configs extend this dataclass."""

    outer_lr: float = 1e-3
    meta_batch_size: int = 12
    # Per-tensor meta-gradient clipping, first by value then by norm (None disables either).
    grad_clip_value: float | None = None
    grad_clip_norm: float | None = None
    dtype: str = "float32"


@dataclass
class LossOutput:
    """A learner's meta-training objective for one meta-batch.

    ``loss`` is the scalar to minimise; ``metrics`` are detached scalars for logging
    (e.g. the query loss, the KL term, training accuracy).
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Adaptation:
    """What a learner's inner loop did to a batch of episodes: returned by :meth:`Learner.adaptation`.

    Parameters carry a leading batch dimension B (one row per episode): for a linear softmax
    classifier (LEO, Meta-SGD, MAML without hidden layers) the class weights ``[B, N, D]``,
    N classes by D features; for other models a flat vector ``[B, P]``. The latent fields
    are for learners that adapt a latent code and decode parameters from it (LEO); others
    leave them ``None``.
    """

    initial: Tensor  # parameters before adaptation (the learned initialisation; LEO: decoded from latent_initial)
    adapted: Tensor  # parameters after every inner step: the ones ``predict`` uses
    latent_initial: Tensor | None = None  # [B, N, C, Z] latent codes before adaptation, C codes per class
    latent_adapted: Tensor | None = None  # [B, N, C, Z] latent codes after the latent steps
    decoded: Tensor | None = None  # [B, N, D] decoded from latent_adapted, before fine-tuning in parameter space
    decoder: Tensor | None = None  # [Z, D] the linear map from a class's latent code to its (mean) weights: z @ decoder


class Learner(nn.Module):
    """Base class of every learner: the math of one method over whole batches of episodes.

    The harness owns the protocol (sampling, the outer Adam loop, clipping, validation,
    evaluation, statistics); a learner only maps a labelled :class:`EpisodeBatch` to a
    meta-loss and an unlabelled :class:`PredictionBatch` (supports with labels, each
    episode's queries as an unordered set) to query predictions. Both take a leading batch
    dimension: compute all episodes of a batch in one tensor program, never in a Python
    loop over episodes.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = LearnerConfig
    # False for learners with nothing to meta-train (nearest centroid, logistic regression).
    meta_trainable: ClassVar[bool] = True
    # Task kinds this learner can solve (see fewshot_bench.api.tasks).
    kinds: ClassVar[tuple[str, ...]] = ("classification",)
    # Kinds this learner solves with another class ({kind: Learner subclass}): one registered
    # name, one model per kind (e.g. LEO's classifier generator and its regression MLP generator).
    implementations: ClassVar[dict[str, type]] = {}
    # (dataset, k_shot) pairs for which default_config has tuned values, for docs and checks.
    tuned_settings: ClassVar[tuple[tuple[str, int], ...]] = ()
    # Named sets of defaults (--hparams NAME) that default_config accepts as ``preset``, the
    # default first (e.g. LEO: ("paper", "reference")); empty: one set of defaults. The harness
    # passes ``preset`` only to learners that declare presets; `learners NAME` lists them.
    presets: ClassVar[tuple[str, ...]] = ()
    # True: a query's prediction may depend on the episode's other queries (transductive
    # inference); the `inductive` check then passes and tables mark the learner's rows.
    transductive: ClassVar[bool] = False
    # The hyperparameters `fewshot-bench tune` searches: {Config field: Float/Int/Choice range}
    # (fewshot_bench.api.search_space); empty: nothing to tune unless the user passes --space.
    search_space: ClassVar[dict[str, Any]] = {}
    # The LEO paper's figures (`fewshot-bench figure N`) drawn by default from this learner's stored runs of the
    # figure's task kind (3: sampled regression models; 4: latents before and after adaptation, read through
    # `adaptation`; 5: curvature and coverage beside a baseline's); declared by the class of that kind.
    figures: ClassVar[tuple[int, ...]] = ()
    # Figure 5: the learner whose run of the same setting, seed and protocol this learner's run is compared with.
    figure_baseline: ClassVar[str | None] = None

    def __init__(self, config: Any, task: TaskSpec) -> None:
        super().__init__()
        self.config = config
        self.task = task
        # Every random number meta_loss draws comes from here (fewshot_bench.api.training_noise),
        # never from torch's global generator: the trainer assigns the run's Noise and keys it
        # per step; this default (seed 0, step 0) serves calls outside the trainer.
        self.noise = Noise()

    @classmethod
    def for_kind(cls, kind: str) -> type[Learner]:
        """The class that implements this learner for task kind ``kind``: ``cls`` unless ``implementations`` names
        another."""
        return cls.implementations.get(kind, cls)

    @classmethod
    def default_config(cls, dataset: str, k_shot: int, preset: str | None = None) -> Any:
        """The learner's default hyperparameters for a dataset and shot (paper values where known).

        ``preset`` is one of :attr:`presets`, or ``None`` for the default one (the first). A
        learner with presets overrides this method and refuses an unknown name with a one-line
        :class:`~fewshot_bench.errors.ConfigError` naming the accepted ones (:meth:`check_preset`).
        """
        cls.check_preset(preset)
        return cls.Config()

    @classmethod
    def check_preset(cls, preset: str | None) -> str | None:
        """The preset to use: ``preset`` if declared in :attr:`presets`, the first for ``None``; else a ConfigError."""
        if preset is None:
            return cls.presets[0] if cls.presets else None
        if preset not in cls.presets:
            accepted = f"use --hparams {' or '.join(cls.presets)}" if cls.presets else "it has none"
            raise ConfigError(f"unknown hyperparameter preset {preset!r} for learner {cls.name!r}; {accepted}")
        return preset

    def meta_loss(self, batch: EpisodeBatch) -> LossOutput:
        """The meta-training objective on a batch of episodes (called in training mode)."""
        raise NotImplementedError(f"learner {self.name!r} has no meta-training objective")

    def predict(self, batch: PredictionBatch) -> Tensor:
        """Predictions for each episode's queries: logits ``[B, M, N]`` (classification), outputs ``[B, M, 1]``
        (regression).

        ``batch.query`` [B, M, D] is an unordered set: no labels, no class order. Prediction
        ``[b, m]`` must follow query ``m`` if the queries are permuted (the ``query-order``
        check) and, unless the learner declares ``transductive = True``, depend on no other
        query (the ``inductive`` check).
        """
        raise NotImplementedError

    def linear_readout(self, batch: PredictionBatch) -> tuple[Tensor, Tensor | None] | None:
        """Optional: per-episode classifier weights ``[B, N, D]`` and bias ``[B, N]`` (or None) behind ``predict``.

        A learner whose evaluation-mode logits are a linear readout of each query's features,
        ``predict(batch)[b, m] == batch.query[b, m] @ w[b].T (+ bias[b])``, may return
        ``(w, bias)`` computed from each episode's support set alone (``batch.query`` may hold
        zero queries); :func:`fewshot_bench.protocol.evaluate.evaluate` then scores every query straight
        from the class-sorted split instead of gathering them per episode. The logits may
        differ from ``predict``'s by a per-query constant (same argmax), since only argmax
        predictions are scored. Evaluation checks the readout against ``predict`` on a sample
        of episodes and refuses to store a number when they disagree (the ``readout`` check
        tests the same before a run). ``None`` (the default; return it before doing any
        work): not a linear readout, evaluation calls ``predict``. Plugin authors may ignore
        this hook; a subclass that overrides ``predict`` must override it too, or evaluation
        ignores the inherited readout.
        """
        return None

    def adaptation(self, batch: PredictionBatch) -> Adaptation | None:
        """Optional: the parameters (and latent codes) before and after the inner loop on each support set.

        For figures and analyses of a trained learner (``fewshot-bench figure`` 4 and 5 draw
        LEO's latents, curvature and step sizes from it), called in evaluation mode under
        ``torch.no_grad()``; ``batch.query`` is not used. ``None`` (the default): the learner
        has no inner loop to show.
        """
        return None

    def nan_fallback_loss(self) -> Tensor | None:
        """A loss whose gradients replace the meta-gradients on a step whose loss or gradients are not finite.

        ``None`` (the default) makes such a step a no-op: its gradients are zero.
        """
        return None

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type this learner computes in."""
        return getattr(torch, getattr(self.config, "dtype", "float32"))

