"""Generators of tiny LEO-format embedding trees and files for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fewshot_bench.data.leo import pickle_bytes, write_embeddings

FOLDERS = {"mini": "miniImageNet", "tiered": "tieredImageNet"}


def wnid(i: int) -> str:
    """A WordNet-style class id, unique per integer."""
    return f"n{1_000_000 + i:08d}"


def make_split(
    classes: list[str],
    rows_per_class: int | list[int],
    dim: int = 640,
    seed: int = 0,
    bytes_keys: bool = False,
    separation: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, list]:
    """Shuffled non-negative features with well separated class means, labels and LEO keys."""
    rng = np.random.default_rng(seed)
    counts = rows_per_class if isinstance(rows_per_class, list) else [rows_per_class] * len(classes)
    feats, labels, keys = [], [], []
    for c, (name, count) in enumerate(zip(classes, counts)):
        mean = separation * rng.random(dim) * (rng.random(dim) < 0.2)
        feats.append(np.maximum(mean + rng.random((count, dim)), 0))
        labels += [c] * count
        keys += [f"{rng.integers(10**17, 10**18)}-{name}-{name}_{j}.JPEG" for j in range(count)]
    order = rng.permutation(len(keys))  # files are not grouped by class
    x = np.concatenate(feats).astype(np.float32)[order]
    y = np.asarray(labels, dtype=np.int64)[order]
    k = [keys[i].encode() if bytes_keys else keys[i] for i in order]
    return x, y, k


def write_tree(
    root: Path,
    dataset: str = "mini",
    crop: str = "center",
    classes: tuple[int, int, int] = (6, 6, 6),
    rows_per_class: int = 20,
    dim: int = 640,
    suffix: str = ".pkl",
    seed: int = 0,
) -> Path:
    """Write ``<root>/<folder>/<crop>/{train,val,test}_embeddings<suffix>``; returns the crop folder.

    Center files get str keys and multiview files bytes keys, as in the authors' files.
    """
    directory = Path(root) / FOLDERS[dataset] / crop
    write_splits(directory, classes, rows_per_class, dim, suffix, seed, bytes_keys=crop == "multiview")
    return directory


def write_splits(
    directory: Path,
    classes: tuple[int, int, int] = (6, 6, 6),
    rows_per_class: int = 20,
    dim: int = 640,
    suffix: str = ".pkl",
    seed: int = 0,
    bytes_keys: bool = False,
) -> Path:
    """Write the three split files of one directory with disjoint classes."""
    start = 0
    for s, (split, n_classes) in enumerate(zip(("train", "val", "test"), classes)):
        names = [wnid(start + i) for i in range(n_classes)]
        start += n_classes
        x, y, k = make_split(names, rows_per_class, dim, seed=seed * 10 + s, bytes_keys=bytes_keys)
        write_embeddings(Path(directory) / f"{split}_embeddings{suffix}", x, y, k)
    return Path(directory)


def write_raw_pickle(path: Path, obj: object) -> Path:
    """Write any dict/array object as a Python-2-style pickle (for malformed-file tests)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(pickle_bytes(obj))
    return Path(path)
