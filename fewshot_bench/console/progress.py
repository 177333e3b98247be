"""Progress for terminals (tqdm bars) and for logs (one line every so often).

A run under ``nohup``, Slurm or CI writes to a file, where a tqdm bar is noise or nothing.
There the CLI prints one line on stderr every :data:`DEFAULT_EVERY` seconds
(``$FEWSHOT_BENCH_PROGRESS_EVERY``; 0 turns it off)::

    meta-train leo: step 1200/100000 (1.2%) 85 ep/s val=0.6120 best=0.6200 eta 3h12m

``-q`` turns both off.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

from fewshot_bench.errors import ConfigError

EVERY_ENV = "FEWSHOT_BENCH_PROGRESS_EVERY"
DEFAULT_EVERY = 30.0


def log_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between progress lines in logs (``$FEWSHOT_BENCH_PROGRESS_EVERY``, default 30); None when 0."""
    raw = (os.environ if env is None else env).get(EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not math.isfinite(every) or every < 0:
        raise ConfigError(f"{EVERY_ENV} must be a number of seconds (0: no progress lines), not {raw!r}")
    return every or None


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h12m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LogProgress:
    """A tqdm-like counter that prints one line every ``every`` seconds (and one at the end).

    ``scale`` converts units to episodes for the rate (a meta-training step is a meta-batch
    of episodes); ``always`` prints the final line even when the work took less than ``every``
    (a run's test evaluation: the log says it happened, how many episodes and how long). Only
    ``update``, ``set_postfix`` and the context manager are provided: what the outer loop and
    evaluation use of tqdm.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        initial: int = 0,
        every: float = DEFAULT_EVERY,
        scale: int = 1,
        stream: TextIO | None = None,
        clock=time.monotonic,
        always: bool = False,
    ) -> None:
        self.total, self.desc, self.unit, self.every, self.scale = total, desc, unit, every, scale
        self.always = always
        self.n = self._start_n = initial
        self.stream = stream
        self.clock = clock
        self._start = self._last = clock()
        self.postfix: dict[str, Any] = {}
        self.lines = 0

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and self.n > self._start_n and (self.lines or self.always):
            self.emit(final=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.emit()

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)

    def line(self, final: bool = False) -> str:
        """The record: what, how far, how fast, the latest metrics, and the time left (or taken)."""
        elapsed = self.clock() - self._start
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.n / self.total if self.total else 100.0
        parts = [f"{self.desc}: {self.unit} {self.n:,}/{self.total:,} ({pct:.1f}%)"]
        if rate > 0:
            eps = rate * self.scale
            parts.append(f"{eps:,.0f} ep/s" if self.scale > 1 or self.unit == "ep" else f"{rate:,.1f} {self.unit}/s")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        if final:
            parts.append(f"took {duration(elapsed)}")
        elif rate > 0 and self.total > self.n:
            parts.append(f"eta {duration((self.total - self.n) / rate)}")
        return " ".join(parts)

    def emit(self, final: bool = False) -> None:
        print(self.line(final), file=self.stream or sys.stderr, flush=True)
        self.lines += 1


def progress(total: int, desc: str, unit: str, bar: bool, every: float | None, initial: int = 0, scale: int = 1,
             always: bool = False, **tqdm_kwargs: Any):
    """A tqdm bar (``bar``: a terminal), else a :class:`LogProgress` (``every`` seconds; ``always``: a line at the
    end however short the work), else a disabled tqdm."""
    from tqdm.auto import tqdm

    if bar or not every:
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not bar, **tqdm_kwargs)
    return LogProgress(total, desc, unit=unit, initial=initial, every=every, scale=scale, always=always)
