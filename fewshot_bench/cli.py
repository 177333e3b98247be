"""The ``fewshot-bench`` command: argument parsing, plugin loading and error reporting.

Each sub-command lives in its own module under ``fewshot_bench.commands`` and exposes
``register(subparsers)``; :data:`~fewshot_bench.commands.COMMANDS` lists them, and only the
chosen command's module is imported, so that ``--help`` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Collection

from fewshot_bench import __version__
from fewshot_bench.commands import COMMANDS
from fewshot_bench.console.log_hold import LOG_HOLD
from fewshot_bench.console.log_once import LOG_ONCE
from fewshot_bench.errors import FewshotBenchError


def chosen_command(argv: list[str]) -> str | None:
    """The sub-command named on the command line: the first word that is not an option.

    The options before it (``-q``, ``-v``, ``--strict-plugins``) take no value, so the first
    word is the command; ``None`` when there is none (``--help``, ``--version``, a usage error).
    """
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(full: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser, importing only the modules of the commands named in ``full``.

    Every other command is listed with its one-line help from :data:`COMMANDS` and no
    arguments, so that ``--help`` and each command start without importing the others
    (several import torch). ``full=None`` registers every command in full.
    """
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
    wanted = {c.module for c in COMMANDS if full is None or c.name in full}
    for command in COMMANDS:
        if command.module in wanted:
            if command.name not in sub.choices:  # a module may register several commands (listing)
                importlib.import_module(f"fewshot_bench.commands.{command.module}").register(sub)
        else:
            sub.add_parser(command.name, help=command.help)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one-line messages.

    Output piped into a program that stops reading (``| head``) ends the command quietly.
    """
    argv = sys.argv[1:] if argv is None else argv
    command = chosen_command(argv)
    args = build_parser([command] if command else []).parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    LOG_HOLD.attach()
    LOG_ONCE.attach()  # a note repeated word for word (one per seed, per check and run) is printed once
    try:
        code = int(args.handler(args) or 0)
        LOG_HOLD.release()
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        if code == 0 and "fewshot_bench.plugin_host" in sys.modules:
            # The plugins (and torch) are loaded: listing them now costs milliseconds, and the
            # user's next `learners` replays it instead of spending seconds on imports.
            importlib.import_module("fewshot_bench.commands.listing").warm_listings()
        return code
    except FewshotBenchError as exc:
        LOG_HOLD.drop()  # a user error is one line
        print(f"fewshot-bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        LOG_HOLD.release()
        print("fewshot-bench: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`, `| less` quit): stop quietly. Python's docs' recipe:
        # point stdout at devnull so the final flush at exit cannot raise again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (captured): nothing will flush it
            pass
        return 1
    finally:
        LOG_ONCE.detach()
        LOG_HOLD.detach()


if __name__ == "__main__":
    sys.exit(main())
