"""Conformance checks for learner plugins, as plain functions and as a pytest plugin.

Run every check on a learner class from Python::

    from fewshot_bench.testing import run_checks
    results = run_checks(MyLearner)

or from pytest, one test per check (the scikit-learn ``parametrize_with_checks`` pattern)::

    from fewshot_bench.testing import parametrize_with_checks

    @parametrize_with_checks([MyLearner])
    def test_conformance(learner, check):
        check(learner)

Loading this module as a pytest plugin (``pytest -p fewshot_bench.testing``) adds the
``--fewshot-check-budget`` and ``--fewshot-check-steps`` options and the ``check_options``
and ``check_learner`` fixtures. ``fewshot-bench check-plugin LEARNER`` runs the same checks.
With pytest-benchmark, the fixtures ``time_meta_train_step``, ``time_inner_loop`` and
``time_evaluation`` time a learner beside the built-ins (:mod:`fewshot_bench.testing.timing`;
``fewshot-bench bench LEARNER`` prints the same timings as one table).

:func:`load_plugin` loads a plugin module in-process, before it is installed, as its entry
point would: what a plugin's own tests hand ``fewshot_bench.run(..., host=...)``.
"""

from __future__ import annotations

import importlib.util

from fewshot_bench.plugin_host import PluginHost, load_plugins
from fewshot_bench.testing.checks import (
    CHECKS,
    Check,
    CheckFailed,
    CheckResult,
    CheckSkipped,
    run_check,
    run_checks,
)
from fewshot_bench.testing.harness import BUDGET_ENV, CheckOptions, default_options, set_default_options

__all__ = [
    "BUDGET_ENV",
    "CHECKS",
    "Check",
    "CheckFailed",
    "CheckOptions",
    "CheckResult",
    "CheckSkipped",
    "default_options",
    "load_plugin",
    "parametrize_with_checks",
    "run_check",
    "run_checks",
    "set_default_options",
]


def load_plugin(module: object, name: str | None = None) -> PluginHost:
    """The installed plugins and ``module`` (a plugin module, or any object with hook implementations) loaded
    in-process under entry-point name ``name`` (default: the module's name), as an installed entry point would be.

    Its registrations are checked and isolated like an installed plugin's: a failure is in
    ``host.failures``, not raised.
    """
    return load_plugins(extra=[(name or getattr(module, "__name__", "plugin"), module)])


def parametrize_with_checks(learners, checks=None):
    """A ``pytest.mark.parametrize`` over (learner class, check) pairs, one test id per pair.

    :param learners: Learner classes to check.
    :param checks: Names of the checks to run (default: all of ``CHECKS``).
    """
    import pytest

    chosen = [CHECKS[name] for name in (checks or CHECKS)]
    pairs = [(cls, chk) for cls in learners for chk in chosen]
    return pytest.mark.parametrize("learner, check", pairs, ids=[f"{cls.name}-{chk.name}" for cls, chk in pairs])


# The pytest hooks and fixtures live here so that ``-p fewshot_bench.testing`` finds them;
# they are defined only where pytest is installed (the CLI does not need it).
if importlib.util.find_spec("pytest") is not None:
    from fewshot_bench.testing.pytest_plugin import (  # noqa: F401
        check_learner,
        check_options,
        learner_bench,
        pytest_addoption,
        pytest_configure,
        pytest_unconfigure,
        time_evaluation,
        time_inner_loop,
        time_meta_train_step,
    )
