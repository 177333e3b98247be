"""Helpers shared by several test files: how a clean user error looks, a process killed mid-run, tiny episodes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fewshot_bench.api.batches import EpisodeBatch

ERROR_PREFIX = "fewshot-bench: error: "


def one_line_error(result, *needles: str) -> str:
    """Assert a clean user error and return its line: exit 1, no traceback, stderr one ``fewshot-bench: error:``
    line holding every needle."""
    assert result.code == 1, (result.out, result.err)
    assert "Traceback" not in result.err, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], seconds: float, what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fails if it ends first or ``what`` has not happened within
    ``seconds``."""
    deadline = time.time() + seconds
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, f"no {what}"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def tiny_batch(b=2, n=3, k=2, q=2, d=6, dtype=torch.float64, seed=0) -> EpisodeBatch:
    """A random batch of small episodes with L2-normalised features and class-position labels."""
    g = torch.Generator().manual_seed(seed)
    support = F.normalize(torch.rand(b, n, k, d, generator=g, dtype=dtype), dim=-1)
    query = F.normalize(torch.rand(b, n, q, d, generator=g, dtype=dtype), dim=-1)
    labels = lambda m: torch.arange(n).view(1, n, 1).expand(b, n, m)  # noqa: E731
    # Queries class by class, as meta-training batches hold them: [B, N * Q, D] with labels [B, N * Q].
    return EpisodeBatch(
        support=support, support_labels=labels(k), query=query.reshape(b, n * q, d),
        query_labels=labels(q).reshape(b, n * q),
    )
