"""How many intra-op threads torch uses for a run: chosen from the work's size and the free cores.

A meta-training step of the models this harness runs is a thousand or so small tensor
operations. Split over several OpenMP threads, each operation ends at a barrier where the
threads wait for each other; on a machine whose cores are shared with other busy processes
a descheduled thread holds every barrier up. Measured on a 2-core machine (docs/speed.md,
"Threads"): a LEO sines-lines step took 25 ms with one thread and 176-310 ms with two while
another process was busy, and even idle the LEO 5-way step is no faster with two threads.
So:

* a step whose tensors are small (a meta-batch of fewer than :data:`BIG_STEP` input
  elements and a model of fewer than :data:`BIG_MODEL` parameters: the 1-40-40-1 regression
  MLPs, 5-way 640-d LEO, Meta-SGD and MAML at meta-batch 12) runs on **one thread**;
* a bigger one (20-way 5-shot 640-d at meta-batch 12, meta-batch 64, big plugins) gets
  **the free cores**: those this process may use (its CPU affinity) less the 1-minute load
  average of the rest of the machine, at least one;
* ``--threads N`` or ``FEWSHOT_BENCH_THREADS=N`` (``auto``: the rule above) override it;
  a sweep's workers are capped at their share of the cores;
* ``pretrain`` and ``embed`` (a backbone on batches of images: big operations) get the free
  cores, with the same overrides.

The choice is made once, before any work, and recorded with the run (``hardware``:
``torch_threads`` and ``threads_reason``); it is not part of the run's identity. Results do
not depend on it for the built-in learners (``tests/test_threads.py`` runs the same spec
with 1 and 2 threads and compares every per-episode metric).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fewshot_bench.episodes import cpu_cores
from fewshot_bench.errors import ConfigError

ENV = "FEWSHOT_BENCH_THREADS"
# Above these a step's operations are big enough for several threads to pay (see the module doc).
BIG_STEP = 2**21  # input elements of one meta-batch: B x N x (K + Q) x D
BIG_MODEL = 2**22  # parameters


@dataclass(frozen=True)
class ThreadChoice:
    """The number of torch threads for a run and why (recorded in the run's provenance)."""

    threads: int
    reason: str


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: ``cores`` less the rounded 1-minute load average, at least 1."""
    cores = cpu_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # not on every platform
            load = 0.0
    return max(1, min(cores, cores - int(load + 0.5)))


def parse_threads(value: str | int | None, source: str = "--threads") -> int | None:
    """A thread request: a positive number, or None for ``auto``/unset; anything else is a one-line error."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"{source} must be a positive number of threads or 'auto', not {value!r}")
    return n


def requested_threads(cli: str | int | None = None) -> tuple[int | None, str]:
    """What the user asked for: ``--threads`` first, then ``$FEWSHOT_BENCH_THREADS``; (None, '') for auto."""
    n = parse_threads(cli, "--threads")
    if n is not None:
        return n, "--threads"
    n = parse_threads(os.environ.get(ENV), ENV)
    return (n, ENV) if n is not None else (None, "")


def step_size(learner: Any, train_query: int = 15) -> int:
    """Input elements of one meta-training batch: meta-batch x N x (K + Q) x D."""
    task = learner.task
    batch = int(getattr(learner.config, "meta_batch_size", 12) or 1)
    return batch * task.n_way * (task.k_shot + train_query) * max(1, task.feature_dim)


def choose_threads(
    learner: Any,
    requested: int | None = None,
    source: str = "",
    cap: int | None = None,
    cores: int | None = None,
    load: float | None = None,
    train_query: int = 15,
) -> ThreadChoice:
    """The threads for a run of ``learner`` (see the module doc); ``cap`` bounds the automatic choice."""
    if requested is not None:
        return ThreadChoice(requested, f"{source or 'requested'}={requested}")
    size = step_size(learner, train_query)
    params = sum(p.numel() for p in learner.parameters())
    if size < BIG_STEP and params < BIG_MODEL:
        return ThreadChoice(1, f"auto: small step ({size:,} input elements, {params:,} parameters): 1 thread")
    return choose_big_work_threads(f"big step ({size:,} input elements, {params:,} parameters)", cap=cap,
                                   cores=cores, load=load)


def choose_big_work_threads(
    what: str, requested: int | None = None, source: str = "", cap: int | None = None, cores: int | None = None,
    load: float | None = None,
) -> ThreadChoice:
    """The threads for work whose operations are big (a big meta-batch, a conv backbone on images): the free cores.

    ``cap`` bounds the automatic choice; a request (``--threads``, the environment) wins.
    """
    if requested is not None:
        return ThreadChoice(requested, f"{source or 'requested'}={requested}")
    total = cpu_cores() if cores is None else cores
    free = free_cores(total, load)
    n = free if cap is None else max(1, min(free, cap))
    why = f"{free} of {total} cores free" + (f", capped at {cap}" if cap is not None and cap < free else "")
    return ThreadChoice(n, f"auto: {what}, {why}: {n} thread(s)")


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """Set torch's intra-op threads to the choice (a no-op when they already are)."""
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice
