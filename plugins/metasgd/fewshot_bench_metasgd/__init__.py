"""Meta-SGD on pretrained features: a linear softmax classifier with a learned initialisation
and a learned per-parameter inner learning rate (Li et al., 2017; LEO paper, Table 1/2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewshot_bench.api import (
    CLASSIFICATION,
    Adaptation,
    EpisodeBatch,
    Float,
    Learner,
    LearnerConfig,
    LossOutput,
    PredictionBatch,
    RegisterLearner,
    TaskSpec,
    flat,
    hookimpl,
    linear_logits,
    onehot_labels,
    support_loss_grad,
)
from fewshot_bench_metasgd.regression import MetaSGDRegression


@dataclass
class MetaSGDConfig(LearnerConfig):
    """Meta-SGD hyperparameters (clipping as in LEO's experiments; the paper gives no outer lr
    for its Meta-SGD baseline, 5e-3 learned fastest on the synthetic default)."""

    outer_lr: float = 5e-3
    inner_steps: int = 5
    inner_lr_init: float = 1.0
    init_std: float = 0.01
    first_order: bool = False
    l2_penalty_weight: float = 0.0
    grad_clip_value: float | None = 0.1
    grad_clip_norm: float | None = 0.1


class MetaSGD(Learner):
    """Meta-SGD: ``w <- w - alpha * grad`` from a learned ``w0``, with ``alpha`` the shape of ``w``."""

    name = "metasgd"
    description = "Meta-SGD on the features: learned init and per-parameter inner learning rates"
    Config = MetaSGDConfig
    kinds = ("classification", "regression")
    implementations = {"regression": MetaSGDRegression}
    # `fewshot-bench tune`: learning rates, clipping and the L2 penalty (docs/tuning.md).
    search_space = {
        "outer_lr": Float(1e-4, 1e-2, log=True),
        "inner_lr_init": Float(0.05, 5.0, log=True),
        "grad_clip_value": Float(0.01, 1.0, log=True),
        "grad_clip_norm": Float(0.01, 1.0, log=True),
        "l2_penalty_weight": Float(1e-8, 1e-2, log=True),
    }

    def __init__(self, config: MetaSGDConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        shape = (task.n_way, task.feature_dim)
        self.init_weights = nn.Parameter(torch.randn(shape) * config.init_std)
        self.inner_lr = nn.Parameter(torch.full(shape, config.inner_lr_init))

    def adapt(self, batch: PredictionBatch) -> Tensor:
        """Per-episode classifier weights [B, N, D] after the inner loop on the support set."""
        x = flat(batch.support)
        onehot = onehot_labels(batch.support_labels, batch.n_way, x.dtype)
        w = self.init_weights.to(x.dtype).expand(x.shape[0], -1, -1)
        for _ in range(self.config.inner_steps):
            g = support_loss_grad(x, onehot, w)
            w = w - self.inner_lr * (g.detach() if self.config.first_order else g)
        return w

    def predict(self, batch: PredictionBatch) -> Tensor:
        """Query logits [B, M, N] of the adapted weights (no graph kept at evaluation)."""
        return linear_logits(batch.query, self.adapt(batch))

    def linear_readout(self, batch: PredictionBatch) -> tuple[Tensor, None]:
        """The adapted weights (no bias); at evaluation nothing is recorded for autograd."""
        return self.adapt(batch), None

    def adaptation(self, batch: PredictionBatch) -> Adaptation:
        """The learned initial weights and the adapted weights, [B, N, D] each."""
        adapted = self.adapt(batch)
        return Adaptation(initial=self.init_weights.to(adapted.dtype).expand_as(adapted), adapted=adapted)

    def meta_loss(self, batch: EpisodeBatch) -> LossOutput:
        logits = self.predict(batch.inputs())  # predict sees what it sees at evaluation: no query labels
        query_loss = CLASSIFICATION.loss(logits, batch.query_labels)
        loss = query_loss
        if self.config.l2_penalty_weight:  # skipped at 0: four fewer ops in a step of a few dozen
            loss = loss + self.config.l2_penalty_weight * 0.5 * self.init_weights.pow(2).sum()
        acc = (logits.argmax(-1) == batch.query_labels).float().mean()
        return LossOutput(loss, {"query_loss": query_loss.detach(), "train_accuracy": acc.detach()})


@hookimpl
def fewshot_bench_register_learners(register: RegisterLearner) -> None:
    """Register ``metasgd``."""
    register(MetaSGD)
