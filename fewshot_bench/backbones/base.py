"""The backbone contract shared by the built-in networks and third-party ones."""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """A feature extractor: images ``[B, C, H, W]`` -> features.

    ``forward`` gives the pooled features the pretraining classifier reads (``out_dim``
    wide); ``embed`` gives the features that are exported for meta-learning
    (``feature_dim`` wide). They are the same for Conv-4 and ResNet-12; WRN-28-10 exports
    an intermediate layer (the paper's "layer 21").
    """

    feature_dim: int
    out_dim: int

    def embed(self, x: Tensor) -> Tensor:
        """The exported features of an image batch, ``[B, feature_dim]``."""
        return self.forward(x)


def out_dim(model: nn.Module) -> int:
    """Width of ``model(x)``: ``out_dim`` when the backbone declares it, else ``feature_dim``."""
    return int(getattr(model, "out_dim", model.feature_dim))


def embed(model: nn.Module, x: Tensor) -> Tensor:
    """Exported features through ``model.embed`` when defined, else ``model(x)``."""
    fn = getattr(model, "embed", None)
    return fn(x) if callable(fn) else model(x)
