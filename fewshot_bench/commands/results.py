"""``fewshot-bench results``: the runs in the store, with the settings that tell them apart, their protocol id and
the id of the data they read."""

from __future__ import annotations

import argparse

from fewshot_bench.commands.common import add_store_option, print_json, print_table
from fewshot_bench.protocol.spec import hparams_source
from fewshot_bench.records.stats import metric_text
from fewshot_bench.reports.combining import (
    REKEY_HINT,
    TRANSDUCTIVE_NOTE,
    data_id_of,
    data_text,
    execution_of,
    execution_text,
    mark,
    overrides_of,
    overrides_text,
)
from fewshot_bench.workflows import stored_runs


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``results`` parser."""
    p = sub.add_parser("results", help="list stored runs", description="list stored runs")
    add_store_option(p)
    p.add_argument("--learner", help="only this learner")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--protocol", metavar="ID", help="only runs of this protocol (id or prefix, as listed)")
    p.add_argument("--execution", action="store_true",
                   help="add how each run was computed: instruction set, threads (train/eval), population, device, "
                        "torch (what can move its last digits)")
    p.add_argument("--json", action="store_true", help="print every run with its full provenance as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the stored runs, newest last, with what tells them apart: steps, preset, overrides and protocol."""
    runs = stored_runs(args.store, args.learner, args.dataset, args.protocol)
    if args.json:
        print_json([s.record.to_json() | {"protocol": s.protocol.id, "transductive": s.transductive,
                                          "data_id": data_id_of(s.record), "execution": execution_of(s.record)}
                    for s in runs])
        return 0
    print_table(
        (
            {
                "run": s.record.run_id,
                "learner": mark(s.record.learner, s.transductive),
                "dataset": s.record.dataset,
                "way": s.record.way,
                "shot": s.record.shot,
                "seed": s.record.seed,
                "steps": s.record.options.get("steps", "-"),
                # paper, reference, default, tuned (study, trials, budget) or a search trial
                "preset": hparams_source(s.record),
                "overrides": overrides_text(overrides_of(s.record)) or "-",
                "protocol": s.protocol.id,
                "data": data_text(data_id_of(s.record)),
                **({"execution": execution_text(execution_of(s.record))} if args.execution else {}),
                "mean": metric_text(s.record.metric, s.record.mean),
                "ci95": metric_text(s.record.metric, s.record.ci95, "±"),
                "episodes": s.record.episodes,
                "created": s.record.created_at,
            }
            for s in runs
        ),
        empty=f"no runs in {args.store}" + (f" with protocol {args.protocol}" if args.protocol else ""),
    )
    for protocol in sorted({s.protocol for s in runs}, key=lambda p: p.id):
        print(f"protocol {protocol.id}: {protocol.description}")
    if any(s.transductive for s in runs):
        print(TRANSDUCTIVE_NOTE)
    if any(data_id_of(s.record) is None for s in runs):
        print(f"data unknown: {REKEY_HINT}")
    return 0
