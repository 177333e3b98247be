"""The built-in regression learner ``mlp-scratch``: the shared MLP fitted from scratch on each support set.

The regression MLP (:mod:`fewshot_bench.api.mlp`) trained with Adam on each task's support
set; nothing is meta-trained. The paper's point of comparison for what meta-learning buys
on 5 noisy points. Meta-SGD and MAML on the same MLP live in their plugins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewshot_bench.api import (
    Learner,
    LearnerConfig,
    PredictionBatch,
    RegisterLearner,
    TaskSpec,
    hookimpl,
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


@hookimpl
def fewshot_bench_register_learners(register: RegisterLearner) -> None:
    """Register ``mlp-scratch``."""
    register(MLPScratch)
