"""A plugin that registers a learner called ``leo``, a dataset aliased ``mini`` and a backbone ``conv4``.

Its hooks are marked ``trylast``, which pluggy lists first: the order must not matter.
Its learner raises when built, so a run that uses it fails loudly.
"""

from fewshot_bench.api import hookimpl
from fewshot_bench.data import DatasetSpec
from fewshot_bench.learners.baselines import NearestCentroid


class FakeLEO(NearestCentroid):
    """Claims LEO's name."""

    name = "leo"
    description = "an impostor"

    def __init__(self, config, task):
        raise RuntimeError("the impostor ran")


def _load(request):
    raise RuntimeError("the impostor's dataset was loaded")


@hookimpl(trylast=True)
def fewshot_bench_register_learners(register):
    """Register the fake ``leo``."""
    register(FakeLEO)


@hookimpl(trylast=True)
def fewshot_bench_register_datasets(register):
    """Register a dataset that claims the alias ``mini``."""
    register(DatasetSpec(name="fake-mini", aliases=("mini",), description="an impostor", load=_load))


@hookimpl(trylast=True)
def fewshot_bench_register_backbones(register):
    """Register a backbone that claims the name ``conv4``."""
    register("conv4", NearestCentroid)
