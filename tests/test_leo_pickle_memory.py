"""Reading a LEO pickle holds about one copy of its arrays, and the cache is written without a shared memmap."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.data import cache
from fewshot_bench.data.leo import restricted_load, write_embeddings
from fewshot_bench.data.leo_datasets import load_split_file
from fewshot_bench.errors import DataError

ROWS, DIM = 4_096, 640  # 10 MB of float32: far above the raw-bytes threshold, quick to write


def _write(path: Path, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    keys = [f"{i}-n0{i % 8}-n0{i % 8}_{i}.JPEG" for i in range(ROWS)]
    write_embeddings(path, x, None, keys)
    return x, keys


@pytest.mark.equivalence
def test_restricted_load_matches_stock_unpickler(tmp_path):
    path = tmp_path / "train_embeddings.pkl"
    x, keys = _write(path)
    ours = restricted_load(path)
    with open(path, "rb") as f:
        stock = pickle.load(f, encoding="latin1")  # the LEO reference loader
    assert set(ours) == set(stock) == {"embeddings", "labels", "keys"}
    for name in ours:
        np.testing.assert_array_equal(ours[name], stock[name])
    np.testing.assert_array_equal(ours["embeddings"], x)
    assert ours["keys"].tolist() == keys


def test_restricted_load_holds_one_copy_of_the_array(tmp_path):
    """Peak Python/numpy allocation while loading stays near the array's size (a latin-1 round trip is 3x)."""
    path = tmp_path / "train_embeddings.pkl"
    x, _ = _write(path)
    tracemalloc.start()
    try:
        obj = restricted_load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert obj["embeddings"].shape == (ROWS, DIM)
    assert peak < 1.5 * x.nbytes, f"loading peaked at {peak / x.nbytes:.2f}x the array's size"


def test_truncated_array_payload_is_a_data_error(tmp_path):
    path = tmp_path / "train_embeddings.pkl"
    _write(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # cut inside the embeddings' bytes
    with pytest.raises(DataError, match="truncated"):
        restricted_load(path)


@pytest.mark.equivalence
def test_cache_built_by_streaming_equals_the_normalised_rows(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "train_embeddings.pkl"
    x, _ = _write(path)
    split, built = load_split_file(path, "train", "t", dim=DIM, numeric_prefix=True)
    assert built.status == "built"
    labels = np.array([i % 8 for i in range(ROWS)])
    order = np.argsort(labels, kind="stable")
    want = x[order] / np.linalg.norm(x[order], axis=1, keepdims=True)
    np.testing.assert_allclose(split.features.numpy(), want, rtol=1e-6, atol=1e-7)
    again, hit = load_split_file(path, "train", "t", dim=DIM, numeric_prefix=True)
    assert hit.status == "hit"
    np.testing.assert_array_equal(again.features.numpy(), split.features.numpy())
