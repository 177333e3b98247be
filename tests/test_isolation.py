"""Plugin isolation: broken plugins installed next to the built-ins never break other commands.

The broken plugins (tests/plugin_fixtures/broken) are pip-installed into a temporary tree:
one fails to import, one raises inside its hook, one registers a taken learner name, one
reuses fewshot-bench's own entry-point name (and loads: plugins are keyed by distribution and
entry point), and one provides a learner that raises.
"""

from __future__ import annotations

import types

import pytest
from helpers import one_line_error

from fewshot_bench import hookimpl
from fewshot_bench.errors import PluginError
from fewshot_bench.plugin_host import load_plugins

pytest_plugins = ["plugin_tree"]

BROKEN = "fewshot-bench-broken"


def failures_by_plugin(report: dict) -> dict[str, dict]:
    """The failures of a ``plugins --json`` report, by plugin name."""
    return {f["plugin"]: f for f in report["failures"] if f["distribution"] == BROKEN}


def test_plugins_shows_each_failure_with_distribution_and_error(plugins_on_path, cli):
    """``plugins --json`` names every broken plugin, its distribution, the stage and the error."""
    r = cli("plugins", "--json")
    assert r.code == 0, r.err
    failed = failures_by_plugin(r.json())
    assert set(failed) == {"broken-import", "broken-hook", "broken-duplicate"}
    assert failed["broken-import"]["stage"] == "import"
    assert "ModuleNotFoundError" in failed["broken-import"]["error"]
    assert "fewshot_bench_missing_dependency" in failed["broken-import"]["error"]
    assert failed["broken-hook"]["stage"] == "hook"
    assert failed["broken-hook"]["error"] == "RuntimeError: the GPU kernel cache is corrupt"
    assert failed["broken-duplicate"]["stage"] == "register"
    assert "duplicate learner name 'nearest-centroid'" in failed["broken-duplicate"]["error"]
    assert ("'fewshot-bench'" in failed["broken-duplicate"]["error"]
            and f"'{BROKEN}'" in failed["broken-duplicate"]["error"])
    assert f"FEWSHOT_BENCH_DISABLE_PLUGINS={BROKEN}:broken-duplicate" in failed["broken-duplicate"]["error"]
    # Both plugins with the entry-point name `baselines` load; the built-in one is intact.
    by_dist = {p["distribution"]: p for p in r.json()["plugins"] if p["name"] == "baselines"}
    assert by_dist["fewshot-bench"]["learners"] == ["nearest-centroid", "logreg"]
    assert by_dist[BROKEN]["learners"] == ["shadow-centroid"]

    text = cli("plugins")
    assert text.code == 0 and "failed to load:" in text.out
    assert "broken-hook" in text.out and "the GPU kernel cache is corrupt" in text.out


def test_learners_and_runs_of_other_learners_still_work(plugins_on_path, cli):
    """``learners`` lists the built-ins (not the impostor) and a built-in learner runs end to end."""
    rows = {row["learner"]: row for row in cli("learners", "--json").json()}
    assert rows["nearest-centroid"]["distribution"] == "fewshot-bench"
    assert rows["shadow-centroid"]["distribution"] == BROKEN  # its entry point shares a name with fewshot-bench's only
    assert rows["explodes"]["distribution"] == BROKEN  # a working registration from the broken distribution
    r = cli("run", "--learner", "nearest-centroid", "--episodes", "20", "--json")
    assert r.code == 0, r.err
    assert r.json()["episodes"] == 20 and 0.2 < r.json()["accuracy"] <= 1.0


def test_help_works_in_a_fresh_process_with_broken_plugins(plugin_tree):
    """``--help`` in a real process that can see the broken plugins."""
    done = plugin_tree.cli("--help")
    assert done.returncode == 0, done.stderr
    assert "check-plugin" in done.stdout and "new-plugin" in done.stdout


def test_strict_plugins_turns_failures_into_an_error(plugins_on_path, cli, monkeypatch):
    """``--strict-plugins`` and FEWSHOT_BENCH_STRICT_PLUGINS fail with one line naming the plugin and distribution."""
    r = cli("--strict-plugins", "learners")
    # The first failure is named (the import error), the others counted.
    one_line_error(r, f"plugin 'broken-import' from '{BROKEN}' failed at import", "(and 2 more")
    assert f"FEWSHOT_BENCH_DISABLE_PLUGINS={BROKEN}:broken-import)" in r.err  # exactly that plugin
    monkeypatch.setenv("FEWSHOT_BENCH_STRICT_PLUGINS", "1")
    r = cli("plugins")
    assert r.code == 1 and BROKEN in r.err


def test_disable_plugins_blocks_by_entry_point_and_distribution_name(plugins_on_path, cli, monkeypatch):
    """Blocked plugins are listed as disabled and never imported; blocking the distribution makes strict mode pass."""
    monkeypatch.setenv("FEWSHOT_BENCH_DISABLE_PLUGINS", "broken-import, broken-hook")
    report = cli("plugins", "--json").json()
    assert set(failures_by_plugin(report)) == {"broken-duplicate"}
    disabled = {p["name"] for p in report["plugins"] if p["disabled"]}
    assert disabled == {"broken-import", "broken-hook"}

    monkeypatch.setenv("FEWSHOT_BENCH_DISABLE_PLUGINS", BROKEN)
    r = cli("--strict-plugins", "learners", "--json")
    assert r.code == 0, r.err
    assert "explodes" not in {row["learner"] for row in r.json()}


def test_an_error_inside_a_learner_names_the_learner_and_its_distribution(plugins_on_path, cli, tmp_path):
    """A plain Python error raised by a learner becomes one line naming it, its distribution and the stage."""
    r = cli("run", "--learner", "explodes", "--steps", "0", "--episodes", "5")
    assert r.code == 1 and "Traceback" not in r.err  # after the warning that other plugins of it failed to load
    assert (
        f"learner 'explodes' from distribution '{BROKEN}' failed during evaluation: "
        "ValueError: shapes (5, 640) and (64, 5) not aligned (rerun with -v for the traceback)"
    ) in r.err
    r = cli("run", "--learner", "explodes", "--steps", "2", "--val-every", "1", "--episodes", "5")
    assert r.code == 1
    assert f"learner 'explodes' from distribution '{BROKEN}' failed during meta-training: KeyError: 'inner_lr'" in r.err
    assert not list(tmp_path.rglob("*.pt"))  # no half-written checkpoint


@pytest.mark.slow  # CLI runs with a broken plugin
def test_verbose_shows_the_learners_traceback(plugin_tree):
    """With ``-v`` the original traceback (into the plugin's own file) is printed before the one-line error."""
    done = plugin_tree.cli("-v", "run", "--learner", "explodes", "--steps", "0", "--episodes", "5", "--store", "v.db")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "broken_plugins/explodes.py" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("fewshot-bench: error: learner 'explodes' from distribution")


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def test_a_hook_calling_sys_exit_is_contained():
    """A plugin that calls sys.exit inside its hook is recorded as a failure, not an exit of the harness."""

    @hookimpl
    def fewshot_bench_register_learners(register):
        raise SystemExit(3)

    host = load_plugins(
        extra=[("exits", _module("exits", fewshot_bench_register_learners=fewshot_bench_register_learners))])
    (failure,) = [f for f in host.failures if f.plugin == "exits"]
    assert failure.stage == "hook" and failure.error.startswith("SystemExit")
    assert "nearest-centroid" in host.learners


def test_a_misspelt_hook_is_blamed_on_its_plugin_and_strict_raises():
    """An unknown hook name fails its own plugin only; strict mode raises a PluginError naming it."""

    @hookimpl
    def fewshot_bench_register_learner(register):  # missing "s"
        """Misspelt."""

    extra = [("typo", _module("typo", fewshot_bench_register_learner=fewshot_bench_register_learner))]
    host = load_plugins(extra=extra)
    (failure,) = [f for f in host.failures if f.plugin == "typo"]
    assert "unknown hook" in failure.error
    assert "metasgd" in host.learners
    with pytest.raises(PluginError, match="plugin 'typo'"):
        load_plugins(extra=extra, strict=True)
