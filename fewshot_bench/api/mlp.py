"""A functional, batched MLP: one parameter vector per episode, for regression learners.

LEO generates the whole parameter vector of this network, Meta-SGD and MAML learn its
initialisation, and ``mlp-scratch`` fits it from scratch: all of them evaluate the same
network through :class:`MLP`. Parameters are a flat ``theta`` of shape ``[B, P]`` (one row
per episode), laid out layer by layer as (weight ``[in, out]`` row-major, bias ``[out]``),
so every episode of a batch runs in one tensor program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fewshot_bench.api.batches import PredictionBatch
from fewshot_bench.api.learner import TaskSpec

# The paper's regression model (appendix A.2, Table 3): 1 -> 40 -> 40 -> 1, ReLU; 1,761 parameters.
PAPER_SIZES = (1, 40, 40, 1)


@dataclass(frozen=True)
class MLP:
    """Layer sizes of a ReLU MLP (input, hidden..., output) and how a flat ``theta`` maps onto it."""

    sizes: tuple[int, ...] = PAPER_SIZES

    @property
    def n_params(self) -> int:
        """P, the length of one episode's parameter vector."""
        return sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:]))

    def layers(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``theta`` [B, P] as (weights [B, in, out], biases [B, 1, out]) per layer (views, no copies)."""
        out, at = [], 0
        for i, o in zip(self.sizes[:-1], self.sizes[1:]):
            w = theta[:, at : at + i * o].reshape(-1, i, o)
            at += i * o
            b = theta[:, at : at + o].reshape(-1, 1, o)
            at += o
            out.append((w, b))
        return out

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """Outputs ``[B, M, out]`` of each episode's network on its inputs ``x`` [B, M, in]."""
        h = x
        layers = self.layers(theta)
        for n, (w, b) in enumerate(layers):
            h = torch.baddbmm(b, h, w)
            if n < len(layers) - 1:
                h = torch.relu(h)
        return h

    def init(self, batch: int = 1, dtype: torch.dtype = torch.float32,
             generator: torch.Generator | None = None) -> Tensor:
        """``[batch, P]`` parameters drawn like ``torch.nn.Linear``'s default: U(-1/sqrt(in), 1/sqrt(in))."""
        parts = []
        for i, o in zip(self.sizes[:-1], self.sizes[1:]):
            bound = 1.0 / math.sqrt(i)
            parts.append((torch.rand(batch, i * o + o, generator=generator, dtype=dtype) * 2 - 1) * bound)
        return torch.cat(parts, dim=1)


def support_mse(mlp: MLP, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Per-episode mean squared error ``[B]`` of the networks ``theta`` on (x, y)."""
    return (mlp.forward(theta, x) - y).pow(2).flatten(1).mean(1)


def inner_gradient(mlp: MLP, theta: Tensor, x: Tensor, y: Tensor, create_graph: bool) -> Tensor:
    """d(support MSE)/d(theta) ``[B, P]`` for every episode at once.

    Episodes have their own rows of ``theta``, so the gradient of the summed losses is each
    episode's own gradient. With ``create_graph`` the result stays differentiable (second
    order meta-gradients); without it the gradient is computed even under ``torch.no_grad``
    (evaluation still adapts) and returned detached.
    """
    with torch.enable_grad():
        if not (create_graph and theta.requires_grad):
            # A fresh leaf: also covers views of parameters taken under no_grad, which
            # claim requires_grad but belong to no graph.
            theta = theta.detach().requires_grad_()
        loss = support_mse(mlp, theta, x, y).sum()
        (grad,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
    return grad if create_graph else grad.detach()


def gradient_steps(
    mlp: MLP, theta: Tensor, x: Tensor, y: Tensor, steps: int, lr: Tensor | float, create_graph: bool
) -> Tensor:
    """``theta`` [B, P] after ``steps`` steps of ``theta <- theta - lr * d(support MSE)/d(theta)``.

    ``lr`` is a scalar (MAML) or a learned per-parameter vector [P] (Meta-SGD);
    ``create_graph`` as in :func:`inner_gradient`.
    """
    for _ in range(steps):
        theta = theta - lr * inner_gradient(mlp, theta, x, y, create_graph=create_graph)
    return theta


def mlp_for(task: TaskSpec, hidden: tuple[int, ...]) -> MLP:
    """The regression network for a task: D inputs, the given hidden widths, one output."""
    return MLP((task.feature_dim, *hidden, 1))


def support_points(batch: PredictionBatch) -> tuple[Tensor, Tensor]:
    """(support x [B, K, D], support y [B, K, 1]) of a regression batch; its queries are ``batch.query`` [B, M, D]."""
    b = batch.batch_size
    return batch.support.reshape(b, -1, batch.support.shape[-1]), batch.support_labels.reshape(b, -1, 1)
