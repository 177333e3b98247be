"""The pytest side of the conformance kit: command-line options and fixtures.

Loaded with ``pytest -p fewshot_bench.testing`` or ``pytest_plugins = ["fewshot_bench.testing"]``
in a project's top-level ``conftest.py``. The conformance fixtures are ``check_options`` and
``check_learner``; the timing fixtures ``time_meta_train_step``, ``time_inner_loop`` and
``time_evaluation`` time a learner (a class or an installed name) on the standard episode
shape of :mod:`fewshot_bench.testing.timing` with pytest-benchmark's ``benchmark`` fixture, so
a learner and the built-ins it is parametrized beside land in one group of the table.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from fewshot_bench.api.learner import Learner
from fewshot_bench.testing.checks import run_checks
from fewshot_bench.testing.harness import CheckOptions, default_options, set_default_options
from fewshot_bench.testing.timing import Bench, Workload


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the options that size the checks."""
    group = parser.getgroup("fewshot-bench", "fewshot-bench conformance checks")
    group.addoption(
        "--fewshot-check-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="CPU budget of the cpu-budget check (default: $FEWSHOT_BENCH_CHECK_BUDGET or 120)",
    )
    group.addoption(
        "--fewshot-check-steps",
        type=int,
        default=None,
        metavar="N",
        help="meta-training steps of the meta-training check (default 30)",
    )


def _options_from(config: pytest.Config) -> CheckOptions:
    opts = CheckOptions()
    budget = config.getoption("--fewshot-check-budget", None)
    steps = config.getoption("--fewshot-check-steps", None)
    if budget is not None:
        opts.cpu_budget_s = budget
    if steps is not None:
        opts.train_steps = steps
    return opts


def pytest_configure(config: pytest.Config) -> None:
    """Make the command-line sizes the default of every check in this session."""
    set_default_options(_options_from(config))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the built-in defaults."""
    set_default_options(None)


@pytest.fixture
def check_options() -> CheckOptions:
    """The options of this session's checks (from ``--fewshot-check-*``), a fresh copy per test."""
    return default_options()


@pytest.fixture
def check_learner(check_options: CheckOptions) -> Callable[..., None]:
    """A function that runs every check (or those named) on a learner class and fails listing each failure."""

    def run(learner: type[Learner], only: list[str] | None = None) -> None:
        results = run_checks(learner, check_options, only=only)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            lines = "\n".join(f"  {r.check}: {r.detail}" for r in failed)
            pytest.fail(f"learner {learner.name!r} failed {len(failed)} of {len(results)} checks:\n{lines}",
                        pytrace=False)

    return run


# --- timing (pytest-benchmark) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def learner_bench() -> Bench:
    """The :class:`~fewshot_bench.testing.timing.Bench` the timing fixtures use (CPU, the embedded synthetic data)."""
    return Bench()


def record_episodes(benchmark: Any, episodes: int, device: str = "cpu") -> None:
    """Store episodes per second at the median time of one call in ``benchmark.extra_info`` (nothing to store
    under ``--benchmark-disable``)."""
    import torch

    if benchmark.stats is None:
        return
    benchmark.extra_info["episodes_per_s"] = episodes / benchmark.stats.stats.median
    benchmark.extra_info["episodes_per_call"] = episodes
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark.extra_info["device"] = str(device)


def _time(benchmark: Any, work: Workload | None, what: str, rounds: int | None = None) -> Any:
    """Time ``work`` with pytest-benchmark in the group of its phase and shot; skip the test where there is none."""
    if work is None:
        pytest.skip(what)
    benchmark.group = f"{work.phase}, {work.shot}-shot"
    benchmark.extra_info["learner"] = work.learner
    if rounds is None:
        out = benchmark(work.call)
    else:
        out = benchmark.pedantic(work.call, rounds=rounds, iterations=1, warmup_rounds=1)
    record_episodes(benchmark, work.episodes)
    return out


@pytest.fixture
def time_meta_train_step(benchmark: Any, learner_bench: Bench) -> Callable[..., Any]:
    """``time_meta_train_step(learner, shot=1)``: times the harness's meta-training step (a fresh meta-batch each
    call); returns the last step's metrics. Skips a learner with nothing to meta-train."""

    def run(learner: str | type[Learner], shot: int = 1) -> Any:
        return _time(benchmark, learner_bench.meta_train_step(learner, shot), "nothing to meta-train")

    return run


@pytest.fixture
def time_inner_loop(benchmark: Any, learner_bench: Bench) -> Callable[..., Any]:
    """``time_inner_loop(learner, shot=1, inner_loop=None)``: times ``inner_loop(model, batch)`` (default: the
    learner's ``adapt(batch)``) on a fixed training meta-batch, recording the graph the meta-gradient needs;
    returns what it returns. Skips a learner with neither."""

    def run(learner: str | type[Learner], shot: int = 1,
            inner_loop: Callable[[Learner, Any], Any] | None = None) -> Any:
        work = learner_bench.inner_loop(learner, shot, inner_loop)
        return _time(benchmark, work, "no adapt(batch): pass inner_loop=lambda model, batch: ...")

    return run


@pytest.fixture
def time_evaluation(benchmark: Any, learner_bench: Bench) -> Callable[..., Any]:
    """``time_evaluation(learner, shot=1, episodes=200)``: times evaluation as a run makes it (every remaining
    example of a class a query); three rounds after a warm-up; returns the per-episode accuracies."""

    def run(learner: str | type[Learner], shot: int = 1, episodes: int | None = None) -> Any:
        return _time(benchmark, learner_bench.evaluation(learner, shot, episodes), "", rounds=3)

    return run
