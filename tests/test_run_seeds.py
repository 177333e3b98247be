"""`run --seeds`: one stored run per seed, exactly the rows separate `run --seed` commands store."""

from __future__ import annotations

import numpy as np
import pytest

import fewshot_bench as fb
from fewshot_bench.commands.run import seed_range
from fewshot_bench.errors import ConfigError
from fewshot_bench.store import ResultStore

BUDGET = ["--steps", "20", "--val-every", "10", "--val-episodes", "30", "--episodes", "100"]


def rows(store):
    """{seed: (run key, mean, per-episode values, steps)} of a store's runs."""
    with ResultStore(store, create=False) as db:
        return {
            r.seed: (r.run_key, r.mean, db.episode_values(r.run_id), r.summary["train"]["steps"]) for r in db.runs()
        }


def assert_same_rows(a, b):
    assert sorted(a) == sorted(b)
    for seed in a:
        key_a, mean_a, values_a, steps_a = a[seed]
        key_b, mean_b, values_b, steps_b = b[seed]
        assert key_a == key_b and steps_a == steps_b
        np.testing.assert_allclose(values_a, values_b, atol=1e-6)
        assert mean_a == pytest.approx(mean_b, abs=1e-6)


@pytest.mark.slow  # seven runs through the CLI: 15 s
def test_run_seeds_stores_what_separate_runs_store_and_reuses_them(cli, tmp_path):
    for seed in (0, 1, 2):
        assert cli("run", "--learner", "metasgd", "--seed", seed, *BUDGET, "--store", "alone.db").code == 0
    together = cli("run", "--learner", "metasgd", "--seeds", "0-2", *BUDGET, "--store", "together.db", "--json")
    assert together.code == 0, together.err
    assert [r["seed"] for r in together.json()["runs"]] == [0, 1, 2]
    assert_same_rows(rows(tmp_path / "alone.db"), rows(tmp_path / "together.db"))

    # the stored seeds are reused; a new one is computed and stored beside them
    again = cli("run", "--learner", "metasgd", "--seeds", "1,2,3", *BUDGET, "--store", "together.db")
    assert again.code == 0, again.err
    assert again.err.count("reusing it") == 2
    assert cli("run", "--learner", "metasgd", "--seed", 3, *BUDGET, "--store", "alone.db").code == 0
    assert_same_rows(rows(tmp_path / "alone.db"), rows(tmp_path / "together.db"))


def test_population_off_trains_the_seeds_one_after_another_to_the_same_rows(tmp_path):
    budget = {"steps": 20, "val_every": 10, "val_episodes": 30, "episodes": 100}
    on = fb.run("metasgd", seeds=[0, 1], store=tmp_path / "on.db", **budget)
    off = fb.run("metasgd", seeds=[0, 1], store=tmp_path / "off.db", population=False, **budget)
    assert [r.seed for r in on] == [0, 1] == [r.seed for r in off]
    assert on[0].provenance["timings"]["population"]["path"] == "batched"
    assert off[0].provenance["timings"]["population"]["path"] == "sequential"
    assert on[0].provenance["timings"]["population"]["peak_bytes"] > 0
    assert_same_rows(rows(tmp_path / "on.db"), rows(tmp_path / "off.db"))
    # split into populations of one: still the same rows
    single = fb.run("metasgd", seeds=[0, 1], store=tmp_path / "one.db", population_size=1, **budget)
    assert single[1].provenance["timings"]["population"]["members"] == 1
    assert_same_rows(rows(tmp_path / "on.db"), rows(tmp_path / "one.db"))


def test_seed_ranges_and_their_errors(cli):
    assert seed_range("0-4") == [0, 1, 2, 3, 4] and seed_range("3,1") == [3, 1] and seed_range("7") == [7]
    for bad in ("4-2", "0,0", "a-b", "1,,2"):
        out = cli("run", "--learner", "metasgd", "--seeds", bad)
        assert out.code == 2 and "--seeds" in out.err, (bad, out.err)
    both = cli("run", "--learner", "metasgd", "--seed", "1", "--seeds", "0-1")
    assert both.code == 2 and "not allowed with" in both.err
    with pytest.raises(ConfigError, match="seed or seeds"):
        fb.run("metasgd", seed=1, seeds=[0, 1])
