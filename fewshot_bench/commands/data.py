"""``fewshot-bench data check | download``: validate embedding files, fetch the LEO embeddings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fewshot_bench.commands.common import (
    DATA_ENV,
    add_data_option,
    data_dir,
    print_json,
    print_table,
    progress_enabled,
)
from fewshot_bench.data.base import SPLITS
from fewshot_bench.data.download import LEO_URL, fetch_leo
from fewshot_bench.data.leo import LEO_FEATURE_DIM
from fewshot_bench.data.leo_datasets import (
    CROPS,
    DOWNLOAD_HINT,
    LEO,
    leo_directory,
    load_split_file,
    published_note,
    split_file,
)
from fewshot_bench.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data check`` and ``data download``."""
    p = sub.add_parser("data", help="check or download embedding files", description=__doc__)
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    c = data_sub.add_parser("check", help="validate every embedding file under the data root",
                            description="Validate every embedding file under the data root (and build its cache).")
    add_data_option(c)
    c.add_argument("--json", action="store_true", help="print the table as JSON")
    c.set_defaults(handler=check)

    d = data_sub.add_parser("download", help="download and unpack published embeddings",
                            description="Download and unpack published embeddings into the data root.")
    d.add_argument("what", choices=["leo"], help="leo: the LEO authors' miniImageNet and tieredImageNet embeddings")
    add_data_option(d)
    d.add_argument("--url", default=LEO_URL, help=f"archive address (default: {LEO_URL})")
    d.add_argument("--sha256", help="expected SHA-256 of the archive (the authors publish none; verified when given)")
    d.add_argument("--keep-archive", action="store_true", help="keep the .zip after unpacking")
    d.set_defaults(handler=download)


def _root(args: argparse.Namespace) -> Path:
    root = data_dir(args)
    if root is None:
        raise DataError(f"give the data root with --data-dir DIR or set {DATA_ENV}")
    return Path(root).expanduser()


def _groups(root: Path) -> list[tuple[str, str, Path]]:
    """(dataset, crop, directory) of every folder under ``root`` holding at least one split file."""
    found = []
    for dataset, layout in LEO.items():
        for crop in CROPS:
            directory = leo_directory(root, dataset, crop)
            if any(split_file(directory, s) for s in SPLITS):
                found.append((dataset if crop in layout.crops else f"{dataset} (unsupported crop)", crop, directory))
    if any(split_file(root, s) for s in SPLITS):
        found.append(("features", "-", root))
    return found


def _check_group(dataset: str, crop: str, directory: Path, root: Path) -> list[dict[str, Any]]:
    """One table row per split of a folder; cross-split problems are reported on the later split."""
    rows, classes = [], {}
    name = dataset.split(" ")[0]
    for split in SPLITS:
        path = split_file(directory, split)
        row: dict[str, Any] = {"dataset": dataset, "crop": crop, "split": split,
                               "file": str(path.relative_to(root)) if path else "-"}
        rows.append(row)
        if path is None:
            row["status"] = f"missing {split}_embeddings.pkl"
            continue
        if dataset.endswith("(unsupported crop)"):
            row["status"] = f"error: {LEO[name].folder} has only {', '.join(LEO[name].crops)} embeddings"
            continue
        try:
            fs, cached = load_split_file(
                path, split, name, dim=None if name == "features" else LEO_FEATURE_DIM,
                numeric_prefix=name != "features",
            )
        except DataError as exc:
            row["status"] = f"error: {str(exc).replace(str(path) + ': ', '').replace(str(path), 'file')}"
            continue
        lo, hi = int(fs.counts.min()), int(fs.counts.max())
        note = published_note(name, split, fs.num_classes, int(fs.offsets[-1]))
        row.update(classes=fs.num_classes, rows=int(fs.offsets[-1]),
                   rows_per_class=f"{lo}-{hi}" if lo != hi else str(lo), dim=fs.feature_dim, cache=cached.status, status="ok" + (f" ({note})" if note else ""))
        for other, names in classes.items():
            shared = sorted(set(names) & set(fs.class_names))
            if shared:
                row["status"] = f"error: class {shared[0]!r} is also in {other} ({len(shared)} shared)"
                break
        classes[split] = fs.class_names
    return rows


def check(args: argparse.Namespace) -> int:
    """Validate every file present and print a table; fail when any file is bad."""
    root = _root(args)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; get the LEO embeddings with `{DOWNLOAD_HINT}`")
    groups = _groups(root)
    if not groups:
        raise DataError(
            f"no embedding files under {root}: expected e.g. {root / 'miniImageNet/center/train_embeddings.pkl'} "
            f"or {root / 'train_embeddings.npz'}; get the LEO embeddings with `{DOWNLOAD_HINT}`"
        )
    columns = ("dataset", "crop", "split", "file", "classes", "rows", "rows_per_class", "dim", "cache", "status")
    table = [{c: row.get(c, "") for c in columns} for g in groups for row in _check_group(*g, root)]
    bad = [r for r in table if not r["status"].startswith("ok")]
    if args.json:
        print_json(table)
    else:
        print_table(table)
    if bad:
        raise DataError(f"{len(bad)} of {len(table)} split files failed the check (see the status column)")
    return 0


def download(args: argparse.Namespace) -> int:
    """Download and unpack the LEO embeddings archive into the data root."""
    root = _root(args)
    got, created = fetch_leo(root, url=args.url, sha256=args.sha256, keep_archive=args.keep_archive,
                             progress=progress_enabled(args))
    if got is None:
        print(f"{created[0]} already exists; nothing to download (remove it to download again)")
        return 0
    resumed = f", resumed at byte {got.resumed_from:,}" if got.resumed_from else ""
    print(f"downloaded {args.url}: {got.size:,} bytes{resumed}, sha256 {got.sha256}")
    print(f"unpacked {', '.join(str(p) for p in created)}; check it with `fewshot-bench data check --data-dir {root}`")
    return 0
