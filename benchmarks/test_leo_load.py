"""Cold and warm load of a LEO-format file the size of tieredImageNet's train split (448,695 x 640).

The file (1.15 GB, written once with the LEO writer by ``tiered_data`` and kept in a temp
dir across sessions) is created inside the tests, after the ``benchmark`` fixture, so
``-m "not slow"`` or ``--benchmark-skip`` skip it without writing anything. Cold: restricted
unpickling, validation, grouping, normalisation and writing the .npy cache. Warm: memory-mapping the cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tiered_data import DIM, SIZES, tiered_file

from fewshot_bench.data import cache
from fewshot_bench.data.base import DataRequest
from fewshot_bench.data.leo import write_embeddings
from fewshot_bench.data.leo_datasets import load_leo, load_split_file

pytestmark = pytest.mark.slow

ROWS = SIZES["train"][1]  # 448,695 rows of tieredImageNet train, REFERENCE.md §3
_made: dict[str, Path] = {}


def _load(path: Path):
    split, cached = load_split_file(path, "train", "tiered", dim=DIM, numeric_prefix=True)
    assert split.features.shape == (ROWS, DIM)
    return cached.status


def test_tiered_train_cold_load(benchmark):
    path = tiered_file("train")

    def clear():
        shutil.rmtree(path.parent / cache.BESIDE, ignore_errors=True)

    status = benchmark.pedantic(_load, args=(path,), setup=clear, rounds=2, iterations=1)
    assert status == "built"


def test_tiered_train_warm_load(benchmark):
    path = tiered_file("train")
    _load(path)  # make sure the cache exists
    assert benchmark(_load, path) == "hit"


def test_mini_full_dataset_warm_load(benchmark, tmp_path_factory):
    """All three miniImageNet splits at their published sizes (64/16/20 classes x 600 rows)."""
    if "mini" not in _made:
        root = tmp_path_factory.mktemp("mini")
        rng = np.random.default_rng(1)
        start = 0
        for split, n_classes in (("train", 64), ("val", 16), ("test", 20)):
            names = [f"n{2_000_000 + start + c:08d}" for c in range(n_classes)]
            start += n_classes
            keys = [f"{10**17 + i}-{n}-{n}_{i}.JPEG" for n in names for i in range(600)]
            x = rng.random((len(keys), DIM), dtype=np.float32)
            write_embeddings(root / "miniImageNet/center" / f"{split}_embeddings.pkl", x, None, keys)
        _made["mini"] = root
    request = DataRequest(data_dir=_made["mini"])
    load_leo("mini", request)  # cold: builds the caches
    ds = benchmark(load_leo, "mini", request)
    assert ds.info["cache"] == {"train": "hit", "val": "hit", "test": "hit"}
    assert ds.split("train").features.shape == (38_400, DIM)
