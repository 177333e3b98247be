"""One file holding every split: ``data import FILE --out DIR`` and ``--dataset features --data-dir FILE``.

The issue's user had the shared Omniglot features (one ``.npz``, keys ``<alphabet>/<character>/<file>``)
and got ``key ... does not parse``; the working recipe lived only in docs/tuning.md.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from helpers import one_line_error

import fewshot_bench as fb
from fewshot_bench.data.leo import read_embeddings, write_embeddings

QUICK = {"shot": 1, "episodes": 40}


def tuning_recipe(features, folder):
    """docs/tuning.md's manual recipe for the shared Omniglot file, as written there."""
    z = np.load(features)
    for split in ("train", "val", "test"):
        keys = []
        for i, key in enumerate(z[f"{split}_keys"]):
            alphabet, character, name = str(key).split("/")
            cls = f"{alphabet}.{character}"
            keys.append(f"{i}-{cls}-{cls}_{name}")
        write_embeddings(folder / f"{split}_embeddings.npz", z[split], None, keys)
    return folder


def test_import_of_the_shared_omniglot_features_gives_the_recipes_accuracies(shared_features, tmp_path, cli, host):
    """`data import`, the docs/tuning.md recipe and the file read directly: the same episodes, the same
    per-episode accuracies (each computed in its own store), and one data id, so one run key."""
    recipe = tuning_recipe(shared_features, tmp_path / "recipe")
    r = cli("data", "import", shared_features, "--out", tmp_path / "imported")
    assert r.code == 0, r.err
    assert [line.split()[:3] for line in r.out.splitlines()[2:5]] == [
        ["train", "179", "3580"], ["val", "24", "480"], ["test", "39", "780"]]
    runs = {}
    for name, data in (("recipe", recipe), ("imported", tmp_path / "imported"), ("file", shared_features)):
        for learner in ("nearest-centroid", "logreg"):
            runs[name, learner] = fb.run(learner, "features", data_dir=data, store=tmp_path / f"{name}.db",
                                         host=host, **QUICK)
    for learner in ("nearest-centroid", "logreg"):
        want = runs["recipe", learner]
        assert want.mean > 0.8  # real features: a meaningful number, not chance
        for name in ("imported", "file"):
            got = runs[name, learner]
            assert not got.reused
            np.testing.assert_array_equal(got.per_episode, want.per_episode)
            assert got.run_key == want.run_key
    for split in ("train", "val", "test"):  # the imported files are what the recipe writes, key for key
        a = read_embeddings(recipe / f"{split}_embeddings.npz", numeric_prefix=False)
        b = read_embeddings(tmp_path / "imported" / f"{split}_embeddings.npz", numeric_prefix=False)
        assert a.keys == b.keys and np.array_equal(a.embeddings, b.embeddings)


def small_arrays(rng, labels_only: bool = False) -> dict:
    """A tiny features file's arrays: 3 classes of 4 rows per split, path keys (or labels only)."""
    arrays = {}
    for s, split in enumerate(("train", "val", "test")):
        arrays[split] = rng.normal(size=(12, 8)).astype(np.float32)
        arrays[f"{split}_y"] = np.repeat(np.arange(3), 4)
        if not labels_only:
            arrays[f"{split}_keys"] = np.array([f"set{s}/char{c}/{i}.png" for i, c in enumerate(arrays[f"{split}_y"])])
    return arrays


def dataset_of(host, data):
    from fewshot_bench.data.base import DataRequest

    return host.dataset("features").load(DataRequest(data_dir=data))


@pytest.mark.parametrize("fmt", ["npz", "pkl", "pt", "labels-only", "nested-pkl"])
def test_each_file_type_imports_and_loads_directly(fmt, tmp_path, cli, host):
    """.npz, .pkl (plain pickle of numpy arrays, read by the restricted unpickler), .pt (tensors and a list of
    keys), labels without keys, and a pickle of one dict per split: imported and read directly, the same data."""
    arrays = small_arrays(np.random.default_rng(0), labels_only=fmt == "labels-only")
    path = tmp_path / f"f.{'npz' if fmt == 'labels-only' else fmt.removeprefix('nested-')}"
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    elif fmt == "pkl":
        path.write_bytes(pickle.dumps(arrays, protocol=2))
    elif fmt == "nested-pkl":
        nested = {s: {"embeddings": arrays[s], "labels": arrays[f"{s}_y"], "keys": arrays[f"{s}_keys"]}
                  for s in ("train", "val", "test")}
        path.write_bytes(pickle.dumps(nested, protocol=2))
    else:
        torch.save({k: (v.tolist() if k.endswith("_keys") else torch.from_numpy(v)) for k, v in arrays.items()}, path)
    r = cli("data", "import", path, "--out", tmp_path / "out", "--json")
    assert r.code == 0, r.err
    assert [(row["split"], row["classes"], row["rows"]) for row in r.json()] == [
        ("train", 3, 12), ("val", 3, 12), ("test", 3, 12)]
    folder, direct = dataset_of(host, tmp_path / "out"), dataset_of(host, path)
    for split in ("train", "val", "test"):
        a, b = folder.split(split), direct.split(split)
        assert a.class_names == b.class_names and len(a.class_names) == 3
        assert torch.equal(a.features, b.features) and list(a.keys) == list(b.keys)
    expected = ["train0", "train1", "train2"] if fmt == "labels-only" else ["set0.char0", "set0.char1", "set0.char2"]
    assert folder.split("train").class_names == expected


def _without(arrays: dict, name: str) -> dict:
    return {k: v for k, v in arrays.items() if k != name}


BAD = {
    "missing test": (lambda a: _without(a, "test"), "has no array 'test'"),
    "no classes": (lambda a: _without(_without(a, "val_keys"), "val_y"), "neither 'val_keys' nor 'val_y'"),
    "short labels": (lambda a: {**a, "train_y": a["train_y"][:5]}, "'train_y' has shape (5,)"),
    "1-d features": (lambda a: {**a, "val": a["val"][:, 0]}, "'val' is float32 (12,)"),
    "bad keys": (lambda a: {**a, "test_keys": np.array([f"k{i}" for i in range(12)])}, "test_keys[0] 'k0'"),
    "labels disagree": (lambda a: {**a, "train_y": np.arange(12)}, "label 1 disagrees with the class"),
    "shared class": (lambda a: {**a, "val_keys": a["train_keys"]}, "f.npz[val] (3 shared)"),
    "nan": (lambda a: {**a, "test": np.full((12, 8), np.nan, np.float32)}, "holds NaN or inf"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_it_and_writes_nothing(case, tmp_path, cli):
    """A missing array, wrong shapes, bad keys: one line naming the array, and no --out folder at all
    (nothing partial, no temporary folder left beside it); `run --data-dir FILE` says the same."""
    change, needle = BAD[case]
    path = tmp_path / "f.npz"
    np.savez(path, **change(small_arrays(np.random.default_rng(0))))
    one_line_error(cli("data", "import", path, "--out", tmp_path / "out"), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]
    one_line_error(cli("run", "--learner", "nearest-centroid", "--dataset", "features", "--data-dir", path,
                       "--store", tmp_path / "r.db", "--episodes", "10"), needle)


@pytest.mark.parametrize("suffix,content,needle", [
    (".npz", b"not a zip at all", "not a zip archive"),
    (".pt", b"PK\x03\x04 truncated", "is corrupt"),
    (".pkl", b"\x80\x02cos\nsystem\nq\x00.", "may be malicious"),
    (".csv", b"a,b\n", "unknown features file type"),
])
def test_a_corrupt_or_foreign_file_is_one_line(suffix, content, needle, tmp_path, cli):
    path = tmp_path / f"f{suffix}"
    path.write_bytes(content)
    one_line_error(cli("data", "import", path, "--out", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


def test_a_missing_file_or_a_fifo_as_data_dir_is_one_line(tmp_path, cli):
    import os

    run = ("run", "--learner", "nearest-centroid", "--dataset", "features", "--store", tmp_path / "r.db",
           "--episodes", "10", "--data-dir")
    one_line_error(cli(*run, tmp_path / "missing.npz"), "missing.npz: No such file or directory")
    os.mkfifo(tmp_path / "pipe.npz")
    one_line_error(cli(*run, tmp_path / "pipe.npz"), "it is a FIFO (named pipe), not a regular file")
    one_line_error(cli("data", "import", tmp_path / "pipe.npz", "--out", tmp_path / "out"), "it is a FIFO")
    assert not (tmp_path / "out").exists()


def test_out_that_holds_files_is_refused_untouched(tmp_path, cli):
    path = tmp_path / "f.npz"
    np.savez(path, **small_arrays(np.random.default_rng(0)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    one_line_error(cli("data", "import", path, "--out", out), "is not empty")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    (out / "mine.txt").unlink()  # an empty folder is filled
    assert cli("data", "import", path, "--out", out).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["test_embeddings.npz", "train_embeddings.npz",
                                                     "val_embeddings.npz"]
