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

from fewshot_bench.errors import ConfigError
from fewshot_bench.executors import WorkerSettings
from fewshot_bench.plugins import PluginHost, load_plugins
from fewshot_bench.runner import BUDGETS
from fewshot_bench.store import DEFAULT_STORE

DATA_ENV = "FEWSHOT_BENCH_DATA"


def host_from_args(args: argparse.Namespace, warn: bool = False) -> PluginHost:
    """Load plugins honouring ``--strict-plugins``.

    With ``warn``, one line on stderr says how many plugins failed to load (the details are
    in ``fewshot-bench plugins``): what ``learners``, ``run`` and ``sweep`` print.
    """
    host = load_plugins(strict=True if getattr(args, "strict_plugins", False) else None)
    warning = host.failure_warning() if warn else None
    if warning:
        print(warning, file=sys.stderr)
    return host


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


def progress_every(args: argparse.Namespace) -> float | None:
    """Seconds between one-line progress records on stderr when it is not a terminal (logs); None on a terminal or with ``--quiet``."""
    from fewshot_bench.progress import log_interval

    if getattr(args, "quiet", False) or sys.stderr.isatty():
        return None
    return log_interval()


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers``, ``--ray-address`` and ``--checkpoint-dir``: where a sweep's or a search's runs go."""
    parser.add_argument("--executor", choices=["local", "ray"], default="local", help="local process pool (default) or Ray")
    parser.add_argument("--workers", type=int,
                        help="local: worker processes (default: one per core); ray: CPUs of a new local instance")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local instance)")
    parser.add_argument("--checkpoint-dir", type=Path, help="where in-progress checkpoints go (default: beside the store)")


def worker_settings(args: argparse.Namespace) -> WorkerSettings:
    """What every worker needs: the data and checkpoint folders, absolute (a Ray worker may start elsewhere)."""
    checkpoint_dir = (args.checkpoint_dir or args.store.resolve().parent / "fewshot-checkpoints").resolve()
    root = data_dir(args)
    return WorkerSettings(data_dir=str(root.resolve()) if root else None, checkpoint_dir=str(checkpoint_dir))


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    """Options that refine the training and evaluation budget (``run`` and ``sweep``)."""
    parser.add_argument("--steps", type=int, help="meta-training steps (overrides --budget)")
    parser.add_argument("--episodes", type=int, help="test episodes per run (overrides --budget)")
    parser.add_argument("--val-every", type=int, help="validate every N steps (overrides --budget)")
    parser.add_argument("--val-episodes", type=int, help="validation episodes (overrides --budget)")
    parser.add_argument("--patience", type=int, default=20, help="validations without improvement before stopping (0: never stop)")
    parser.add_argument("--eval-query", type=int, help="queries per class at test time (default: all remaining examples)")


def budget_fields(args: argparse.Namespace) -> dict[str, Any]:
    """RunSpec fields from ``--budget`` and the options that override it, checked."""
    budget = BUDGETS[args.budget]
    fields = {key: budget[key] if getattr(args, key) is None else getattr(args, key)
              for key in ("steps", "episodes", "val_every", "val_episodes")}
    for name, value in fields.items():
        minimum = 0 if name == "steps" else 1
        if value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {minimum}")
    return {**fields, "patience": args.patience or None, "eval_query": args.eval_query}
