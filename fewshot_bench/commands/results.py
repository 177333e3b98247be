"""``fewshot-bench results``: the runs in the store, with the settings that tell them apart and their protocol id."""

from __future__ import annotations

import argparse

from fewshot_bench.commands.common import add_store_option, print_json, print_table
from fewshot_bench.protocols import TRANSDUCTIVE_NOTE, is_transductive, mark, overrides_of, overrides_text, protocol_of
from fewshot_bench.store import ResultStore
from fewshot_bench.tune import hparams_source


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``results`` parser."""
    p = sub.add_parser("results", help="list stored runs", description="list stored runs")
    add_store_option(p)
    p.add_argument("--learner", help="only this learner")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--protocol", metavar="ID", help="only runs of this protocol (id or prefix, as listed)")
    p.add_argument("--json", action="store_true", help="print every run with its full provenance as JSON")
    p.set_defaults(handler=handle)


def metric_text(metric: str, value: float | None, prefix: str = "") -> str:
    """A run's main metric for a table: accuracy in percent, regression MSE as ``mse 1.2345``."""
    if value is None:
        return "-"
    if metric == "accuracy":
        return f"{prefix}{100 * value:.2f}%"
    return f"{prefix}{value:.4f}" if prefix else f"{metric} {value:.4f}"


def handle(args: argparse.Namespace) -> int:
    """Print the stored runs, newest last, with what tells them apart: steps, preset, overrides and protocol."""
    where = {k: v for k, v in (("learner", args.learner), ("dataset", args.dataset)) if v}
    with ResultStore(args.store, create=False) as store:
        runs = store.runs(**where)
    protocols = {r.run_id: protocol_of(r) for r in runs}
    if args.protocol:
        wanted = args.protocol.strip().lower()
        runs = [r for r in runs if protocols[r.run_id].id.startswith(wanted)]
    if args.json:
        print_json([
            r.to_json() | {"protocol": protocols[r.run_id].id, "transductive": is_transductive(r)} for r in runs
        ])
        return 0
    print_table(
        (
            {
                "run": r.run_id,
                "learner": mark(r.learner, is_transductive(r)),
                "dataset": r.dataset,
                "way": r.way,
                "shot": r.shot,
                "seed": r.seed,
                "steps": r.options.get("steps", "-"),
                "preset": hparams_source(r),  # paper, reference, default, tuned (study, trials, budget) or a search trial
                "overrides": overrides_text(overrides_of(r)) or "-",
                "protocol": protocols[r.run_id].id,
                "accuracy": metric_text(r.metric, r.accuracy),
                "ci95": metric_text(r.metric, r.ci95, "±"),
                "episodes": r.episodes,
                "created": r.created_at,
            }
            for r in runs
        ),
        empty=f"no runs in {args.store}" + (f" with protocol {args.protocol}" if args.protocol else ""),
    )
    shown = {protocols[r.run_id] for r in runs}
    for protocol in sorted(shown, key=lambda p: p.id):
        print(f"protocol {protocol.id}: {protocol.description}")
    if any(is_transductive(r) for r in runs):
        print(TRANSDUCTIVE_NOTE)
    return 0
