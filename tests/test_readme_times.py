"""The README's promise that every command states its time, and the parser benchmarks/readme_times.py reads it with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from readme_times import command_lines, stated_seconds  # noqa: E402
from test_docs_commands import blocks  # noqa: E402


@pytest.mark.parametrize(("comment", "seconds"), [
    ("# 25 s", 25.0), ("# rerun to resume; 3-4 min", 240.0), ("# the run at most 2 min; with the install 4 min", 240.0),
    ("# 0.5 s", 0.5), ("# writes ./x", None), ("", None),
])
def test_a_stated_time_is_the_last_duration_of_the_comment(comment, seconds):
    assert stated_seconds(comment) == seconds


def test_continued_lines_are_one_command_and_comment_lines_none():
    text = "# a comment\nfewshot-bench pretrain --x \\\n    --y z   # 2 min\nfewshot-bench learners\n"
    assert command_lines(text) == [("fewshot-bench pretrain --x --y z", "2 min"), ("fewshot-bench learners", "")]


def test_every_readme_command_that_runs_here_states_its_time():
    runs_here = [b for b in blocks(ROOT / "README.md") if b.skip is None or "pretrain" in b.text]
    unstated = [f"README.md:{b.line}: {command}" for b in runs_here
                for command, comment in command_lines(b.text) if stated_seconds(comment) is None]
    assert not unstated, "state the time (`# ... 20 s`, from benchmarks/readme_times.py):\n" + "\n".join(unstated)
