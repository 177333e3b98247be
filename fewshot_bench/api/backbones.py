"""The backbone contract: what a backbone plugin's factory builds (stage 1 of the paper: images -> features)."""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """A feature extractor: images ``[B, C, H, W]`` (float in [0, 1]) -> features.

    ``forward`` gives the pooled features the pretraining classifier reads (``out_dim``
    wide); ``embed`` gives the features that are exported for meta-learning
    (``feature_dim`` wide). They are the same for Conv-4 and ResNet-12; WRN-28-10 exports
    an intermediate layer (the paper's "layer 21"). Subclassing is optional: the harness
    reads any ``nn.Module`` with an integer ``feature_dim`` (``out_dim`` defaults to it,
    ``embed`` to ``forward``).
    """

    feature_dim: int
    out_dim: int

    def embed(self, x: Tensor) -> Tensor:
        """The exported features of an image batch, ``[B, feature_dim]``."""
        return self.forward(x)
