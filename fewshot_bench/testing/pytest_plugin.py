"""The pytest side of the conformance kit: command-line options and fixtures.

Loaded with ``pytest -p fewshot_bench.testing`` or ``pytest_plugins = ["fewshot_bench.testing"]``
in a project's top-level ``conftest.py``.
"""

from __future__ import annotations

from typing import Callable

import pytest

from fewshot_bench.api.learner import Learner
from fewshot_bench.testing.checks import run_checks
from fewshot_bench.testing.harness import CheckOptions, default_options, set_default_options


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
