"""One temporary tree of pip-installed test plugins per test session, shared by the plugin tests.

The tree is built once (pip is slow): ``fewshot-bench new-plugin toy-proto`` renders the
template, and pip installs it with the ``leaky`` and ``broken`` fixture distributions into
``site/`` with ``--target`` (no dependencies, no build isolation), so the project's own
environment is never changed. Putting ``site/`` on ``PYTHONPATH`` (a subprocess) or on
``sys.path`` (in-process) makes their entry points discoverable.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fewshot_bench.cli import main

FIXTURES = Path(__file__).parent / "plugin_fixtures"
TEMPLATE_LEARNER = "toy-proto"
BROKEN_PLUGINS = ("broken-import", "broken-hook", "broken-duplicate", "broken-learner")


@dataclass(frozen=True)
class PluginTree:
    """Where the test plugins are installed and how to run the CLI with them."""

    root: Path
    site: Path
    template: Path  # the package new-plugin generated
    template_learner: str = TEMPLATE_LEARNER

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a subprocess that sees the installed test plugins."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEWSHOT_BENCH_")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env | extra

    def cli(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """Run ``fewshot-bench ARGS`` in a fresh process that sees the test plugins."""
        return subprocess.run(
            [sys.executable, "-m", "fewshot_bench.cli", *args],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


_tree: PluginTree | None = None


def installed_tree(factory: pytest.TempPathFactory) -> PluginTree:
    """The session's plugin tree, built on first use."""
    global _tree
    if _tree is None:
        _tree = _build(factory.mktemp("plugin-tree"))
    return _tree


def _build(root: Path) -> PluginTree:
    template = root / "fewshot-bench-toy-proto"
    assert main(["-q", "new-plugin", TEMPLATE_LEARNER, "--dir", str(template)]) == 0
    sources = [template]
    for name in ("leaky", "broken", "cheats"):  # copied: pip builds in the source tree and would litter the repository
        sources.append(Path(shutil.copytree(FIXTURES / name, root / name)))
    site = root / "site"
    pip_install(sources, site)
    return PluginTree(root, site, template)


def pip_install(sources: list[Path], target: Path) -> None:
    """``pip install`` local packages into ``target`` only: no dependencies, the environment untouched."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input"]
    if _setuptools_builds_wheels():
        pip.append("--no-build-isolation")  # seconds instead of fetching setuptools for each package
    done = subprocess.run([*pip, "--target", str(target), *map(str, sources)], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        pytest.fail(f"pip could not install {', '.join(map(str, sources))}:\n{done.stdout}\n{done.stderr}")


def _setuptools_builds_wheels() -> bool:
    """Whether the installed setuptools builds wheels on its own (70.1+ no longer needs ``wheel``)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    return (major, minor) >= (70, 1)


@pytest.fixture
def plugins_on_path(plugin_tree: PluginTree, monkeypatch: pytest.MonkeyPatch) -> PluginTree:
    """Make the installed test plugins discoverable in this process for one test."""
    monkeypatch.syspath_prepend(str(plugin_tree.site))
    for key in [k for k in os.environ if k.startswith("FEWSHOT_BENCH_") and "PLUGINS" in k]:
        monkeypatch.delenv(key)
    return plugin_tree


@pytest.fixture(scope="session")
def plugin_tree(tmp_path_factory: pytest.TempPathFactory) -> PluginTree:
    """The pip-installed test plugins (built once per session)."""
    return installed_tree(tmp_path_factory)
