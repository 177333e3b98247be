"""``fewshot-bench new-plugin NAME [--kind learner|dataset|backbone]``: write a ready-to-install plugin package from
the template of its kind."""

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

# The template of each kind of plugin, under fewshot_bench/templates/ (the learner's is the original "plugin").
TEMPLATES = {"learner": "plugin", "dataset": "dataset", "backbone": "backbone"}
SUFFIX = ".tmpl"
MODULE_DIR = "__module__"  # the template's placeholder for the package directory
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``new-plugin`` parser."""
    p = sub.add_parser(
        "new-plugin",
        help="write a new learner, dataset or backbone plugin package from a template",
        description="Write a ready-to-install plugin package: pyproject.toml with the fewshot_bench entry point, "
        "a working learner (or dataset, or backbone) to start from, tests that pass as generated (for a learner: "
        "the conformance checks), and a README.",
    )
    p.add_argument("name", metavar="NAME",
                   help="the learner's (dataset's, backbone's) name: lower-case words joined by '-', e.g. my-learner")
    p.add_argument("--kind", choices=tuple(TEMPLATES), default="learner",
                   help="what the plugin provides: learner (default), dataset (features read from CSV files) or "
                   "backbone (an image network for pretrain and embed)")
    p.add_argument("--dir", type=Path,
                   help="where to write the package (default: ./fewshot-bench-NAME); must not exist or be empty")
    p.add_argument("--description",
                   help="one line describing it (default: 'The NAME learner for fewshot-bench', or dataset, backbone)")
    p.set_defaults(handler=handle)


def names_for(name: str, description: str | None = None, kind: str = "learner") -> dict[str, str]:
    """The values the template's ``{{placeholders}}`` take for a plugin of ``kind`` providing ``name``."""
    if not LEARNER_NAME.match(name):
        raise ConfigError(f"plugin name {name!r} must be lower-case letters and digits joined by '-', e.g. my-{kind}")
    module = "fewshot_bench_" + name.replace("-", "_")
    description = description or f"The {name} {kind} for fewshot-bench"
    if any(c in description for c in '\n"\\'):
        raise ConfigError("--description must be one line without double quotes or backslashes")
    return {
        "name": name,
        "module": module,
        "distribution": "fewshot-bench-" + name,
        "class_name": "".join(part.capitalize() for part in name.split("-")),
        "description": description,
        "harness_version": __version__,
        "kind": kind,
    }


def render(text: str, values: dict[str, str], where: str) -> str:
    """``text`` with every ``{{key}}`` replaced; an unknown key is a bug in the template."""

    def sub(match: re.Match) -> str:
        if match.group(1) not in values:
            raise KeyError(f"template {where} uses unknown placeholder {match.group(0)}")
        return values[match.group(1)]

    return PLACEHOLDER.sub(sub, text)


def write_plugin(target: Path, values: dict[str, str]) -> list[Path]:
    """Render the template of ``values["kind"]`` into ``target`` atomically (a temporary sibling renamed into place);
    returns the files."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists; choose another --dir or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        written = []
        root = resources.files("fewshot_bench").joinpath("templates", TEMPLATES[values.get("kind", "learner")])
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
    values = names_for(args.name, args.description, args.kind)
    host = host_from_args(args)
    taken = {
        "learner": host.learners.get(args.name),
        "dataset": host.datasets.get(host.dataset_aliases.get(args.name.lower(), "")),
        "backbone": host.backbones.get(args.name),
    }[args.kind]
    if taken is not None:
        raise ConfigError(f"{args.kind} name {args.name!r} is already taken by distribution "
                          f"{taken.plugin.distribution!r}; choose another name")
    target = args.dir or Path(values["distribution"])
    files = write_plugin(target, values)
    print(f"wrote {values['distribution']} to {target}:")
    for path in files:
        print(f"  {path}")
    main = {"learner": "learner.py", "dataset": "__init__.py", "backbone": "__init__.py"}[args.kind]
    check = {"learner": f"fewshot-bench check-plugin {args.name}", "dataset": "fewshot-bench datasets",
             "backbone": "fewshot-bench backbones"}[args.kind]
    print(f"next: pip install -e {target} && {check} && pytest {target} (then edit {target / values['module'] / main})")
    return 0
