"""Shared fixtures: the CLI run in-process, a temporary store, the synthetic dataset, shared data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fewshot_bench.cli import main
from fewshot_bench.plugin_host import load_plugins

torch.set_flush_denormal(True)

# Listings computed afresh in every test (and in the processes tests start): a test may change
# what is installed within one process; tests/test_listing_cache.py turns the cache on itself.
os.environ["FEWSHOT_BENCH_CACHE_DIR"] = "off"

# Real data in ../shared/data, reached through environment variables that .ci/run sets.
SHARED_DATA = os.environ.get("FEWSHOT_BENCH_SHARED_DATA")
# Resolved at import: the `cli` fixture changes the working directory.
OMNIGLOT = Path(os.environ["FEWSHOT_BENCH_OMNIGLOT"]).resolve() if os.environ.get("FEWSHOT_BENCH_OMNIGLOT") else None
OMNIGLOT_SKIP = ("set FEWSHOT_BENCH_OMNIGLOT=../shared/data/omniglot (as .ci/run does) "
                 "to run tests on real Omniglot images")


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
    return path.resolve()  # absolute: the cli fixture changes the working directory


@pytest.fixture
def omniglot() -> Path:
    """The real Omniglot images (skips when FEWSHOT_BENCH_OMNIGLOT is unset)."""
    if OMNIGLOT is None:
        pytest.skip(OMNIGLOT_SKIP)
    return OMNIGLOT


@pytest.fixture(scope="module")
def one_thread():
    """Run tiny networks on one thread: on a shared 2-core machine, OpenMP hand-offs between
    threads cost more than the arithmetic (measured: 0.1 s per batch-norm call)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
