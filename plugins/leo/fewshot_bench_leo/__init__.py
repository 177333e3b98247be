"""LEO (Rusu et al., ICLR 2019) and its five ablations of Table 2, as fewshot-bench learners."""

from fewshot_bench.api import RegisterLearner, hookimpl
from fewshot_bench_leo.learners import LEARNERS
from fewshot_bench_leo.model import LatentEmbeddingOptimization, LEOConfig

__all__ = ["LEARNERS", "LatentEmbeddingOptimization", "LEOConfig", "fewshot_bench_register_learners"]


@hookimpl
def fewshot_bench_register_learners(register: RegisterLearner) -> None:
    """Register leo and its ablations."""
    for learner in LEARNERS:
        register(learner)
