"""Synthetic LEO-format tieredImageNet files at the published sizes, written once and kept in a temp dir.

Writing the three splits (about 2 GB of float32, 1.15 GB of it the train split) takes a
while, so they are kept across benchmark sessions in ``$TMPDIR/fewshot-bench-tiered-<sizes>``
(the name holds every size, so a change of size writes a new set). Each file is written
atomically by :func:`fewshot_bench.data.leo.write_embeddings`, so a file that exists is
complete; a missing one is (re)written on the next call.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from fewshot_bench.data.leo import LEO_FEATURE_DIM, write_embeddings
from fewshot_bench.data.leo_datasets import LEO

DIM = LEO_FEATURE_DIM
SIZES = LEO["tiered"].published  # split -> (classes, rows): 351/97/160 classes, 448,695/124,261/206,209 rows
_SEEDS = {"train": 0, "val": 1, "test": 2}
_FIRST_CLASS = {"train": 0, "val": 1_000, "test": 2_000}  # disjoint class names across splits


def root_dir() -> Path:
    """The persistent data root (``--data-dir``) of the synthetic tieredImageNet files."""
    tag = "-".join(f"{rows}" for _, rows in SIZES.values())
    return Path(tempfile.gettempdir()) / f"fewshot-bench-tiered-{tag}x{DIM}"


def split_path(split: str) -> Path:
    """Where ``split``'s pickle lives, in the layout the ``tiered`` dataset reads."""
    return root_dir() / LEO["tiered"].folder / "center" / f"{split}_embeddings.pkl"


def write_split(path: Path, split: str) -> Path:
    """Write one split: uniform random features, classes of about equal size (as tieredImageNet's are)."""
    classes, rows = SIZES[split]
    rng = np.random.default_rng(_SEEDS[split])
    # Every class gets at least one row, then the rest at random: sizes ~ rows / classes each.
    labels = np.sort(np.concatenate([np.arange(classes), rng.integers(0, classes, rows - classes)]))
    names = [f"n{1_000_000 + _FIRST_CLASS[split] + c:08d}" for c in range(classes)]
    keys = [f"{10**17 + i}-{names[c]}-{names[c]}_{i}.JPEG" for i, c in enumerate(labels.tolist())]
    x = rng.random((rows, DIM), dtype=np.float32)
    return write_embeddings(path, x, labels, keys)


def tiered_file(split: str) -> Path:
    """The ``split`` pickle, written first if it is not there yet."""
    path = split_path(split)
    if not path.is_file():
        write_split(path, split)
    return path


def tiered_root() -> Path:
    """The data root holding all three splits (written first where missing)."""
    for split in SIZES:
        tiered_file(split)
    return root_dir()
