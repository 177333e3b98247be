"""fewshot-bench: a benchmark harness for few-shot meta-learning."""

from fewshot_bench.episodes import EpisodeBatch, PredictionBatch
from fewshot_bench.errors import FewshotBenchError
from fewshot_bench.hookspecs import hookimpl
from fewshot_bench.learner import Learner, LearnerConfig, LossOutput, TaskSpec

__version__ = "0.1.0"

__all__ = [
    "EpisodeBatch",
    "FewshotBenchError",
    "Learner",
    "LearnerConfig",
    "LossOutput",
    "PredictionBatch",
    "TaskSpec",
    "hookimpl",
    "__version__",
]
