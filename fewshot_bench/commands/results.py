"""``fewshot-bench results``: the runs in the store."""

from __future__ import annotations

import argparse

from fewshot_bench.commands.common import add_store_option, print_json, print_table
from fewshot_bench.store import ResultStore


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``results`` parser."""
    p = sub.add_parser("results", help="list stored runs", description="list stored runs")
    add_store_option(p)
    p.add_argument("--learner", help="only this learner")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--json", action="store_true", help="print every run with its full provenance as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the stored runs, newest last."""
    where = {k: v for k, v in (("learner", args.learner), ("dataset", args.dataset)) if v}
    with ResultStore(args.store, create=False) as store:
        runs = store.runs(**where)
    if args.json:
        print_json([r.to_json() for r in runs])
        return 0
    print_table(
        (
            {
                "run": r.run_id,
                "learner": r.learner,
                "dataset": r.dataset,
                "way": r.way,
                "shot": r.shot,
                "seed": r.seed,
                "accuracy": f"{100 * r.accuracy:.2f}%" if r.accuracy is not None else "-",
                "ci95": f"±{100 * r.ci95:.2f}%" if r.ci95 is not None else "-",
                "episodes": r.episodes,
                "created": r.created_at,
            }
            for r in runs
        ),
        empty=f"no runs in {args.store}",
    )
    return 0
