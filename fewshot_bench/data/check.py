"""Check every embedding file under a data root (``fewshot-bench data check``): one row per split file.

Each file is read as the dataset that owns it reads it (through the cache, which this
builds), and checked against the published sizes and for classes shared across splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fewshot_bench.data.base import SPLITS
from fewshot_bench.data.files import directory_problem
from fewshot_bench.data.leo_datasets import (
    CROPS,
    DOWNLOAD_HINT,
    LEO,
    file_format,
    leo_directory,
    load_split_file,
    published_note,
    shared_classes,
    split_file,
)
from fewshot_bench.errors import DataError

COLUMNS = ("dataset", "crop", "split", "file", "classes", "rows", "rows_per_class", "dim", "cache", "status")
UNSUPPORTED = " (unsupported crop)"


def file_groups(root: Path) -> list[tuple[str, str, Path]]:
    """(dataset, crop, directory) of every folder under ``root`` holding at least one split file."""
    found = []
    for dataset, layout in LEO.items():
        for crop in CROPS:
            directory = leo_directory(root, dataset, crop)
            if any(split_file(directory, s) for s in SPLITS):
                found.append((dataset if crop in layout.crops else dataset + UNSUPPORTED, crop, directory))
    if any(split_file(root, s) for s in SPLITS):
        found.append(("features", "-", root))
    return found


def check_group(dataset: str, crop: str, directory: Path, root: Path) -> list[dict[str, Any]]:
    """One row per split of a folder; classes shared with an earlier split are reported on the later one."""
    rows, classes = [], {}
    name = dataset.removesuffix(UNSUPPORTED)
    for split in SPLITS:
        path = split_file(directory, split)
        row: dict[str, Any] = {"dataset": dataset, "crop": crop, "split": split,
                               "file": str(path.relative_to(root)) if path else "-"}
        rows.append(row)
        if path is None:
            row["status"] = f"missing {split}_embeddings.pkl"
            continue
        if dataset.endswith(UNSUPPORTED):
            row["status"] = f"error: {LEO[name].folder} has only {', '.join(LEO[name].crops)} embeddings"
            continue
        try:
            fs, cached = load_split_file(path, split, name, **file_format(name))
        except DataError as exc:
            row["status"] = f"error: {str(exc).replace(str(path), 'file').removeprefix('file: ')}"
            continue
        lo, hi = int(fs.counts.min()), int(fs.counts.max())
        note = published_note(name, split, fs.num_classes, int(fs.offsets[-1]))
        row.update(
            classes=fs.num_classes, rows=int(fs.offsets[-1]), rows_per_class=f"{lo}-{hi}" if lo != hi else str(lo),
            dim=fs.feature_dim, cache=cached.status, status="ok" + (f" ({note})" if note else ""),
        )
        for other, names in classes.items():
            shared = shared_classes(names, fs.class_names)
            if shared:
                row["status"] = f"error: class {shared[0]!r} is also in {other} ({len(shared)} shared)"
                break
        classes[split] = fs.class_names
    return rows


def check_root(root: Path) -> list[dict[str, Any]]:
    """The check table of every split file under ``root`` (every column of :data:`COLUMNS` in each row).

    A missing root, or one holding no embedding files, is a one-line :class:`DataError`.
    """
    if not root.is_dir():
        raise DataError(
            f"data directory {root} {directory_problem(root)}; get the LEO embeddings with `{DOWNLOAD_HINT}`"
        )
    groups = file_groups(root)
    if not groups:
        raise DataError(
            f"no embedding files under {root}: expected e.g. {root / 'miniImageNet/center/train_embeddings.pkl'} "
            f"or {root / 'train_embeddings.npz'}; get the LEO embeddings with `{DOWNLOAD_HINT}`"
        )
    return [{c: row.get(c, "") for c in COLUMNS} for group in groups for row in check_group(*group, root)]
