"""Benchmark-suite settings: the ``slow`` marker (deselect with ``-m "not slow"``) and the shared fixtures."""

import pytest
from bench_setup import DEVICE

from fewshot_bench.data.synthetic import generate
from fewshot_bench.plugin_host import load_plugins


def pytest_configure(config):
    """Register the markers the benchmarks use."""
    config.addinivalue_line("markers", "slow: a benchmark on gigabyte-sized data (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def synthetic():
    """The embedded 640-d dataset (generated once, about a second), on the benchmark device."""
    return generate().to(DEVICE)


@pytest.fixture(scope="session")
def host():
    """The installed plugins (leo, metasgd, maml and the baselines)."""
    return load_plugins()
