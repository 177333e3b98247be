"""The import contracts (.importlinter) hold, cover every module, and catch each kind of violation.

The violations are shown on a copy of the package tree with every module emptied (so the
copy cannot drift from the real modules' names), then one import planted per case: the
contract that forbids it must break, and only that one.
"""

from __future__ import annotations

import configparser
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import layers_table
import pytest

import fewshot_bench

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
PLUGINS = ("fewshot_bench_leo", "fewshot_bench_metasgd", "fewshot_bench_maml")
CONTRACT_IDS = (
    "layers", "packages", "commands", "plugins", "plugins-independent", "harness-without-plugins", "acyclic",
)


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts, run in ``cwd`` (the packages found first on ``pythonpath``)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    script = Path(sys.executable).with_name("lint-imports")
    command = [str(script)] if script.exists() else ["lint-imports"]
    return subprocess.run(
        [*command, "--config", str(CONFIG), "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def broken(result: subprocess.CompletedProcess) -> set[str]:
    """The names of the contracts ``lint-imports`` reports broken."""
    names = contract_names()
    text = " ".join(result.stdout.split())  # lint-imports wraps long names
    return {cid for cid, name in names.items() if f"{name} BROKEN" in text}


def contract_names() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return {s.split(":", 2)[2]: parser[s]["name"] for s in parser.sections() if s.startswith("importlinter:contract:")}


def listed(contract: str, key: str) -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return parser[f"importlinter:contract:{contract}"][key].split()


def test_the_project_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert set(contract_names()) == set(CONTRACT_IDS)


def test_plugins_are_forbidden_every_harness_module_but_the_api():
    modules = {f"fewshot_bench.{m.name}" for m in pkgutil.iter_modules(fewshot_bench.__path__)}
    learners = {"fewshot_bench.learners.baselines", "fewshot_bench.learners.regression"}
    allowed = {"fewshot_bench.api", "fewshot_bench.errors"}
    assert set(listed("plugins", "forbidden_modules")) == modules - allowed - {"fewshot_bench.learners"}
    assert set(listed("plugins", "source_modules")) == set(PLUGINS) | learners


def plugin_packages() -> dict[str, Path]:
    """Each plugin package's source folder."""
    return {name: ROOT / "plugins" / name.removeprefix("fewshot_bench_") / name for name in PLUGINS}


@pytest.fixture(scope="module")
def empty_tree(tmp_path_factory) -> Path:
    """The harness and plugin packages with every module present and empty (no imports)."""
    tree = tmp_path_factory.mktemp("import-contracts")
    for name, source in {"fewshot_bench": ROOT / "fewshot_bench", **plugin_packages()}.items():
        for path in source.rglob("*.py"):
            target = tree / name / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text('"""Empty."""\n')
    for importer, imported in ignored_imports():  # an ignored import that is not there is an error
        path = tree / (importer.replace(".", "/") + ".py")
        path.write_text(path.read_text() + f"import {imported}\n")
    return tree


def ignored_imports() -> list[tuple[str, str]]:
    """The ``importer -> imported`` pairs that some contract ignores (work still to do)."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    lines = [line for s in parser.sections() for line in parser[s].get("ignore_imports", "").splitlines()
             if line.strip()]
    return [tuple(part.strip() for part in line.split("->")) for line in lines]


def test_the_empty_tree_keeps_every_contract(empty_tree):
    result = lint_imports(empty_tree, pythonpath=empty_tree)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# (what the issue saw, {module: code planted in it}, the contracts that must break)
VIOLATIONS = [
    ("a plugin imports a harness internal",
     {"fewshot_bench_leo/model.py": "from fewshot_bench import episodes"}, {"plugins"}),
    ("a plugin imports a built-in learner",
     {"fewshot_bench_metasgd/__init__.py": "import fewshot_bench.learners.baselines"}, {"plugins-independent"}),
    ("a plugin imports another plugin",
     {"fewshot_bench_maml/__init__.py": "import fewshot_bench_metasgd"}, {"plugins-independent"}),
    ("a built-in learner imports the protocol",
     {"fewshot_bench/learners/regression.py": "import fewshot_bench.protocol.train"}, {"plugins"}),
    ("the contract imports the protocol (not a leaf)",
     {"fewshot_bench/api/learner.py": "from fewshot_bench.episodes import EpisodeSampler"}, {"layers"}),
    ("the harness reaches into a plugin's internals",
     {"fewshot_bench/reports/figures.py": "from fewshot_bench_leo.model import LEO"}, {"harness-without-plugins"}),
    ("an upward import hidden behind TYPE_CHECKING (executors -> sweep)",
     {"fewshot_bench/search/executors.py":
      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fewshot_bench.search.sweep import Job"},
     {"packages"}),
    ("a cycle hidden in a lazy import (data <-> episodes)",
     {"fewshot_bench/episodes.py": "def load():\n    from fewshot_bench.data import base\n    return base",
      "fewshot_bench/data/base.py": "from fewshot_bench.episodes import EpisodeSampler"},
     {"layers", "acyclic"}),
    ("a command imports the CLI (commands -> cli)",
     {"fewshot_bench/commands/run.py": "from fewshot_bench.cli import main"}, {"layers"}),
    ("a command imports another command (compare -> sweep)",
     {"fewshot_bench/commands/compare.py": "from fewshot_bench.commands.sweep import comma_list"}, {"commands"}),
    ("a lower layer imports a higher one (runner -> sweep)",
     {"fewshot_bench/protocol/runner.py": "import fewshot_bench.search.sweep"}, {"layers"}),
    ("a cycle inside a package (records.store <-> records.stats)",
     {"fewshot_bench/records/store.py": "import fewshot_bench.records.stats",
      "fewshot_bench/records/stats.py": "import fewshot_bench.records.store"},
     {"packages", "acyclic"}),
    ("inside a package, a lower module imports a higher one (train -> runner)",
     {"fewshot_bench/protocol/train.py": "import fewshot_bench.protocol.runner"}, {"packages"}),
    ("a cycle inside a package (data.base <-> data.leo)",
     {"fewshot_bench/data/base.py": "import fewshot_bench.data.leo",
      "fewshot_bench/data/leo.py": "import fewshot_bench.data.base"},
     {"acyclic"}),
    ("a new module placed in no layer", {"fewshot_bench/newcomer.py": ""}, {"layers"}),
]


@pytest.mark.parametrize(("what", "planted", "contracts"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_each_violation_breaks_its_contract(empty_tree, tmp_path, what, planted, contracts):
    tree = tmp_path / "tree"
    shutil.copytree(empty_tree, tree)
    for module, code in planted.items():
        (tree / module).write_text(code + "\n")
    result = lint_imports(tree, pythonpath=tree)
    assert result.returncode != 0, what
    assert broken(result) == contracts, result.stdout[-4000:]


def test_architecture_doc_shows_the_layers_as_they_are():
    assert layers_table.documented() == layers_table.table(), "run `python tests/layers_table.py --write`"
