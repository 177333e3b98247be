"""Helpers shared by sub-commands: plugin loading, store and data options, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from fewshot_bench.plugins import PluginHost, load_plugins
from fewshot_bench.store import DEFAULT_STORE

DATA_ENV = "FEWSHOT_BENCH_DATA"


def host_from_args(args: argparse.Namespace) -> PluginHost:
    """Load plugins honouring ``--strict-plugins``."""
    return load_plugins(strict=True if getattr(args, "strict_plugins", False) else None)


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store PATH`` (default ``fewshot-results.db`` in the working directory)."""
    parser.add_argument("--store", type=Path, default=Path(DEFAULT_STORE), help=f"results store (default: {DEFAULT_STORE})")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir DIR`` (default: ``$FEWSHOT_BENCH_DATA``)."""
    parser.add_argument("--data-dir", type=Path, default=None, help=f"root of dataset files (default: ${DATA_ENV})")


def data_dir(args: argparse.Namespace) -> Path | None:
    """The data root from ``--data-dir`` or ``$FEWSHOT_BENCH_DATA``."""
    if getattr(args, "data_dir", None) is not None:
        return args.data_dir
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def print_json(obj: Any) -> None:
    """Print one JSON object on one line (the last line of output for scripts)."""
    print(json.dumps(obj, default=str, sort_keys=False))


def print_table(rows: Iterable[dict[str, Any]], empty: str = "(none)") -> None:
    """Print rows of dicts as a plain-text table."""
    rows = list(rows)
    print(tabulate(rows, headers="keys", tablefmt="simple") if rows else empty)


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--quiet`` or ``--json``, and only on a terminal."""
    return not getattr(args, "quiet", False) and not getattr(args, "json", False) and sys.stderr.isatty()
