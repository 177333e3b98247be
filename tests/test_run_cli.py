"""`fewshot-bench run` end to end on the synthetic default, and every bad input of the core."""

import sqlite3

import pytest

QUICK = ("--steps", "60", "--val-every", "30", "--val-episodes", "30", "--episodes", "200", "--eval-query", "10")


@pytest.mark.parametrize("learner", ["nearest-centroid", "logreg", "metasgd"])
def test_run_reports_accuracy_above_chance_and_is_reproducible(cli, learner):
    first = cli("run", "--learner", learner, *QUICK, "--json")
    assert first.code == 0, first.err
    result = first.json()
    assert {"run_id", "learner", "dataset", "way", "shot", "seed", "accuracy", "ci95", "episodes"} <= set(result)
    assert result["episodes"] == 200 and result["learner"] == learner
    assert 0.35 < result["accuracy"] <= 1.0  # chance is 0.2
    assert 0 < result["ci95"] < 0.05
    again = cli("run", "--learner", learner, *QUICK, "--json", "--rerun").json()  # run again, not reused
    assert again["accuracy"] == result["accuracy"] and again["run_id"] != result["run_id"]
    listed = cli("results", "--json").json()
    assert [r["run_id"] for r in listed] == [again["run_id"]]  # one run key, one complete row
    assert listed[0]["versions"]["fewshot-bench"] and listed[0]["config"]


def test_default_output_states_the_budget(cli):
    out = cli("run", "--learner", "nearest-centroid", "--episodes", "20")
    assert out.code == 0, out.err
    assert "budget quick" in out.out and "--budget paper" in out.out
    assert "accuracy" in out.out.splitlines()[-1]


def test_different_seeds_give_different_test_episodes(cli):
    a = cli("run", "--learner", "nearest-centroid", "--episodes", "100", "--seed", "0", "--json").json()
    b = cli("run", "--learner", "nearest-centroid", "--episodes", "100", "--seed", "1", "--json").json()
    assert a["accuracy"] != b["accuracy"]


def test_train_on_val_runs(cli):
    out = cli("run", "--learner", "metasgd", *QUICK, "--train-on-val", "--json")
    assert out.code == 0, out.err


@pytest.mark.parametrize(
    "args, message",
    [
        (("--learner", "nope"), "unknown learner 'nope'; known learners: .*metasgd"),
        (("--learner", "metasgd", "--dataset", "nope"), "unknown dataset 'nope'; known datasets: .*synthetic"),
        (("--learner", "metasgd", "--set", "bogus=1"),
         "unknown option 'bogus' for learner metasgd; valid options: .*inner_steps"),
        (("--learner", "metasgd", "--set", "inner_steps=two"), "--set inner_steps: expected int, got 'two'"),
        (("--learner", "metasgd", "--set", "first_order"), "--set expects key=value"),
        (("--learner", "metasgd", "--way", "30"), "30-way episodes need 30 classes but split .* has only"),
        (("--learner", "nearest-centroid", "--shot", "590", "--eval-query", "20"),
         "has 600 examples, fewer than K \\+ Q = 590 \\+ 20"),
        (("--learner", "metasgd", "--steps", "-1"), "--steps must be at least 0"),
        (("--learner", "metasgd", "--device", "tpu"), "unknown device 'tpu'"),
        (("--learner", "nearest-centroid", "--hparams", "reference"), "has no hyperparameter presets"),
    ],
)
def test_bad_input_is_one_line_error_and_stores_nothing(cli, tmp_path, args, message):
    import re

    out = cli("run", *args, "--episodes", "10")
    assert out.code != 0
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fewshot-bench: error: "), out.err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in out.err
    db = tmp_path / "fewshot-results.db"
    if db.exists():
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_store_that_is_not_ours_is_refused(cli, tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("hello, not sqlite " * 20)
    out = cli("run", "--learner", "nearest-centroid", "--episodes", "10", "--store", bad)
    assert out.code == 1 and "is not a fewshot-bench results store" in out.err
    assert bad.read_text() == "hello, not sqlite " * 20
    out = cli("results", "--store", bad)
    assert out.code == 1 and "not a fewshot-bench results store" in out.err
    missing = cli("results", "--store", tmp_path / "none.db")
    assert missing.code == 1 and "no results store" in missing.err
