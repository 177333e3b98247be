"""Baselines with nothing to meta-train: nearest centroid and per-episode logistic regression."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fewshot_bench.api import Learner, LearnerConfig, PredictionBatch, RegisterLearner, flat, hookimpl, linear_logits


class NearestCentroid(Learner):
    """Assign each query to the class whose support mean is nearest in Euclidean distance."""

    name = "nearest-centroid"
    description = "nearest class mean of the support features (no meta-training)"
    meta_trainable = False

    def predict(self, batch: PredictionBatch) -> Tensor:
        w, b = self.linear_readout(batch)
        return linear_logits(batch.query, w, b)

    def linear_readout(self, batch: PredictionBatch) -> tuple[Tensor, Tensor]:
        """Weights ``2 c`` and biases ``-||c||^2`` of the class centroids ``c``.

        -||x - c||^2 is 2 x.c - ||c||^2 - ||x||^2; the last term is the same for every class,
        so dropping it leaves each query's nearest centroid (the argmax) unchanged.
        """
        centroids = batch.support.mean(dim=2)  # [B, N, D]
        return 2 * centroids, -centroids.pow(2).sum(-1)


@dataclass
class LogRegConfig(LearnerConfig):
    """Multinomial logistic regression fitted on each episode's support set."""

    C: float = 1.0  # inverse L2 strength, as in scikit-learn: 0.5 ||W||^2 + C * sum CE
    iterations: int = 100
    fit_intercept: bool = True


class LogisticRegression(Learner):
    """Multinomial logistic regression fitted per episode by accelerated gradient descent.

    All episodes of a batch are fitted at once, each with its own step size from its own
    smoothness bound, so no episode's fit depends on another's data.
    """

    name = "logreg"
    description = "multinomial logistic regression fitted on each episode's support set"
    meta_trainable = False
    Config = LogRegConfig

    def _objective(self, w: Tensor, b: Tensor, x: Tensor, y: Tensor, lam: float) -> Tensor:
        logits = linear_logits(x, w, b)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        return ce / y.shape[1] + 0.5 * lam * w.pow(2).sum()

    @torch.no_grad()
    def fit(self, batch: PredictionBatch) -> tuple[Tensor, Tensor]:
        """Weights [B, N, D] and biases [B, N] minimising each episode's regularised loss."""
        x, y = flat(batch.support), batch.support_labels.reshape(batch.batch_size, -1)
        n_way, n_support = batch.n_way, x.shape[1]
        lam = 1.0 / (self.config.C * n_support)  # mean-loss form of 0.5||W||^2 + C sum CE
        # Per-episode smoothness of the mean cross-entropy: at most 0.5 * mean ||x||^2 (+1 for the bias).
        smooth = 0.5 * (x.pow(2).sum(-1).mean(-1) + float(self.config.fit_intercept)) + lam
        step = (1.0 / smooth)[:, None, None]
        w = x.new_zeros(x.shape[0], n_way, x.shape[-1])
        b = x.new_zeros(x.shape[0], n_way)
        w_prev, b_prev = w, b
        for t in range(self.config.iterations):
            momentum = t / (t + 3)
            wy = w + momentum * (w - w_prev)
            by = b + momentum * (b - b_prev)
            with torch.enable_grad():
                wy_, by_ = wy.requires_grad_(), by.requires_grad_()
                loss = self._objective(wy_, by_ if self.config.fit_intercept else None, x, y, lam)
                gw, gb = torch.autograd.grad(loss, (wy_, by_), allow_unused=True)
            w_prev, b_prev = w, b
            w = (wy - step * gw).detach()
            b = (by - step[..., 0] * gb).detach() if self.config.fit_intercept else b
        return w, b

    def predict(self, batch: PredictionBatch) -> Tensor:
        return linear_logits(batch.query, *self.linear_readout(batch))

    def linear_readout(self, batch: PredictionBatch) -> tuple[Tensor, Tensor | None]:
        """The fitted weights and biases (None without an intercept)."""
        w, b = self.fit(batch)
        return w, b if self.config.fit_intercept else None


@hookimpl
def fewshot_bench_register_learners(register: RegisterLearner) -> None:
    """Register the harness's baselines."""
    register(NearestCentroid)
    register(LogisticRegression)
