"""LEO-format embeddings: safe unpickling, exact validation, caching, datasets, CLI and download."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error
from leo_fixtures import make_split, wnid, write_raw_pickle, write_splits, write_tree

from fewshot_bench.data import cache
from fewshot_bench.data.base import DataRequest, FeatureSplit
from fewshot_bench.data.download import unpack
from fewshot_bench.data.leo import UnsafePickleError, read_embeddings, restricted_load, write_embeddings
from fewshot_bench.data.leo_datasets import load_leo
from fewshot_bench.errors import DataError

RUN = ("run", "--learner", "metasgd", "--steps", "20", "--episodes", "50", "--json")


@pytest.fixture(autouse=True)
def _no_user_env(monkeypatch, tmp_path):
    """Keep the user's data root and caches out of the tests."""
    monkeypatch.delenv("FEWSHOT_BENCH_DATA", raising=False)
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def root(tmp_path) -> Path:
    """A data root holding mini (center + multiview) and tiered (center) in the LEO layout."""
    data = tmp_path / "data"
    write_tree(data, "mini", "center", seed=1)
    write_tree(data, "mini", "multiview", seed=2)
    write_tree(data, "tiered", "center", classes=(8, 6, 6), seed=3)
    return data


def refused(res, *needles: str) -> None:
    """A clean one-line user error holding every needle (:func:`helpers.one_line_error`), and no store written."""
    one_line_error(res, *needles)
    assert not Path("fewshot-results.db").exists()


# --- format: writer and restricted unpickler -----------------------------------------------


def test_writer_emits_python2_protocol2_pickles_that_stock_pickle_reads(tmp_path):
    x, y, k = make_split([wnid(0), wnid(1)], 5, dim=640, bytes_keys=True)
    path = write_embeddings(tmp_path / "train_embeddings.pkl", x, y, k)
    raw = path.read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert ops[0] == ("PROTO", 2)
    globals_ = {a for n, a in ops if n == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    # Array data is a Python-2 byte string, not Python 3's _codecs.encode of a unicode string.
    assert ("BINSTRING", x.tobytes().decode("latin1")) in ops
    ref = pickle.loads(raw, encoding="latin1")  # how the LEO reference code loads them
    assert np.array_equal(ref["embeddings"], x) and ref["embeddings"].dtype == np.float32
    assert np.array_equal(ref["labels"], y) and ref["labels"].dtype == np.int64
    assert [bytes(v) for v in ref["keys"]] == k


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("key_kind", ["list-str", "array-str", "array-bytes", "object-array"])
def test_stock_python3_pickles_of_every_key_container_load(tmp_path, protocol, key_kind):
    x, y, k = make_split([wnid(0), wnid(1), wnid(2)], 4, dim=8)
    keys = {
        "list-str": k,
        "array-str": np.array(k),
        "array-bytes": np.array([s.encode() for s in k]),
        "object-array": np.array(k, dtype=object),
    }[key_kind]
    path = tmp_path / "f.pkl"
    path.write_bytes(pickle.dumps({"embeddings": x, "labels": y, "keys": keys}, protocol=protocol))
    e = read_embeddings(path)
    assert np.array_equal(e.embeddings, x) and np.array_equal(e.labels, y) and e.keys == k
    assert e.key_type == ("bytes" if key_kind == "array-bytes" else "str")
    assert e.class_names == [wnid(0), wnid(1), wnid(2)]
    assert [e.class_names[c] for c in e.row_class] == [s.split("-")[1] for s in k]


@pytest.mark.parametrize("case,says", [
    ("not-a-zip", "not a valid .npz file: it is not a zip archive"),
    ("object-array", "member keys.npy holds Python objects .pickled data., which are never loaded"),
    ("truncated", "not a valid .npz file"),  # its zip directory (at the end) is gone
])
def test_bad_npz_files_are_refused(tmp_path, case, says):
    x, y, k = make_split([wnid(0), wnid(1)], 3, dim=8)
    path = tmp_path / "train_embeddings.npz"
    if case == "not-a-zip":
        path.write_bytes(b"PK but not really")
    elif case == "object-array":  # would need allow_pickle=True: never granted
        np.savez(path, embeddings=x, labels=y, keys=np.array(k, dtype=object))
    else:
        write_embeddings(path, x, y, k)
        path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=says) as info:
        read_embeddings(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_npz_roundtrip_stores_str_keys(tmp_path):
    x, y, k = make_split([wnid(0), wnid(1)], 3, dim=16, bytes_keys=True)
    path = write_embeddings(tmp_path / "val_embeddings.npz", x.astype(np.float64), y, k)
    with np.load(path, allow_pickle=False) as z:
        assert z["embeddings"].dtype == np.float32 and z["labels"].dtype == np.int64 and z["keys"].dtype.kind == "U"
    e = read_embeddings(path)
    assert np.array_equal(e.embeddings, x) and e.keys == [s.decode() for s in k]


def test_writer_validates_before_writing(tmp_path):
    x, y, k = make_split([wnid(0), wnid(1)], 3, dim=4)
    k[4] = k[1]
    with pytest.raises(DataError, match="row 4: key .* duplicates row 1"):
        write_embeddings(tmp_path / "a.pkl", x, y, k)
    assert list(tmp_path.iterdir()) == []


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("payload", ["os.system", "eval", "nested-after-valid-array", "raw-getattr"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    x, y, k = make_split([wnid(0)], 2, dim=4)
    if payload == "os.system":
        data = pickle.dumps(_System(marker), protocol=2)
    elif payload == "eval":
        data = pickle.dumps({"embeddings": _Eval(marker)}, protocol=2)
    elif payload == "nested-after-valid-array":
        data = pickle.dumps({"embeddings": x, "labels": y, "keys": [_System(marker)]}, protocol=2)
    else:  # builtins.getattr(os, "system") built by hand: GLOBAL, then REDUCE
        data = b"\x80\x02cbuiltins\ngetattr\ncos\nsystem\nX\x06\x00\x00\x00systemq\x00\x86R."
    path = tmp_path / "train_embeddings.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match="refusing to load .* never needs"):
        restricted_load(path)
    assert not marker.exists()


def test_malicious_pickle_in_a_dataset_fails_the_run_cleanly(cli, root, tmp_path):
    marker = tmp_path / "pwned"
    (root / "miniImageNet/center/val_embeddings.pkl").write_bytes(pickle.dumps(_System(marker), protocol=2))
    res = cli(*RUN, "--dataset", "mini", "--data-dir", root)
    refused(res, "refusing to load", "val_embeddings.pkl", "posix.system")
    assert not marker.exists()


def test_codecs_encode_only_admits_latin1(tmp_path):
    path = tmp_path / "f.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(UnsafePickleError, match="only latin-1"):
        restricted_load(path)


# --- bad input through the CLI: one line, exit 1, nothing written ----------------------------


def _set_train(root: Path, **arrays) -> Path:
    return write_raw_pickle(root / "miniImageNet/center/train_embeddings.pkl", arrays)


def _train(seed: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return make_split([wnid(i) for i in range(6)], 20, dim=640, seed=seed * 10)


def _corrupt(case: str, root: Path) -> tuple[str, ...]:
    """Damage the mini center tree in one way; returns what the error line must contain."""
    path = root / "miniImageNet/center/train_embeddings.pkl"
    x, y, k = _train()
    keys = np.array(k)
    if case == "not-a-pickle":
        path.write_bytes(b"these are not the embeddings you are looking for")
        return ("train_embeddings.pkl", "not a readable embeddings pickle")
    if case == "empty-file":
        path.write_bytes(b"")
        return ("train_embeddings.pkl", "not a readable embeddings pickle")
    if case == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return ("train_embeddings.pkl", "truncated")
    if case == "not-a-dict":
        write_raw_pickle(path, [x, y, keys])
        return ("holds a list",)
    if case == "missing-field":
        _set_train(root, embeddings=x, labels=y)
        return ("lacks 'keys'",)
    if case == "unexpected-field":
        _set_train(root, embeddings=x, labels=y, keys=keys, images=y)
        return ("unexpected 'images'",)
    if case == "1d-embeddings":
        _set_train(root, embeddings=x[:, 0].copy(), labels=y, keys=keys)
        return ("'embeddings' is (120,)", "2-d float32")
    if case == "wrong-dimension":
        _set_train(root, embeddings=np.ascontiguousarray(x[:, :512]), labels=y, keys=keys)
        return ("dimension 512", "640")
    if case == "float64":
        _set_train(root, embeddings=x.astype(np.float64), labels=y, keys=keys)
        return ("dtype float64", "float32")
    if case == "row-count":
        _set_train(root, embeddings=x, labels=y[:-1], keys=keys)
        return ("119 labels for 120 embedding rows",)
    if case == "key-does-not-parse":
        keys[17] = "n01000000_5.JPEG"
        _set_train(root, embeddings=x, labels=y, keys=keys)
        return ("row 17", "does not parse")
    if case == "key-prefix-not-numeric":
        keys[3] = "abc-" + keys[3].split("-", 1)[1]
        _set_train(root, embeddings=x, labels=y, keys=keys)
        return ("row 3", "'abc' is not a number")
    if case == "image-file-not-of-class":
        num, cls, image = keys[5].split("-")
        keys[5] = f"{num}-{cls}-n09999999_1.JPEG"
        _set_train(root, embeddings=x, labels=y, keys=keys)
        return ("row 5", "does not start with its class")
    if case == "duplicate-key":
        keys[9] = keys[2]
        _set_train(root, embeddings=x, labels=y, keys=keys)
        return ("row 9", "duplicates row 2")
    if case == "nan-row":
        x[11, 7] = np.nan
        x[40, 0] = np.inf
        _set_train(root, embeddings=x, labels=y, keys=keys)
        return ("row 11", "NaN or inf")
    if case == "labels-disagree":
        y = y.copy()
        y[8] = (y[8] + 1) % 6
        _set_train(root, embeddings=x, labels=y, keys=keys)
        return ("row 8", "disagrees with the class")
    if case == "shared-class":
        xv, yv, kv = make_split([wnid(0)] + [wnid(100 + i) for i in range(5)], 20, dim=640)
        write_embeddings(root / "miniImageNet/center/val_embeddings.pkl", xv, yv, kv)
        return (f"class '{wnid(0)}' is in both", "disjoint")
    if case == "small-class":
        xs, ys, ks = make_split([wnid(i) for i in range(6)], [20, 20, 3, 20, 20, 20], dim=640)
        write_embeddings(path, xs, ys, ks)
        return (f"class '{wnid(2)}'", "has 3 examples")
    if case == "missing-file":
        (root / "miniImageNet/center/val_embeddings.pkl").unlink()
        expected = str(root / "miniImageNet/center/val_embeddings.pkl")
        return (expected, "--data-dir", "FEWSHOT_BENCH_DATA", "data download leo")
    raise AssertionError(case)


BAD_CASES = [
    "not-a-pickle", "empty-file", "truncated", "not-a-dict", "missing-field", "unexpected-field",
    "1d-embeddings", "wrong-dimension", "float64", "row-count", "key-does-not-parse",
    "key-prefix-not-numeric", "image-file-not-of-class", "duplicate-key", "nan-row",
    "labels-disagree", "shared-class", "small-class", "missing-file",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_give_one_line_errors(cli, root, case):
    needles = _corrupt(case, root)
    refused(cli(*RUN, "--dataset", "mini", "--data-dir", root), *needles)


def test_missing_root_and_unset_data_dir(cli, tmp_path):
    refused(cli(*RUN, "--dataset", "tiered"), "--data-dir", "FEWSHOT_BENCH_DATA",
            "tieredImageNet/center/train_embeddings.pkl", "data download leo")
    refused(cli(*RUN, "--dataset", "mini", "--data-dir", tmp_path / "nowhere"),
            str(tmp_path / "nowhere"), "does not exist", "data download leo")


def test_crop_errors(cli, root):
    refused(cli(*RUN, "--dataset", "tiered", "--crop", "multiview", "--data-dir", root),
            "--crop 'multiview': dataset 'tiered' offers center")
    refused(cli(*RUN, "--dataset", "mini", "--crop", "zoom", "--data-dir", root),
            "--crop 'zoom': dataset 'mini' offers center, multiview")


# --- end to end --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset,crop",
    [("mini", "center"), ("miniImageNet", "multiview"), ("tiered", "center"), ("tieredImageNet", "center")],
)
def test_run_end_to_end_on_leo_trees(cli, root, dataset, crop):
    res = cli(*RUN, "--dataset", dataset, "--crop", crop, "--data-dir", root)
    assert res.code == 0, res.err
    out = res.json()
    assert out["dataset"] == {"miniImageNet": "mini", "tieredImageNet": "tiered"}.get(dataset, dataset)
    assert out["steps"] == 20 and out["episodes"] == 50
    assert out["accuracy"] > 0.5  # well-separated classes: rows under the wrong class would give ~0.2


def test_data_root_from_environment(cli, root, monkeypatch):
    monkeypatch.setenv("FEWSHOT_BENCH_DATA", str(root))
    res = cli(*RUN, "--dataset", "mini")
    assert res.code == 0, res.err


def test_features_dataset_any_dimension_and_lenient_prefix(cli, tmp_path):
    d = tmp_path / "export"
    for s, split in enumerate(("train", "val", "test")):
        names = [f"Alphabet{s}_c{i}" for i in range(6)]
        x, y, k = make_split(names, 20, dim=32, seed=s)
        k = [key.replace(key.split("-")[0], "img", 1) for key in k]  # non-numeric first field
        write_embeddings(d / f"{split}_embeddings.npz", x, y, k)
    res = cli(*RUN, "--dataset", "features", "--data-dir", d)
    assert res.code == 0, res.err
    assert res.json()["dataset"] == "features"
    Path("fewshot-results.db").unlink()
    # The same keys in a mini tree are refused: LEO keys start with a number.
    write_splits(tmp_path / "m/miniImageNet/center")
    write_embeddings(tmp_path / "m/miniImageNet/center/train_embeddings.npz", *_prefixed(d / "train_embeddings.npz"))
    refused(cli(*RUN, "--dataset", "mini", "--data-dir", tmp_path / "m"), "is not a number")


def _prefixed(path: Path):
    e = read_embeddings(path, numeric_prefix=False)
    return np.pad(e.embeddings, ((0, 0), (0, 640 - e.dim))), e.labels, e.keys


def test_train_on_val_merges_train_and_val_classes(cli, tmp_path):
    # 3 train classes cannot make a 5-way episode; train + val (3 + 5) can.
    d = tmp_path / "data"
    write_splits(d / "miniImageNet/center", classes=(3, 5, 6))
    refused(cli(*RUN, "--dataset", "mini", "--data-dir", d), "5-way episodes need 5 classes", "'train'")
    res = cli(*RUN, "--dataset", "mini", "--data-dir", d, "--train-on-val")
    assert res.code == 0, res.err
    assert res.json()["steps"] == 20


# --- loading and the cache ---------------------------------------------------------------


def _request(root: Path, crop: str = "center", normalize: bool = True) -> DataRequest:
    return DataRequest(data_dir=root, crop=crop, normalize=normalize)


def test_loaded_splits_are_grouped_normalised_and_match_the_file(root):
    ds = load_leo("mini", _request(root, "multiview"))
    e = read_embeddings(root / "miniImageNet/multiview/train_embeddings.pkl")
    expected = FeatureSplit.from_labelled("train", e.embeddings, e.row_class, e.class_names, keys=e.keys)
    got = ds.split("train")
    assert got.class_names == e.class_names == sorted(e.class_names)
    assert np.array_equal(got.offsets, expected.offsets)
    assert torch.allclose(got.features, expected.features, atol=1e-6)
    assert list(got.keys) == list(expected.keys)
    assert torch.allclose(got.features.norm(dim=1), torch.ones(got.features.shape[0]), atol=1e-5)
    for c, name in enumerate(got.class_names):  # every row sits under the class its key names
        assert {k.split("-")[1] for k in got.keys[got.offsets[c] : got.offsets[c + 1]]} == {name}
    assert got.keys[np.array([0, 5])] == [got.keys[0], got.keys[5]] and len(got.keys) == 120
    raw = load_leo("mini", _request(root, "multiview", normalize=False)).split("train")
    assert torch.equal(raw.features, torch.from_numpy(e.embeddings[np.argsort(e.row_class, kind="stable")]))


def test_warm_load_is_a_memory_mapped_hit(root):
    cold = load_leo("tiered", _request(root))
    warm = load_leo("tiered", _request(root))
    assert cold.info["cache"] == {"train": "built", "val": "built", "test": "built"}
    assert warm.info["cache"] == {"train": "hit", "val": "hit", "test": "hit"}
    for s in ("train", "val", "test"):
        assert torch.equal(cold.split(s).features, warm.split(s).features)
    assert (root / "tieredImageNet/center/.fewshot-cache/train_embeddings.pkl.l2.features.npy").exists()


def test_writes_to_loaded_features_never_reach_the_cache(root):
    first = load_leo("mini", _request(root)).split("val")
    before = first.features.clone()
    first.features.mul_(0)  # copy-on-write mapping: private pages only
    again = load_leo("mini", _request(root)).split("val")
    assert torch.equal(again.features, before)


def test_cache_rebuilds_when_the_source_changes(root):
    path = root / "miniImageNet/center/test_embeddings.pkl"
    old = load_leo("mini", _request(root)).split("test").features.clone()
    x, y, k = make_split([wnid(200 + i) for i in range(6)], 20, dim=640, seed=99)
    write_embeddings(path, x, y, k)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds = load_leo("mini", _request(root))
    assert ds.info["cache"]["test"] == "built"
    assert ds.split("test").class_names == [wnid(200 + i) for i in range(6)]
    assert not torch.equal(ds.split("test").features, old)


@pytest.mark.parametrize("damage", ["garbage-index", "truncated-features", "same-size-other-bytes", "missing-keys"])
def test_corrupt_cache_is_rebuilt_not_trusted(root, damage):
    good = load_leo("mini", _request(root)).split("train").features.clone()
    c = root / "miniImageNet/center/.fewshot-cache"
    feats = c / "train_embeddings.pkl.l2.features.npy"
    if damage == "garbage-index":
        (c / "train_embeddings.pkl.l2.index.json").write_text("{not json")
    elif damage == "truncated-features":
        feats.write_bytes(feats.read_bytes()[:-100])
    elif damage == "same-size-other-bytes":
        raw = bytearray(feats.read_bytes())
        raw[-640 * 4 :] = bytes(640 * 4)  # zero the last row (fingerprinted)
        feats.write_bytes(bytes(raw))
    else:
        (c / "train_embeddings.pkl.l2.keys.npy").unlink()
    ds = load_leo("mini", _request(root))
    assert ds.info["cache"]["train"] == "built"
    assert torch.equal(ds.split("train").features, good)


def test_cache_falls_back_to_user_dir_and_honours_env(root, tmp_path, monkeypatch):
    center = root / "miniImageNet/center"
    (center / cache.BESIDE).write_text("a file where the cache folder would go")  # not writable there
    ds = load_leo("mini", _request(root))
    assert ds.info["cache"]["train"] == "built"
    assert list((tmp_path / "xdg/fewshot-bench").glob("*/train_embeddings.pkl.l2.features.npy"))
    assert load_leo("mini", _request(root)).info["cache"]["train"] == "hit"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "explicit"))
    assert load_leo("mini", _request(root)).info["cache"]["train"] == "built"
    assert list((tmp_path / "explicit").glob("*/train_embeddings.pkl.l2.index.json"))


def test_npz_is_preferred_and_embeddings_subfolder_is_found(tmp_path):
    data = tmp_path / "data"
    write_splits(data / "embeddings/miniImageNet/center", suffix=".pkl", seed=1)
    write_splits(data / "embeddings/miniImageNet/center", suffix=".npz", seed=2)
    ds = load_leo("mini", _request(data))
    assert ds.info["files"]["train"].endswith("embeddings/miniImageNet/center/train_embeddings.npz")
    npz = read_embeddings(data / "embeddings/miniImageNet/center/train_embeddings.npz")
    assert ds.split("train").class_names == npz.class_names


# --- data check --------------------------------------------------------------------------


def test_data_check_reports_every_file(cli, root):
    res = cli("data", "check", "--data-dir", root, "--json")
    assert res.code == 0, res.err
    table = res.json()
    assert [(r["dataset"], r["crop"], r["split"]) for r in table][:4] == [
        ("mini", "center", "train"), ("mini", "center", "val"), ("mini", "center", "test"),
        ("mini", "multiview", "train"),
    ]
    tiered_train = next(r for r in table if r["dataset"] == "tiered" and r["split"] == "train")
    got = tuple(tiered_train[c] for c in ("classes", "rows", "rows_per_class", "dim"))
    assert got == (8, 160, "20", 640)
    assert all(r["status"].startswith("ok") for r in table) and len(table) == 9
    text = cli("data", "check", "--data-dir", root)
    assert text.code == 0 and "published: 351 classes, 448,695 rows" in text.out


def test_data_check_fails_on_a_bad_file_but_prints_the_table(cli, root):
    _corrupt("nan-row", root)
    res = cli("data", "check", "--data-dir", root)
    assert res.code == 1
    assert "error: row 11" in res.out and res.out.count(" ok") >= 8
    refused(res, "1 of 9 split files failed")


def test_data_check_without_files(cli, tmp_path):
    refused(cli("data", "check", "--data-dir", tmp_path), "no embedding files", "data download leo")
    refused(cli("data", "check"), "--data-dir", "FEWSHOT_BENCH_DATA")


# --- download ----------------------------------------------------------------------------


class _Server:
    """A local HTTP server for one payload: optional range support, one cut transfer, request log."""

    def __init__(self, payload: bytes, ranges: bool = True, cut_after: int | None = None) -> None:
        self.payload, self.ranges, self.cut_after = payload, ranges, cut_after
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.requests.append({"range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")})
                if self.path != "/embeddings.zip":
                    self.send_error(404)
                    return
                body, start = outer.payload, 0
                rng = self.headers.get("Range")
                if rng and outer.ranges and self.headers.get("If-Range") in (None, '"v1"'):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                chunk = body[start:]
                if outer.cut_after is not None:  # send part, then drop the connection
                    chunk, outer.cut_after = chunk[: outer.cut_after], None
                self.wfile.write(chunk)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/embeddings.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive(tmp_path) -> bytes:
    """A zip laid out like the authors' embeddings.zip (embeddings/<dataset>/<crop>/...)."""
    src = tmp_path / "src"
    write_tree(src / "embeddings", "mini", "center", seed=4)
    write_tree(src / "embeddings", "tiered", "center", seed=5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # stored: bytes stay incompressible and large
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src).as_posix())
    return buf.getvalue()


@pytest.fixture
def server_factory():
    servers = []

    def make(payload: bytes, **kw) -> _Server:
        servers.append(_Server(payload, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_download_unpacks_and_data_checks(cli, tmp_path, archive, server_factory):
    srv = server_factory(archive)
    dest = tmp_path / "leo"
    res = cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url)
    assert res.code == 0, res.err
    assert f"{len(archive):,} bytes" in res.out
    assert (dest / "embeddings/miniImageNet/center/train_embeddings.pkl").is_file()
    assert not (dest / "embeddings.zip").exists() and not list(dest.glob(".unpack-*"))
    assert cli("data", "check", "--data-dir", dest).code == 0
    again = cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url)
    assert again.code == 0 and "already exists" in again.out and len(srv.requests) == 1


def test_download_resumes_after_an_interrupted_transfer(cli, tmp_path, archive, server_factory):
    srv = server_factory(archive, cut_after=5000)
    dest = tmp_path / "leo"
    first = cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url)
    refused(first, "interrupted after 5,000", "resume")
    assert (dest / "embeddings.zip.part").stat().st_size == 5000
    assert not (dest / "embeddings").exists()
    second = cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url, "--keep-archive")
    assert second.code == 0, second.err
    assert srv.requests[-1] == {"range": "bytes=5000-", "if_range": '"v1"'}
    assert "resumed at byte 5,000" in second.out
    assert (dest / "embeddings.zip").read_bytes() == archive
    assert (dest / "embeddings/tieredImageNet/center/test_embeddings.pkl").is_file()


def test_download_restarts_when_the_server_ignores_ranges(cli, tmp_path, archive, server_factory):
    srv = server_factory(archive, ranges=False, cut_after=3000)
    dest = tmp_path / "leo"
    assert cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url).code == 1
    res = cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url, "--keep-archive")
    assert res.code == 0, res.err
    assert (dest / "embeddings.zip").read_bytes() == archive


def test_checksum_failure_is_not_unpacked(cli, tmp_path, archive, server_factory):
    srv = server_factory(archive)
    dest = tmp_path / "leo"
    refused(cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url, "--sha256", "0" * 64),
            "SHA-256", "expected " + "0" * 64, "not unpacked")
    assert not (dest / "embeddings").exists() and not (dest / "embeddings.zip.part").exists()
    assert (dest / "embeddings.zip.corrupt").read_bytes() == archive


def test_damaged_archive_is_not_unpacked(cli, tmp_path, archive, server_factory):
    bad = bytearray(archive)
    bad[len(bad) // 2] ^= 0xFF  # inside a stored member: its CRC no longer matches
    srv = server_factory(bytes(bad))
    dest = tmp_path / "leo"
    refused(cli("data", "download", "leo", "--data-dir", dest, "--url", srv.url), "damaged", "not unpacked")
    assert not (dest / "embeddings").exists() and not list(dest.glob(".unpack-*"))


def test_unreachable_address(cli, tmp_path, server_factory):
    srv = server_factory(b"")
    srv.close()
    refused(cli("data", "download", "leo", "--data-dir", tmp_path, "--url", srv.url), "cannot reach")
    srv2 = server_factory(b"x")
    refused(cli("data", "download", "leo", "--data-dir", tmp_path, "--url", srv2.url + ".missing"), "HTTP 404")


def test_unpack_refuses_paths_outside_the_target(tmp_path):
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("embeddings/ok.txt", "fine")
        z.writestr("../escaped.txt", "boom")
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="unsafe path '../escaped.txt'"):
        unpack(zpath, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and list((tmp_path / "out").iterdir()) == []
    link = zipfile.ZipInfo("embeddings/link")
    link.external_attr = (0o120777) << 16  # a symlink entry
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match="link or special file 'embeddings/link'"):
        unpack(zpath, tmp_path / "out")


def test_cache_index_records_the_source(root):
    load_leo("mini", _request(root))
    index = json.loads((root / "miniImageNet/center/.fewshot-cache/val_embeddings.pkl.l2.index.json").read_text())
    st = (root / "miniImageNet/center/val_embeddings.pkl").stat()
    assert index["source"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert index["rows"] == 120 and index["dim"] == 640 and len(index["class_names"]) == 6
