"""Where a run's time goes: named sections timed with a wall clock (``run --profile``)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch


class Profiler:
    """Accumulates wall time per named section; synchronises CUDA only when enabled."""

    def __init__(self, enabled: bool = False, device: torch.device | None = None) -> None:
        self.enabled = enabled
        self.cuda = device is not None and device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the enclosed block under ``name`` (a no-op when disabled)."""
        if not self.enabled:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def table(self) -> list[dict[str, float | str | int]]:
        """Rows of (section, seconds, calls, share of the total), largest first."""
        total = sum(self.seconds.values()) or 1.0
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        return [
            {"section": k, "seconds": round(v, 3), "calls": self.calls[k], "share": f"{100 * v / total:.1f}%"}
            for k, v in rows
        ]
