"""Learner configuration: ``--set key=value`` overrides validated against the Config dataclass."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

from fewshot_bench.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``, with a clear error for malformed items."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _convert(text: str, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(text, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"--set {key}: cannot parse {text!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(typ)
        if text not in allowed:
            raise ConfigError(f"--set {key}: {text!r} is not one of {', '.join(map(str, allowed))}")
        return text
    if typ is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"--set {key}: expected true or false, got {text!r}")
    if typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            raise ConfigError(f"--set {key}: expected {typ.__name__}, got {text!r}") from None
    if typ is str:
        return text
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(typ) or (str,)
        parts = [p for p in text.split(",") if p.strip()]
        return origin(_convert(p.strip(), inner, key) for p in parts)
    raise ConfigError(f"--set {key}: options of type {typ} cannot be set from the command line")


def apply_overrides(config: Any, overrides: dict[str, str], learner: str = "") -> Any:
    """A copy of ``config`` with string overrides converted to each field's declared type."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, text in overrides.items():
        if key not in names:
            raise ConfigError(
                f"unknown option {key!r} for learner {learner or type(config).__name__}; "
                f"valid options: {', '.join(sorted(names))}"
            )
        changes[key] = _convert(text, hints[key], key)
    return dataclasses.replace(config, **changes)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)
