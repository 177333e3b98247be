"""Search-space declarations: the ranges a learner's ``search_space`` maps its Config fields to."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fewshot_bench.errors import ConfigError


@dataclass(frozen=True)
class Float:
    """A real value in [low, high], uniform or (``log=True``) log-uniform."""

    low: float
    high: float
    log: bool = False

    def check(self, key: str) -> None:
        """Raise a one-line error for an empty or (log) non-positive range."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ConfigError(f"search range of {key!r}: need LOW <= HIGH, got {self.low}..{self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"search range of {key!r}: a log range needs LOW > 0, got {self.low}")

    def text(self) -> str:
        """``log:0.0001..0.01``: the ``--space`` spelling."""
        return f"{'log' if self.log else 'float'}:{self.low:g}..{self.high:g}"


@dataclass(frozen=True)
class Int:
    """An integer in [low, high] (inclusive), uniform or log-uniform."""

    low: int
    high: int
    log: bool = False

    def check(self, key: str) -> None:
        """Raise a one-line error for an empty or (log) non-positive range."""
        if self.low > self.high:
            raise ConfigError(f"search range of {key!r}: need LOW <= HIGH, got {self.low}..{self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"search range of {key!r}: a log range needs LOW > 0, got {self.low}")

    def text(self) -> str:
        """``int:1..10`` (``:log`` appended for a log range)."""
        return f"int:{self.low}..{self.high}" + (":log" if self.log else "")


class Choice:
    """One of a few values (numbers, strings or booleans)."""

    def __init__(self, *values: Any) -> None:
        self.values = tuple(values)

    def check(self, key: str) -> None:
        """Raise a one-line error for an empty choice."""
        if not self.values:
            raise ConfigError(f"search range of {key!r}: a choice needs at least one value")

    def text(self) -> str:
        """``choice:a,b``."""
        return "choice:" + ",".join(map(str, self.values))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and self.values == other.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        return f"Choice{self.values!r}"


Param = Float | Int | Choice
