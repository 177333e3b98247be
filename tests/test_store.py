"""The results store: schema, atomic writes, foreign files, and resume after a killed run."""

import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from helpers import kill_when

from fewshot_bench.errors import StoreError
from fewshot_bench.records.store import ResultStore, RunRecord

RECORD = {
    "run_key": "k1", "learner": "x", "dataset": "synthetic", "way": 5, "shot": 1, "seed": 0,
    "status": "complete", "metric": "accuracy", "mean": 0.5, "ci95": 0.01, "episodes": 3,
    "config": {"a": 1}, "options": {}, "summary": {}, "versions": {"torch": "t"}, "hardware": {}, "timings": {},
}


def test_round_trip_and_wal(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        run_id = store.add_run(RunRecord.new(**RECORD), np.array([0.25, 0.5, 0.75]))
    with ResultStore(path, create=False) as store:
        (rec,) = store.runs()
        assert rec.run_id == run_id and rec.config == {"a": 1} and rec.versions == {"torch": "t"}
        assert store.find_complete("k1").run_id == run_id
        assert store.find_complete("other") is None
        np.testing.assert_array_equal(store.episode_values(run_id), np.float32([0.25, 0.5, 0.75]))
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_run_stored_before_metric_neutral_names_reads_with_them(tmp_path):
    train = {"steps": 20, "best_val_accuracy": 0.61, "history": [{"step": 10, "val_accuracy": 0.61, "loss": 1.2}]}
    with ResultStore(tmp_path / "r.db") as store:
        store.add_run(RunRecord.new(**dict(RECORD, summary={"std": 0.1, "train": train})), np.zeros(3))
        (rec,) = store.runs()
    assert rec.summary["train"] == {"steps": 20, "best_val_metric": 0.61,
                                    "history": [{"step": 10, "val_metric": 0.61, "loss": 1.2}]}


def test_failed_insert_leaves_no_row(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        store.add_run(RunRecord.new(**dict(RECORD, run_id="same")), np.zeros(3))
        with pytest.raises(sqlite3.IntegrityError):
            store.add_run(RunRecord.new(**dict(RECORD, run_id="same", run_key="k2")), np.zeros(3))
        assert [r.run_key for r in store.runs()] == ["k1"]


@pytest.mark.parametrize("content", [b"this is not a database at all" * 10, None])
def test_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "foreign.db"
    if content is None:  # a real SQLite database of some other application
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a fewshot-bench results store"):
        ResultStore(path)
    assert path.read_bytes() == before


@pytest.mark.slow  # kills a run and resumes it
def test_killed_run_leaves_no_row_and_rerun_resumes(tmp_path):
    """Kill a real run mid-training: nothing is stored; the same command resumes from its checkpoint."""
    store = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "fewshot_bench.cli", "run", "--learner", "metasgd",
           "--steps", "200", "--val-every", "20", "--val-episodes", "20", "--episodes", "50",
           "--eval-query", "5", "--store", str(store), "--json"]
    ckpt_dir = tmp_path / "fewshot-checkpoints"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Killed at the first validation's checkpoint.
    kill_when(proc, lambda: ckpt_dir.exists() and any(ckpt_dir.glob("*.pt")), 120, "checkpoint written")
    if store.exists():
        with ResultStore(store) as s:
            assert s.runs() == []

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming metasgd from step" in done.stderr
    with ResultStore(store) as s:
        (rec,) = s.runs()
    train = rec.summary["train"]
    assert train["resumed_from"] >= 20 and train["steps"] == 200
    # the finished run's training checkpoint is cleaned up; its final weights are kept
    assert [p.name for p in ckpt_dir.glob("*.pt")] == [f"{rec.run_key}.model.pt"]

    # An uninterrupted run of the same spec gives the same accuracy: resuming is exact.
    fresh = subprocess.run(cmd[:-1] + ["--store", str(tmp_path / "fresh.db"), "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    import json

    assert json.loads(fresh.stdout.splitlines()[-1])["accuracy"] == pytest.approx(rec.mean, abs=1e-9)


def _old_record(run_id, run_key, metric, value):
    """A run as schemas 1 and 2 stored it: the mean in ``accuracy``, the metric's name only in the summary."""
    return {
        "run_id": run_id, "run_key": run_key, "learner": "x", "dataset": "synthetic", "way": 5, "shot": 1, "seed": 0,
        "status": "complete", "accuracy": value, "ci95": 0.01, "episodes": 3, "config": {"a": 1}, "options": {},
        "summary": {"std": 0.1, "metric": metric}, "versions": {}, "hardware": {}, "timings": {},
    }


OLD_RUNS = [
    (_old_record("cls", "k1", "accuracy", 0.123456789), np.float32([0.1, 0.2, 0.07])),
    (_old_record("reg", "k2", "mse", 1.5), np.float32([1.0, 2.0, 1.5])),
]


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_store_is_migrated_in_place_with_the_same_numbers(tmp_path, version):
    from old_stores import write_old_store

    from fewshot_bench.records.store import SCHEMA_VERSION

    path = tmp_path / "old.db"
    write_old_store(path, version, OLD_RUNS)
    with ResultStore(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(runs)")}
        assert {"metric", "mean"} <= columns and "accuracy" not in columns
        cls, reg = store.runs()
        assert (cls.metric, cls.mean, reg.metric, reg.mean) == ("accuracy", 0.123456789, "mse", 1.5)
        assert cls.summary == {"std": 0.1, "metric": "accuracy"} and cls.config == {"a": 1}
        for rec, (_, values) in zip((cls, reg), OLD_RUNS):
            np.testing.assert_array_equal(store.episode_values(rec.run_id), values)
        store.add_run(RunRecord.new(**dict(RECORD, run_key="k3")), np.zeros(3))  # and it takes new runs
        assert [r.run_key for r in store.runs()] == ["k1", "k2", "k3"]
        with pytest.raises(StoreError, match="already stored"):  # one complete row per run key still holds
            store.add_run(RunRecord.new(**dict(RECORD, run_key="k2")), np.zeros(3))


def test_an_older_store_that_cannot_be_written_is_read_as_it_is(tmp_path, monkeypatch):
    from old_stores import write_old_store

    path = tmp_path / "old.db"
    write_old_store(path, 2, OLD_RUNS)
    before = path.read_bytes()
    connect = ResultStore._connect
    monkeypatch.setattr(ResultStore, "_connect", lambda self, q="": connect(self, q or "mode=ro"))  # a read-only mount
    with ResultStore(path, create=False) as store:
        assert store.read_only
        assert [(r.metric, r.mean) for r in store.runs()] == [("accuracy", 0.123456789), ("mse", 1.5)]
    assert path.read_bytes() == before


def test_a_migration_that_fails_leaves_the_store_as_it_was(tmp_path):
    from old_stores import write_old_store

    path = tmp_path / "old.db"
    broken = _old_record("bad", "k9", "accuracy", 0.5)
    write_old_store(path, 2, [*OLD_RUNS, (broken, np.zeros(3))])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET summary = 'not json' WHERE run_id = 'bad'")  # the migration reads every summary
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="run bad is corrupt .*summary is not valid JSON.* restore"):
        ResultStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2  # all or nothing: nothing
    assert "accuracy" in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
