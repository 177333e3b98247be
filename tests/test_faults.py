"""Faults found by trying to break the harness (issue 17, item 6): each test reproduces one.

The store, checkpoints, data files, values on the command line and the CLI itself; every
fault is a one-line error that says what really happened (or no error at all), and leaves
nothing half-done behind.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error
from old_stores import write_old_store

from fewshot_bench.errors import StoreError
from fewshot_bench.records.store import SCHEMA_VERSION, ResultStore, RunRecord

RECORD = {
    "run_key": "k1", "learner": "x", "dataset": "synthetic", "way": 5, "shot": 1, "seed": 0,
    "status": "complete", "metric": "accuracy", "mean": 0.5, "ci95": 0.01, "episodes": 3,
    "config": {"a": 1}, "options": {}, "summary": {}, "versions": {}, "hardware": {}, "timings": {},
}


def record(**fields) -> RunRecord:
    """A new record of the tiny run above, with ``fields`` changed."""
    return RunRecord.new(**(RECORD | fields))


# --- 5. new-store race ---------------------------------------------------------------------


def _open_at(args: tuple) -> str | None:
    path, start = args
    while time.time() < start:  # all processes open at the same moment
        pass
    try:
        with ResultStore(path) as store:
            store.runs()
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        return f"{type(exc).__name__}: {exc}"
    return None


def test_many_processes_create_one_new_store_at_once(tmp_path):
    """16 processes opening one new store at once: every open succeeds (was 20 of 480 failing)."""
    errors = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(16) as pool:
        for round_ in range(4):
            path = tmp_path / f"new{round_}.db"
            start = time.time() + 0.3
            errors += [e for e in pool.map(_open_at, [(path, start)] * 16) if e]
    assert errors == []


# --- 6. one run key, one complete row ---------------------------------------------------------


def test_a_run_key_is_stored_once(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        first = store.add_run(record(), np.zeros(3))
        with pytest.raises(StoreError, match="already stored .* --rerun"):
            store.add_run(record(), np.zeros(3))
        assert store.add_run(record(), np.zeros(3), if_absent=True) == first
        # The database itself refuses a second complete row (two processes racing past any check).
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(
                "INSERT INTO runs SELECT 'other', run_key, learner, dataset, way, shot, seed, status, metric, mean,"
                " ci95, episodes, config, options, summary, versions, hardware, timings, created_at FROM runs"
            )
        second = store.add_run(record(mean=0.6), np.ones(3), replace=True)
        assert [r.run_id for r in store.runs()] == [second]
        assert store.find_complete("k1").run_id == second


def _schema1_store_with_duplicates(path):
    """A schema-1 store (no unique index) holding the same run twice, as older versions could write."""
    old = {k: v for k, v in RECORD.items() if k not in ("metric", "mean")} | {"accuracy": 0.5}
    write_old_store(path, 1, [(old | {"run_id": "first"}, np.zeros(3)), (old | {"run_id": "dup"}, np.zeros(3))])


def test_old_store_with_duplicate_rows_is_read_once_and_migrated(tmp_path):
    path = tmp_path / "old.db"
    _schema1_store_with_duplicates(path)
    with ResultStore(path, create=False) as store:  # tables, results, compare: each seed once (the latest)
        assert [r.run_id for r in store.runs()] == ["dup"]
    with ResultStore(path) as store:  # opened for writing: migrated in place
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        statuses = sorted(r[0] for r in store.conn.execute("SELECT status FROM runs"))
        assert statuses == ["complete", "duplicate"]  # nothing deleted
        assert [r.run_id for r in store.runs()] == ["dup"]
        with pytest.raises(StoreError, match="already stored"):
            store.add_run(record(), np.zeros(3))


def test_newer_schema_store_still_refused_untouched(tmp_path):
    path = tmp_path / "new.db"
    with ResultStore(path) as store:
        store.add_run(record(), np.zeros(3))
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer fewshot-bench"):
        ResultStore(path)
    assert path.read_bytes() == before


# --- 4. disk full, 8. read-only store ------------------------------------------------------------


def test_full_disk_is_one_line_with_the_real_cause(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count={pages}")  # what a full disk does to SQLite
        with pytest.raises(StoreError, match="the disk is full") as info:
            store.add_run(record(), np.zeros(100_000))
        assert "rollback" not in str(info.value) and "\n" not in str(info.value)
        assert store.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_read_only_store_is_called_read_only(tmp_path, monkeypatch):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        store.add_run(record(), np.zeros(3))
    connect = ResultStore._connect
    monkeypatch.setattr(ResultStore, "_connect", lambda self, q="": connect(self, q or "mode=ro"))  # a read-only mount
    with ResultStore(path, create=False) as store:  # reading works
        assert len(store.runs()) == 1
    with pytest.raises(StoreError, match="read-only") as info:  # writing fails now, not after training
        ResultStore(path)
    assert "not a fewshot-bench results store" not in str(info.value)


def test_store_that_is_a_directory(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        ResultStore(tmp_path)


# --- 1. pickle bombs in the embeddings loader -------------------------------------------------


def _nested_shared_lists(levels: int, fanout: int) -> object:
    inner: object = []
    for _ in range(levels):
        inner = [inner] * fanout  # pickled once, referred to `fanout` times (memo)
    return inner


@pytest.mark.parametrize("levels,fanout", [(8, 40), (2, 20_000)])
def test_pickle_of_shared_references_is_refused_at_once(tmp_path, levels, fanout):
    """A few hundred bytes of shared references used to expand to billions of lists (minutes, 3+ GB)."""
    import pickle

    from fewshot_bench.data.leo import read_embeddings
    from fewshot_bench.errors import DataError

    path = tmp_path / "train_embeddings.pkl"
    bomb = _nested_shared_lists(levels, fanout)
    path.write_bytes(pickle.dumps({"embeddings": bomb, "labels": bomb, "keys": bomb}, protocol=2))
    assert path.stat().st_size < 250_000  # expands to 40**8 or 20,000**2 lists per field
    t0 = time.perf_counter()
    with pytest.raises(DataError) as info:
        read_embeddings(path)
    assert time.perf_counter() - t0 < 2
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "opcodes,size",
    [
        (b"\x80\x02T" + (2**31 - 1).to_bytes(4, "little") + b"ab.", 2**31 - 1),  # BINSTRING, 2 GiB
        (b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b".", 2**40),  # BINBYTES8, 1 TiB
        (b"\x80\x04\x8d" + (2**40).to_bytes(8, "little") + b".", 2**40),  # BINUNICODE8
    ],
)
def test_pickle_header_claiming_a_huge_string_allocates_nothing(tmp_path, opcodes, size):
    """An 11-byte file whose header claims 2 GiB took 2.7 GB; 2**40 bytes said `cannot read PATH:` and no reason."""
    import tracemalloc

    from fewshot_bench.data.leo import read_embeddings
    from fewshot_bench.errors import DataError

    path = tmp_path / "train_embeddings.pkl"
    path.write_bytes(opcodes)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"declares {size:,} bytes") as info:
            read_embeddings(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000
    assert "\n" not in str(info.value)


def test_directory_named_like_an_embeddings_file(tmp_path):
    """A directory called train_embeddings.pkl was reported as missing."""
    from fewshot_bench.data.leo import read_embeddings
    from fewshot_bench.errors import DataError

    path = tmp_path / "train_embeddings.pkl"
    path.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_embeddings(path)


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_dataset_file_that_is_a_directory_is_not_called_missing(cli, tmp_path, suffix):
    from leo_fixtures import make_split

    from fewshot_bench.data.leo import write_embeddings

    data = tmp_path / "feats"
    for i, split in enumerate(("train", "val", "test")):
        write_embeddings(data / f"{split}_embeddings.npz", *make_split([f"c{i}{j}" for j in range(6)], 20, dim=8))
    (data / "val_embeddings.npz").unlink()
    (data / f"val_embeddings{suffix}").mkdir()
    r = cli("run", "--learner", "nearest-centroid", "--dataset", "features", "--data-dir", data, "--episodes", "10")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err
    assert "is a directory" in r.err and "missing" not in r.err


def test_features_without_files_hint_at_exporting_not_the_leo_download(cli, tmp_path):
    """`run --dataset features` without files suggested `data download leo`: wrong advice for one's own features."""
    for args in ((), ("--data-dir", tmp_path / "nowhere"), ("--data-dir", tmp_path)):
        r = cli("run", "--learner", "nearest-centroid", "--dataset", "features", *args, "--episodes", "10")
        assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err
        assert "data download leo" not in r.err and "write_embeddings" in r.err and "embed" in r.err
    r = cli("run", "--learner", "nearest-centroid", "--dataset", "mini", "--episodes", "10")
    assert "data download leo" in r.err  # the right advice for the LEO datasets


# --- 5 (item). validate before working; 7. bad values; 10. one line -------------------------------

TINY = ("--learner", "metasgd", "--steps", "2", "--val-every", "1", "--val-episodes", "2", "--episodes", "5",
        "--eval-query", "2")


def one_line(r, header: bool = False) -> str:
    """The one-line user error of ``r``; unless ``header``, checks that need no data fail before the run header:
    nothing started."""
    line = one_line_error(r)
    if not header:
        assert r.out == "", r.out
    return line


@pytest.mark.parametrize(
    "args,words",
    [
        (("--shot", "0"), "--shot 0"),
        (("--way", "1"), "--way 1"),
        (("--seed", "-1"), "--seed -1"),
        (("--seed", str(2**63)), "seeds run from 0"),
        (("--eval-query", "0"), "--eval-query 0"),
        (("--patience", "-2"), "--patience -2"),
        (("--set", "outer_lr=nan"), "finite"),
        (("--set", "outer_lr=inf"), "finite"),
        (("--set", "outer_lr=-1"), "negative"),
        (("--set", "outer_lr=0"), "positive"),
        (("--set", "dtype=int8"), "float32, float64"),
        (("--set", "meta_batch_size=0"), "at least 1"),
        (("--set", "inner_steps=-3"), "negative"),
        (("--set", "grad_clip_norm=0"), "positive"),
    ],
)
def test_bad_values_are_refused_before_any_work(cli, tmp_path, args, words):
    line = one_line(cli("run", *TINY, *args, "--store", tmp_path / "r.db"))
    assert words in line and "failed during" not in line  # the user's value, not the plugin, is to blame
    assert not (tmp_path / "fewshot-checkpoints").exists() or not any((tmp_path / "fewshot-checkpoints").iterdir())


def test_leo_seed_range_and_dropout_checked_as_values(cli, tmp_path):
    assert "seeds run from 0" in one_line(cli("run", "--learner", "leo", "--seed", "-1", "--store", tmp_path / "r.db"))
    assert "dropout" in one_line(cli("run", "--learner", "leo", "--set", "dropout_rate=1",
                                     "--store", tmp_path / "r.db"))


def test_episode_shape_is_checked_against_every_split_before_training(cli, tmp_path, monkeypatch):
    from fewshot_bench.protocol import train

    monkeypatch.setattr(train.MetaTrainer, "run", lambda self: pytest.fail("trained before the check"))
    line = one_line(cli("run", *TINY[:-2], "--eval-query", "100000", "--store", tmp_path / "r.db"), header=True)
    assert "fewer than K + Q" in line


@pytest.mark.parametrize("store", ["text", "foreign", "directory", "newer"])
def test_bad_store_is_refused_before_any_work(cli, tmp_path, monkeypatch, store):
    """A bad --store was found only after training (40 s of LEO)."""
    from fewshot_bench.protocol import runner

    monkeypatch.setattr(runner, "compute", lambda *a, **k: pytest.fail("worked before checking the store"))
    path = tmp_path / "s.db"
    if store == "text":
        path.write_text("my notes\n" * 100)
    elif store == "foreign":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    elif store == "directory":
        path.mkdir()
    else:
        with ResultStore(path):
            pass
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()
    line = one_line(cli("run", *TINY, "--store", path))
    assert str(path) in line


def test_read_only_store_is_refused_before_any_work(cli, tmp_path, monkeypatch):
    from fewshot_bench.protocol import runner

    path = tmp_path / "s.db"
    with ResultStore(path):
        pass
    connect = ResultStore._connect
    monkeypatch.setattr(ResultStore, "_connect", lambda self, q="": connect(self, q or "mode=ro"))
    monkeypatch.setattr(runner, "compute", lambda *a, **k: pytest.fail("worked before checking the store"))
    line = one_line(cli("run", *TINY, "--store", path))
    assert "read-only" in line and "not a fewshot-bench results store" not in line


def test_one_line_even_when_a_preset_note_was_logged(tmp_path):
    """Errors arrived as two lines: LEO's preset note first."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "fewshot_bench", "run", "--learner", "leo", "--shot", "3", "--seed", "-1",
         "--store", str(tmp_path / "r.db")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "--seed -1" in r.stderr


@pytest.mark.slow  # six CLI processes
def test_broken_pipe_exits_quietly(tmp_path):
    """`results --json | head -c 10` printed a BrokenPipeError traceback."""
    import subprocess
    import sys

    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        for i in range(300):
            store.add_run(record(run_key=f"k{i}", seed=i), np.zeros(3))
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "fewshot_bench", "results", "--json", "--store", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.read(10)
        proc.stdout.close()  # what `head -c 10` does
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
        assert "Traceback" not in err and "BrokenPipe" not in err and err == "", err


# --- 6. a finished run is reused, not retrained and stored again -------------------------------


def test_running_a_finished_run_again_reuses_it(cli, tmp_path, monkeypatch):
    from fewshot_bench.protocol import runner

    store = tmp_path / "r.db"
    first = cli("run", *TINY, "--store", store, "--json")
    assert first.code == 0, first.err
    compute = runner.compute
    monkeypatch.setattr(runner, "compute", lambda *a, **k: pytest.fail("retrained a stored run"))
    with ResultStore(store, create=False) as s:
        key = s.run(first.json()["run_id"]).run_key
    leftover = tmp_path / "fewshot-checkpoints" / f"{key}.pt"  # as a kill after storing would leave it
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"a training checkpoint")
    again = cli("run", *TINY, "--store", store, "--json")
    assert again.code == 0 and again.json()["run_id"] == first.json()["run_id"]
    assert not leftover.exists()
    assert "reusing it" in again.err and "--rerun" in again.err
    assert again.json()["accuracy"] == first.json()["accuracy"]
    monkeypatch.setattr(runner, "compute", compute)
    rerun = cli("run", *TINY, "--store", store, "--json", "--rerun")
    assert rerun.code == 0 and rerun.json()["run_id"] != first.json()["run_id"]
    with ResultStore(store, create=False) as s:
        assert [r.run_id for r in s.runs()] == [rerun.json()["run_id"]]  # one run key, one complete row


def test_identical_runs_finishing_together_store_one_row(host, synthetic, tmp_path):
    from fewshot_bench.protocol.runner import RunContext, RunSpec, compute, execute

    ctx = RunContext(host=host, store_path=tmp_path / "r.db", checkpoint_dir=tmp_path / "ck",
                     dataset_cache={("synthetic", "center", "None"): synthetic})
    spec = RunSpec(learner="nearest-centroid", steps=0, episodes=5, eval_query=2)
    outcome = compute(spec, ctx)  # the other process finished first and stored the same run
    from fewshot_bench.protocol.runner import store_run

    theirs = store_run(outcome, ctx.store_path)
    mine = execute(spec, ctx)
    assert mine.run_id == theirs.run_id and mine.stored_by_other and not theirs.stored_by_other
    with ResultStore(ctx.store_path, create=False) as s:
        assert len(s.runs()) == 1


# --- 3, 4, 8. checkpoints: a directory, a file as the folder, a full disk ------------------------


@pytest.fixture
def run_key(host):
    from fewshot_bench.cli import build_parser
    from fewshot_bench.commands.run import protocol_of
    from fewshot_bench.config import config_to_dict
    from fewshot_bench.protocol.runner import RunContext, resolve_config, run_key
    from fewshot_bench.workflows import run_spec

    spec = run_spec(host, **protocol_of(build_parser().parse_args(["run", *TINY])))
    ctx = RunContext(host=host, store_path=Path("unused.db"))
    return run_key(spec, ctx, config_to_dict(resolve_config(host.learner(spec.learner), spec)))[0]


def test_checkpoint_path_that_is_a_directory_fails_before_training(cli, tmp_path, run_key):
    ck = tmp_path / "ck"
    (ck / f"{run_key}.pt").mkdir(parents=True)
    line = one_line(cli("run", *TINY, "--checkpoint-dir", ck, "--store", tmp_path / "r.db"))
    assert "is a directory" in line and "learner" not in line
    assert not list(ck.glob(".*.tmp"))


def test_checkpoint_folder_that_is_a_file_is_the_harness_not_the_learner(cli, tmp_path):
    (tmp_path / "ck").write_text("x")
    line = one_line(cli("run", *TINY, "--checkpoint-dir", tmp_path / "ck", "--store", tmp_path / "r.db"))
    assert "is a file" in line and "failed during meta-training" not in line


def test_full_disk_while_checkpointing_is_one_line_and_leaves_no_tmp(cli, tmp_path, monkeypatch):
    """An obscure torch error blamed on the plugin, and a .tmp left filling the disk."""
    import shutil as shutil_module

    import torch

    from fewshot_bench import atomic, checkpoints

    real_save = torch.save

    def full_disk_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # the partial file exists when the write fails
        raise RuntimeError("[enforce fail at inline_container.cc:595] . "
                           "PytorchStreamWriter failed writing file data/3: file write failed")

    monkeypatch.setattr(checkpoints.torch, "save", full_disk_save)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: shutil_module._ntuple_diskusage(100, 100, 0))
    ck = tmp_path / "ck"
    r = cli("run", *TINY, "--checkpoint-dir", ck, "--store", tmp_path / "r.db")
    assert r.code == 1 and "Traceback" not in r.err
    line = r.err.strip().splitlines()[-1]
    assert "the disk is full" in line and "learner" not in line and str(ck) in line
    assert not [p for p in ck.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_oserror_while_checkpointing(tmp_path, monkeypatch):
    import errno

    from fewshot_bench import checkpoints
    from fewshot_bench.errors import WriteError

    def enospc(obj, f, *a, **k):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", enospc)
    with pytest.raises(WriteError, match="the disk is full"):
        checkpoints.save_atomic({"a": 1}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
