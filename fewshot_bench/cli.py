"""The ``fewshot-bench`` command: argument parsing, plugin loading and error reporting.

Each sub-command lives in its own module under ``fewshot_bench.commands`` and exposes
``register(subparsers)``; this module discovers them and wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from fewshot_bench import __version__
from fewshot_bench.errors import FewshotBenchError


def command_modules() -> list[str]:
    """Modules of ``fewshot_bench.commands`` that define sub-commands, in name order."""
    from fewshot_bench import commands

    found = pkgutil.iter_modules(commands.__path__, prefix="fewshot_bench.commands.")
    return sorted(m.name for m in found if not m.name.rsplit(".", 1)[1].startswith("_") and not m.name.endswith(".common"))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="fewshot-bench",
        description="Benchmark harness for few-shot meta-learning (LEO, Meta-SGD, MAML and plugins).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        help="fail when any plugin fails to load (also FEWSHOT_BENCH_STRICT_PLUGINS=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one-line messages."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args) or 0)
    except FewshotBenchError as exc:
        print(f"fewshot-bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fewshot-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
