"""``fewshot-bench bench LEARNER``: time a learner's meta-training step, inner loop and evaluation beside the
built-ins."""

from __future__ import annotations

import argparse

from fewshot_bench.commands.common import comma_list, host_from_args, int_list, print_json, print_table
from fewshot_bench.errors import ConfigError
from fewshot_bench.testing.timing import EVAL_EPISODES, PHASES, REFERENCES, Bench, measure, speed_table

MAX_EPISODES = 100_000
MAX_SHOT = 50


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` parser."""
    p = sub.add_parser(
        "bench",
        help="time learners' meta-training step, inner loop and evaluation beside the built-ins",
        description="Time each learner's meta-training step (the harness's whole step), inner loop (its "
        "adapt(batch)) and evaluation (every remaining example a query, as runs evaluate) on 5-way episodes of the "
        "embedded synthetic 640-d features, beside the built-ins, and print episodes per second and the ratio to "
        "each built-in. The pytest-benchmark fixtures of fewshot_bench.testing time the same work (docs/plugins.md).",
    )
    p.add_argument("learners", nargs="+", metavar="LEARNER", help="installed learner name(s)")
    p.add_argument("--against", type=comma_list, default=list(REFERENCES), metavar="NAME[,NAME]",
                   help=f"the reference learners (default: {','.join(REFERENCES)}; '' for none)")
    p.add_argument("--shot", type=int_list, default=[1], metavar="K[,K]", help="shots to time (default 1)")
    p.add_argument("--phase", action="append", choices=PHASES, metavar="PHASE",
                   help=f"time only this phase (repeatable): {', '.join(PHASES)}")
    p.add_argument("--episodes", type=int, default=EVAL_EPISODES, metavar="N",
                   help=f"test episodes per evaluation call (default {EVAL_EPISODES})")
    p.add_argument("--min-time", type=float, default=0.5, metavar="SECONDS",
                   help="time each workload for at least this long, at least 3 calls after a warm-up (default 0.5)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list on the last line")
    p.set_defaults(handler=handle)


def _check(args: argparse.Namespace) -> None:
    if not 1 <= args.episodes <= MAX_EPISODES:
        raise ConfigError(f"--episodes must be between 1 and {MAX_EPISODES:,}, got {args.episodes}")
    if not args.shot or any(not 1 <= k <= MAX_SHOT for k in args.shot):
        raise ConfigError(f"--shot must name shots between 1 and {MAX_SHOT}, got {args.shot}")
    if not 0 <= args.min_time <= 600:
        raise ConfigError(f"--min-time must be between 0 and 600 seconds, got {args.min_time:g}")


def handle(args: argparse.Namespace) -> int:
    """Time every learner and reference, print the table (or JSON)."""
    _check(args)
    host = host_from_args(args)
    for name in [*args.learners, *args.against]:
        host.learner(name)  # an unknown name fails here, before any timing
    bench = Bench(host=host, eval_episodes=args.episodes)
    rows = speed_table(bench, args.learners, args.against, phases=args.phase or PHASES, shots=args.shot,
                       timer=lambda work: measure(work, min_seconds=args.min_time))
    if args.json:
        print_json(rows)
        return 0
    print(f"5-way episodes of the embedded synthetic features (640-d) on the CPU, threads as a run chooses them "
          f"(FEWSHOT_BENCH_THREADS=N overrides); evaluation: {args.episodes} test episodes, every remaining example "
          "of a class a query")
    print_table(rows)
    if args.against:
        print("x_NAME: episodes per second relative to NAME (0.1 = ten times slower); '-': no such phase "
              "(nothing to meta-train, or no adapt(batch) to time)")
    return 0
