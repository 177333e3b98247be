"""``fewshot-bench compare A B``: the paired per-episode difference between two learners on the same test episodes."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from fewshot_bench.commands.common import add_store_option, host_from_args, print_json, print_table
from fewshot_bench.commands.sweep import comma_list
from fewshot_bench.commands.table import dataset_names
from fewshot_bench.paired import compare
from fewshot_bench.store import ResultStore


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` parser."""
    p = sub.add_parser("compare", help="paired difference of two learners on the same test episodes", description=__doc__)
    p.add_argument("a", help="first learner")
    p.add_argument("b", help="second learner")
    p.add_argument("--dataset", action="append", type=comma_list, metavar="NAME[,NAME]", help="only these datasets")
    p.add_argument("--shot", type=int, help="only this shot K")
    p.add_argument("--way", type=int, help="only this way N")
    p.add_argument("--steps", type=int, help="only runs meta-trained for this many steps")
    add_store_option(p)
    p.add_argument("--json", action="store_true", help="print JSON (with every seed's pair)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print, per setting, A - B with its 95% CI and how many seeds agree on the sign."""
    datasets = None
    if args.dataset:
        host = host_from_args(args)
        datasets = set().union(*(dataset_names(host, d) for group in args.dataset for d in group))
    with ResultStore(args.store, create=False) as store:
        results = compare(store, args.a, args.b, datasets, args.shot, args.way, args.steps)
    if args.json:
        print_json([asdict(r) | {"agree": r.agree} for r in results])
        return 0
    print_table(
        {
            "dataset": r.dataset + ("" if r.crop == "center" else f" ({r.crop})"),
            "way": r.way,
            "shot": r.shot,
            "seeds": len(r.seeds),
            "episodes": f"{r.episodes:,}",
            args.a: f"{100 * r.mean_a:.2f}%",
            args.b: f"{100 * r.mean_b:.2f}%",
            f"{args.a} - {args.b}": f"{100 * r.diff:+.2f} ± {100 * r.ci95:.2f}",
            "same sign": f"{r.agree}/{len(r.seeds)} seeds",
        }
        for r in results
    )
    print("difference: mean over paired test episodes (points), ± half-width of its 95% CI")
    return 0
