"""What a person reads at the terminal: each note once, what a run did and did not do, the paper's statistic at the
end of `run --seeds` and `sweep`, early stops explained, spreads shown, evaluation logged, tables as wide as the
terminal, and `results` filtered and written to files."""

from __future__ import annotations

import json
import logging
import re
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import one_line_error
from test_protocols import add_run
from test_tables import add_run as add_known_run

import fewshot_bench as fb
from fewshot_bench.console.table_fit import fit_table
from fewshot_bench.records.stats import seeds_summary_text, stop_text
from fewshot_bench.records.store import ResultStore


@pytest.mark.slow  # over 10 s on a busy 2-core machine
def test_a_note_repeated_word_for_word_is_printed_once_per_command(cli, caplog):
    """LEO's preset fallback was logged when each seed was checked and again when it ran: six times for 3 seeds."""
    caplog.set_level(logging.INFO)
    r = cli("run", "--learner", "leo", "--seeds", "0-1", "--steps", "0", "--episodes", "10", "--eval-query", "5")
    assert r.code == 0, r.err
    notes = [m for m in caplog.messages if "preset has no values for synthetic 1-shot" in m]
    assert len(notes) == 1
    assert len([m for m in caplog.messages if m.startswith("torch threads for evaluation")]) == 1  # not once a seed


def test_a_learner_without_meta_training_does_not_announce_steps(cli):
    r = cli("run", "--learner", "nearest-centroid", "--episodes", "10", "--eval-query", "5")
    assert r.code == 0, r.err
    assert "no meta-training (nearest-centroid has none), 10 test episodes" in r.out
    assert "meta-training steps" not in r.out


def test_run_seeds_ends_with_the_mean_and_std_over_seeds(cli):
    r = cli("run", "--learner", "nearest-centroid", "--seeds", "0-2", "--episodes", "50", "--eval-query", "5")
    assert r.code == 0, r.err
    per_seed = [float(x) for x in re.findall(r"^seed \d: accuracy ([\d.]+)%", r.out, re.M)]
    assert len(per_seed) == 3
    (line,) = [x for x in r.out.splitlines() if x.startswith("seeds 0-2: ")]
    mean, std = (float(x) for x in re.match(r"seeds 0-2: accuracy ([\d.]+)% ± ([\d.]+)%", line).groups())
    assert mean == pytest.approx(np.mean(per_seed), abs=0.01) and std == pytest.approx(np.std(per_seed, ddof=1),
                                                                                        abs=0.01)
    assert "mean ± std over 3 seed(s)" in line
    js = cli("run", "--learner", "nearest-centroid", "--seeds", "0-2", "--episodes", "50", "--eval-query", "5",
             "--json").json()
    runs = [run["accuracy"] for run in js["runs"]]
    assert js["over_seeds"] == {"mean": pytest.approx(np.mean(runs)), "std": pytest.approx(np.std(runs, ddof=1)),
                                "seeds": 3}


def test_one_seed_says_it_has_no_spread():
    assert seeds_summary_text("accuracy", [0.5]) == "50.00% (one seed: no std)"
    assert seeds_summary_text("mse", [4.0, 5.0]) == "MSE 4.5000 ± 0.7071"


@pytest.mark.slow  # over 10 s on a busy 2-core machine
def test_an_early_stop_says_when_and_why(cli):
    r = cli("run", "--learner", "metasgd", "--steps", "40", "--val-every", "1", "--val-episodes", "5", "--patience",
            "1", "--episodes", "20", "--eval-query", "5")
    assert r.code == 0, r.err
    (stored,) = cli("results", "--json").json()
    train = stored["summary"]["train"]
    assert train["stopped_early"] and train["steps"] < 40  # one validation without progress ends it
    found = re.search(r"stopped early at step (\d+) of 40: validation accuracy had not improved on step (\d+)'s "
                      r"[\d.]+% for 1 validation\(s\) \(--patience 1\)", r.out)
    assert found and (int(found[1]), int(found[2])) == (train["steps"], train["best_step"])


def test_a_stop_by_a_search_pruner_is_not_blamed_on_patience():
    history = [{"step": 10, "val_metric": 0.5}, {"step": 20, "val_metric": 0.6}]
    train = {"stopped_early": True, "steps": 20, "best_step": 20, "best_val_metric": 0.6, "history": history}
    assert stop_text(train, 100, 5) == ("stopped early at step 20 of 100: training was stopped by its caller "
                                        "(a search's pruner) after 0 validation(s)")
    assert stop_text(train | {"stopped_early": False}, 100, 5) is None


@pytest.mark.slow  # over 10 s on a busy 2-core machine
def test_sweep_ends_with_the_mean_and_std_over_seeds_per_cell(cli, tmp_path):
    args = ["sweep", "--learners", "nearest-centroid", "--dataset", "synthetic", "--shots", "1,5", "--seeds", "2",
            "--workers", "1", "--episodes", "20", "--eval-query", "5", "--store", tmp_path / "s.db"]
    r = cli(*args)
    assert r.code == 0, r.err
    listed = fb.results(tmp_path / "s.db")
    for shot in (1, 5):
        values = 100 * listed[listed["shot"] == shot]["value"]
        expected = f"{values.mean():.2f}% ± {values.std(ddof=1):.2f}%"
        assert re.search(rf"^nearest-centroid\s+synthetic\s+5\s+{shot}\s+0, 1\s+{re.escape(expected)}$", r.out, re.M)
    assert "mean ± sample std over its seeds" in r.out
    cells = cli(*args, "--json").json()["cells"]  # all complete now: the summary covers the stored cells too
    assert [(c["shot"], c["seeds"]) for c in cells] == [(1, [0, 1]), (5, [0, 1])]
    assert cells[0]["mean"] == pytest.approx(listed[listed["shot"] == 1]["value"].mean())


def test_compare_shows_a_small_spread_and_says_why_one_is_zero(cli, tmp_path):
    path = tmp_path / "pairs.db"
    base = np.random.default_rng(0).uniform(0.3, 0.7, size=200)
    with ResultStore(path) as s:
        add_known_run(s, "a", "synthetic", 1, 0, base + 1e-4 * (np.arange(200) % 2))  # differences: 0 or 0.01 point
        add_known_run(s, "b", "synthetic", 1, 0, base)
        add_known_run(s, "c", "synthetic", 1, 0, base)  # identical to b on every episode
    r = cli("compare", "a", "b", "--store", path)
    assert r.code == 0, r.err
    assert " +0.005 ± 0.001 " in r.out and "± 0.00 " not in r.out  # shown to its first digit
    same = cli("compare", "c", "b", "--store", path)
    assert "+0.00 ± 0 " in same.out and "every paired episode differs by exactly the same amount" in same.out


def test_test_evaluation_is_logged_when_stderr_is_not_a_terminal(cli, monkeypatch):
    monkeypatch.delenv("FEWSHOT_BENCH_PROGRESS_EVERY", raising=False)  # the default: a line every 30 s
    r = cli("run", "--learner", "nearest-centroid", "--episodes", "20", "--eval-query", "5")
    assert r.code == 0, r.err
    (line,) = [x for x in r.err.splitlines() if x.startswith("test nearest-centroid: ")]
    assert "ep 20/20 (100.0%)" in line and "took" in line  # a short evaluation says it ran, not only a long one
    assert "test nearest-centroid" not in cli("-q", "run", "--learner", "nearest-centroid", "--episodes", "20",
                                              "--eval-query", "5", "--rerun").err


@pytest.fixture
def listed_store(tmp_path):
    """Runs that differ in every filtered setting: learner, shot, seed, steps, stage and data."""
    path = tmp_path / "runs.db"
    with ResultStore(path) as s:
        add_run(s, "leo", 0, 0.70, overrides={"latent_steps": "3", "inner_lr_init": "0.5", "dropout_rate": "0.25"})
        add_run(s, "leo", 1, 0.71)
        add_run(s, "leo", 0, 0.75, shot=5)
        add_run(s, "metasgd", 0, 0.60, steps=30)
        add_run(s, "metasgd", 0, 0.62, data_id="e" * 24)
    return path


def test_results_fit_the_terminal_width(cli, listed_store, monkeypatch):
    wide = cli("results", "--store", listed_store)
    assert max(len(line) for line in wide.out.splitlines()) > 100  # a file or a pipe gets every column on one line
    monkeypatch.setenv("FEWSHOT_BENCH_COLUMNS", "80")
    r = cli("results", "--store", listed_store)
    assert r.code == 0, r.err
    assert max(len(line) for line in r.out.splitlines()) <= 80
    ids = [line.split()[0] for line in wide.out.splitlines()[2:7]]
    blocks = [block for block in r.out.split("\n\n") if block.startswith("run ")]
    assert len(blocks) >= 2 and all(run_id in block for block in blocks for run_id in ids)  # each starts with the run
    assert "latent_steps=3" in r.out and "70." in r.out  # wrapped or moved, never cut


def test_fit_table_keeps_a_table_that_fits_and_splits_one_that_does_not():
    rows, headers = [["a", "x" * 30, "y" * 30]], ["name", "first", "second"]
    assert fit_table(rows, headers, width=None) == fit_table(rows, headers, width=200)
    narrow = fit_table(rows, headers, width=45).split("\n\n")
    assert len(narrow) == 2 and all(block.startswith("name") for block in narrow)


def test_results_filters(cli, listed_store):
    def ids(*args):
        return sorted((r["learner"], r["shot"], r["seed"], r["options"]["steps"]) for r in
                      cli("results", "--store", listed_store, "--json", *args).json())

    assert ids("--learner", "leo", "--shot", "1") == [("leo", 1, 0, 200), ("leo", 1, 1, 200)]
    assert ids("--seed", "1") == [("leo", 1, 1, 200)]
    assert ids("--steps", "30") == [("metasgd", 1, 0, 30)]
    assert ids("--data", "eee") == [("metasgd", 1, 0, 200)]
    assert ids("--stage", "tune") == []
    assert len(ids("--stage", "run")) == 5
    frame = fb.results(listed_store, learner="metasgd", steps=200, data="e")
    assert list(frame["data_id"]) == ["e" * 24]
    assert len(fb.results(listed_store, shot=5)) == 1 and len(fb.results(listed_store, seed=0, stage="run")) == 4
    with pytest.raises(ValueError, match="stage must be one of run, tune"):
        fb.results(listed_store, stage="test")
    with pytest.raises(TypeError, match="shot must be a whole number"):
        fb.results(listed_store, shot="5")
    r = cli("results", "--store", listed_store, "--learner", "maml")
    assert r.out.strip() == f"no runs in {listed_store} that match the filters"


def test_results_are_written_to_csv_parquet_and_json_files(cli, listed_store, tmp_path):
    expected = fb.results(listed_store, learner="leo")
    r = cli("results", "--store", listed_store, "--learner", "leo", "--csv", tmp_path / "out" / "leo.csv")
    assert r.code == 0, r.err
    assert r.out.strip() == f"wrote 3 run(s) to {tmp_path / 'out' / 'leo.csv'}"
    csv = pd.read_csv(tmp_path / "out" / "leo.csv")
    assert list(csv.columns) == list(expected.columns) and list(csv["run_id"]) == list(expected["run_id"])
    assert csv["value"].tolist() == pytest.approx(expected["value"].tolist())

    r = cli("results", "--store", listed_store, "--learner", "leo", "--parquet", tmp_path / "leo.parquet")
    assert r.code == 0 and r.out.strip() == f"wrote 3 run(s) to {tmp_path / 'leo.parquet'}"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "leo.parquet"), expected, check_dtype=False)

    r = cli("results", "--store", listed_store, "--shot", "5", "--json", tmp_path / "five.json")
    assert r.code == 0 and r.out.strip() == f"wrote 1 run(s) to {tmp_path / 'five.json'}"
    (run,) = json.loads((tmp_path / "five.json").read_text())
    assert run["shot"] == 5 and run["protocol"] and run["data_id"] == "d" * 24
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["five.json", "leo.parquet", "runs.db"]

    r = cli("results", "--store", listed_store, "--csv", tmp_path / "a.csv", "--parquet", tmp_path / "a.parquet")
    assert r.code == 2 and "not allowed with argument" in r.err


def test_parquet_without_pyarrow_is_one_line_naming_the_extra(cli, listed_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    r = cli("results", "--store", listed_store, "--parquet", tmp_path / "r.parquet")
    one_line_error(r, "--parquet needs pyarrow", "pip install 'fewshot-bench[parquet]'")
    assert not (tmp_path / "r.parquet").exists()
