"""Backbone construction from string options, and loading/validating pretraining checkpoints."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Callable

from torch import nn

from fewshot_bench.checkpoints import load_torch_file
from fewshot_bench.config import parse_value
from fewshot_bench.errors import CheckpointError, ConfigError, DataError

CHECKPOINT_FORMAT = "fewshot-bench-backbone/1"


def backbone_options(factory: Callable[..., nn.Module]) -> dict[str, Any]:
    """The keyword options a backbone factory accepts and their defaults (``in_channels`` excluded)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    return {
        n: p.default for n, p in params.items()
        if n not in ("self", "in_channels") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def convert_options(factory: Callable[..., nn.Module], name: str, raw: dict[str, str]) -> dict[str, Any]:
    """Convert ``--set`` strings to the types the factory's signature declares."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target)
    known = backbone_options(factory)
    out = {}
    for key, text in raw.items():
        if key not in known:
            raise ConfigError(f"unknown option {key!r} for backbone {name}; valid options: {', '.join(sorted(known))}")
        out[key] = parse_value(text, hints.get(key, type(known[key])), key) if isinstance(text, str) else text
    return out


def build_backbone(factory: Callable[..., nn.Module], name: str, in_channels: int,
                   options: dict[str, Any]) -> nn.Module:
    """Call the factory and check the module honours the contract (a ``feature_dim`` attribute)."""
    try:
        model = factory(in_channels=in_channels, **options)
    except TypeError as exc:
        raise ConfigError(f"backbone {name} rejected its options {options}: {exc}") from None
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "feature_dim", None), int):
        raise ConfigError(f"backbone {name} did not return an nn.Module with an integer feature_dim")
    return model


# Keys every checkpoint of `fewshot-bench pretrain` has, and their types.
CHECKPOINT_KEYS: dict[str, type] = {
    "backbone": str, "options": dict, "image": dict, "layout": str, "classes": list, "config": dict,
    "epoch": int, "history": list, "model": dict, "head": dict, "optimizer": dict,
}
REMAKE = "make it again with `fewshot-bench pretrain --restart`"


def load_checkpoint(path: Path, backbone: str | None = None) -> dict[str, Any]:
    """A pretraining checkpoint (tensors and plain data only); errors for corrupt or foreign files.

    Loaded with ``weights_only=True``: a checkpoint is data, never code to run.
    """
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; make one with `fewshot-bench pretrain`")
    ckpt = load_torch_file(path, "cpu", "checkpoint", REMAKE)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a fewshot-bench backbone checkpoint (made by `fewshot-bench pretrain`)")
    bad = [key for key, kind in CHECKPOINT_KEYS.items() if not isinstance(ckpt.get(key), kind)]
    if bad:
        raise CheckpointError(f"checkpoint {path} is malformed (missing or mistyped: {', '.join(bad)}); {REMAKE}")
    if not isinstance(ckpt["image"].get("channels"), int):
        raise CheckpointError(f"checkpoint {path} is malformed (no image channels); {REMAKE}")
    if backbone is not None and ckpt["backbone"] != backbone:
        raise ConfigError(
            f"checkpoint {path} holds backbone {ckpt['backbone']!r}, not {backbone!r}; "
            "pass the matching --backbone or another checkpoint"
        )
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], factory: Callable[..., nn.Module], path: Path) -> nn.Module:
    """The backbone of a checkpoint with its weights loaded, in eval mode (dropout off)."""
    model = build_backbone(factory, ckpt["backbone"], int(ckpt["image"]["channels"]), dict(ckpt["options"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise DataError(
            f"checkpoint {path} does not fit backbone {ckpt['backbone']!r} "
            f"({str(exc).splitlines()[0][:120]}); it was made by another network"
        ) from None
    return model.eval()
