"""`run --seeds`: one stored run per seed, exactly the rows separate `run --seed` commands store."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import kill_when

import fewshot_bench as fb
from fewshot_bench.commands.run import seed_range
from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import ResultStore

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


@pytest.mark.equivalence
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


@pytest.mark.equivalence
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
    assert list(seed_range("0-4")) == [0, 1, 2, 3, 4] and seed_range("3,1") == [3, 1] and seed_range("7") == [7]
    for bad in ("4-2", "0,0", "a-b", "1,,2"):
        out = cli("run", "--learner", "metasgd", "--seeds", bad)
        assert out.code == 2 and "--seeds" in out.err, (bad, out.err)
    both = cli("run", "--learner", "metasgd", "--seed", "1", "--seeds", "0-1")
    assert both.code == 2 and "not allowed with" in both.err
    with pytest.raises(ConfigError, match="seed or seeds"):
        fb.run("metasgd", seed=1, seeds=[0, 1])


def test_a_bad_population_memory_setting_is_one_line_before_any_work(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_BENCH_POPULATION_MEMORY", "lots")
    out = cli("run", "--learner", "metasgd", "--seeds", "0-1", *BUDGET, "--store", tmp_path / "x.db")
    assert out.code == 1 and "FEWSHOT_BENCH_POPULATION_MEMORY='lots' is not a size" in out.err
    assert "Traceback" not in out.err and not (tmp_path / "x.db").exists()


@pytest.mark.equivalence
@pytest.mark.slow  # eleven runs: 18 s
def test_sweep_runs_each_cells_missing_seeds_as_one_population_storing_the_rows_of_separate_runs(tmp_path):
    budget = {"budget": "quick", "steps": 20, "val_every": 10, "val_episodes": 30, "episodes": 100}
    fb.run("metasgd", seed=1, store=tmp_path / "grouped.db", train_on_val=True, **budget)  # one seed stored already
    grouped = fb.sweep(["metasgd"], shots=[1, 5], seeds=3, store=tmp_path / "grouped.db", **budget)
    assert grouped.ran == 5 and grouped.already_complete == 1 and not grouped.failed
    populations = {r.shot: r.provenance["timings"].get("population") for r in grouped.runs if not r.reused}
    assert populations[1]["members"] == 2 and populations[5]["members"] == 3
    separate = fb.sweep(["metasgd"], shots=[1, 5], seeds=3, store=tmp_path / "separate.db", population=False, **budget)
    assert separate.ran == 6 and "population" not in separate.runs[0].provenance["timings"]
    by_key = {(r.shot, r.seed): r for r in separate.runs}
    for r in grouped.runs:
        alone = by_key[(r.shot, r.seed)]
        assert r.run_key == alone.run_key
        np.testing.assert_allclose(r.per_episode, alone.per_episode, atol=1e-6)


def test_populations_group_each_cells_seeds_up_to_a_size():
    from fewshot_bench.protocol.spec import Job, PopulationJob, RunSpec
    from fewshot_bench.search.sweep import populations

    jobs = [Job(RunSpec("leo", shot=shot, seed=seed), f"{shot}-{seed}") for shot in (1, 5) for seed in range(5)]
    jobs.append(Job(RunSpec("metasgd", seed=0), "lone"))
    grouped = populations(jobs, size=2)
    assert [g.label for g in grouped] == [
        "leo synthetic 1-shot seeds 0-1", "leo synthetic 1-shot seeds 2-3", "leo synthetic 1-shot seed 4",
        "leo synthetic 5-shot seeds 0-1", "leo synthetic 5-shot seeds 2-3", "leo synthetic 5-shot seed 4",
        "metasgd synthetic 1-shot seed 0",
    ]
    assert isinstance(grouped[0], PopulationJob) and isinstance(grouped[2], Job)
    assert len(populations(jobs)) == 3
    with pytest.raises(ConfigError, match="population-size"):
        populations(jobs, size=0)


@pytest.mark.equivalence
@pytest.mark.slow  # a killed population and two runs of it: about a minute
def test_a_population_killed_with_sigkill_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fewshot_bench.cli", "run", "--learner", "metasgd", "--seeds", "0-2",
           "--steps", "200", "--val-every", "20", "--val-episodes", "20", "--episodes", "50", "--eval-query", "5"]
    checkpoints = tmp_path / "fewshot-checkpoints"
    proc = subprocess.Popen([*cmd, "--store", "killed.db"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def every_members_checkpoint() -> bool:
        return len([p for p in checkpoints.glob("*.pt") if not p.name.endswith(".model.pt")]) >= 3

    kill_when(proc, every_members_checkpoint, 120, "checkpoints written")
    assert not (tmp_path / "killed.db").exists() or not rows(tmp_path / "killed.db")

    resumed = subprocess.run([*cmd, "--store", "killed.db"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("resuming metasgd from step") == 3
    fresh = subprocess.run([*cmd, "--store", "fresh.db"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert_same_rows(rows(tmp_path / "killed.db"), rows(tmp_path / "fresh.db"))
    with ResultStore(tmp_path / "killed.db", create=False) as db:
        assert all(r.summary["train"]["resumed_from"] >= 20 for r in db.runs())
