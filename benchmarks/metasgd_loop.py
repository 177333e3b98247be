"""Meta-SGD written the way the popular meta-learning libraries do it: the speed reference.

learn2learn, higher and most tutorials meta-train one episode at a time: clone the model's
parameters into the graph, adapt them with ``torch.autograd.grad(..., create_graph=True)``,
evaluate the query loss through ``functional_call`` and call ``backward`` per episode,
accumulating the meta-gradient. The math is exactly :class:`fewshot_bench_metasgd.MetaSGD`'s
(linear classifier without bias, support cross-entropy summed, per-parameter inner lr,
query loss averaged over the meta-batch), so the benchmark suite times the same step
both ways and reports the ratio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fewshot_bench.api.batches import EpisodeBatch
from fewshot_bench.episodes import EpisodeSampler
from fewshot_bench.protocol.step import clip_per_tensor


class LoopMetaSGD(nn.Module):
    """A linear classifier ``nn.Linear(D, N, bias=False)`` plus a learned per-weight inner learning rate."""

    def __init__(self, init_weights: Tensor, inner_lr: Tensor, inner_steps: int) -> None:
        super().__init__()
        self.model = nn.Linear(init_weights.shape[1], init_weights.shape[0], bias=False)
        with torch.no_grad():
            self.model.weight.copy_(init_weights)
        self.inner_lr = nn.Parameter(inner_lr.detach().clone())
        self.inner_steps = inner_steps

    def episode_loss(self, support: Tensor, support_labels: Tensor, query: Tensor, query_labels: Tensor) -> Tensor:
        """Query cross-entropy of one episode after adapting a clone of the weights on its support set."""
        fast = {name: p.clone() for name, p in self.model.named_parameters()}  # the per-episode clone
        for _ in range(self.inner_steps):
            loss = F.cross_entropy(functional_call(self.model, fast, (support,)), support_labels, reduction="sum")
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {name: p - self.inner_lr * g for (name, p), g in zip(fast.items(), grads)}
        return F.cross_entropy(functional_call(self.model, fast, (query,)), query_labels)

    def accumulate_meta_gradient(self, batch: EpisodeBatch) -> Tensor:
        """Backward episode by episode (grads accumulate in ``.grad``); returns the detached mean query loss."""
        b, d = batch.batch_size, batch.support.shape[-1]
        total = torch.zeros((), device=batch.support.device)
        for i in range(b):  # one episode at a time, as the libraries' examples do
            loss = self.episode_loss(
                batch.support[i].reshape(-1, d),
                batch.support_labels[i].reshape(-1),
                batch.query[i].reshape(-1, d),
                batch.query_labels[i].reshape(-1),
            ) / b
            loss.backward()
            total += loss.detach()
        return total


class LoopTrainer:
    """Sampling, per-episode meta-gradient, per-tensor clipping and Adam: one step like ``MetaTrainer.step``."""

    def __init__(self, learner: LoopMetaSGD, sampler: EpisodeSampler, batch_size: int, lr: float,
                 clip_value: float | None, clip_norm: float | None, device: torch.device | None = None) -> None:
        self.learner, self.sampler, self.batch_size, self.device = learner, sampler, batch_size, device
        self.clip_value, self.clip_norm = clip_value, clip_norm
        self.params = [p for p in learner.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)

    def step(self, step: int) -> Tensor:
        """One meta-training step on meta-batch ``step``; returns the detached loss."""
        batch = self.sampler.batch(step * self.batch_size, self.batch_size, self.device)
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.learner.accumulate_meta_gradient(batch)
        clip_per_tensor([p.grad for p in self.params], self.clip_value, self.clip_norm)
        self.optimizer.step()
        return loss
