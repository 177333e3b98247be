"""Table 1/2 specs, rendering from a store of known runs in every format, plots, and `compare`."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import ResultStore, RunRecord
from fewshot_bench.reports.tables import TABLE1, TABLE2, get_table, paper_cell, settings

TABLE2_LEARNERS = ["metasgd", "leo-generator-only", "leo-generator-finetune", "leo-random-prior",
                   "leo-deterministic", "leo-no-finetune", "leo"]


def add_run(store, learner, dataset, shot, seed, values, steps=200, eval_query=15, crop="center", way=5):
    """Store a run with known per-episode accuracies, shaped like the runner's records."""
    values = np.asarray(values, dtype=np.float32)
    options = {"learner": learner, "dataset": dataset, "way": way, "shot": shot, "seed": seed, "steps": steps,
               "episodes": values.size, "train_on_val": True, "crop": crop, "eval_query": eval_query, "plugin": "p"}
    record = {
        "run_key": f"{learner}-{dataset}-{way}-{shot}-{seed}-{steps}-{crop}-{eval_query}", "learner": learner,
        "dataset": dataset, "way": way, "shot": shot, "seed": seed, "status": "complete",
        "metric": "accuracy", "mean": float(values.astype(np.float64).mean()), "ci95": 0.0, "episodes": values.size,
        "config": {"outer_lr": 0.001}, "options": options, "summary": {}, "versions": {}, "hardware": {}, "timings": {},
    }
    return store.add_run(RunRecord.new(**record), values)


def const(acc, n=10):
    return np.full(n, acc)


@pytest.fixture
def store_path(tmp_path):
    """A store with LEO on mini 1-shot (2 seeds), Meta-SGD on mini 1-shot (1 seed) and synthetic runs."""
    path = tmp_path / "known.db"
    with ResultStore(path) as s:
        add_run(s, "leo", "mini", 1, 0, const(0.60))
        add_run(s, "leo", "mini", 1, 1, const(0.62))
        add_run(s, "metasgd", "mini", 1, 0, const(0.55))
        add_run(s, "leo", "synthetic", 1, 0, const(0.70))
        add_run(s, "leo", "synthetic", 5, 0, const(0.80))
    return path


# --- specs -------------------------------------------------------------------------------


def test_specs_hold_the_papers_numbers():
    assert TABLE2.learners == TABLE2_LEARNERS
    assert TABLE1.learners == ["nearest-centroid", "logreg", "maml", "metasgd", "leo"]
    assert TABLE1.row("leo").paper[("tiered", 5)].mean == 81.44
    assert TABLE2.row("leo-deterministic").paper[("tiered", 5)].mean == 82.06
    reported = [r for r in TABLE1.rows if r.reported]
    assert {r.label for r in reported} >= {"Matching networks", "TADAM", "Prototypical Nets"}
    tadam = next(r for r in reported if r.label == "TADAM")
    assert tadam.paper[("mini", 5)].mean == 76.70 and ("tiered", 1) not in tadam.paper
    # The multiview numbers apply to LEO only, on mini.
    (mini1, *_rest) = settings(TABLE1)
    assert paper_cell(TABLE1.row("leo"), mini1, crop="multiview").mean == 63.97
    assert paper_cell(TABLE1.row("metasgd"), mini1, crop="multiview") is None


def test_get_table_and_dataset_replacement():
    assert get_table("2") is TABLE2
    with pytest.raises(ConfigError, match="the tables are 1, 2"):
        get_table(3)
    cols = settings(TABLE2, ["synthetic"])
    assert [(c.dataset, c.shot, c.paper) for c in cols] == [("synthetic", 1, None), ("synthetic", 5, None)]
    with pytest.raises(ConfigError, match="twice"):
        settings(TABLE2, ["synthetic", "synthetic"])


# --- rendering ---------------------------------------------------------------------------


def markdown_rows(text):
    """The cells of a markdown table's rows, its header first (the separator left out)."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("|--")]


def test_markdown_shows_ours_beside_the_paper(cli, store_path):
    r = cli("table", "2", "--store", store_path)
    assert r.code == 0, r.err
    header, *rows = markdown_rows(r.out)
    # Ours, the paper's, Δ and runs (seeds differ between cells) where there are runs; only the paper's elsewhere.
    assert header == ["model", "mini 1-shot", "paper", "Δ", "runs", "mini 5-shot paper", "tiered 1-shot paper",
                      "tiered 5-shot paper"]
    leo = dict(zip(header, next(row for row in rows if row[0] == "LEO")))
    # mini 1-shot: mean ± std of 60% and 62% = 61.00 ± 1.41; paper 61.76 ± 0.08; Δ = -0.76; 2 seeds x 10 episodes
    assert [leo[h] for h in header[1:6]] == ["61.00 ± 1.41", "61.76 ± 0.08", "-0.76", "2 × 10", "77.59 ± 0.12"]
    sota = dict(zip(header, next(row for row in rows if row[0] == "Previous SOTA")))
    assert sota["mini 1-shot"] == "" and sota["paper"] == "59.60 ± 0.41"  # a reported row: the paper's only
    assert dict(zip(header, next(row for row in rows if row[0] == "LEO (deterministic)")))["mini 1-shot"] == "missing"
    assert "missing: run `fewshot-bench sweep --table 2`" in r.out
    assert "**Table 2: ablation study and comparison to Meta-SGD on miniImageNet and tieredImageNet (5-way)**" in r.out


def test_plain_table_1_shows_only_columns_that_say_something(cli, store_path):
    """No runs on the paper's datasets: one column per setting (the paper's numbers), not 17 of reported/missing."""
    with ResultStore(store_path) as s:
        s.conn.execute("DELETE FROM runs WHERE dataset = 'mini'")
        s.conn.commit()
    r = cli("table", "1", "--store", store_path)
    assert r.code == 0, r.err
    header, *rows = markdown_rows(r.out)
    assert header == ["model", "mini 1-shot paper", "mini 5-shot paper", "tiered 1-shot paper", "tiered 5-shot paper"]
    assert len(rows) == 23 and "reported" not in r.out.split("\n\n")[1] and "missing" not in r.out.split("\n\n")[1]
    assert "no runs yet for mini 1-shot, mini 5-shot, tiered 1-shot, tiered 5-shot" in r.out


def test_a_table_on_other_data_is_titled_and_explained_by_what_it_shows(cli, store_path):
    r = cli("table", "1", "--dataset", "synthetic", "--store", store_path)
    assert r.code == 0, r.err
    assert r.out.startswith("**Table 1: test accuracy on synthetic (5-way)**")
    header, *rows = markdown_rows(r.out)
    assert header == ["model", "synthetic 1-shot", "synthetic 5-shot"]  # every cell 1 seed x 10: no runs column
    assert "every cell with runs: 1 × 10 (seeds × test episodes per run)" in r.out
    assert "paper =" not in r.out and "Δ" not in r.out  # no paper column, no word about one
    assert json.loads(cli("table", "1", "--dataset", "synthetic", "--format", "json", "--store",
                          store_path).out)["title"] == "Table 1: test accuracy on synthetic (5-way)"


def test_markdown_fits_the_terminal_width(cli, store_path, monkeypatch):
    wide = cli("table", "2", "--store", store_path).out
    assert max(len(line) for line in wide.splitlines() if line.startswith("|")) > 80  # one table, however wide
    monkeypatch.setenv("COLUMNS", "80")
    r = cli("table", "2", "--store", store_path)
    assert r.code == 0, r.err
    assert max(len(line) for line in r.out.splitlines()) <= 80
    tables = [block for block in r.out.split("\n\n") if block.startswith("| model")]
    assert len(tables) >= 2  # the columns that did not fit follow in a table of their own, the model column first
    cells = {c for t in tables for row in markdown_rows(t) for c in row}
    assert {"61.00 ± 1.41", "-0.76", "81.44 ± 0.09"} <= cells  # nothing was cut


def test_csv_has_a_row_per_learner_with_numbers(cli, store_path):
    r = cli("table", "2", "--dataset", "synthetic", "--format", "csv", "--store", store_path)
    assert r.code == 0, r.err
    frame = pd.read_csv(io.StringIO(r.out))
    assert list(frame["learner"]) == TABLE2_LEARNERS  # reported rows have no synthetic numbers: left out
    leo = frame.set_index("learner").loc["leo"]
    assert leo["synthetic_1shot_mean"] == pytest.approx(70.0) and leo["synthetic_5shot_mean"] == pytest.approx(80.0)
    assert leo["synthetic_1shot_seeds"] == 1 and leo["synthetic_1shot_episodes"] == 10
    assert not any("paper" in c for c in frame.columns if not frame[c].isna().all())
    assert frame.set_index("learner").loc["metasgd", "synthetic_1shot_seeds"] == 0  # missing, marked by 0 seeds


def test_json_and_latex(cli, store_path):
    r = cli("table", "1", "--format", "json", "--store", store_path)
    data = json.loads(r.out)
    leo = next(c for c in data["cells"] if c["learner"] == "leo" and c["dataset"] == "mini" and c["shot"] == 1)
    assert leo["mean"] == pytest.approx(61.0) and leo["seeds"] == 2 and leo["diff"] == pytest.approx(-0.76, abs=1e-4)
    msgd = next(c for c in data["cells"] if c["learner"] == "metasgd" and c["shot"] == 1 and c["dataset"] == "mini")
    assert msgd["std"] == 0.0 and msgd["seeds"] == 1  # one seed: std 0, count shown

    r = cli("table", "1", "--format", "latex", "--store", store_path)
    assert r.code == 0, r.err
    assert r"\toprule" in r.out and r"61.00 $\pm$ 1.41" in r.out
    assert r"Gidaris \& Komodakis" in r.out  # escaped, so it compiles
    body = [line for line in r.out.splitlines() if line.endswith(r"\\")]
    assert {line.count(" & ") for line in body} == {len(body[0].split(" & ")) - 1}  # every row has every column


def test_protocols_are_never_mixed(cli, tmp_path):
    path = tmp_path / "mixed.db"
    with ResultStore(path) as s:
        add_run(s, "leo", "synthetic", 1, 0, const(0.50), steps=100)
        add_run(s, "leo", "synthetic", 1, 0, const(0.70), steps=200)
        add_run(s, "leo", "synthetic", 1, 1, const(0.72), steps=200)
    r = cli("table", "2", "--dataset", "synthetic", "--format", "json", "--store", path)
    leo = next(c for c in json.loads(r.out)["cells"] if c["learner"] == "leo" and c["shot"] == 1)
    assert (leo["mean"], leo["seeds"], leo["steps"], leo["protocols"]) == (pytest.approx(71.0), 2, 200, 2)
    r = cli("table", "2", "--dataset", "synthetic", "--format", "json", "--steps", "100", "--store", path)
    leo = next(c for c in json.loads(r.out)["cells"] if c["learner"] == "leo" and c["shot"] == 1)
    assert (leo["mean"], leo["seeds"], leo["steps"]) == (pytest.approx(50.0), 1, 100)
    r = cli("table", "2", "--dataset", "synthetic", "--store", path)
    assert "several protocols" in r.out


def test_plot_writes_a_png(cli, store_path, tmp_path):
    out = tmp_path / "figs" / "t2.png"
    r = cli("table", "2", "--store", store_path, "--plot", out)
    assert r.code == 0, r.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["t2.png"]  # no temporary files left behind


def test_table_errors_are_one_line(cli, tmp_path):
    r = cli("table", "2", "--store", tmp_path / "absent.db")
    assert r.code == 1 and "no results store" in r.err and "Traceback" not in r.err
    r = cli("table", "3")
    assert r.code == 2 and "invalid choice" in r.err


# --- compare -----------------------------------------------------------------------------


def test_compare_pairs_runs_by_seed(cli, tmp_path):
    path = tmp_path / "pairs.db"
    rng = np.random.default_rng(0)
    with ResultStore(path) as s:
        for seed, shift in ((0, 0.02), (1, 0.04), (2, -0.01)):
            base = rng.uniform(0.3, 0.7, size=200)
            add_run(s, "a", "synthetic", 1, seed, base + shift)
            add_run(s, "b", "synthetic", 1, seed, base)
        add_run(s, "a", "synthetic", 1, 7, const(0.9, 200))  # no partner: not paired
        add_run(s, "b", "synthetic", 5, 0, const(0.9, 200), eval_query=3)  # other shot, other queries
        add_run(s, "a", "synthetic", 5, 0, const(0.9, 200), eval_query=15)  # not the same episodes
    r = cli("compare", "a", "b", "--store", path, "--json")
    assert r.code == 0, r.err
    (res,) = r.json()
    assert res["shot"] == 1 and len(res["seeds"]) == 3 and res["episodes"] == 600
    assert res["diff"] == pytest.approx((0.02 + 0.04 - 0.01) / 3, abs=1e-6)
    assert res["ci95"] > 0 and res["agree"] == 2
    assert [p["diff"] for p in res["seeds"]] == pytest.approx([0.02, 0.04, -0.01], abs=1e-6)

    r = cli("compare", "a", "b", "--store", path, "--shot", "1")
    assert r.code == 0 and "+1.67 ±" in r.out and "2/3 seeds" in r.out
    r = cli("compare", "a", "b", "--store", path, "--shot", "5")
    assert r.code == 1 and "no runs of 'a' and 'b' share" in r.err
