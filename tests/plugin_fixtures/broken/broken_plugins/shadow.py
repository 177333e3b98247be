"""A plugin whose entry point reuses the name of fewshot-bench's own ``baselines`` entry point.

Plugins are keyed by (distribution, entry point): it loads beside the built-in one.
"""

from fewshot_bench.api import hookimpl
from fewshot_bench.learners.baselines import NearestCentroid


class Shadow(NearestCentroid):
    """Registered: only its entry-point name is fewshot-bench's too."""

    name = "shadow-centroid"
    description = "loads although its entry point is named like fewshot-bench's baselines"


@hookimpl
def fewshot_bench_register_learners(register):
    """Register ``shadow-centroid``."""
    register(Shadow)
