"""Plugin precedence and blame: the project's own names cannot be taken, entry-point names do
not shadow each other, a raising hook leaves nothing behind, and load failures are announced.

The impostor distribution ``evil-leo`` (tests/plugin_fixtures/impostor) is pip-installed into
a temporary tree. Its entry point ``leo`` has the same name as fewshot-bench-leo's and
registers a harmless learner; its entry point ``fake-leo`` registers a learner named ``leo``,
a dataset aliased ``mini`` and a backbone ``conv4``, with ``trylast`` hooks (which pluggy
would call first).
"""

from __future__ import annotations

import os
import shutil
import types
from pathlib import Path

import pytest

from fewshot_bench import hookimpl
from fewshot_bench.errors import PluginError
from fewshot_bench.learners.baselines import NearestCentroid
from fewshot_bench.plugin_host import load_plugins

pytest_plugins = ["plugin_tree"]

FIXTURE = Path(__file__).parent / "plugin_fixtures" / "impostor"
EVIL = "evil-leo"
LEO_LEARNERS = {"leo", "leo-deterministic", "leo-random-prior", "leo-no-finetune", "leo-generator-only",
                "leo-generator-finetune"}
HINT = "FEWSHOT_BENCH_DISABLE_PLUGINS=evil-leo:fake-leo"


@pytest.fixture(scope="session")
def impostor_site(tmp_path_factory) -> Path:
    """The impostor distribution, pip-installed once into a temporary ``site``."""
    from plugin_tree import pip_install

    root = tmp_path_factory.mktemp("impostor-tree")
    source = Path(shutil.copytree(FIXTURE, root / "impostor"))  # pip builds in the source tree
    pip_install([source], root / "site")
    return root / "site"


@pytest.fixture
def impostor(impostor_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the impostor discoverable in this process for one test."""
    monkeypatch.syspath_prepend(str(impostor_site))
    for key in [k for k in os.environ if k.startswith("FEWSHOT_BENCH_") and "PLUGINS" in k]:
        monkeypatch.delenv(key)
    return impostor_site


def test_the_projects_own_names_win_whatever_the_load_order(impostor):
    """The real LEO keeps ``leo``; the impostor's learner, dataset alias and backbone are rejected and blamed."""
    host = load_plugins()
    leo = host.learner("leo")
    assert leo.__module__.split(".")[0] == "fewshot_bench_leo"
    assert host.learner_plugin("leo").distribution == "fewshot-bench-leo"
    assert host.dataset("mini").name == "mini" and host.datasets["mini"].plugin.distribution == "fewshot-bench"
    assert "fake-mini" not in host.datasets
    assert host.backbone("conv4") is not NearestCentroid
    assert host.duplicate_learners == {"leo": [EVIL]}

    failures = {f.error.split(":")[0]: f for f in host.failures}
    assert set(failures) == {"duplicate learner name 'leo'", "duplicate dataset name 'mini'",
                             "duplicate backbone name 'conv4'"}
    for f in failures.values():
        assert (f.distribution, f.plugin, f.stage, f.disable) == (EVIL, "fake-leo", "register", "evil-leo:fake-leo")
        assert f.error.endswith(HINT)
        assert "fewshot-bench's own distributions win every name clash" in f.error
    assert "'fewshot-bench-leo'" in failures["duplicate learner name 'leo'"].error
    assert "evil_leo.impostor.FakeLEO" in failures["duplicate learner name 'leo'"].error


def test_an_entry_point_named_like_another_distributions_loads_too(impostor):
    """``evil-leo:leo`` no longer removes fewshot-bench-leo's six learners: both plugins load."""
    host = load_plugins()
    assert {"fewshot-bench-leo:leo", "evil-leo:leo", "evil-leo:fake-leo"} <= set(host.plugins)
    assert set(host.plugins["fewshot-bench-leo:leo"].learners) == LEO_LEARNERS
    assert {n for n, r in host.learners.items() if r.plugin.distribution == "fewshot-bench-leo"} == LEO_LEARNERS
    assert host.learner_plugin("evil-extra").ref == "evil-leo:leo"
    assert not [f for f in host.failures if f.plugin == "leo"]


def test_disabling_dist_colon_entry_point_disables_exactly_that_plugin(impostor):
    """The hint's ``evil-leo:fake-leo`` leaves evil-leo's other plugin and fewshot-bench-leo's ``leo`` alone."""
    host = load_plugins(disabled=["evil-leo:fake-leo"])
    assert host.failures == []
    assert host.plugins["evil-leo:fake-leo"].disabled and not host.plugins["evil-leo:leo"].disabled
    assert "evil-extra" in host.learners and LEO_LEARNERS <= set(host.learners)

    host = load_plugins(disabled=[" Evil_Leo : leo "])  # distribution names compare as pip does
    assert host.plugins["evil-leo:leo"].disabled and not host.plugins["fewshot-bench-leo:leo"].disabled
    assert "evil-extra" not in host.learners and LEO_LEARNERS <= set(host.learners)


def test_strict_mode_names_the_impostor_and_the_precise_hint(impostor):
    with pytest.raises(PluginError) as info:
        load_plugins(strict=True)
    message = str(info.value)
    assert "plugin 'fake-leo' from 'evil-leo' failed at register" in message and "(and 2 more" in message
    assert message.endswith(f"block it with {HINT})") and "\n" not in message


def test_the_cli_runs_the_real_leo_and_reports_the_impostor(impostor, cli, monkeypatch):
    """``run --learner leo`` runs fewshot-bench-leo's LEO (the impostor would raise), stores it as
    such, and ``learners``/``run`` warn in one stderr line while ``plugins`` has the details."""
    r = cli("learners", "--json")
    assert r.code == 0, r.err
    rows = {row["learner"]: row for row in r.json()}
    assert rows["leo"]["distribution"] == "fewshot-bench-leo" and rows["evil-extra"]["distribution"] == EVIL
    assert r.err.splitlines() == [
        "warning: 1 plugin failed to load (learner name 'leo' from evil-leo rejected, it belongs to "
        "fewshot-bench-leo; and 2 more); see `fewshot-bench plugins`"
    ]

    r = cli("run", "--learner", "leo", "--steps", "0", "--episodes", "5", "--eval-query", "2", "--json")
    assert r.code == 0, r.err
    assert r.json()["learner"] == "leo"
    assert [line for line in r.err.splitlines() if line.startswith("warning:")] == r.err.splitlines()[:1]
    (stored,) = cli("results", "--json").json()
    assert stored["options"]["plugin"] == "fewshot-bench-leo"

    report = cli("plugins", "--json").json()
    assert ({(f["distribution"], f["plugin"], f["disable"]) for f in report["failures"]}
            == {(EVIL, "fake-leo", "evil-leo:fake-leo")})
    text = cli("plugins")
    assert "failed to load:" in text.out and "evil-leo:fake-leo (register): duplicate learner name 'leo'" in text.out
    assert text.out.count(HINT) >= 3

    monkeypatch.setenv("FEWSHOT_BENCH_DISABLE_PLUGINS", "evil-leo:fake-leo")
    r = cli("learners")
    assert r.code == 0 and r.err == "" and "evil-extra" in r.out


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


class HalfDone(NearestCentroid):
    name = "half-done"
    description = "registered by a hook that then raises"


def test_a_hook_that_raises_has_its_registrations_rolled_back():
    """A hook that registers a learner and then raises leaves nothing registered, and says so."""

    @hookimpl
    def fewshot_bench_register_learners(register):
        register(HalfDone)
        raise RuntimeError("out of disk space")

    host = load_plugins(
        extra=[("half", _module("half", fewshot_bench_register_learners=fewshot_bench_register_learners))])
    assert "half-done" not in host.learners and host.plugins["half:half"].learners == []
    (failure,) = host.failures
    assert failure.stage == "hook"
    assert failure.error == ("RuntimeError: out of disk space "
                             "(rolled back what it registered first: learner 'half-done')")
    assert host.failure_warning() == (
        "warning: 1 plugin failed to load (half:half raised RuntimeError in fewshot_bench_register_learners); "
        "see `fewshot-bench plugins`"
    )


def test_register_called_after_the_hook_returned_is_refused():
    """A plugin that keeps the callback and registers later (outside its hook) is refused."""
    kept = []

    @hookimpl
    def fewshot_bench_register_learners(register):
        kept.append(register)

    host = load_plugins(
        extra=[("later", _module("later", fewshot_bench_register_learners=fewshot_bench_register_learners))])
    kept[0](HalfDone)
    assert "half-done" not in host.learners
    (failure,) = host.failures
    assert failure.stage == "register" and "after its fewshot_bench_register_learners hook returned" in failure.error
