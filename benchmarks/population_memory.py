"""A population's memory estimate against what its training takes: ``population_memory.py LEARNER K S``.

Builds a population of S seeds of LEARNER (5-way K-shot on the embedded ``synthetic``
features, meta-batch 12, one thread), probes it (the two-member trial step that estimates a
member's memory), stacks it and takes three steps; prints the estimate and the growth of the
process's peak resident set while it did so. Run it for S = 1 and S = 5 in fresh processes:
(peak at S = 5 - peak at S = 1) / 4 is a member's measured memory (docs/speed.md, "Populations").
"""

from __future__ import annotations

import argparse
import resource

import torch

from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.data.synthetic import generate
from fewshot_bench.plugin_host import load_plugins
from fewshot_bench.protocol.population import Population
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions


def peak_rss() -> int:
    """The process's peak resident set in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("learner")
    parser.add_argument("shot", type=int)
    parser.add_argument("members", type=int)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    data, host = generate(), load_plugins()
    cls = host.learner(args.learner)

    def member(seed: int) -> MetaTrainer:
        torch.manual_seed(seed)
        learner = cls(cls.default_config("synthetic", args.shot), TaskSpec(5, args.shot, data.feature_dim))
        return MetaTrainer(learner, data.split("train"), data.split("val"),
                           RunSpec(args.learner, way=5, shot=args.shot, seed=seed), TrainOptions(cuda_graph=False),
                           torch.device("cpu"))

    population = Population([member(s) for s in range(args.members)])
    before = peak_rss()
    why = population.probe()
    if why:
        raise SystemExit(f"{args.learner} trains its members one after another: {why}")
    population.stack()
    for m in population.members:
        m.learner.train()
    for step in range(3):
        population.step(step)
    after = peak_rss()
    print(f"{args.learner} {args.shot}-shot, {args.members} member(s): estimate "
          f"{population.member_bytes / 2**20:.1f} MiB a member; peak resident set {after / 2**20:.0f} MiB "
          f"({(after - before) / 2**20:+.0f} MiB while probing and training)")


if __name__ == "__main__":
    main()
