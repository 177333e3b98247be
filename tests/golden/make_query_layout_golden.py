"""Per-episode test metrics of every built-in learner after a short seeded meta-training.

Written once by the code that gave ``predict`` class-grouped queries (``[B, N, Q, D]``,
commit 2f99443) and checked by ``tests/test_query_layout.py`` against the current code, which
gives ``predict`` each episode's queries as an unordered set: the same queries are scored,
so every episode's metric must be the same.

The LEO cases (``leo*``: every variant draws dropout masks, and all but ``leo-deterministic``
sample latents and weights, in meta-training) were regenerated on purpose by commit 92b3c41,
which moved LEO's meta-training noise from torch's global generator to the counter-based
:class:`fewshot_bench.api.Noise`: their training draws changed by design, so their trained
weights and test metrics did. The layout claim had been checked for them before (the test
passed on d55e4b4, the commit before); their entries now pin the new noise. The other
cases draw no training noise and were left as 2f99443 wrote them (they still pass).

Regenerate (only on purpose) with ``python tests/golden/make_query_layout_golden.py``, or
only the cases whose ids start with given prefixes: ``... make_query_layout_golden.py leo``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.data.base import DataRequest
from fewshot_bench.evaluate import evaluate
from fewshot_bench.plugins import load_plugins
from fewshot_bench.runner import build_learner
from fewshot_bench.spec import RunSpec
from fewshot_bench.train import MetaTrainer, TrainOptions

GOLDEN = Path(__file__).with_name("query_layout.json")
SEED = 0
# (learner, dataset, way, shot, config changes, meta-training steps, test episodes, test queries per class)
CASES = [
    ("nearest-centroid", "synthetic", 5, 1, {}, 0, 40, 15),
    ("logreg", "synthetic", 5, 5, {"iterations": 20}, 0, 40, 15),
    ("metasgd", "synthetic", 5, 1, {}, 15, 40, 15),
    ("maml", "synthetic", 5, 5, {}, 15, 40, 15),
    ("maml", "synthetic", 5, 1, {"hidden_sizes": (16,)}, 15, 40, 15),
    ("leo", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo", "synthetic", 5, 5, {}, 10, 40, 15),
    ("leo-deterministic", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-random-prior", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-no-finetune", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-generator-only", "synthetic", 5, 1, {}, 15, 40, 15),
    ("leo-generator-finetune", "synthetic", 5, 1, {}, 15, 40, 15),
    ("mlp-scratch", "sines-lines", 1, 5, {"fit_steps": 20}, 0, 20, 10),
    ("metasgd", "sines-lines", 1, 5, {}, 10, 20, 10),
    ("maml", "sines-lines", 1, 5, {}, 10, 20, 10),
    ("leo", "sines-lines", 1, 5, {}, 10, 20, 10),
]


def case_id(case: tuple) -> str:
    """A readable id: learner/dataset/N-way K-shot plus the config changes."""
    name, data, way, shot, changes = case[:5]
    extra = ",".join(f"{k}={v}" for k, v in changes.items())
    return f"{name}/{data}/{way}-way-{shot}-shot" + (f"/{extra}" if extra else "")


def metrics(case: tuple, host=None) -> dict[str, list[float]]:
    """Per-episode test metrics of one case, by the generic path (``predict``) and by evaluation's default path."""
    name, data, way, shot, changes, steps, episodes, query = case
    host = host or load_plugins()
    dataset = host.dataset(data).load(DataRequest())
    cls = host.learner(name).for_kind(dataset.kind)
    config = replace(cls.default_config(data, shot), meta_batch_size=4, **changes)
    task = TaskSpec(way, shot, dataset.feature_dim, dataset.kind, data)
    torch.manual_seed(SEED)
    learner = build_learner(cls, config, task, torch.device("cpu"))
    if steps:
        spec = RunSpec(name, data, way, shot, SEED, steps=steps, val_every=steps, val_episodes=10, patience=None)
        MetaTrainer(learner, dataset.split("train"), dataset.split("val"), spec, TrainOptions(val_query=query),
                    torch.device("cpu")).run()
    score = dict(split=dataset.split("test"), n_way=way, k_shot=shot, seed=SEED, episodes=episodes, n_query=query)
    return {
        "generic": evaluate(learner, fast=False, **score).astype(float).tolist(),
        "default": evaluate(learner, **score).astype(float).tolist(),
    }


def main(prefixes: list[str]) -> None:
    """Rewrite the golden file: every case, or (with ``prefixes``) only the cases whose ids start with one."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    host = load_plugins()
    chosen = [case for case in CASES if not prefixes or case_id(case).startswith(tuple(prefixes))]
    golden = json.loads(GOLDEN.read_text()) if prefixes else {}
    fresh = {case_id(case): metrics(case, host) for case in chosen}
    golden.update(fresh)
    GOLDEN.write_text(json.dumps({case_id(case): golden[case_id(case)] for case in CASES}, indent=1) + "\n")
    print(f"wrote {len(fresh)} of {len(CASES)} cases to {GOLDEN}; their mean metrics:",
          {k: float(np.mean(v["generic"])) for k, v in fresh.items()})


if __name__ == "__main__":
    main(sys.argv[1:])
