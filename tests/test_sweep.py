"""Sweeps: planning and skipping complete cells, a real SIGKILL mid-sweep, the Ray executor,
failures, and the provenance every stored run carries."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewshot_bench.data.base import DataError
from fewshot_bench.records.store import ResultStore
from fewshot_bench.search.executors import InlineExecutor, WorkerSettings
from fewshot_bench.search.sweep import grid, plan, run_plan

# A tiny protocol: seconds per run on two CPU cores.
TINY = ["--steps", "10", "--val-every", "5", "--val-episodes", "10", "--episodes", "20", "--eval-query", "5"]


def stored(path: Path) -> list:
    with ResultStore(path, create=False) as s:
        return s.runs()


def test_sweep_runs_missing_cells_and_a_second_sweep_does_no_work(cli, tmp_path):
    args = ["sweep", "--learners", "nearest-centroid,metasgd", "--dataset", "synthetic", "--shots", "1",
            "--seeds", "2", "--workers", "1", *TINY, "--store", tmp_path / "s.db", "--json"]
    first = cli(*args)
    assert first.code == 0, first.err
    summary = first.json()
    assert summary | {"cells": None} == {"planned": 4, "already_complete": 0, "ran": 4, "failed": 0,
                                         "store": str(tmp_path / "s.db"), "cells": None}
    assert [(c["learner"], c["seeds"]) for c in summary["cells"]] == [("nearest-centroid", [0, 1]), ("metasgd", [0, 1])]
    runs = stored(tmp_path / "s.db")
    assert sorted((r.learner, r.seed) for r in runs) == [("metasgd", 0), ("metasgd", 1),
                                                         ("nearest-centroid", 0), ("nearest-centroid", 1)]
    assert all(r.options["train_on_val"] and r.options["steps"] == 10 for r in runs)  # paper stage 3 by default
    metasgd = next(r for r in runs if r.learner == "metasgd")
    assert metasgd.summary["train"]["steps"] == 10

    # A kill between storing a run and dropping its checkpoint leaves the file; the next sweep drops it.
    leftover = tmp_path / "fewshot-checkpoints" / f"{metasgd.run_key}.pt"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"a training checkpoint")
    again = cli(*args)
    assert again.json()["ran"] == 0 and again.json()["already_complete"] == 4
    assert len(stored(tmp_path / "s.db")) == 4
    assert not leftover.exists()
    # A larger grid only runs the new cells.
    more = cli(*[a if a != "2" else "3" for a in args])
    assert more.json()["ran"] == 2 and len(stored(tmp_path / "s.db")) == 6


def test_a_regression_sweep_reports_mse_not_accuracy(cli, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fewshot_bench")
    r = cli("sweep", "--learners", "mlp-scratch", "--dataset", "sines-lines", "--shots", "5", "--seeds", "1",
            "--workers", "1", *TINY, "--store", tmp_path / "r.db")
    assert r.code == 0, r.err
    (line,) = [m for m in caplog.messages if "over 20 episodes" in m]
    assert ": MSE " in line and "%" not in line


def test_provenance_is_recorded_and_shown(cli, tmp_path):
    store = tmp_path / "p.db"
    r = cli("sweep", "--learners", "metasgd", "--shots", "1", "--seeds", "1", "--workers", "1", *TINY, "--store", store)
    assert r.code == 0, r.err
    (run,) = cli("results", "--json", "--store", store).json()
    assert run["versions"]["fewshot-bench-metasgd"] not in ("", "not installed")  # the learner's plugin distribution
    assert {"fewshot-bench", "torch", "numpy", "python"} <= set(run["versions"])
    assert run["hardware"]["hostname"] and run["hardware"]["cpu_count"] >= 1 and run["hardware"]["device"] == "cpu"
    assert run["config"]["outer_lr"] > 0 and "meta_batch_size" in run["config"]  # the full resolved config
    assert run["options"]["plugin"] == "fewshot-bench-metasgd" and run["options"]["seed"] == 0


def test_missing_learners_are_named_with_what_is_installed(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_BENCH_DISABLE_PLUGINS", "fewshot-bench-leo")
    r = cli("sweep", "--table", "2", "--dataset", "synthetic", "--store", tmp_path / "m.db")
    assert r.code == 1 and "Traceback" not in r.err
    assert "not installed: leo-generator-only" in r.err and "installed: " in r.err and "metasgd" in r.err
    assert "--learners" in r.err
    assert not (tmp_path / "m.db").exists()  # nothing half-written
    r = cli("sweep", "--table", "2", "--dataset", "synthetic", "--learners", "metasgd", "--dry-run", "--seeds", "2",
            "--store", tmp_path / "m.db")
    assert r.code == 0 and r.out.count("to run: metasgd synthetic") == 4


def test_bad_sweep_arguments(cli, tmp_path):
    r = cli("sweep", "--table", "2", "--learners", "logreg", "--dataset", "synthetic")
    assert r.code == 1 and "not in table 2" in r.err
    r = cli("sweep", "--learners", "logreg", "--dataset", "nosuch")
    assert r.code == 1 and "unknown dataset 'nosuch'" in r.err and "synthetic" in r.err
    r = cli("sweep", "--dataset", "synthetic")
    assert r.code == 1 and "--table 1|2 or --learners" in r.err
    r = cli("sweep", "--learners", "logreg", "--seeds", "0")
    assert r.code == 1 and "--seeds must be at least 1" in r.err


class FailingExecutor(InlineExecutor):
    """Runs jobs in-process but makes chosen cells fail with a given exception."""

    def __init__(self, settings, failures):
        super().__init__(settings)
        self.failures = failures

    def run(self, jobs):
        for job, outcome in super().run(jobs):
            yield job, self.failures.get(job.spec.seed, outcome)


def test_a_failing_cell_does_not_stop_the_others_but_a_user_error_does(host, tmp_path):
    specs = grid(host, ["nearest-centroid"], ["synthetic"], [1], [0, 1, 2], steps=0, episodes=20, eval_query=5)
    store = tmp_path / "f.db"
    todo = plan(host, specs, store)
    # each seed its own job (no populations), so one seed can fail alone
    report = run_plan(todo, FailingExecutor(WorkerSettings(), {1: RuntimeError("boom")}), store, population=False)
    assert report.ran == 2 and report.failed == [("nearest-centroid synthetic 1-shot seed 1", "RuntimeError: boom")]
    assert sorted(r.seed for r in stored(store)) == [0, 2]

    todo = plan(host, specs, store)
    assert [j.spec.seed for j in todo.pending] == [1]  # the rerun retries only the failed cell
    with pytest.raises(DataError, match="seed 1: no files"):
        run_plan(todo, FailingExecutor(WorkerSettings(), {1: DataError("no files")}), store, population=False)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        out += [int(c) for c in text.split()]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow  # kills a sweep's workers and resumes it
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker processes from /proc")
def test_sigkill_mid_sweep_then_restart_loses_and_duplicates_nothing(tmp_path):
    store = tmp_path / "k.db"
    cmd = [sys.executable, "-m", "fewshot_bench.cli", "sweep", "--learners", "metasgd", "--dataset", "synthetic",
           "--shots", "1,5", "--seeds", "2", "--workers", "2", "--steps", "40", "--val-every", "20",
           "--val-episodes", "20", "--episodes", "40", "--eval-query", "5", "--store", str(store), "--json"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    workers: set[int] = set()
    while not (store.exists() and stored(store)):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no run completed"
        workers |= set(_children(proc.pid))
        time.sleep(0.05)
    workers |= set(_children(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r.run_id: r.run_key for r in stored(store)}
    assert 1 <= len(before) < 4, "the sweep finished before it could be killed; make the runs longer"
    assert workers, "the local executor started no worker processes"
    # Workers die with the driver (no orphans still training, or racing the restarted sweep).
    deadline = time.time() + 20
    while any(_alive(w) for w in workers):
        assert time.time() < deadline, f"orphaned workers: {[w for w in workers if _alive(w)]}"
        time.sleep(0.1)

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["planned"] == 4 and summary["already_complete"] == len(before) and summary["ran"] == 4 - len(before)
    runs = stored(store)
    assert len(runs) == 4 and len({r.run_key for r in runs}) == 4
    assert sorted((r.shot, r.seed) for r in runs) == [(k, s) for k in (1, 5) for s in range(2)]
    assert (all(before[r.run_id] == r.run_key for r in runs if r.run_id in before)
            and set(before) <= {r.run_id for r in runs})
    leftover = [p for p in (tmp_path / "fewshot-checkpoints").glob("*.pt") if not p.name.endswith(".model.pt")]
    assert not leftover  # every training checkpoint was dropped once its run was stored


@pytest.mark.slow  # starts a local Ray instance
def test_ray_executor_on_a_local_instance(cli, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="ERROR", log_to_driver=False)
    try:
        r = cli("sweep", "--learners", "nearest-centroid,metasgd", "--dataset", "synthetic", "--shots", "1",
                "--seeds", "1", "--executor", "ray", *TINY, "--store", tmp_path / "ray.db", "--json")
        assert r.code == 0, r.err
        assert r.json()["ran"] == 2
        assert ray.is_initialized()  # the sweep leaves a Ray instance it did not start running
    finally:
        ray.shutdown()
    runs = stored(tmp_path / "ray.db")
    assert sorted(r.learner for r in runs) == ["metasgd", "nearest-centroid"]
    assert all(r.hardware["torch_threads"] == 1 for r in runs)  # computed in Ray workers, one CPU each
    again = cli("sweep", "--learners", "nearest-centroid,metasgd", "--dataset", "synthetic", "--shots", "1",
                "--seeds", "1", "--executor", "ray", *TINY, "--store", tmp_path / "ray.db", "--json")
    assert again.json()["ran"] == 0  # nothing to do: Ray is not even started
