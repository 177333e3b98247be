"""A plugin whose entry point reuses the name of fewshot-bench's own ``baselines`` entry point."""

from fewshot_bench import hookimpl
from fewshot_bench.baselines import NearestCentroid


class Shadow(NearestCentroid):
    """Never registered: its entry-point name clashes."""

    name = "shadow-centroid"
    description = "must not load"


@hookimpl
def fewshot_bench_register_learners(register):
    """Register ``shadow-centroid`` (ignored: the entry point's name is taken)."""
    register(Shadow)
