"""docs/plugins.md stays true: its hook reference matches the hook specs, every check is
described, and every code example in it runs (Python in one module namespace, shell
commands through the real CLI, pip installs redirected into a temporary directory)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from fewshot_bench.testing import CHECKS
from fewshot_bench.testing.hookref import current_region, hook_names, render_hook, render_reference

pytest_plugins = ["plugin_tree"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
TEXT = DOC.read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXAMPLES = FENCE.findall(TEXT)
# Sections whose code is a plugin of its own, run as one by tests/test_docs_walkthroughs.py, not in my_learner.
WALKTHROUGHS = ("## Walk-through: a dataset plugin", "## Walk-through: a backbone plugin")


def section(heading: str, text: str = TEXT) -> str:
    """The text of the section under ``heading``, up to the next section of its level."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def examples(lang: str) -> list[str]:
    """The bodies of the doc's code blocks in ``lang``, in order, but for the walk-throughs' plugins."""
    own = {body for heading in WALKTHROUGHS for kind, body in FENCE.findall(section(heading)) if kind == lang}
    return [body for kind, body in EXAMPLES if kind == lang and body not in own]


def test_every_code_block_is_of_a_kind_this_test_executes():
    """No example can hide in a language the tests below skip."""
    assert EXAMPLES and {kind for kind, _ in EXAMPLES} <= {"python", "console", "toml"}


def test_hook_reference_matches_the_hookspec_docstrings():
    """The generated region equals what hookref renders now (regenerate with the command in its marker)."""
    assert current_region(TEXT) == render_reference(), "run: python -m fewshot_bench.testing.hookref docs/plugins.md"


def test_every_hook_is_documented():
    """Each hook spec has a docstring and a heading in the reference."""
    assert hook_names(), "no hook specifications found"
    for name in hook_names():
        assert f"### `{name}(" in TEXT, f"hook {name} is not in docs/plugins.md"
        assert render_hook(name)  # raises when the hook has no docstring


def test_an_undocumented_hook_fails_the_reference(monkeypatch):
    """A hook added without a docstring cannot be rendered, so the reference test fails."""
    from fewshot_bench.api import hooks as hookspecs

    @hookspecs.hookspec
    def fewshot_bench_register_metrics(register):
        pass

    monkeypatch.setattr(hookspecs, "fewshot_bench_register_metrics", fewshot_bench_register_metrics, raising=False)
    assert "fewshot_bench_register_metrics" in hook_names()
    with pytest.raises(ValueError, match="no docstring"):
        render_reference()


def test_every_check_is_described():
    """The checks table lists every conformance check."""
    for name in CHECKS:
        assert f"| `{name}` |" in TEXT, f"check {name} is missing from the table in docs/plugins.md"


@pytest.mark.slow
def test_python_examples_run_in_order(monkeypatch, capsys):
    """The Python blocks run top to bottom as one module, ``my_learner``, like a reader's file would."""
    module = types.ModuleType("my_learner")
    monkeypatch.setitem(sys.modules, "my_learner", module)
    for i, body in enumerate(examples("python")):
        exec(compile(body, f"{DOC}:python example {i + 1}", "exec"), module.__dict__)
    out = capsys.readouterr().out
    assert "my_learner" in out  # the in-process plugin is attributed to its module
    results = {line.split()[0]: line.split()[1] for line in out.splitlines()
               if line.split() and line.split()[0] in CHECKS}
    assert set(results) == set(CHECKS) and "failed" not in results.values(), out
    assert module.ScaledCentroid.name == "scaled-centroid"


def test_toml_example_declares_the_entry_point():
    """The pyproject example parses and points the entry point at the walk-through's module."""
    (body,) = examples("toml")
    data = tomllib.loads(body)
    assert data["project"]["entry-points"]["fewshot_bench"] == {"scaled-centroid": "my_learner"}


@pytest.mark.slow
def test_console_examples_run(cli, tmp_path, monkeypatch):
    """Every ``$`` command runs and succeeds: fewshot-bench in-process, pip into a temporary target, pytest in a
    subprocess."""
    from plugin_tree import pip_install

    site = tmp_path / "site"
    monkeypatch.delenv("FEWSHOT_BENCH_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("FEWSHOT_BENCH_STRICT_PLUGINS", raising=False)
    commands = [line[2:] for body in examples("console") for line in body.splitlines() if line.startswith("$ ")]
    assert commands
    for command in commands:
        words = shlex.split(command)
        env = {}
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        program, args = words[0], words[1:]
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            if program == "fewshot-bench":
                r = cli(*args)
                assert r.code == 0, f"{command}: {r.err}"
            elif program == "pip":
                assert args[:2] == ["install", "-e"], command
                pip_install([tmp_path / args[2]], site)  # never the project's environment
                monkeypatch.syspath_prepend(str(site))
            elif program == "pytest":
                path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
                done = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                    cwd=tmp_path, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600,
                )
                assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
            else:
                pytest.fail(f"docs/plugins.md runs {program!r}, which this test does not know how to execute")
