"""Evaluation integrity: each way of gaming the benchmark, written as a plugin, is caught by its check
with a message that says what to fix, and evaluation never stores a number a learner's fast path faked.

The cheats live in tests/plugin_fixtures/cheats (a real distribution, pip-installed by plugin_tree
for the command-line tests; imported directly for the in-process ones).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.errors import PluginError
from fewshot_bench.protocol.evaluate import evaluate
from fewshot_bench.testing import CHECKS, CheckOptions, run_check, run_checks

sys.path.insert(0, str(Path(__file__).parent / "plugin_fixtures" / "cheats"))
import fewshot_bench_cheats as cheats  # noqa: E402

pytest_plugins = ["plugin_tree"]

CAUGHT = [
    (cheats.LabelReader, "predict", "predict never sees query labels"),
    (cheats.SlotReader, "query-order", "never from its index"),
    (cheats.LeakyReadout, "readout", "linear_readout picks another class than predict"),
    (cheats.QueryCentred, "inductive", "declare the learner transductive"),
]


@pytest.mark.parametrize("cls, check, words", CAUGHT, ids=lambda v: v.name if isinstance(v, type) else None)
def test_each_cheat_fails_its_check_with_a_fix(host, cls, check, words):
    result = run_check(CHECKS[check], cls, CheckOptions(host=host))
    assert result.status == "failed", result.detail
    assert words in result.detail


def test_cheats_pass_the_checks_that_cannot_see_them(host):
    """Each check is needed: without it the cheat would pass (the readout leak is invisible to predict's checks)."""
    opts = CheckOptions(host=host)
    for name in ("predict", "isolation", "batching", "query-order", "inductive"):
        assert run_check(CHECKS[name], cheats.LeakyReadout, opts).status == "passed", name
    for name in ("predict", "isolation", "batching", "query-order"):
        assert run_check(CHECKS[name], cheats.QueryCentred, opts).status == "passed", name


def test_a_declared_transductive_learner_passes_and_says_so(host):
    results = {r.check: r for r in run_checks(cheats.TransductiveCentroid, CheckOptions(host=host))}
    assert {r.status for r in results.values()} <= {"passed", "skipped"}
    assert "declared transductive" in results["inductive"].detail


def test_the_class_slot_reader_scores_chance_once_queries_are_shuffled(synthetic):
    """Its trick is worth 100% on class-grouped queries and nothing on evaluation's order."""
    learner = cheats.SlotReader(None, TaskSpec(5, 1, synthetic.feature_dim))
    grouped = synthetic.split("test").sampler(5, 1, 15, 0, stream="test").batch(0, 50)
    assert (learner.predict(grouped.inputs()).argmax(-1) == grouped.query_labels).float().mean() == 1.0
    acc = evaluate(learner, synthetic.split("test"), 5, 1, seed=0, episodes=200, n_query=15)
    assert abs(float(acc.mean()) - 0.2) < 0.03


def test_the_query_order_cannot_be_rebuilt_from_the_episode_ids(synthetic, monkeypatch):
    """``order-breaker`` passes every check and recomputes the order from the ids it gets and guessed seeds:
    unsalted, it scores far above the honest nearest centroid it falls back to; salted with the split's
    contents, which it never sees, its guesses never fit and it scores exactly as the honest learner."""
    learner = cheats.OrderBreaker(None, TaskSpec(5, 1, synthetic.feature_dim))
    honest = cheats.LeakyReadout(None, TaskSpec(5, 1, synthetic.feature_dim))  # its predict is the honest centroid
    score = dict(split=synthetic.split("test"), n_way=5, k_shot=1, seed=0, episodes=200, n_query=15, fast=False)
    assert {r.status for r in run_checks(cheats.OrderBreaker)} <= {"passed", "skipped"}
    np.testing.assert_array_equal(evaluate(learner, **score), evaluate(honest, **score))
    monkeypatch.setitem(vars(score["split"]), "content_digest", 0)  # the order as it was before the salt
    assert evaluate(learner, **score).mean() > evaluate(honest, **score).mean() + 0.3


def test_evaluation_refuses_a_readout_that_disagrees_with_predict(synthetic):
    learner = cheats.LeakyReadout(None, TaskSpec(5, 1, synthetic.feature_dim))
    with pytest.raises(PluginError, match="learner 'leaky-readout': its linear_readout disagrees with its predict"):
        evaluate(learner, synthetic.split("test"), 5, 1, seed=0, episodes=100, fast=True)
    honest = evaluate(learner, synthetic.split("test"), 5, 1, seed=0, episodes=100, fast=False)
    assert 0.3 < float(np.mean(honest)) < 1.0  # predict itself is an honest nearest centroid


@pytest.mark.slow  # check-plugin on every cheat
def test_check_plugin_names_each_cheat_and_its_check(plugin_tree):
    done = plugin_tree.cli(
        "check-plugin", "label-reader", "slot-reader", "leaky-readout", "query-centred", "transductive-centroid",
        "--json",
    )
    assert done.returncode == 1
    report = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {r["learner"]: {c["check"] for c in r["checks"] if c["status"] == "failed"} for r in report["learners"]}
    assert "predict" in failed["label-reader"]
    assert "query-order" in failed["slot-reader"]
    assert failed["leaky-readout"] == {"readout"}
    assert failed["query-centred"] == {"inductive"}
    assert failed["transductive-centroid"] == set()
    assert "'leaky-readout' (distribution 'fewshot-bench-cheats') failed readout" in done.stderr


@pytest.mark.slow  # full CLI runs of two plugins
def test_run_with_a_faked_readout_stores_nothing_and_a_transductive_row_is_marked(plugin_tree, tmp_path):
    store = tmp_path / "results.db"
    done = plugin_tree.cli("run", "--learner", "leaky-readout", "--episodes", "200", "--store", str(store))
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()
    assert len([line for line in error if line.startswith("fewshot-bench: error:")]) == 1
    assert "linear_readout disagrees with its predict" in error[-1] and "Traceback" not in done.stderr
    if store.exists():
        assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    done = plugin_tree.cli("run", "--learner", "transductive-centroid", "--episodes", "50", "--store", str(store))
    assert done.returncode == 0, done.stderr
    listing = plugin_tree.cli("results", "--store", str(store))
    assert "transductive-centroid†" in listing.stdout and "transductive" in listing.stdout
