"""The plugin API is typed for its authors: the py.typed marker and every template ship with the package, the
register callbacks are Protocols, and the walk-throughs' plugins and generated templates type-check against it."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from test_docs_walkthroughs import BACKBONE, DATASET, walkthrough_code

from fewshot_bench.api import hooks
from fewshot_bench.commands.new_plugin import TEMPLATES, names_for, write_plugin

ROOT = Path(__file__).resolve().parents[1]
# Read as Any by the authors' type check below (heavy, and not what it checks).
SKIPPED = ("torch", "numpy", "pandas", "optuna", "matplotlib", "sklearn", "scipy", "pluggy", "ray", "tqdm")
PACKAGE = ROOT / "fewshot_bench"


def shipped(relative: str) -> bool:
    """Whether pyproject.toml's package-data ships ``relative`` (a path inside fewshot_bench/)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    return any(fnmatch.fnmatch(relative, pattern) and relative.count("/") == pattern.count("/")
               for pattern in patterns["fewshot_bench"])


def test_py_typed_and_every_template_file_are_package_data():
    """An installed fewshot-bench carries the PEP 561 marker and each kind's whole template."""
    assert (PACKAGE / "py.typed").is_file() and shipped("py.typed")
    for kind, folder in TEMPLATES.items():
        files = [p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "templates" / folder).rglob("*.tmpl")]
        assert files, kind
        assert [f for f in files if not shipped(f)] == [], kind


def test_each_hook_takes_a_typed_register_callback():
    """Every hook's ``register`` is annotated with a Protocol, not ``Callable[..., None]``."""
    protocols = {
        "fewshot_bench_register_learners": hooks.RegisterLearner,
        "fewshot_bench_register_datasets": hooks.RegisterDataset,
        "fewshot_bench_register_backbones": hooks.RegisterBackbone,
    }
    for name, protocol in protocols.items():
        hint = typing.get_type_hints(getattr(hooks, name))["register"]
        assert hint is protocol and getattr(protocol, "_is_protocol", False), name


@pytest.mark.slow
def test_walkthrough_plugins_and_templates_type_check_against_the_api(tmp_path):
    """mypy reads fewshot_bench.api's annotations (py.typed) and finds no error in what an author starts from; a
    wrong call of a register callback is one."""
    sources = tmp_path / "src"
    sources.mkdir()
    (sources / "my_features.py").write_text(walkthrough_code(DATASET))
    (sources / "my_backbone.py").write_text(walkthrough_code(BACKBONE))
    for kind in TEMPLATES:
        write_plugin(tmp_path / kind, names_for(f"typed-{kind}", kind=kind))
    modules = [sources / "my_features.py", sources / "my_backbone.py",
               *(tmp_path / kind / f"fewshot_bench_typed_{kind}" for kind in TEMPLATES)]
    (sources / "wrong.py").write_text(
        "from fewshot_bench.api import RegisterBackbone\n\n\n"
        "def fewshot_bench_register_backbones(register: RegisterBackbone) -> None:\n"
        "    register(42)\n"
    )

    # torch, numpy and the harness's heavy dependencies are read as Any: the check is of fewshot_bench.api's
    # own annotations (DatasetSpec's fields, the register Protocols, ...), in seconds rather than minutes.
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n\n"
                      f"[mypy-{','.join(f'{m},{m}.*' for m in SKIPPED)}]\n"
                      "follow_imports = skip\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
         *map(str, [*modules, sources / "wrong.py"])],
        # mypy does not run the import hooks of an editable install: it finds the harness on MYPYPATH, as it
        # would in site-packages after a plain install (without it, ignore_missing_imports reads the API as Any)
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert errors and all("wrong.py:5" in e and "RegisterBackbone" in e for e in errors), done.stdout
