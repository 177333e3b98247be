"""A plugin whose registration hook raises."""

from fewshot_bench.api import hookimpl


@hookimpl
def fewshot_bench_register_learners(register):
    """Fail while registering."""
    raise RuntimeError("the GPU kernel cache is corrupt")
