"""Faults, round three (issue 22): crafted data files and damaged stores, each reproduced here.

Every case must end in one line on stderr and a non-zero exit: no traceback, no crash, no
hang, nothing wrong stored, memory bounded. A crash or a hang is reproduced in a
subprocess with a timeout; the full disk and the read-only file system are real tmpfs
mounts (skipped where mounting is not permitted).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from leo_fixtures import make_split, write_tree

from fewshot_bench.data.leo import write_embeddings

SPLITS = ("train", "val", "test")


def one_line(r) -> str:
    """The single error line of a failed CLI call (no traceback; `run`'s note that it reuses a stored run aside)."""
    lines = [line for line in r.err.strip().splitlines() if not line.endswith("(--rerun runs it again)")]
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
