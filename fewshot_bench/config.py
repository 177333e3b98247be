"""Learner configuration: ``--set key=value`` overrides validated against the Config dataclass."""

from __future__ import annotations

import dataclasses
import math
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


def parse_value(text: str, typ: Any, key: str) -> Any:
    """The ``--set`` string ``text`` as a value of type ``typ`` (unions, Literal, bool, numbers, str, tuples and
    lists of them); a one-line ConfigError naming ``key`` when it is not one."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arg, key)
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
            value = typ(text)
        except ValueError:
            raise ConfigError(f"--set {key}: expected {typ.__name__}, got {text!r}") from None
        if typ is float and not math.isfinite(value):
            raise ConfigError(f"--set {key}={text}: expected a finite number")
        return value
    if typ is str:
        return text
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(typ) or (str,)
        parts = [p for p in text.split(",") if p.strip()]
        return origin(parse_value(p.strip(), inner, key) for p in parts)
    raise ConfigError(f"--set {key}: options of type {typ} cannot be set from the command line")


def apply_overrides(config: Any, overrides: dict[str, str], learner: str = "") -> Any:
    """A copy of ``config`` with string overrides converted to each field's declared type."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    fields = {f.name: f for f in dataclasses.fields(config)}
    names = set(fields)
    changes = {}
    for key, text in overrides.items():
        if key not in names:
            raise ConfigError(
                f"unknown option {key!r} for learner {learner or type(config).__name__}; "
                f"valid options: {', '.join(sorted(names))}"
            )
        changes[key] = parse_value(text, hints[key], key)
        problem = check_value(key, changes[key], fields[key])
        if problem:
            raise ConfigError(f"--set {key}={text}: {problem}")
    try:
        return dataclasses.replace(config, **changes)
    except (ValueError, TypeError) as exc:  # a Config's own __post_init__ checks
        raise ConfigError(f"--set {', '.join(f'{k}={v}' for k, v in overrides.items())}: {exc}") from None


# What the harness's own fields (fewshot_bench.api.LearnerConfig) mean, checked before any work.
DTYPES = ("float32", "float64")
_AT_LEAST_ONE = ("meta_batch_size",)


def check_value(key: str, value: Any, field_: dataclasses.Field | None = None) -> str | None:
    """Why ``value`` is not a meaningful value of Config field ``key``, or None.

    Every number must be finite and, unless the field's metadata says ``signed=True``, not
    negative (learning rates, weights, rates, counts and sizes all are); ``min``/``max`` in a
    field's metadata bound it further. The harness's own fields: ``outer_lr`` > 0,
    ``meta_batch_size`` >= 1, gradient clipping > 0 (or none), ``dtype`` float32 or float64;
    a ``dropout_rate`` is below 1 and a size (``*_dim``, ``hidden*``) at least 1.
    """
    meta = dict(field_.metadata) if field_ is not None else {}
    items = value if isinstance(value, (tuple, list)) else (value,)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            return "expected a finite number"
        if v < 0 and not meta.get("signed"):
            return "must not be negative"
        if "min" in meta and v < meta["min"]:
            return f"must be at least {meta['min']}"
        if "max" in meta and v > meta["max"]:
            return f"must be at most {meta['max']}"
        if (key in _AT_LEAST_ONE or key.endswith("_dim") or key.startswith("hidden")
                or key.endswith("_hidden")) and v < 1:
            return "must be at least 1"
    if key == "outer_lr" and value is not None and not value > 0:
        return "the meta-learning rate must be positive"
    if key.startswith("grad_clip") and value is not None and not value > 0:
        return "a clipping threshold must be positive (or none to disable it)"
    if key == "dropout_rate" and isinstance(value, (int, float)) and not value < 1:
        return "a dropout rate must be below 1"
    if key == "dtype" and value not in DTYPES:
        return f"expected one of {', '.join(DTYPES)}"
    return None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)
