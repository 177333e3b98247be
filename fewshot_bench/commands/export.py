"""``fewshot-bench export``: log runs already in the store to TensorBoard or MLflow (parameters, validation curves,
the final metric with its CI), each run once."""

from __future__ import annotations

import argparse

from fewshot_bench.commands.common import add_store_option, add_tracking_options, print_json
from fewshot_bench.workflows import export


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser."""
    p = sub.add_parser("export", help="log stored runs to TensorBoard or MLflow", description=__doc__)
    add_tracking_options(p, export=True)
    add_store_option(p)
    p.add_argument("--learner", help="only this learner's runs")
    p.add_argument("--dataset", help="only runs on this dataset")
    p.add_argument("--run-key", metavar="KEY", help="only the run with this run key (or unique prefix)")
    p.add_argument("--run", dest="runs", action="append", default=[], metavar="ID",
                   help="only this run (id or prefix, as `fewshot-bench results` lists; repeatable)")
    p.add_argument("--protocol", metavar="ID", help="only runs of this protocol (id or prefix, as listed)")
    p.add_argument("--artifact", dest="artifacts", action="append", default=[], metavar="FILE",
                   help="attach this file (a figure) to every exported run (repeatable; TensorBoard: PNG only)")
    p.add_argument("--json", action="store_true", help="print the run ids logged and skipped as one JSON object")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Log the selected stored runs and say where."""
    done = export(
        args.to, store=args.store, learner=args.learner, dataset=args.dataset, run_key=args.run_key, runs=args.runs,
        protocol=args.protocol, log_dir=args.log_dir, tracking_uri=args.tracking_uri, experiment=args.experiment,
        artifacts=args.artifacts,
    )
    if args.json:
        print_json({"logged": done.logged, "skipped": done.skipped, "to": done.where})
    else:
        print(f"exported {len(done.logged)} run(s) to {done.where}"
              + (f"; {len(done.skipped)} there already, skipped" if done.skipped else ""))
    return 0
