"""Regression learners on the shared MLP (:mod:`fewshot_bench.mlp`).

* ``mlp-scratch`` (registered here): the regression network trained from scratch on each
  task's support set with Adam; nothing is meta-trained. The paper's point of comparison
  for what meta-learning buys on 5 noisy points.
* :class:`GradientMLPRegression`: a learned initialisation adapted by gradient steps on the
  support MSE, with either a learned per-parameter inner learning rate (Meta-SGD) or a
  fixed scalar one (MAML). The ``metasgd`` and ``maml`` plugins register it as their
  regression implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewshot_bench.api import (
    REGRESSION,
    EpisodeBatch,
    Learner,
    LearnerConfig,
    LossOutput,
    PredictionBatch,
    TaskSpec,
    hookimpl,
    inner_gradient,
    mlp_for,
    support_mse,
    support_points,
)


@dataclass
class ScratchConfig(LearnerConfig):
    """Fitting the MLP from scratch on each support set: Adam, full batch, a fixed number of steps."""

    hidden: tuple[int, ...] = (40, 40)
    fit_steps: int = 200
    fit_lr: float = 0.01


class MLPScratch(Learner):
    """The regression MLP trained from scratch on each task's support set (no meta-learning).

    Every episode starts from the same random initialisation (drawn once, from the run's
    seed), so a prediction does not depend on which other episodes share its batch.
    """

    name = "mlp-scratch"
    description = "the regression MLP (1-40-40-1) trained from scratch on each support set with Adam"
    Config = ScratchConfig
    meta_trainable = False
    kinds = ("regression",)

    def __init__(self, config: ScratchConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        self.mlp = mlp_for(task, config.hidden)
        self.register_buffer("initial", self.mlp.init(1))

    def fit(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-episode parameters [B, P] after ``fit_steps`` Adam steps on the support MSE."""
        theta = nn.Parameter(self.initial.to(x.dtype).expand(x.shape[0], -1).clone())
        # Adam is elementwise and the summed loss separates by episode: each row is its own fit.
        opt = torch.optim.Adam([theta], lr=self.config.fit_lr)
        with torch.enable_grad():
            for _ in range(self.config.fit_steps):
                opt.zero_grad(set_to_none=True)
                support_mse(self.mlp, theta, x, y).sum().backward()
                opt.step()
        return theta.detach()

    def predict(self, batch: PredictionBatch) -> Tensor:
        return self.mlp.forward(self.fit(*support_points(batch)), batch.query)


@dataclass
class GradientMLPConfig(LearnerConfig):
    """A learned initialisation of the MLP adapted by gradient descent on the support MSE."""

    outer_lr: float = 1e-3
    hidden: tuple[int, ...] = (40, 40)
    # One step of 0.01, as MAML (Finn et al., 2017) and Meta-SGD (Li et al., 2017) regress sines;
    # several steps with learned per-parameter rates diverge on steep lines early in training.
    inner_steps: int = 1
    inner_lr_init: float = 0.01
    first_order: bool = False


class GradientMLPRegression(Learner):
    """``theta <- theta - alpha * dMSE/dtheta`` from a learned ``theta0`` (Meta-SGD: alpha learned per parameter).

    Subclasses set ``learned_lr``: True for Meta-SGD (alpha has theta's shape and is
    meta-learned), False for MAML (alpha is the fixed scalar ``inner_lr_init``).
    """

    Config = GradientMLPConfig
    kinds = ("regression",)
    learned_lr = True

    def __init__(self, config: GradientMLPConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        self.mlp = mlp_for(task, config.hidden)
        self.init_params = nn.Parameter(self.mlp.init(1)[0])
        if self.learned_lr:
            self.inner_lr = nn.Parameter(torch.full((self.mlp.n_params,), config.inner_lr_init))

    def step_size(self) -> Tensor | float:
        """The inner learning rate: a learned vector [P] (Meta-SGD) or a fixed scalar (MAML)."""
        return self.inner_lr if self.learned_lr else self.config.inner_lr_init

    def adapt(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-episode parameters [B, P] after the inner loop on the support points."""
        theta = self.init_params.to(x.dtype).expand(x.shape[0], -1)
        second_order = self.training and torch.is_grad_enabled() and not self.config.first_order
        for _ in range(self.config.inner_steps):
            grad = inner_gradient(self.mlp, theta, x, y, create_graph=second_order)
            theta = theta - self.step_size() * grad
        return theta

    def predict(self, batch: PredictionBatch) -> Tensor:
        # At evaluation the inner loop still takes gradients, but nothing is recorded for the meta-parameters.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.training):
            return self.mlp.forward(self.adapt(*support_points(batch)), batch.query)

    def meta_loss(self, batch: EpisodeBatch) -> LossOutput:
        outputs = self.predict(batch)
        loss = REGRESSION.loss(outputs, batch.query_labels)
        return LossOutput(loss, {"query_mse": loss.detach()})


@hookimpl
def fewshot_bench_register_learners(register):
    """Register ``mlp-scratch``."""
    register(MLPScratch)
