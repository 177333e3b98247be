"""Time every command of README.md as a new user runs it, at full budget, against the time the README states.

The checkout is copied (as the docs runner copies it: no environment, no results, no caches)
to ``WORK/checkout``, with ``WORK/shared`` pointing at this checkout's ``../shared`` so the
README's ``../shared/data/...`` paths resolve. Then every line of every README command block
runs in order in that copy, the quickstart first (it builds the fresh ``.venv`` every later
line uses), each ``&&``-joined part timed on its own. The docs runner's ``skip`` blocks are
left out unless one of their commands contains an ``--include TEXT``; ``--only TEXT`` (repeatable)
runs just the quickstart and the blocks containing TEXT. A line's stated time is the last
duration in its comment (``# ... 25 s``, ``2-3 min`` counts as 3 min).

``--compete`` keeps one CPU-bound process spinning for the whole walk: the README promises
each command within twice its stated time then. Each walk writes JSON (``--json``);
``--report IDLE.json COMPETING.json`` prints the Markdown table the README's numbers come from.

    python benchmarks/readme_times.py --include pretrain --json idle.json
    python benchmarks/readme_times.py --include pretrain --compete --json competing.json
    python benchmarks/readme_times.py --report idle.json competing.json

Wall time, one walk at a time: it measures the machine, so run it with nothing else going.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_docs_commands import IGNORE, blocks  # noqa: E402  (the docs runner's parser and copy rules)

DURATION = re.compile(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?\s*(ms|s|sec|min|minutes?|h)\b")
UNIT_S = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0}
MARK = "@@readme-times"


@dataclass
class Timed:
    """One README line as run: where it is, what ran, what the README states, what it took."""

    where: str
    command: str
    stated_s: float | None
    wall_s: float
    parts_s: list[float]  # each `&&`-joined part
    exit_code: int
    load_before: float


def stated_seconds(comment: str) -> float | None:
    """The last duration named in a line's comment (the upper end of a range), in seconds."""
    found = DURATION.findall(comment)
    if not found:
        return None
    low, high, unit = found[-1]
    return float(high or low) * UNIT_S[unit]


def command_lines(text: str) -> list[tuple[str, str]]:
    """(command, comment) for each command of a block: continuations joined, comment-only lines dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        command, _, comment = line.partition(" #")
        if command.strip() and not command.lstrip().startswith("#"):
            out.append((command.strip(), comment.strip()))
    return out


def timed_script(command: str) -> str:
    """Bash that runs ``command``'s ``&&`` parts one by one, printing each part's wall time to stderr."""
    parts = [p.strip() for p in command.split(" && ")]
    lines = ["set -e"]
    for part in parts:
        lines += ["t0=$(date +%s.%N)", part, f'echo "{MARK} $(date +%s.%N) $t0" >&2']
    return "\n".join(lines)


def prepare(work: Path) -> Path:
    """A fresh copy of the checkout in ``work/checkout`` and ``work/shared`` -> this checkout's ``../shared``."""
    checkout = work / "checkout"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT, checkout, ignore=IGNORE)
    shared = (ROOT.parent / "shared").resolve()
    if shared.exists():
        (work / "shared").symlink_to(shared)
    return checkout


def chosen(text: str, first: bool, skipped: bool, include: list[str], only: list[str]) -> bool:
    """Whether a block runs: the quickstart always; with ``only``, blocks containing one of them; skipped
    blocks only when they contain one of ``include``."""
    if first:
        return True
    if only and not any(t in text for t in only):
        return False
    return not skipped or any(t in text for t in include)


def walk(work: Path, include: list[str], only: list[str]) -> list[Timed]:
    """Run the README's commands (see :func:`chosen`) in order in a fresh copy; time each."""
    checkout = prepare(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "FEWSHOT_BENCH_"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    env |= {"FEWSHOT_BENCH_CACHE_DIR": str(work / "cache"), "FEWSHOT_BENCH_PROGRESS_EVERY": "0"}
    venv = checkout / ".venv"
    timed: list[Timed] = []
    for i, block in enumerate(blocks(ROOT / "README.md")):
        where = f"README.md:{block.line}"
        if not chosen(block.text, i == 0, block.skip is not None, include, only):
            continue
        for command, comment in command_lines(block.text):
            if venv.exists() and "VIRTUAL_ENV" not in env:
                env |= {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}
            load = os.getloadavg()[0]
            started = time.perf_counter()
            done = subprocess.run(["bash", "-c", timed_script(command)], cwd=checkout, env=env,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - started
            parts = [float(a) - float(b) for a, b in re.findall(rf"^{MARK} (\S+) (\S+)$", done.stderr, re.M)]
            timed.append(Timed(where, command, stated_seconds(comment), wall, parts, done.returncode, load))
            print(f"{where} {wall:7.1f} s exit {done.returncode}  {command}", flush=True)
            if done.returncode != 0:
                print((done.stdout + done.stderr)[-3000:], file=sys.stderr)
    return timed


def spinning() -> subprocess.Popen:
    """One CPU-bound process (a busy Python loop) until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.2f} s" if s < 10 else (f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min")


def outcome(t: Timed | None) -> str:
    """A walk's time for a command, and its exit status when it failed."""
    if t is None:
        return "-"
    return seconds(t.wall_s) + ("" if t.exit_code == 0 else f" (exit {t.exit_code})")


def report(idle_path: Path, competing_path: Path | None) -> str:
    """The Markdown table of both walks: stated, idle, with a competing process, and whether each promise held."""
    idle = [Timed(**r) for r in json.loads(idle_path.read_text())]
    # Matched by the command itself: a README edit between the walks moves the blocks' lines.
    busy = {" ".join(r["command"].split()): Timed(**r) for r in json.loads(competing_path.read_text())} \
        if competing_path else {}
    rows = ["| command | stated | idle | competing | within stated (idle) / 2x stated (competing) |",
            "|---|---:|---:|---:|---|"]
    for t in idle:
        other = busy.get(" ".join(t.command.split()))
        if t.stated_s is None:
            verdict = "no time stated"
        else:
            verdict = "yes" if t.wall_s <= t.stated_s else "**no**"
            if other is not None:
                verdict += " / " + ("yes" if other.wall_s <= 2 * t.stated_s else "**no**")
        rows.append(f"| `{t.command}` | {seconds(t.stated_s)} | {outcome(t)} | {outcome(other)} | {verdict} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT.parent / "readme-times", help="scratch directory (replaced)")
    parser.add_argument("--compete", action="store_true", help="keep one CPU-bound process running throughout")
    parser.add_argument("--include", action="append", default=[], metavar="TEXT",
                        help="also run the skipped blocks containing TEXT (repeatable)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the quickstart and the blocks containing TEXT (repeatable)")
    parser.add_argument("--json", type=Path, help="write the timings here")
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON", help="print the table of IDLE [COMPETING]")
    args = parser.parse_args()
    if args.report:
        print(report(args.report[0], args.report[1] if len(args.report) > 1 else None))
        return 0
    rival = spinning() if args.compete else None
    try:
        timed = walk(args.work.resolve(), args.include, args.only)
    finally:
        if rival:
            rival.kill()
    if args.json:
        args.json.write_text(json.dumps([asdict(t) for t in timed], indent=1))
    return 0 if all(t.exit_code == 0 for t in timed) else 1


if __name__ == "__main__":
    sys.exit(main())
