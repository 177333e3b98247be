"""Meta-SGD on the regression MLP (the ``metasgd`` learner on regression tasks).

A learned initialisation ``theta0`` of the shared 1-40-40-1 MLP and a learned inner learning
rate per parameter, adapted by gradient steps on the support MSE (Li et al., 2017).
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
    gradient_steps,
    mlp_for,
    support_points,
)


@dataclass
class MetaSGDRegressionConfig(LearnerConfig):
    """A learned initialisation of the MLP and learned per-parameter inner learning rates."""

    outer_lr: float = 1e-3
    hidden: tuple[int, ...] = (40, 40)
    # One step of 0.01, as MAML (Finn et al., 2017) and Meta-SGD (Li et al., 2017) regress sines;
    # several steps with learned per-parameter rates diverge on steep lines early in training.
    inner_steps: int = 1
    inner_lr_init: float = 0.01
    first_order: bool = False


class MetaSGDRegression(Learner):
    """``theta <- theta - alpha * dMSE/dtheta`` from a learned ``theta0``, with ``alpha`` learned per parameter."""

    name = "metasgd"
    description = "Meta-SGD on the 1-40-40-1 regression MLP: learned init and per-parameter inner learning rates"
    Config = MetaSGDRegressionConfig
    kinds = ("regression",)

    def __init__(self, config: MetaSGDRegressionConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        self.mlp = mlp_for(task, config.hidden)
        self.init_params = nn.Parameter(self.mlp.init(1)[0])
        self.inner_lr = nn.Parameter(torch.full((self.mlp.n_params,), config.inner_lr_init))

    def adapt(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-episode parameters [B, P] after the inner loop on the support points."""
        theta = self.init_params.to(x.dtype).expand(x.shape[0], -1)
        second_order = self.training and torch.is_grad_enabled() and not self.config.first_order
        return gradient_steps(self.mlp, theta, x, y, self.config.inner_steps, self.inner_lr, second_order)

    def predict(self, batch: PredictionBatch) -> Tensor:
        return self.mlp.forward(self.adapt(*support_points(batch)), batch.query)

    def meta_loss(self, batch: EpisodeBatch) -> LossOutput:
        outputs = self.predict(batch.inputs())  # predict sees what it sees at evaluation: no query labels
        loss = REGRESSION.loss(outputs, batch.query_labels)
        return LossOutput(loss, {"query_mse": loss.detach()})
