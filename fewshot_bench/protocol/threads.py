"""How many intra-op threads torch uses, per phase: chosen from the machine and the work's size, never its load.

The same command must give the same numbers on the same machine whatever else is running:
a thread count changes how torch splits float sums, and so the last digits of LEO's training
and of a backbone's pretraining. So no default looks at the machine's load; only the cores
this process may use (its CPU affinity, :func:`fewshot_bench.episodes.cpu_cores`) and the
size of the work matter. Each phase of a run chooses by the same rule for its own work:

* **meta-training**: a step whose tensors are small (a meta-batch of fewer than
  :data:`BIG_STEP` input elements and a model of fewer than :data:`BIG_MODEL` parameters:
  the 1-40-40-1 regression MLPs, 5-way 640-d LEO, Meta-SGD and MAML at meta-batch 12) runs
  on **one thread**. It is a thousand or so small operations, each ending at an OpenMP
  barrier: two threads are no faster idle and many times slower when a core is shared
  (docs/speed.md, "Threads"). A bigger step (20-way 5-shot 640-d at meta-batch 12,
  meta-batch 64, big plugins) gets **all the cores** this process may use;
* **evaluation** (the test episodes, after training) chooses again, for its own work: its
  big products over many episodes gain from every core (50,000 LEO 5-way 5-shot test
  episodes on a nearly idle 2-core machine: 146 s on one thread, 80 s on two), so it gets
  **all the cores** unless it is tiny (fewer than :data:`BIG_EVAL` input elements:
  episodes x N x (K + Q) x D), then one thread. Beside another busy process the two threads
  are slower than one (2.2x on that machine): ``free`` is the choice for a busy machine;
* ``pretrain`` and ``embed`` (a backbone on batches of images: big operations) get all the cores.

The automatic choice (``auto``, the default) is capped by a sweep worker's share of the
cores. ``--threads N`` or ``FEWSHOT_BENCH_THREADS=N`` sets N threads for every phase;
``--threads free`` (``FEWSHOT_BENCH_THREADS=free``) opts in to adapting to the load: big
work gets the *free* cores (those this process may use less the rounded 1-minute load
average, at least one), small work one thread, so its numbers may depend on what else ran.

The choices are made before each phase and recorded with the run (``hardware``:
``torch_threads`` and ``threads_reason`` for meta-training, ``eval_threads`` and
``eval_threads_reason`` for evaluation); they are not part of the run's identity.
Evaluation's per-episode results did not depend on the thread count in any measurement
(LEO 1- and 5-shot, Meta-SGD 1-shot: docs/speed.md), nor do those of Meta-SGD's meta-training
(``tests/test_threads.py``); LEO's meta-training differs in the last digits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fewshot_bench.episodes import cpu_cores
from fewshot_bench.errors import ConfigError

ENV = "FEWSHOT_BENCH_THREADS"
FREE = "free"  # the opt-in request to adapt to the machine's load
# Above these a step's operations are big enough for several threads to pay (see the module doc).
BIG_STEP = 2**21  # input elements of one meta-batch: B x N x (K + Q) x D
BIG_MODEL = 2**22  # parameters
# From this an evaluation is big work: input elements of all its episodes, E x N x (K + Q) x D.
# It is one evaluation batch (fewshot_bench.protocol.evaluate.EVAL_BATCH_ELEMENTS): below it an evaluation
# takes about a second or less on one thread (up to 17 LEO 5-way episodes of 599 queries per class, or
# 1,747 of 5), where a second thread saves tenths of a second at best and one stall at a barrier on a
# shared core costs as much (docs/speed.md, "Threads").
BIG_EVAL = 2**25

# A thread request above this many per core is a slip (torch cannot even take some): refused, naming the cores.
THREADS_PER_CORE = 4

# What a user may ask for: a number of threads, FREE, or None (auto).
Request = int | str | None


@dataclass(frozen=True)
class ThreadChoice:
    """The number of torch threads for a phase of a run and why (recorded in the run's provenance)."""

    threads: int
    reason: str


def load_average() -> float:
    """The machine's 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return 0.0


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: ``cores`` less the rounded 1-minute load average, at least 1."""
    cores = cpu_cores() if cores is None else cores
    load = load_average() if load is None else load
    return max(1, min(cores, cores - int(load + 0.5)))


def parse_threads(value: str | int | None, source: str = "--threads") -> Request:
    """A thread request: a positive number, ``"free"``, or None for ``auto``/unset; else a one-line error."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if isinstance(value, str) and value.strip().lower() == FREE:
        return FREE
    try:
        n = 0 if isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"{source} must be a positive number of threads N, 'auto' (the default: from the cores "
                          f"and the work's size) or 'free' (the cores other processes leave free), not {value!r}")
    cores = cpu_cores()
    if n > THREADS_PER_CORE * cores:
        raise ConfigError(f"{source}={value}: at most {THREADS_PER_CORE * cores:,} threads, {THREADS_PER_CORE} for "
                          f"each of the {cores} core(s) this process may use (more only wait for each other)")
    return n


def requested_threads(cli: str | int | None = None) -> tuple[Request, str]:
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


def eval_size(episodes: int, n_way: int, k_shot: int, n_query: int, feature_dim: int) -> int:
    """Input elements of an evaluation: episodes x N x (K + Q) x D."""
    return episodes * n_way * (k_shot + n_query) * max(1, feature_dim)


def _asked(requested: Request, source: str) -> ThreadChoice | None:
    """The choice a number asks for (the same for every phase), else None."""
    if isinstance(requested, int):
        return ThreadChoice(requested, f"{source or 'requested'}={requested}")
    return None


def _mode(requested: Request) -> str:
    return FREE if requested == FREE else "auto"


def choose_threads(
    learner: Any,
    requested: Request = None,
    source: str = "",
    cap: int | None = None,
    cores: int | None = None,
    load: float | None = None,
    train_query: int = 15,
) -> ThreadChoice:
    """The threads for meta-training ``learner`` (see the module doc); ``cap`` bounds the automatic choice.

    ``load`` (default: the machine's) is looked at only when ``requested`` is ``"free"``.
    """
    asked = _asked(requested, source)
    if asked is not None:
        return asked
    size = step_size(learner, train_query)
    params = sum(p.numel() for p in learner.parameters())
    if size < BIG_STEP and params < BIG_MODEL:
        return ThreadChoice(1, f"{_mode(requested)}: small step ({size:,} input elements, {params:,} parameters): "
                               "1 thread")
    return choose_big_work_threads(f"big step ({size:,} input elements, {params:,} parameters)", requested, source,
                                   cap=cap, cores=cores, load=load)


def choose_eval_threads(
    episodes: int,
    n_way: int,
    k_shot: int,
    n_query: int,
    feature_dim: int,
    requested: Request = None,
    source: str = "",
    cap: int | None = None,
    cores: int | None = None,
    load: float | None = None,
) -> ThreadChoice:
    """The threads for evaluating ``episodes`` N-way K-shot episodes of Q queries per class on D-d inputs.

    Many episodes are big work (all the cores under ``auto``); an evaluation of fewer than
    :data:`BIG_EVAL` input elements runs on one thread. ``load`` counts only for ``"free"``.
    """
    asked = _asked(requested, source)
    if asked is not None:
        return asked
    size = eval_size(episodes, n_way, k_shot, n_query, feature_dim)
    what = f"evaluation of {episodes:,} episodes ({size:,} input elements)"
    if size < BIG_EVAL:
        return ThreadChoice(1, f"{_mode(requested)}: small {what}: 1 thread")
    return choose_big_work_threads(what, requested, source, cap=cap, cores=cores, load=load)


def choose_big_work_threads(
    what: str, requested: Request = None, source: str = "", cap: int | None = None, cores: int | None = None,
    load: float | None = None,
) -> ThreadChoice:
    """The threads for work whose operations are big (a big meta-batch, many test episodes, a conv backbone on images).

    ``auto`` (``requested`` None): all the cores this process may use, never its load;
    ``"free"``: the cores other processes leave free (:func:`free_cores`). ``cap`` bounds
    both; a number (``--threads``, the environment) wins.
    """
    asked = _asked(requested, source)
    if asked is not None:
        return asked
    total = cpu_cores() if cores is None else cores
    capped = f", capped at {cap}" if cap is not None and cap < total else ""
    if requested == FREE:
        load = load_average() if load is None else load
        free = free_cores(total, load)
        n = free if cap is None else max(1, min(free, cap))
        return ThreadChoice(n, f"free: {what}, {free} of {total} cores free (load {load:.1f}){capped}: {n} thread(s)")
    n = total if cap is None else max(1, min(total, cap))
    return ThreadChoice(n, f"auto: {what}, {total} cores{capped}: {n} thread(s)")


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """Set torch's intra-op threads to the choice (a no-op when they already are)."""
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice
