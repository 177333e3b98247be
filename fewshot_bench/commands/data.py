"""``fewshot-bench data check | download | import``: validate embedding files, fetch the LEO embeddings, import
one features file holding every split."""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot_bench.commands.common import (
    DATA_ENV,
    add_data_option,
    data_dir,
    print_json,
    print_table,
    progress_enabled,
)
from fewshot_bench.data.bundle import describe, write_folder
from fewshot_bench.data.check import check_root
from fewshot_bench.data.download import LEO_URL, fetch_leo
from fewshot_bench.data.files import directory_problem
from fewshot_bench.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data check`` and ``data download``."""
    p = sub.add_parser("data", help="check, download or import embedding files", description=__doc__)
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

    i = data_sub.add_parser(
        "import", help="turn one file holding every split into a features folder",
        description="Write the train, val and test splits of one .npz, .pkl or .pt file (arrays train, val, test "
        "with train_keys... or train_y...) as a folder the features dataset reads (docs/data.md). "
        "`--dataset features --data-dir FILE` reads such a file directly.")
    i.add_argument("file", type=Path, metavar="FILE", help="the features file (.npz, .pkl or .pt)")
    i.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="the new folder to write (must not exist, or be empty)")
    i.add_argument("--json", action="store_true", help="print the table as JSON")
    i.set_defaults(handler=import_file)


def _root(args: argparse.Namespace) -> Path:
    root = data_dir(args)
    if root is None:
        raise DataError(f"give the data root with --data-dir DIR or set {DATA_ENV}")
    return Path(root).expanduser()


def check(args: argparse.Namespace) -> int:
    """Validate every file present and print a table; fail when any file is bad."""
    table = check_root(_root(args))
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
    if root.exists() and not root.is_dir():  # made when missing, never replaced
        raise DataError(f"data directory {root} {directory_problem(root)}; pass --data-dir DIR")
    got, created = fetch_leo(root, url=args.url, sha256=args.sha256, keep_archive=args.keep_archive,
                             progress=progress_enabled(args))
    if got is None:
        print(f"{created[0]} already exists; nothing to download (remove it to download again)")
        return 0
    resumed = f", resumed at byte {got.resumed_from:,}" if got.resumed_from else ""
    print(f"downloaded {args.url}: {got.size:,} bytes{resumed}, sha256 {got.sha256}")
    print(f"unpacked {', '.join(str(p) for p in created)}; check it with `fewshot-bench data check --data-dir {root}`")
    return 0


def import_file(args: argparse.Namespace) -> int:
    """Write the splits of one features file as a features folder and print what it holds."""
    out = args.out.expanduser()
    table = describe(write_folder(args.file.expanduser(), out))
    if args.json:
        print_json(table)
        return 0
    print_table(table)
    print(f"wrote {out}; use it with `fewshot-bench run --dataset features --data-dir {out}`")
    return 0
