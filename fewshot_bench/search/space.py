"""Hyperparameter search spaces: what ``fewshot-bench tune`` samples for a learner.

A learner declares its space as a class attribute mapping Config fields to ranges::

    from fewshot_bench.api import Choice, Float, Int

    class MyLearner(Learner):
        search_space = {
            "outer_lr": Float(1e-4, 1e-2, log=True),
            "inner_steps": Int(1, 10),
            "first_order": Choice(False, True),
        }

On the command line ``--space KEY=SPEC`` overrides or adds a range (``log:1e-4..1e-2``,
``float:0.1..0.5``, ``int:1..10``, ``choice:a,b,c``) and ``--set KEY=VALUE`` fixes a key
(it is then not searched). Every key is checked against the learner's Config before
anything runs; sampled values reach the learner exactly as ``--set`` values would.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from fewshot_bench.api.search_space import Choice, Float, Int, Param
from fewshot_bench.config import apply_overrides
from fewshot_bench.errors import ConfigError

SPEC_HELP = "log:LOW..HIGH, float:LOW..HIGH, int:LOW..HIGH[:log] or choice:A,B,..."


def parse_spec(key: str, spec: str) -> Param:
    """``log:1e-4..1e-2`` -> ``Float(1e-4, 1e-2, log=True)``; a one-line error for anything else."""
    kind, sep, rest = spec.strip().partition(":")
    bad = ConfigError(f"--space {key}={spec}: expected {SPEC_HELP}")
    if not sep:
        raise bad
    if kind == "choice":
        values = [v.strip() for v in rest.split(",") if v.strip()]
        if not values:
            raise bad
        param: Param = Choice(*values)
    elif kind in ("log", "float", "uniform", "int"):
        body, _, flag = rest.partition(":")
        low, dots, high = body.partition("..")
        if not dots or flag not in ("", "log") or (flag and kind != "int"):
            raise bad
        try:
            if kind == "int":
                param = Int(int(low), int(high), log=flag == "log")
            else:
                param = Float(float(low), float(high), log=kind == "log")
        except ValueError:
            raise bad from None
    else:
        raise bad
    param.check(key)
    return param


def parse_space(items: list[str]) -> dict[str, Param]:
    """``["k=log:1e-4..1e-2", ...]`` -> {key: Param}."""
    out = {}
    for item in items:
        key, eq, spec = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--space expects KEY=SPEC ({SPEC_HELP}), got {item!r}")
        out[key.strip()] = parse_spec(key.strip(), spec)
    return out


def value_text(value: Any) -> str:
    """A sampled value as a ``--set`` string that converts back to exactly the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _field_kind(hint: Any) -> set[type]:
    """The scalar types a Config field accepts (``float | None`` -> {float})."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {a for a in args if a is not type(None)}


def check_space(config: Any, space: dict[str, Param], fixed: dict[str, str], learner: str) -> None:
    """Check every searched and fixed key against the learner's Config (one-line errors)."""
    names = {f.name for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    for key in [*space, *fixed]:
        if key not in names:
            raise ConfigError(
                f"unknown option {key!r} for learner {learner}; valid options: {', '.join(sorted(names))}"
            )
    for key, param in space.items():
        param.check(key)
        kinds = _field_kind(hints[key])
        if isinstance(param, Float) and not kinds & {float}:
            raise ConfigError(f"--space {key}: {learner}'s {key} is not a real number; use int: or choice:")
        if isinstance(param, Int) and not kinds & {int, float}:
            raise ConfigError(f"--space {key}: {learner}'s {key} is not a number; use choice:")
        if isinstance(param, (Float, Int)):
            _check_ends(config, key, param, learner)
        if isinstance(param, Choice):  # every value must convert as a --set value would
            for value in param.values:
                apply_overrides(config, {key: value_text(value)}, learner)
    apply_overrides(config, fixed, learner)  # fixed values convert


def override_problem(exc: ConfigError) -> str:
    """What :func:`apply_overrides` refused, without its ``--set KEY=VALUE:`` prefix (for values no ``--set`` gave)."""
    text = str(exc)
    return text.partition(": ")[2] if text.startswith("--set ") and ": " in text else text


def _check_ends(config: Any, key: str, param: Float | Int, learner: str) -> None:
    """Both ends of a numeric range must be values ``--set`` accepts (every value between them then is: the
    Config's rules are bounds), so no trial is sampled that its learner refuses."""
    for end in (param.low, param.high):
        try:
            apply_overrides(config, {key: value_text(end)}, learner)
        except ConfigError as exc:
            why = override_problem(exc)
            raise ConfigError(f"--space {key}={param.text()}: {learner}'s {key} cannot be {value_text(end)} "
                              f"({why}); give a range of values it accepts") from None


def space_text(space: dict[str, Param]) -> dict[str, str]:
    """{key: ``--space`` spelling}: how a study records its space."""
    return {k: p.text() for k, p in sorted(space.items())}


def to_optuna(param: Param) -> Any:
    """The Optuna distribution of a range."""
    import optuna.distributions as d

    if isinstance(param, Float):
        return d.FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Int):
        return d.IntDistribution(param.low, param.high, log=param.log)
    return d.CategoricalDistribution(param.values)
