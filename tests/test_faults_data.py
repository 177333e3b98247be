"""Faults, round three (issue 22): crafted data files and damaged stores, each reproduced here.

Every case must end in one line on stderr and a non-zero exit: no traceback, no crash, no
hang, nothing wrong stored, memory bounded. A crash or a hang is reproduced in a
subprocess with a timeout; the full disk and the read-only file system are real tmpfs
mounts (skipped where mounting is not permitted).
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from leo_fixtures import make_split, write_tree
from old_stores import write_old_store

from fewshot_bench.cli import main
from fewshot_bench.data.leo import write_embeddings
from fewshot_bench.records.store import APPLICATION_ID, ResultStore

SPLITS = ("train", "val", "test")


def one_line(r) -> str:
    """The single error line of a failed CLI call (no traceback)."""
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and "Traceback" not in r.err, r.err
    return lines[0]


def run_cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``fewshot-bench ARGS`` in a child process (a crash or a hang cannot take the tests with it)."""
    return subprocess.run([sys.executable, "-m", "fewshot_bench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def features_dir(root: Path) -> Path:
    """A valid ``features`` data directory: three small split files."""
    for i, split in enumerate(SPLITS):
        write_embeddings(root / f"{split}_embeddings.npz", *make_split([f"c{i}{j}" for j in range(6)], 20, dim=8))
    return root


def run_features(cli, data: Path, store: Path | None = None):
    return cli("run", "--learner", "nearest-centroid", "--dataset", "features", "--data-dir", data, "--episodes", "5",
               "--store", store or data.parent / "r.db")


# --- crafted data files --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "run"])
def test_pickle_nesting_a_tuple_150k_deep_is_refused_without_a_crash(tmp_path, command):
    """A 150 KB LEO pickle whose dict key is a tuple nested 150,000 deep: SIGSEGV (hashing it recursed in C)."""
    crop = write_tree(tmp_path / "data", "tiered")
    path = crop / "train_embeddings.pkl"
    path.write_bytes(b"\x80\x02}" + b")" + b"\x85" * 150_000 + b"K\x01s.")  # {((((...),),),): 1}
    assert path.stat().st_size < 160_000
    args = (["data", "check"] if command == "check" else
            ["run", "--learner", "nearest-centroid", "--dataset", "tiered", "--episodes", "5",
             "--store", tmp_path / "r.db"])
    r = run_cli(*args, "--data-dir", tmp_path / "data")
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])  # -11: SIGSEGV
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    assert "nests tuples more than 8 deep" in (r.stdout if command == "check" else lines[0])  # check: its table
    assert not (tmp_path / "r.db").exists()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npz_whose_header_claims_a_petabyte_allocates_nothing(cli, tmp_path):
    """A 474-byte .npz whose embeddings.npy claims shape (10**12, 640): an _ArrayMemoryError traceback."""
    import tracemalloc

    from fewshot_bench.data.leo import read_embeddings
    from fewshot_bench.errors import DataError

    data = features_dir(tmp_path / "data")
    path = data / "train_embeddings.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("embeddings.npy", _npy_header((10**12, 640)))
        z.writestr("keys.npy", _npy_header((10**12,)))
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"declares shape \(1000000000000, 640\) .* but holds 0 bytes"):
            read_embeddings(path)
        assert tracemalloc.get_traced_memory()[1] < 10_000_000
    finally:
        tracemalloc.stop()
    line = one_line(run_features(cli, data))
    assert str(path) in line and "declares shape" in line


def test_npz_member_larger_than_its_compressed_bytes_can_hold_is_refused(tmp_path):
    """The member sizes in a zip's directory are claims too: checked against what its bytes can expand to."""
    from fewshot_bench.data.leo import read_embeddings
    from fewshot_bench.errors import DataError

    x, y, k = make_split(["c0", "c1"], 3, dim=8)
    path = write_embeddings(tmp_path / "train_embeddings.npz", x, y, k)  # stored members (numpy.savez)
    with zipfile.ZipFile(path) as z:
        entry, first = z.start_dir, z.infolist()[0]  # the first member's central directory entry
    raw = bytearray(path.read_bytes())
    assert raw[entry : entry + 4] == b"PK\x01\x02"
    raw[entry + 24 : entry + 28] = (first.file_size * 1000).to_bytes(4, "little")  # its uncompressed size
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="claims .* bytes from .* compressed bytes"):
        read_embeddings(path)


def test_random_bytes_npz_is_called_not_a_zip_not_pickled_data(cli, tmp_path):
    """Random bytes as train_embeddings.npz: 'contains pickled (object) data ... load it unsafely' (wrong advice)."""
    data = features_dir(tmp_path / "data")
    (data / "train_embeddings.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    line = one_line(run_features(cli, data))
    assert "is not a valid .npz file: it is not a zip archive" in line
    assert "pickle" not in line and "unsafe" not in line and "allow_pickle" not in line


@pytest.mark.parametrize("kind,words", [("fifo", "is a FIFO (named pipe), not a directory"),
                                        ("empty", "is an empty file, not a directory")])
@pytest.mark.parametrize("command", ["check", "run", "download"])
def test_data_dir_that_is_not_a_directory_says_what_it_is(cli, tmp_path, kind, words, command):
    """--data-dir at a FIFO or a 0-byte file: 'does not exist' (and `data download` a FileExistsError traceback)."""
    root = tmp_path / "root"
    if kind == "fifo":
        os.mkfifo(root)
    else:
        root.write_bytes(b"")
    if command == "run":
        r = run_features(cli, root, tmp_path / "r.db")
    elif command == "check":
        r = cli("data", "check", "--data-dir", root)
    else:
        r = cli("data", "download", "leo", "--data-dir", root, "--url", (tmp_path / "none.zip").as_uri())
    line = one_line(r)
    assert f"data directory {root} {words}" in line and "does not exist" not in line


@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
def test_fifo_named_like_a_split_file_is_refused_at_once(tmp_path, suffix):
    """A FIFO called train_embeddings.npz: the loader blocked forever opening it (no writer ever comes)."""
    data = features_dir(tmp_path / "data")
    (data / "train_embeddings.npz").unlink()
    os.mkfifo(data / f"train_embeddings{suffix}")
    r = run_cli("data", "check", "--data-dir", data, timeout=60)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "cannot read file: it is a FIFO (named pipe), not a regular file" in r.stdout
    assert r.stderr.strip().splitlines() == ["fewshot-bench: error: 1 of 3 split files failed the check "
                                             "(see the status column)"]


def test_fifo_in_the_parse_cache_is_rebuilt_not_read(tmp_path):
    """A FIFO where the cache's index should be: reading it would block; the cache is rebuilt instead."""
    data = features_dir(tmp_path / "data")
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from fewshot_bench.data.leo_datasets import load_split_file\n"
        "path = Path(sys.argv[1])\n"
        "load_split_file(path, 'train', 'features', dim=None, numeric_prefix=False)\n"  # builds the cache
        "index = path.parent / '.fewshot-cache' / (path.name + '.l2.index.json')\n"
        "index.unlink(); os.mkfifo(index)\n"
        "_, cached = load_split_file(path, 'train', 'features', dim=None, numeric_prefix=False)\n"
        "print(cached.status, index.is_file())\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(data / "train_embeddings.npz")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["built", "True"], r.stderr[-2000:]


# --- damaged stores --------------------------------------------------------------------------------

RUN = ("run", "--learner", "logreg", "--episodes", "5")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """A store holding a logreg and a nearest-centroid run of one cell (what `compare` pairs)."""
    path = tmp_path_factory.mktemp("store") / "r.db"
    for learner in ("logreg", "nearest-centroid"):
        assert main(["run", "--learner", learner, "--episodes", "5", "--store", str(path)]) == 0
    return path


def _damage(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()


DAMAGE = {
    "bad-json": ("UPDATE runs SET config = '{not json' WHERE learner = 'logreg'", "its config is not valid JSON"),
    "short-blob": ("UPDATE episode_results SET values_blob = x'0102' WHERE run_id IN "
                   "(SELECT run_id FROM runs WHERE learner = 'logreg')",
                   "its per-episode values are 2 bytes, not whole float32 numbers"),
    "text-mean": ("UPDATE runs SET mean = 'abc' WHERE learner = 'logreg'", "its mean is 'abc', not a number"),
}
COMMANDS = {
    "results": ("results",),
    "compare": ("compare", "nearest-centroid", "logreg"),
    "table": ("table", "1"),
    "run": RUN,  # the same run again: found stored, reused
}
# Every command with every damage it reads (`results` and `table` never read per-episode values).
CASES = [(d, c) for d in DAMAGE for c in COMMANDS if d != "short-blob" or c in ("compare", "run")]


@pytest.mark.parametrize("damage,command", CASES)
def test_a_corrupt_row_is_one_line_naming_the_run(cli, tmp_path, two_runs, damage, command):
    """A schema-3 row with bad JSON, a 2-byte blob or text in `mean`: tracebacks in results, run, compare, table."""
    path = tmp_path / "r.db"
    shutil.copy(two_runs, path)
    sql, what = DAMAGE[damage]
    _damage(path, sql)
    run_id = sqlite3.connect(path).execute("SELECT run_id FROM runs WHERE learner = 'logreg'").fetchone()[0]
    before = path.read_bytes()
    line = one_line(cli(*COMMANDS[command], "--store", path))
    assert f"results store {path}: run {run_id} is corrupt ({what}" in line
    assert "DELETE FROM runs WHERE run_id" in line and "restore the store from a backup" in line
    assert path.read_bytes() == before  # nothing stored


def test_schema1_store_with_a_summary_that_is_not_json(cli, tmp_path):
    """A schema-1 store whose summary is '{not json': the migration (rolled back) raised a JSONDecodeError traceback."""
    path = tmp_path / "old.db"
    record = {"run_id": "r1", "run_key": "k1", "learner": "x", "dataset": "synthetic", "way": 5, "shot": 1, "seed": 0,
              "status": "complete", "accuracy": 0.5, "ci95": 0.01, "episodes": 3}
    write_old_store(path, 1, [(record, np.zeros(3))])
    _damage(path, "UPDATE runs SET summary = '{not json'")
    for args in (("results",), ("table", "1"), ("compare", "x", "y"), RUN):
        line = one_line(cli(*args, "--store", path))
        assert "run r1 is corrupt (its summary is not valid JSON ('{not json'))" in line
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # migration rolled back: nothing changed
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_store_marked_ours_with_a_foreign_runs_table_is_refused_untouched(cli, tmp_path):
    """An FSB1 application_id with someone else's `runs` table: 'no such column: status'."""
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("CREATE TABLE runs (x, y)")
    conn.execute("INSERT INTO runs VALUES (1, 2)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for args in (("results",), ("table", "1"), RUN):
        line = one_line(cli(*args, "--store", path))
        assert "marked as a fewshot-bench results store, but its runs table lacks run_id" in line
        assert "has unexpected x, y" in line and "no such column" not in line
    assert path.read_bytes() == before


def test_store_with_a_column_too_many_is_refused(tmp_path):
    """Columns are checked both ways: an extra column would break reading rows as records."""
    from fewshot_bench.errors import StoreError

    path = tmp_path / "s.db"
    ResultStore(path).close()
    _damage(path, "ALTER TABLE runs ADD COLUMN note TEXT")
    with pytest.raises(StoreError, match="its runs table has unexpected note"):
        ResultStore(path, create=False)


# --- read-only file system, full disk (real tmpfs mounts) -----------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size)``: a fresh tmpfs of that size under tmp_path (skips where mounting is not permitted)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        if shutil.which("mount") is None or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root and the mount command (a real full or read-only file system)")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                           text=True)
        if r.returncode:
            pytest.skip(f"mounting a tmpfs is not permitted here ({r.stderr.strip()})")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)


def test_store_on_a_read_only_file_system(cli, tmp_path, tmpfs, two_runs):
    """A store on a read-only file system: an OSError (EROFS) traceback from the write probe's cleanup."""
    where = tmpfs("1m")
    shutil.copy(two_runs, where / "old.db")
    _remount_read_only(where)
    line = one_line(cli(*RUN, "--store", where / "new.db"))
    assert f"cannot write the results store folder in {where}: Read-only file system" in line
    assert "logreg" in cli("results", "--store", where / "old.db").out  # an existing store: read as it is
    line = one_line(cli("run", "--learner", "logreg", "--episodes", "6", "--store", where / "old.db"))
    assert "it is read-only" in line


def test_full_disk_says_disk_full_and_that_nothing_stored_is_lost(cli, tmp_path, tmpfs, two_runs):
    """A full disk: 'cannot open results store ...: disk I/O error', no word of a full disk, no advice."""
    where = tmpfs("128k")
    store = where / "r.db"
    shutil.copy(two_runs, store)
    with open(where / "filler", "wb", buffering=0) as f:  # fill the rest of the file system
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError:
                break
    assert shutil.disk_usage(where).free == 0
    line = one_line(cli("run", "--learner", "logreg", "--episodes", "6", "--store", store))
    assert f"cannot open results store {store}: the disk is full" in line
    assert "free some space and run the same command again: nothing stored is lost" in line
    (where / "filler").unlink()
    with ResultStore(store, create=False) as db:  # still whole, and it takes the run now
        assert len(db.runs()) == 2
    assert cli("run", "--learner", "logreg", "--episodes", "6", "--store", store).code == 0


def test_a_new_store_on_a_full_disk_is_refused_before_any_work(cli, tmp_path, tmpfs):
    where = tmpfs("128k")
    with open(where / "filler", "wb", buffering=0) as f:  # fill the file system
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError:
                break
    line = one_line(cli(*RUN, "--store", where / "new.db"))
    assert f"cannot write the results store folder in {where}: the disk is full; free some space" in line
    assert sorted(p.name for p in where.iterdir()) == ["filler"]  # no store, no probe left behind
