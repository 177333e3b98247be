"""The Python face (fewshot_bench.workflows): docs/python-api.md's examples run, and store what the commands store."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import ResultStore

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
# What differs between two computations of the same run: its row id, when and where it ran, how long it took.
PER_COMPUTATION = ("run_id", "created_at", "hardware", "timings")


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def shell_commands(text: str) -> list[list[str]]:
    """The ``$ fewshot-bench ...`` lines of the ```console blocks, as argument lists (without the program name)."""
    blocks = re.findall(r"^```console\n(.*?)^```", text, re.S | re.M)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith("$ fewshot-bench ")]
    return [shlex.split(line[2:])[1:] for line in lines]


def stored_rows(path: Path) -> dict[str, dict]:
    """Every stored run by run key: its row without what differs per computation, and its per-episode values."""
    with ResultStore(path, create=False) as store:
        return {
            run.run_key: {k: v for k, v in run.to_json().items() if k not in PER_COMPUTATION}
            | {"per_episode": store.episode_values(run.run_id).tolist()}
            for run in store.runs()
        }


@pytest.mark.slow  # a few small runs and trials, each twice: a minute on a busy 2-core machine
def test_every_example_runs_and_stores_what_the_commands_store(cli, tmp_path, capsys):
    text = DOC.read_text()
    namespace: dict = {}
    for number, block in enumerate(python_blocks(text), 1):  # in order, sharing names, as a reader would
        exec(compile(block, f"{DOC.name} python block {number}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "ConfigError: unknown learner 'no-such-learner'" in out  # the errors example: one line, no traceback

    result, again, grid = namespace["result"], namespace["again"], namespace["grid"]
    assert not result.reused and again.reused and again.run_id == result.run_id
    assert isinstance(result.per_episode, np.ndarray) and result.per_episode.shape == (200,)
    assert result.mean == pytest.approx(float(result.per_episode.mean()))
    assert grid.planned == 4 and grid.ran == 4 and len(grid.runs) == 4
    assert namespace["same"].reused and namespace["same"].run_key == result.run_key  # settings as one object
    study = namespace["study"]
    assert study.complete == 2 and study.best is not None
    assert len(namespace["runs"]) == 7 and namespace["report"].comparisons  # 5 runs and 2 trials

    commands = shell_commands(text)
    assert [c[0] for c in commands] == ["run", "sweep", "tune"]
    for args in commands:  # the same settings from the shell, into a store of their own
        r = cli(*args, "--store", tmp_path / "cli.db")
        assert r.code == 0, r.err
    python_rows, cli_rows = stored_rows(tmp_path / "fewshot-results.db"), stored_rows(tmp_path / "cli.db")
    assert sorted(python_rows) == sorted(cli_rows) and len(python_rows) == 7
    for key, row in python_rows.items():
        assert row == cli_rows[key], key

    # And the shell finds the Python face's runs in its store: reused, not run again.
    r = cli(*commands[0], "--json")
    assert r.code == 0 and r.json()["run_id"] == result.run_id and "reusing it" in r.err


def test_a_run_of_the_python_face_is_the_run_of_the_command(cli, tmp_path):
    import fewshot_bench as fb

    tiny = {"steps": 0, "episodes": 20, "eval_query": 5}
    result = fb.run(learner="nearest-centroid", shot=5, seed=3, store=tmp_path / "p.db", **tiny)
    r = cli("run", "--learner", "nearest-centroid", "--shot", "5", "--seed", "3", "--steps", "0", "--episodes", "20",
            "--eval-query", "5", "--store", tmp_path / "c.db", "--json")
    assert r.code == 0, r.err
    assert stored_rows(tmp_path / "p.db") == stored_rows(tmp_path / "c.db")
    assert r.json()["accuracy"] == result.mean and result.steps == 0 and result.metric == "accuracy"
    with pytest.raises(ConfigError, match="--shot 0: each class needs at least 1 support example"):
        fb.run(learner="nearest-centroid", shot=0, store=tmp_path / "p.db", **tiny)
    frame = fb.results(store=tmp_path / "p.db")
    assert list(frame["run_id"]) == [result.run_id] and frame["value"][0] == result.mean


def test_importing_the_package_imports_no_torch_and_exports_the_functions():
    code = ("import sys, fewshot_bench as fb; assert 'torch' not in sys.modules; "
            "assert all(callable(getattr(fb, n)) for n in ('run', 'sweep', 'compare', 'table', 'results')); "
            "import fewshot_bench.search.sweep; assert callable(fb.sweep)")
    subprocess.run([sys.executable, "-c", code], check=True)
