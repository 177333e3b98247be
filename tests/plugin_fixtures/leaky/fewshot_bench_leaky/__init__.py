"""A cosine nearest-centroid learner that centres features on the mean of the whole batch.

Centring on a mean feature is a common trick; computing that mean over every episode of a
batch instead of each episode's own support set is the bug: an episode's predictions then
depend on the other episodes it happens to be batched with. ``check-plugin`` must catch it.
"""

import torch
import torch.nn.functional as F

from fewshot_bench.api import Learner, hookimpl


class LeakyCentroid(Learner):
    """Cosine similarity to class centroids after subtracting the batch-wide mean support feature."""

    name = "leaky-centroid"
    description = "cosine nearest centroid, centred on the mean over all episodes of a batch (leaks)"
    meta_trainable = False

    def predict(self, batch):
        centre = batch.support.mean(dim=(0, 1, 2))  # the leak: averages across episodes
        centroids = F.normalize(batch.support.mean(dim=2) - centre, dim=-1)  # [B, N, D]
        query = F.normalize(batch.query - centre, dim=-1)  # [B, M, D]
        return 10 * torch.einsum("bqd,bnd->bqn", query, centroids)


@hookimpl
def fewshot_bench_register_learners(register):
    """Register ``leaky-centroid``."""
    register(LeakyCentroid)
