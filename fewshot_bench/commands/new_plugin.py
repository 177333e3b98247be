"""``fewshot-bench new-plugin NAME``: write a ready-to-install learner plugin package from the template."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from fewshot_bench import __version__
from fewshot_bench.api.learner import LEARNER_NAME
from fewshot_bench.commands.common import host_from_args
from fewshot_bench.errors import ConfigError

TEMPLATE = ("templates", "plugin")
SUFFIX = ".tmpl"
MODULE_DIR = "__module__"  # the template's placeholder for the package directory
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``new-plugin`` parser."""
    p = sub.add_parser(
        "new-plugin",
        help="write a new learner plugin package from the template",
        description="Write a ready-to-install plugin package: pyproject.toml with the fewshot_bench entry point, "
        "a working learner to start from, tests that run the conformance checks, and a README.",
    )
    p.add_argument("name", metavar="NAME", help="the learner's name: lower-case words joined by '-', e.g. my-learner")
    p.add_argument("--dir", type=Path,
                   help="where to write the package (default: ./fewshot-bench-NAME); must not exist or be empty")
    p.add_argument("--description",
                   help="one line describing the learner (default: 'The NAME learner for fewshot-bench')")
    p.set_defaults(handler=handle)


def names_for(name: str, description: str | None = None) -> dict[str, str]:
    """The values the template's ``{{placeholders}}`` take for learner ``name``."""
    if not LEARNER_NAME.match(name):
        raise ConfigError(f"plugin name {name!r} must be lower-case letters and digits joined by '-', e.g. my-learner")
    module = "fewshot_bench_" + name.replace("-", "_")
    description = description or f"The {name} learner for fewshot-bench"
    if any(c in description for c in '\n"\\'):
        raise ConfigError("--description must be one line without double quotes or backslashes")
    return {
        "name": name,
        "module": module,
        "distribution": "fewshot-bench-" + name,
        "class_name": "".join(part.capitalize() for part in name.split("-")),
        "description": description,
        "harness_version": __version__,
    }


def render(text: str, values: dict[str, str], where: str) -> str:
    """``text`` with every ``{{key}}`` replaced; an unknown key is a bug in the template."""

    def sub(match: re.Match) -> str:
        if match.group(1) not in values:
            raise KeyError(f"template {where} uses unknown placeholder {match.group(0)}")
        return values[match.group(1)]

    return PLACEHOLDER.sub(sub, text)


def write_plugin(target: Path, values: dict[str, str]) -> list[Path]:
    """Render the template into ``target`` atomically (a temporary sibling renamed into place); returns the files."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists; choose another --dir or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        written = []
        root = resources.files("fewshot_bench").joinpath(*TEMPLATE)
        for src, rel in _template_files(root):
            rel = rel.replace(MODULE_DIR, values["module"]).removesuffix(SUFFIX)
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(render(src.read_text(encoding="utf-8"), values, rel), encoding="utf-8")
            written.append(target / rel)
        os.replace(staging, target)  # an empty existing directory is replaced as a whole
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(written)


def _template_files(root, prefix: str = ""):
    """(resource, relative path) of every template file under ``root``."""
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            if entry.name != "__pycache__":
                yield from _template_files(entry, rel + "/")
        elif entry.name.endswith(SUFFIX):
            yield entry, rel


def handle(args: argparse.Namespace) -> int:
    """Write the package and print what to do next."""
    values = names_for(args.name, args.description)
    host = host_from_args(args)
    if args.name in host.learners:
        owner = host.learners[args.name].plugin.distribution
        raise ConfigError(f"learner name {args.name!r} is already taken by distribution {owner!r}; choose another name")
    target = args.dir or Path(values["distribution"])
    files = write_plugin(target, values)
    print(f"wrote {values['distribution']} to {target}:")
    for path in files:
        print(f"  {path}")
    print(
        f"next: pip install -e {target} && fewshot-bench check-plugin {args.name}"
        f" (then edit {target / values['module'] / 'learner.py'})"
    )
    return 0
