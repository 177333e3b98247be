"""Timing a learner beside the built-ins: ``fewshot-bench bench``, the pytest-benchmark fixtures, the template's
benchmark file, and the ``cpu-budget`` check's hint for a slow learner without a readout.

Timings on a shared 2-core machine vary several-fold, so these tests assert the rows, their shape and the hint's
logic; the slow learner is slow by construction (it sleeps per episode), never by a tight threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import one_line_error

from fewshot_bench.commands.new_plugin import names_for, write_plugin
from fewshot_bench.learners.baselines import NearestCentroid
from fewshot_bench.plugin_host import load_plugins
from fewshot_bench.testing import CHECKS, CheckOptions, run_check
from fewshot_bench.testing.timing import PHASES, READOUT_HINT_RATIO, readout_hint

pytest_plugins = ["pytester"]

INSTALLED = load_plugins()
SLEEP_PER_EPISODE_S = 0.1


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One intra-op thread everywhere (FEWSHOT_BENCH_THREADS, as runs read it): on a loaded 2-core machine two
    OpenMP threads stall at their barriers for hundreds of milliseconds, which would time the machine, not the
    learners."""
    monkeypatch.setenv("FEWSHOT_BENCH_THREADS", "1")


class SleepyCentroid(NearestCentroid):
    """Nearest centroid that defines only ``predict`` (its parent's readout is then ignored) and sleeps per episode:
    many times slower to evaluate than the built-ins on any machine."""

    name = "sleepy-centroid"
    description = "nearest centroid, slow, without a readout of its own"

    def predict(self, batch):
        time.sleep(SLEEP_PER_EPISODE_S * batch.batch_size)
        return super().predict(batch)


def cpu_budget(cls, **options) -> tuple[str, str]:
    result = run_check(CHECKS["cpu-budget"], cls, CheckOptions(host=INSTALLED, budget_episodes=20, **options))
    return result.status, result.detail


def test_a_slow_learner_without_a_readout_is_told_to_add_one():
    """20 episodes sleep 2 s beside nearest centroid's class-blocked evaluation of the same episodes (tens of
    milliseconds: the cheapest built-in, so that a loaded machine, which slows it, cannot close a 10x gap that the
    sleep does not share), and the hint names linear_readout."""
    status, detail = cpu_budget(SleepyCentroid, speed_references=("nearest-centroid",))
    assert status == "passed", detail
    assert "20 test episodes (all remaining queries)" in detail and "x the time of nearest-centroid" in detail
    assert "has no linear_readout: define linear_readout(batch)" in detail


def test_a_fast_learner_with_a_readout_gets_no_hint():
    """Beside the default references, LEO and Meta-SGD."""
    status, detail = cpu_budget(NearestCentroid)
    assert status == "passed", detail
    assert "x the time of leo" in detail and "x the time of metasgd" in detail and "linear_readout" not in detail


def test_the_hint_needs_both_slowness_against_every_builtin_and_no_readout():
    slow = {"leo": READOUT_HINT_RATIO * 3, "metasgd": READOUT_HINT_RATIO * 2}
    assert "30x slower than leo and 20x slower than metasgd" in readout_hint(slow, readout=False)
    assert readout_hint(slow, readout=True) is None
    assert readout_hint({"leo": 30.0, "metasgd": READOUT_HINT_RATIO / 2}, readout=False) is None
    assert readout_hint({}, readout=False) is None


def test_bench_prints_a_row_per_learner_and_phase_with_ratios(cli):
    """nearest-centroid has no meta-training step and no adapt: '-' there; Meta-SGD is the reference (ratio 1)."""
    r = cli("bench", "nearest-centroid", "--against", "metasgd", "--episodes", "5", "--min-time", "0", "--json")
    assert r.code == 0, r.err
    rows = r.json()
    assert [(row["learner"], row["phase"]) for row in rows] == [
        (name, phase) for phase in PHASES for name in ("nearest-centroid", "metasgd")]
    by = {(row["learner"], row["phase"]): row for row in rows}
    for phase in PHASES:
        ref = by["metasgd", phase]
        assert ref["x_metasgd"] == 1.0 and ref["episodes_per_s"] > 0 and ref["threads"] >= 1
    assert by["metasgd", "meta-train step"]["episodes"] == 12 and by["metasgd", "evaluation"]["episodes"] == 5
    assert by["nearest-centroid", "meta-train step"]["median_ms"] == "-"
    assert by["nearest-centroid", "inner loop"]["x_metasgd"] == "-"
    assert by["nearest-centroid", "evaluation"]["x_metasgd"] > 0


def test_bench_table_and_bad_arguments(cli):
    r = cli("bench", "metasgd", "--against", "", "--phase", "inner loop", "--min-time", "0")
    assert r.code == 0, r.err
    assert "metasgd" in r.out and "inner loop" in r.out and "x_" not in r.out
    one_line_error(cli("bench", "no-such-learner"), "unknown learner 'no-such-learner'")
    one_line_error(cli("bench", "metasgd", "--against", "leo,nope"), "unknown learner 'nope'")
    one_line_error(cli("bench", "metasgd", "--episodes", "0"), "--episodes must be between 1")
    one_line_error(cli("bench", "metasgd", "--shot", "0"), "--shot must name shots between 1")


def test_timing_fixtures_put_a_learner_beside_the_builtins(pytester):
    """The kit's fixtures time any learner class and the built-ins by name, grouped per phase, with episodes/s."""
    pytester.makeconftest('pytest_plugins = ["fewshot_bench.testing"]')
    pytester.makepyfile(
        """
        import pytest
        from fewshot_bench.learners.baselines import NearestCentroid

        @pytest.mark.parametrize("learner", [NearestCentroid, "metasgd"])
        def test_evaluation(time_evaluation, learner):
            accuracies = time_evaluation(learner, episodes=4)
            assert accuracies.shape == (4,)

        def test_inner_loop(time_inner_loop):
            assert time_inner_loop("metasgd").shape == (12, 5, 640)

        def test_no_inner_loop_is_a_skip(time_inner_loop):
            time_inner_loop(NearestCentroid)

        def test_meta_train_step(time_meta_train_step):
            assert time_meta_train_step("metasgd")["nan_step"] == 0
        """
    )
    out = pytester.path / "bench.json"
    result = pytester.runpytest("--benchmark-max-time=0.05", "--benchmark-min-rounds=1", "--benchmark-warmup=off",
                                f"--benchmark-json={out}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, skipped=1)
    benchmarks = json.loads(out.read_text())["benchmarks"]
    groups = {b["extra_info"]["learner"]: b["group"] for b in benchmarks if b["name"].startswith("test_evaluation")}
    assert groups == {"nearest-centroid": "evaluation, 1-shot", "metasgd": "evaluation, 1-shot"}
    assert all(b["extra_info"]["episodes_per_s"] > 0 for b in benchmarks)
    assert {b["group"] for b in benchmarks} == {"evaluation, 1-shot", "inner loop, 1-shot", "meta-train step, 1-shot"}


@pytest.mark.slow
def test_the_templates_benchmark_file_runs_as_generated(tmp_path):
    """new-plugin's benchmarks/test_speed.py, before the plugin is installed: the template learner (its inner loop
    given explicitly) beside LEO and Meta-SGD in every phase, each timed once."""
    write_plugin(tmp_path / "pkg", names_for("fresh-learner"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "pkg"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable", "benchmarks"],
        cwd=tmp_path / "pkg", env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "9 passed" in done.stdout, done.stdout
    # A plain `pytest` of the package tests only: benchmarks time, and run when named.
    listed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "."],
                            cwd=tmp_path / "pkg", env=env, capture_output=True, text=True, timeout=600)
    assert listed.returncode == 0 and "tests/test_conformance.py" in listed.stdout, listed.stdout + listed.stderr
    assert "test_speed" not in listed.stdout
