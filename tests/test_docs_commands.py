"""The docs runner: every command block of README.md and docs/*.md, run as a new user would.

A copy of this checkout (its files, no virtual environment, no results) is made in a
temporary directory. README.md's blocks run there, in order, starting with the quickstart,
which builds a fresh ``.venv`` from requirements.txt; every later block runs with that
environment active, README.md's in the copy's root, each docs/*.md file's in a fresh
directory of its own. A block must exit 0 and print no Python traceback.

Which blocks (the convention, stated in README.md, "Documentation is tested"):

* fenced blocks whose info string is ``bash``, ``sh``, ``shell`` or ``console`` are command
  blocks (in ``console`` blocks only lines starting ``$ `` are commands; the rest is
  output). Plain fences and indented blocks are synopses, output or code, never run;
* ``<!-- docs-runner: skip (REASON) -->`` on the line before a block keeps it from running
  (downloads, GPUs, clusters, data that is not here); the reason is required;
* ``<!-- docs-runner: instead COMMANDS -->`` runs COMMANDS in its place (the README's test
  command: this test is part of the suite it would start);
* budgets are shortened, as README.md says: ``fewshot-bench run`` and ``sweep`` get
  :data:`SHORT` appended (the last value of an option wins), ``sweep`` also one seed,
  ``figure`` 100 episodes, so the whole walk takes minutes.

Marked ``slow`` (a virtual environment and a few dozen commands: minutes);
``FEWSHOT_BENCH_DOCS_KEEP=DIR`` keeps the work directory for a look afterwards and reuses
its ``.venv`` on the next run (the quickstart's pip then finds everything installed; CI
never sets it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_INFO = {"bash", "sh", "shell", "console"}
DIRECTIVE = re.compile(r"^<!--\s*docs-runner:\s*(?P<verb>skip|instead)\b\s*(?P<rest>.*?)\s*-->\s*$")
SHORT = "--steps 20 --val-every 10 --val-episodes 20 --episodes 100"
SHORT_SWEEP = "--seeds 1"
SHORT_FIGURE = "--episodes 100"
BLOCK_TIMEOUT_S = 900
# What the copy leaves out: environments, caches, results, and the user's own outputs.
IGNORE = shutil.ignore_patterns(".venv", ".tox", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
                                "fewshot-results.db*", "fewshot-checkpoints", ".benchmarks", "out", "*.pt", "*.db")


@dataclass
class Block:
    """One command block of a Markdown file."""

    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    text: str
    skip: str | None = None  # the reason
    instead: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> str:
        """The shell text to run: ``$ `` lines of a console block, the whole of any other."""
        if self.instead is not None:
            return self.instead
        if self.info == "console":
            return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))
        return self.text


def blocks(path: Path) -> list[Block]:
    """The fenced command blocks of ``path`` with their directives."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        marker, info = fence.group(1), fence.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(marker)), len(lines))
        if info in COMMAND_INFO:
            block = Block(path, i + 1, info, "\n".join(lines[i + 1:end]))
            directive = DIRECTIVE.match(lines[i - 1].strip()) if i > 0 else None
            if directive and directive["verb"] == "skip":
                reason = directive["rest"].strip()
                assert re.fullmatch(r"\(.+\)", reason), f"{block.where}: docs-runner: skip needs a (reason)"
                block.skip = reason[1:-1]
            elif directive:
                block.instead = directive["rest"]
            out.append(block)
        i = end + 1
    return out


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path)]


# A bash prelude: `fewshot-bench run|sweep ...` gets the shortened budget appended.
PRELUDE = f"""
set -eo pipefail
fewshot-bench() {{
  local sub="" a
  for a in "$@"; do case "$a" in -*) ;; *) sub="$a"; break;; esac; done
  case "$sub" in
    run) command fewshot-bench "$@" {SHORT};;
    sweep) command fewshot-bench "$@" {SHORT} {SHORT_SWEEP};;
    figure) command fewshot-bench "$@" {SHORT_FIGURE};;
    *) command fewshot-bench "$@";;
  esac
}}
"""


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", PRELUDE + block.commands()], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=BLOCK_TIMEOUT_S,
    )


# --- the convention itself (fast) ---------------------------------------------------------


def test_every_command_block_is_run_or_says_why_not():
    found = all_blocks()
    readme = [b for b in found if b.path.name == "README.md"]
    assert readme and readme[0].skip is None and "requirements.txt" in readme[0].commands(), \
        "README.md's first command block must be the quickstart install, and must run"
    assert any(b.instead for b in readme), "the README's test command runs something else inside the suite"
    for b in found:
        assert b.skip is None or b.skip.strip(), b.where
        assert b.commands().strip(), f"{b.where}: an empty command block"


def test_the_parser_reads_directives_and_console_prompts(tmp_path, monkeypatch):
    md = tmp_path / "x.md"
    md.write_text(
        "text\n\n```console\n$ fewshot-bench learners\nleo ...\n```\n\n"
        "<!-- docs-runner: skip (needs a GPU) -->\n```bash\nfewshot-bench run --device cuda\n```\n\n"
        "```\nfewshot-bench sweep --table 1|2 [--seeds N]\n```\n\n"
        "<!-- docs-runner: instead echo hi -->\n```sh\npython -m pytest\n```\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = blocks(md)
    assert [(b.info, b.skip, b.commands()) for b in found] == [
        ("console", None, "fewshot-bench learners"),
        ("bash", "needs a GPU", "fewshot-bench run --device cuda"),
        ("sh", None, "echo hi"),
    ]


# --- the walk (slow) ----------------------------------------------------------------------


@pytest.mark.slow
def test_docs_commands_run_in_a_fresh_environment(tmp_path):
    keep = os.environ.get("FEWSHOT_BENCH_DOCS_KEEP")
    work = Path(keep).resolve() if keep else tmp_path
    checkout = work / "checkout"
    for old in [p for p in work.iterdir() if p.name != "checkout"] + (
            [p for p in checkout.iterdir() if p.name != ".venv"] if checkout.exists() else []):
        shutil.rmtree(old) if old.is_dir() else old.unlink()  # a kept .venv is reused: pip finds it complete
    shutil.copytree(ROOT, checkout, ignore=IGNORE, dirs_exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "FEWSHOT_BENCH_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT)))
    env["FEWSHOT_BENCH_PROGRESS_EVERY"] = "0"
    venv = checkout / ".venv"
    active = False
    failures, ran, skipped = [], 0, 0
    for path in DOCS:
        cwd = checkout if path.name == "README.md" else work / f"docs-{path.stem}"
        cwd.mkdir(exist_ok=True)
        for block in blocks(path):
            if block.skip is not None:
                skipped += 1
                continue
            if venv.exists() and not active and ran:  # from the block after the quickstart on
                env = env | {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}
                active = True
            started = time.perf_counter()
            result = run_block(block, cwd, env)
            print(f"docs runner: {block.where} exit {result.returncode} in {time.perf_counter() - started:.0f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            ran += 1
            output = result.stdout + result.stderr
            if result.returncode != 0 or "Traceback (most recent call last)" in output:
                failures.append(f"{block.where} (exit {result.returncode}):\n{block.commands()}\n"
                                f"--- output (tail)\n{output[-3000:]}")
        assert venv.exists(), "README.md's quickstart did not create .venv"
    print(f"docs runner: {ran} blocks run, {skipped} skipped")
    assert not failures, "\n\n".join(failures)
