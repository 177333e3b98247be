"""Benchmark-suite settings: the ``slow`` marker (deselect with ``-m "not slow"``)."""


def pytest_configure(config):
    """Register the markers the benchmarks use."""
    config.addinivalue_line("markers", "slow: a benchmark on gigabyte-sized data (deselect with -m 'not slow')")
