"""The ``fewshot-bench`` command: argument parsing, plugin loading and error reporting.

Each sub-command lives in its own module under ``fewshot_bench.commands`` and exposes
``register(subparsers)``; this module discovers them and wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
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


class _LogHold(logging.Filter):
    """Holds log records (e.g. a preset's note) while a command checks its arguments.

    A user error is one line: notes logged before it are dropped with it; once the checks
    pass (:func:`release_logs`) they are printed in order, and later ones pass straight through.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self.handlers: list[logging.Handler] = []

    def attach(self) -> None:
        self.handlers = list(logging.getLogger().handlers)
        for handler in self.handlers:
            handler.addFilter(_HeldBy(self, handler))

    def detach(self) -> None:
        for handler in self.handlers:
            for f in [f for f in handler.filters if isinstance(f, _HeldBy) and f.hold is self]:
                handler.removeFilter(f)
        self.handlers, self.held, self.holding = [], [], False

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for handler, record in held:
            handler.handle(record)


class _HeldBy(logging.Filter):
    def __init__(self, hold: _LogHold, handler: logging.Handler) -> None:
        super().__init__()
        self.hold, self.handler = hold, handler

    def filter(self, record: logging.LogRecord) -> bool:
        if self.hold.holding:
            self.hold.held.append((self.handler, record))
            return False
        return True


_HOLD = _LogHold()


def hold_logs() -> None:
    """Hold log messages until :func:`release_logs` (dropped if the command fails with a user error first)."""
    _HOLD.holding = True


def release_logs() -> None:
    """Print the held log messages: the command's arguments checked out."""
    _HOLD.release()


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one-line messages.

    Output piped into a program that stops reading (``| head``) ends the command quietly.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    _HOLD.attach()
    try:
        code = int(args.handler(args) or 0)
        _HOLD.release()
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except FewshotBenchError as exc:
        _HOLD.held.clear()  # a user error is one line
        _HOLD.release()
        print(f"fewshot-bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _HOLD.release()
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
        _HOLD.detach()


if __name__ == "__main__":
    sys.exit(main())
