"""Shared fixtures: the CLI run in-process, a temporary store, the synthetic dataset, shared data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fewshot_bench.cli import main
from fewshot_bench.plugins import load_plugins

torch.set_flush_denormal(True)

# Real data in ../shared/data, reached through environment variables that .ci/run sets.
SHARED_DATA = os.environ.get("FEWSHOT_BENCH_SHARED_DATA")
OMNIGLOT = os.environ.get("FEWSHOT_BENCH_OMNIGLOT")


class CLIResult:
    """Exit code and captured output of one in-process CLI call."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self):
        """The JSON object on the last line of stdout."""
        return json.loads(self.out.strip().splitlines()[-1])


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch):
    """Run ``fewshot-bench ARGS`` in-process in a temporary directory; returns a CLIResult."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> CLIResult:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CLIResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def host():
    """The installed plugins, loaded once."""
    return load_plugins()


@pytest.fixture(scope="session")
def synthetic(host):
    """The embedded synthetic dataset, generated once per session."""
    from fewshot_bench.data.base import DataRequest

    return host.dataset("synthetic").load(DataRequest())


@pytest.fixture
def shared_features() -> Path:
    """The real WRN-28-10 Omniglot features in ../shared/data (skips when not configured)."""
    if not SHARED_DATA:
        pytest.skip("set FEWSHOT_BENCH_SHARED_DATA=../shared/data (as .ci/run does) to run tests on real features")
    path = Path(SHARED_DATA) / "omniglot-wrn28-10" / "features.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path
