"""How the harness reads a backbone: its classifier width and its exported features (the contract,
:class:`~fewshot_bench.api.backbones.Backbone`, is part of the plugin API and re-exported here)."""

from __future__ import annotations

from torch import Tensor, nn

from fewshot_bench.api.backbones import Backbone

__all__ = ["Backbone", "embed", "out_dim"]


def out_dim(model: nn.Module) -> int:
    """Width of ``model(x)``: ``out_dim`` when the backbone declares it, else ``feature_dim``."""
    return int(getattr(model, "out_dim", model.feature_dim))


def embed(model: nn.Module, x: Tensor) -> Tensor:
    """Exported features through ``model.embed`` when defined, else ``model(x)``."""
    fn = getattr(model, "embed", None)
    return fn(x) if callable(fn) else model(x)
