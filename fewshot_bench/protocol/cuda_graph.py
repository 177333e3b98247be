"""The meta-training step as one CUDA graph: captured once, replayed on every new meta-batch.

A meta-batch of 12 small episodes is a thousand tiny kernels: eager PyTorch spends its time
launching them, not computing. Captured, the whole step (meta-loss, backward, NaN guard,
clipping and Adam) is one launch. Requirements, which :class:`~fewshot_bench.protocol.train.MetaTrainer`
meets: the step's shapes never change, nothing in it reads a value back to the host (the NaN
guard is branch-free on CUDA), the optimizer is ``capturable``, and a few eager warm-up steps
on a side stream come first (they allocate the optimizer state and autograd's buffers).
Random numbers stay per-step reproducible: the learner's noise key lives in a device tensor
that the trainer updates in place before each replay (fewshot_bench.api.training_noise), and
seeding the CUDA generator sets the seed the kernels of a plugin drawing from it use.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Callable

import torch

from fewshot_bench.api.batches import EpisodeBatch

WARMUP_STEPS = 3  # eager steps before capture (PyTorch's guidance: a few, on a side stream)

Update = Callable[[EpisodeBatch], dict[str, torch.Tensor]]


def _tensor_fields(batch: EpisodeBatch) -> list[str]:
    """The batch's fields the step reads from the device (not the CPU-side class and episode ids)."""
    return [f.name for f in fields(batch) if f.name not in ("classes", "episode_ids")]


class GraphedStep:
    """``update`` captured on a static copy of ``batch``; calling it copies a new batch in and replays."""

    def __init__(self, update: Update, batch: EpisodeBatch) -> None:
        self.names = _tensor_fields(batch)
        self.static = EpisodeBatch(**{n: getattr(batch, n).clone() for n in self.names})
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = update(self.static)

    def __call__(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """Run the captured step on ``batch`` (same shapes); returns the graph's output tensors."""
        for name in self.names:
            getattr(self.static, name).copy_(getattr(batch, name))
        self.graph.replay()
        return self.outputs


def warm_up(update: Update, batch: EpisodeBatch, stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
    """One eager step on a side stream, as capture requires before it."""
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = update(batch)
    torch.cuda.current_stream().wait_stream(stream)
    return out
