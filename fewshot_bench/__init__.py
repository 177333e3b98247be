"""fewshot-bench: a benchmark harness for few-shot meta-learning.

The plugin API lives in :mod:`fewshot_bench.api`; its most used names are re-exported here
on first use, so ``import fewshot_bench`` (and ``fewshot-bench --help``) does not import torch. So are
the functions of the Python face (:mod:`fewshot_bench.workflows`): ``fewshot_bench.run(learner="leo")``.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fewshot_bench.errors import FewshotBenchError

__version__ = "0.1.0"

_LAZY = {
    "EpisodeBatch": "fewshot_bench.api",
    "Learner": "fewshot_bench.api",
    "LearnerConfig": "fewshot_bench.api",
    "LossOutput": "fewshot_bench.api",
    "PredictionBatch": "fewshot_bench.api",
    "TaskSpec": "fewshot_bench.api",
    "hookimpl": "fewshot_bench.api",
    # The Python face (docs/python-api.md): what the commands of the same names do.
    "RunResult": "fewshot_bench.workflows",
    "RunSettings": "fewshot_bench.protocol.spec",
    "compare": "fewshot_bench.workflows",
    "export": "fewshot_bench.workflows",
    "rekey": "fewshot_bench.workflows",
    "results": "fewshot_bench.workflows",
    "run": "fewshot_bench.workflows",
    "sweep": "fewshot_bench.workflows",
    "table": "fewshot_bench.workflows",
    "tune": "fewshot_bench.workflows",
}

__all__ = [
    "EpisodeBatch",
    "FewshotBenchError",
    "Learner",
    "LearnerConfig",
    "LossOutput",
    "PredictionBatch",
    "RunResult",
    "RunSettings",
    "TaskSpec",
    "compare",
    "export",
    "hookimpl",
    "rekey",
    "results",
    "run",
    "sweep",
    "table",
    "tune",
    "__version__",
]

if TYPE_CHECKING:
    from fewshot_bench.api import EpisodeBatch, Learner, LearnerConfig, LossOutput, PredictionBatch, TaskSpec, hookimpl
    from fewshot_bench.protocol.spec import RunSettings
    from fewshot_bench.workflows import RunResult, compare, export, rekey, results, run, sweep, table, tune


def __getattr__(name: str) -> Any:
    # PEP 562: the torch-backed names are imported when first asked for, then cached.
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fewshot_bench' has no attribute {name!r}")
