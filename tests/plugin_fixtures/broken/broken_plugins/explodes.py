"""A plugin whose learner loads fine but raises inside meta-training and inside evaluation."""

import torch
from torch import nn

from fewshot_bench.api import hookimpl
from fewshot_bench.learners.baselines import NearestCentroid


class Explodes(NearestCentroid):
    """Nearest centroid with a learned scale whose meta_loss and predict raise plain Python errors."""

    name = "explodes"
    description = "raises inside meta_loss and predict (for the isolation tests)"
    meta_trainable = True

    def __init__(self, config, task):
        super().__init__(config, task)
        self.scale = nn.Parameter(torch.ones(()))

    def meta_loss(self, batch):
        raise KeyError("inner_lr")

    def predict(self, batch):
        raise ValueError("shapes (5, 640) and (64, 5) not aligned")


@hookimpl
def fewshot_bench_register_learners(register):
    """Register ``explodes``."""
    register(Explodes)
