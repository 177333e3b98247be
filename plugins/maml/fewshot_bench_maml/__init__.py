"""MAML (Finn et al., 2017) on pretrained features: a learned initialisation adapted by gradient
steps with one fixed scalar inner learning rate (LEO paper, REFERENCE.md section 1.15).

The base model is the linear softmax classifier of LEO and Meta-SGD (no bias), or, with
``hidden_sizes``, an MLP head whose every layer is adapted. The meta-gradient is second
order by default (it differentiates through the inner steps); ``first_order`` drops the
second-order terms, as in first-order MAML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewshot_bench.api import (
    CLASSIFICATION,
    Adaptation,
    ConfigError,
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
from fewshot_bench_maml.regression import MAMLRegression


@dataclass
class MAMLConfig(LearnerConfig):
    """MAML hyperparameters (clipping as in LEO's experiments; inner loss summed over the support set)."""

    outer_lr: float = 1e-3
    inner_steps: int = 5
    # Fixed, not learned. 1.0 on the summed support loss is Meta-SGD's and LEO's initial step.
    inner_lr: float = 1.0
    init_std: float = 0.01
    first_order: bool = False
    # Hidden layer widths of an MLP head (ReLU); empty: the linear classifier of the paper.
    hidden_sizes: tuple[int, ...] = ()
    l2_penalty_weight: float = 0.0
    grad_clip_value: float | None = 0.1
    grad_clip_norm: float | None = 0.1


class MAML(Learner):
    """MAML: ``theta <- theta - lr * grad`` from a learned ``theta0``, with one fixed scalar ``lr``."""

    name = "maml"
    description = "MAML on the features: learned init, one fixed scalar inner learning rate, second order"
    Config = MAMLConfig
    kinds = ("classification", "regression")
    implementations = {"regression": MAMLRegression}
    # `fewshot-bench tune`: learning rates, clipping and the L2 penalty (docs/tuning.md).
    search_space = {
        "outer_lr": Float(1e-4, 1e-2, log=True),
        "inner_lr": Float(0.01, 10.0, log=True),
        "grad_clip_value": Float(0.01, 1.0, log=True),
        "grad_clip_norm": Float(0.01, 1.0, log=True),
        "l2_penalty_weight": Float(1e-8, 1e-2, log=True),
    }

    def __init__(self, config: MAMLConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        if config.inner_steps < 0 or any(h < 1 for h in config.hidden_sizes):
            raise ConfigError("inner_steps must be 0 or more and every hidden size at least 1")
        dtype = getattr(torch, config.dtype)
        sizes = [task.feature_dim, *config.hidden_sizes]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            limit = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform for the hidden layers
            self.weights.append(nn.Parameter(torch.empty(fan_out, fan_in, dtype=dtype).uniform_(-limit, limit)))
            self.biases.append(nn.Parameter(torch.zeros(fan_out, dtype=dtype)))
        # The output layer, [N, in] like the classifier weights of LEO and Meta-SGD.
        self.weights.append(nn.Parameter(torch.randn(task.n_way, sizes[-1], dtype=dtype) * config.init_std))

    @property
    def is_linear(self) -> bool:
        """Whether the base model is the plain linear classifier (no hidden layers)."""
        return not self.config.hidden_sizes

    def head(self, x: Tensor, params: list[Tensor]) -> Tensor:
        """Logits of per-episode parameters on x [B, ..., D]: hidden layers (weights, biases), then the output
        weights."""
        *hidden, out = params
        for w, b in zip(hidden[0::2], hidden[1::2]):
            x = torch.relu(linear_logits(x, w) + b.view(b.shape[0], *([1] * (x.dim() - 2)), -1))
        return linear_logits(x, out)

    def initial_params(self, batch_size: int) -> list[Tensor]:
        """The learned initialisation, one view per episode: [W1, b1, ..., W_out] each with a leading B."""
        params: list[Tensor] = []
        for w, b in zip(self.weights[:-1], self.biases):
            params += [w.expand(batch_size, -1, -1), b.expand(batch_size, -1)]
        return params + [self.weights[-1].expand(batch_size, -1, -1)]

    def inner_grads(self, x: Tensor, onehot: Tensor, params: list[Tensor]) -> list[Tensor]:
        """Gradients of the support cross-entropy, summed over examples, w.r.t. every episode's parameters."""
        if self.is_linear:  # closed form: small graph, still differentiable
            return [support_loss_grad(x, onehot, params[0])]
        recording = torch.is_grad_enabled()
        second_order = recording and self.training and not self.config.first_order
        with torch.enable_grad():  # evaluation still needs gradients in the inner loop
            if not recording:  # evaluation: fresh leaves each step, so no graph outlives the step
                params = [p.detach().requires_grad_() for p in params]
            loss = -(onehot * torch.log_softmax(self.head(x, params), -1)).sum()
            return list(torch.autograd.grad(loss, params, create_graph=second_order))

    def adapt(self, batch: PredictionBatch) -> list[Tensor]:
        """Per-episode parameters after ``inner_steps`` steps on the support set."""
        x = flat(batch.support)
        onehot = onehot_labels(batch.support_labels, batch.n_way, x.dtype)
        params = self.initial_params(x.shape[0])
        for _ in range(self.config.inner_steps):
            grads = self.inner_grads(x, onehot, params)
            if self.config.first_order:
                grads = [g.detach() for g in grads]
            params = [p - self.config.inner_lr * g for p, g in zip(params, grads)]
        return params

    def predict(self, batch: PredictionBatch) -> Tensor:
        """Query logits [B, M, N] of the adapted parameters (no graph kept at evaluation)."""
        return self.head(batch.query, self.adapt(batch))

    def linear_readout(self, batch: PredictionBatch) -> tuple[Tensor, None] | None:
        """The adapted output weights for the linear classifier; None with hidden layers (not a linear readout)."""
        if not self.is_linear:
            return None
        return self.adapt(batch)[0], None

    def adaptation(self, batch: PredictionBatch) -> Adaptation:
        """The learned initialisation and the adapted parameters: the output weights [B, N, D] of the linear
        classifier, or with hidden layers every layer's parameters flattened into [B, P]."""
        adapted = self.adapt(batch)
        initial = self.initial_params(adapted[0].shape[0])
        if self.is_linear:
            return Adaptation(initial=initial[0], adapted=adapted[0])
        return Adaptation(initial=torch.cat([p.flatten(1) for p in initial], dim=1),
                          adapted=torch.cat([p.flatten(1) for p in adapted], dim=1))

    def meta_loss(self, batch: EpisodeBatch) -> LossOutput:
        """Mean query cross-entropy after adaptation, plus an optional L2 penalty on the initialisation."""
        logits = self.head(batch.query, self.adapt(batch))
        query_loss = CLASSIFICATION.loss(logits, batch.query_labels)
        loss = query_loss
        if self.config.l2_penalty_weight:  # skipped at 0: fewer ops in a step of a few dozen
            loss = loss + self.config.l2_penalty_weight * sum(0.5 * w.pow(2).sum() for w in self.weights)
        acc = (logits.argmax(-1) == batch.query_labels).to(logits.dtype).mean()
        return LossOutput(loss, {"query_loss": query_loss.detach(), "train_accuracy": acc.detach()})


@hookimpl
def fewshot_bench_register_learners(register: RegisterLearner) -> None:
    """Register ``maml``."""
    register(MAML)
