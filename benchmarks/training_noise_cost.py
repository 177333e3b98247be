"""What counter-based training noise costs a LEO step: the same trainer, steps alternating between
``fewshot_bench.api.Noise`` and torch's global generator drawing the same kinds of noise.

    python benchmarks/training_noise_cost.py [--steps 60] [--threads 1]

5-way, 640-d synthetic features, LEO's synthetic defaults (meta-batch 12, 15 training queries
per class), 1-shot and 5-shot. The two kinds of step alternate (ABBA order), so load from other
processes falls on both alike; medians of the main thread's CPU time (robust on a busy machine)
and of wall time, after 4 warm-up steps of each. docs/speed.md has the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fewshot_bench.api import TaskSpec
from fewshot_bench.data.synthetic import generate
from fewshot_bench.plugin_host import load_plugins
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions

WARMUP = 4


class TorchGeneratorNoise:
    """The draws LEO made from torch's global generator before counter-based noise (the reference)."""

    draws = 0

    def start(self, step: int) -> None:
        """Nothing to key: the trainer seeds torch's generator per step."""

    def dropout(self, x: torch.Tensor, rate: float) -> torch.Tensor:
        return x * torch.rand_like(x).ge_(rate).mul_(1.0 / (1.0 - rate))

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(x)

    def randn(self, shape, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, dtype=like.dtype, device=like.device)


def step_times(shot: int, steps: int) -> dict[str, dict[str, float]]:
    """Median CPU and wall milliseconds per LEO step with each noise source."""
    host, data = load_plugins(), generate()
    cls = host.learner("leo")
    torch.manual_seed(0)
    leo = cls(cls.default_config("synthetic", shot), TaskSpec(5, shot, 640)).train()
    trainer = MetaTrainer(leo, data.split("train"), data.split("val"), RunSpec("leo", way=5, shot=shot),
                          TrainOptions(), torch.device("cpu"))
    sources = {"hashed Noise": leo.noise, "torch generator": TorchGeneratorNoise()}  # the trainer's Noise(seed)
    times: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in sources}
    order = list(sources)
    for step in range(2 * (steps + WARMUP)):
        name = order[(step // 2 + step) % 2]  # ABBA: each source first as often as second
        leo.noise = sources[name]
        cpu, wall = time.thread_time(), time.perf_counter()
        trainer.step(step)
        if step >= 2 * WARMUP:
            times[name]["cpu"].append(time.thread_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return {name: {k: 1e3 * statistics.median(v) for k, v in t.items()} for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each kind per shot")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    for shot in (1, 5):
        t = step_times(shot, args.steps)
        ours, theirs = t["hashed Noise"], t["torch generator"]
        print(f"LEO 5-way {shot}-shot, {args.threads} thread(s): "
              f"torch generator {theirs['cpu']:.2f} ms CPU / {theirs['wall']:.2f} ms wall per step, "
              f"hashed Noise {ours['cpu']:.2f} / {ours['wall']:.2f}; "
              f"ratio {ours['cpu'] / theirs['cpu']:.3f} CPU, {ours['wall'] / theirs['wall']:.3f} wall")


if __name__ == "__main__":
    main()
