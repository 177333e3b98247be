"""Helpers shared by sub-commands: plugin loading, the options several commands take, output."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from fewshot_bench.locations import DATA_ENV, data_root
from fewshot_bench.records.store import DEFAULT_STORE

if TYPE_CHECKING:  # an annotation only: plugins import torch, which `results` and `compare` need not
    from fewshot_bench.plugin_host import PluginHost


def host_from_args(args: argparse.Namespace, warn: bool = False) -> PluginHost:
    """Load plugins honouring ``--strict-plugins``.

    With ``warn``, one line on stderr says how many plugins failed to load (the details are
    in ``fewshot-bench plugins``): what ``learners``, ``run`` and ``sweep`` print.
    """
    from fewshot_bench.plugin_host import load_plugins  # torch: only commands that need plugins pay for it

    host = load_plugins(strict=True if getattr(args, "strict_plugins", False) else None)
    warning = host.failure_warning() if warn else None
    if warning:
        print(warning, file=sys.stderr)
    return host


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store PATH`` (default ``fewshot-results.db`` in the working directory)."""
    parser.add_argument("--store", type=Path, default=Path(DEFAULT_STORE),
                        help=f"results store (default: {DEFAULT_STORE})")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir DIR`` (default: ``$FEWSHOT_BENCH_DATA``)."""
    parser.add_argument("--data-dir", type=Path, default=None, help=f"root of dataset files (default: ${DATA_ENV})")


def data_dir(args: argparse.Namespace) -> Path | None:
    """The data root from ``--data-dir`` or ``$FEWSHOT_BENCH_DATA``."""
    return data_root(getattr(args, "data_dir", None))


def comma_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (argparse type)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str) -> list[int]:
    """``"1,5"`` -> ``[1, 5]`` (argparse type)."""
    try:
        return [int(t) for t in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def datasets_of(args: argparse.Namespace) -> list[str] | None:
    """The datasets of repeated ``--dataset NAME[,NAME]`` options, in order (None when not given)."""
    return [d for group in args.dataset for d in group] if args.dataset else None


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
    """Seconds between one-line progress records on stderr when it is not a terminal (logs); None on a terminal
    or with ``--quiet``."""
    from fewshot_bench.console.progress import log_interval

    if getattr(args, "quiet", False) or sys.stderr.isatty():
        return None
    return log_interval()


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers``, ``--ray-address`` and ``--checkpoint-dir``: where a sweep's or a search's
    runs go."""
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="local process pool (default) or Ray")
    parser.add_argument("--workers", type=int,
                        help="local: worker processes (default: one per core); ray: CPUs of a new local instance")
    parser.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local instance)")
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="where in-progress checkpoints go (default: beside the store)")


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    """Options that refine the training and evaluation budget (``run`` and ``sweep``): see :func:`budget_options`."""
    parser.add_argument("--steps", type=int, help="meta-training steps (overrides --budget)")
    parser.add_argument("--episodes", type=int, help="test episodes per run (overrides --budget)")
    parser.add_argument("--val-every", type=int, help="validate every N steps (overrides --budget)")
    parser.add_argument("--val-episodes", type=int, help="validation episodes (overrides --budget)")
    parser.add_argument("--patience", type=int, default=20,
                        help="validations without improvement before stopping (0: never stop)")
    parser.add_argument("--eval-query", type=int,
                        help="queries per class at test time (default: all remaining examples)")


def budget_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--budget`` and the options that refine it, as :func:`fewshot_bench.protocol.spec.budget_fields` takes them."""
    return {"budget": args.budget, "steps": args.steps, "episodes": args.episodes, "val_every": args.val_every,
            "val_episodes": args.val_episodes, "patience": args.patience, "eval_query": args.eval_query}


def add_protocol_options(parser: argparse.ArgumentParser, episodes: bool = False, data: bool = False) -> None:
    """``--protocol ID``, ``--steps N`` (and ``--episodes N``), ``--set LEARNER.KEY=VALUE`` (and ``--data ID``):
    which stored runs to combine."""
    parser.add_argument("--protocol", metavar="ID",
                        help="use runs of this protocol (id or unique prefix, as `fewshot-bench results` shows; "
                             "default: chosen and named in the output)")
    parser.add_argument("--steps", type=int, help="only runs meta-trained for this many steps")
    if episodes:
        parser.add_argument("--episodes", type=int, help="only runs evaluated on this many test episodes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="LEARNER.KEY=VALUE",
                        help="use the learner's runs made with this --set override "
                             "(repeatable; default: runs with its defaults)")
    if data:
        parser.add_argument("--data", metavar="ID",
                            help="use runs that read this version of a dataset's data (data id or prefix, as "
                                 "`fewshot-bench results` shows; default: per dataset, the one with the most runs)")


def add_image_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``pretrain`` and ``embed``: where the images are and how they are sized."""
    p.add_argument("--images", choices=("auto", "omniglot", "folder"), default="auto",
                   help="image layout: omniglot (<Alphabet>/<character>/<png>), folder (class folders "
                        "with train/val/test.txt lists or split folders) or auto (default: detect)")
    p.add_argument("--data-dir", type=Path, required=True, help="root of the images")
    p.add_argument("--max-classes", type=int, help="use only the first N classes of each split (quick runs)")
    p.add_argument("--max-images", type=int, help="use only the first N images of each class (quick runs)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--batch-size", type=int, help="images per batch")
    p.add_argument("--threads", metavar="N|auto|free",
                   help="torch threads on CPU (default: $FEWSHOT_BENCH_THREADS, else auto: all the cores this "
                        "process may use, whatever else runs; free: the cores other processes leave free, so the "
                        "result may depend on the machine's load)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def use_image_threads(args: argparse.Namespace, device: Any, what: str) -> int | None:
    """On CPU, set torch's threads for ``pretrain``/``embed`` from ``--threads``, the environment or the cores.

    ``auto`` (the default) takes all the cores this process may use, never looking at the
    load; ``free`` the cores other processes leave free (fewshot_bench.protocol.threads).

    Returns the thread count (None on a GPU, where it does not matter).
    """
    from fewshot_bench.protocol.threads import (  # torch: lazily
        apply_threads,
        choose_big_work_threads,
        requested_threads,
    )

    if device.type != "cpu":
        return None
    choice = apply_threads(choose_big_work_threads(what, *requested_threads(args.threads)))
    logging.getLogger(__name__).info("torch threads: %d (%s)", choice.threads, choice.reason)
    return choice.threads
