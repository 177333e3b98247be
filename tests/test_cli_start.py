"""The command starts fast: ``--help`` imports no command module and no torch, and the table of commands is true."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys

import pytest

from fewshot_bench import commands
from fewshot_bench.cli import build_parser, chosen_command
from fewshot_bench.commands import COMMANDS
from fewshot_bench.records.store import ResultStore

IMPORTED = """
import sys
from fewshot_bench.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
"""


def imported_modules(*args: str) -> set[str]:
    """Every module that ``fewshot-bench ARGS`` has imported when it ends (run in a fresh interpreter)."""
    proc = subprocess.run([sys.executable, "-c", IMPORTED, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stderr.split())


def test_help_imports_no_torch_and_no_command_module():
    modules = imported_modules("--help")
    assert "torch" not in modules
    assert not {m for m in modules if m.startswith("fewshot_bench.commands.")}


def test_a_command_imports_only_its_own_module():
    modules = imported_modules("results", "--help")
    assert {m for m in modules if m.startswith("fewshot_bench.commands.")} == {
        "fewshot_bench.commands.results", "fewshot_bench.commands.common",
    }


def test_results_reads_the_store_without_torch(tmp_path):
    store = tmp_path / "fewshot-results.db"
    ResultStore(store).close()
    modules = imported_modules("results", "--store", str(store))
    assert "fewshot_bench.commands.results" in modules
    assert "torch" not in modules


def registered(module: str) -> list[tuple[str, str]]:
    """The (name, help) of each parser that a command module registers, in order."""
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"fewshot_bench.commands.{module}").register(sub)
    return [(action.dest, action.help) for action in sub._choices_actions]


@pytest.mark.parametrize("module", sorted({c.module for c in COMMANDS}))
def test_the_table_says_what_each_module_registers(module):
    assert registered(module) == [(c.name, c.help) for c in COMMANDS if c.module == module]


def test_every_command_module_is_in_the_table():
    found = {m.name for m in pkgutil.iter_modules(commands.__path__)} - {"common"}
    assert found == {c.module for c in COMMANDS}
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)


def test_help_lists_every_command_in_the_tables_order():
    sub = next(a for a in build_parser([])._actions if isinstance(a, argparse._SubParsersAction))
    listed = [a.dest for a in sub._choices_actions]
    assert listed == [c.name for c in COMMANDS]


@pytest.mark.parametrize(("argv", "command"), [
    (["--help"], None),
    ([], None),
    (["-q", "--strict-plugins", "run", "--learner", "leo"], "run"),
    (["results", "--store", "x.db"], "results"),
])
def test_the_chosen_command_is_the_first_word_that_is_not_an_option(argv, command):
    assert chosen_command(argv) == command
