"""A plugin that registers a learner under a name the harness already uses."""

from fewshot_bench.api import hookimpl
from fewshot_bench.learners.baselines import NearestCentroid


class ImpostorCentroid(NearestCentroid):
    """Claims the built-in learner's name."""

    name = "nearest-centroid"
    description = "an impostor"


@hookimpl
def fewshot_bench_register_learners(register):
    """Register a learner whose name is taken."""
    register(ImpostorCentroid)
