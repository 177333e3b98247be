"""A harmless plugin whose entry point is named ``leo``, like fewshot-bench-leo's."""

from fewshot_bench.api import hookimpl
from fewshot_bench.learners.baselines import NearestCentroid


class EvilExtra(NearestCentroid):
    """Nearest centroid under a name of its own."""

    name = "evil-extra"
    description = "nearest centroid from the evil-leo test distribution"


@hookimpl
def fewshot_bench_register_learners(register):
    """Register ``evil-extra``."""
    register(EvilExtra)
