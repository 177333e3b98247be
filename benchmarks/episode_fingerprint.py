"""Per-episode results and run keys of every built-in learner, for proving a refactor changes no number.

    python benchmarks/episode_fingerprint.py before.json      # on the old code
    python benchmarks/episode_fingerprint.py after.json       # on the new code, same machine
    python benchmarks/episode_fingerprint.py after.json --compare before.json

Each learner runs a short protocol on every built-in generated dataset it supports (synthetic
classification, sines-lines regression), alone and as a seed population, in a fresh store. The
file holds each run's key and per-episode values; ``--compare`` exits 1 on any difference.
Compare files written on one machine only: trained numbers depend on the CPU's vector unit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import fewshot_bench as fb
from fewshot_bench.errors import FewshotBenchError

BUDGET = {"steps": 6, "val_every": 3, "val_episodes": 4, "episodes": 12, "eval_query": 3, "threads": 1}
DATASETS = {"synthetic": [1, 5], "sines-lines": [5]}


def learners() -> list[str]:
    """Every learner the installed plugins offer."""
    from fewshot_bench.plugin_host import load_plugins

    return sorted(load_plugins().learners)


def fingerprint() -> dict[str, dict]:
    """Run key and per-episode values of each (learner, dataset, shot, single|population) that runs."""
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "f.db"
        for learner in learners():
            for dataset, shots in DATASETS.items():
                for shot in shots:
                    for mode, seeds in (("single", None), ("population", [0, 1])):
                        label = f"{learner}/{dataset}/{shot}-shot/{mode}"
                        try:
                            got = fb.run(learner, dataset, shot=shot, store=store, seeds=seeds, **BUDGET)
                        except FewshotBenchError as error:  # a learner that does not do this task
                            out[label] = {"error": str(error)}
                            continue
                        for i, result in enumerate(got if isinstance(got, list) else [got]):
                            out[f"{label}/{i}"] = {"run_key": result.run_key, "values": result.per_episode.tolist()}
                        print(label, file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, help="a fingerprint to compare with (exit 1 on a difference)")
    args = parser.parse_args()
    found = fingerprint()
    args.out.write_text(json.dumps(found, indent=1, sort_keys=True))
    if args.compare is None:
        return 0
    old = json.loads(args.compare.read_text())
    differ = sorted(k for k in old.keys() | found.keys() if old.get(k) != found.get(k))
    for key in differ:
        print(f"differs: {key}", file=sys.stderr)
    print(f"{len(found)} entries, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
