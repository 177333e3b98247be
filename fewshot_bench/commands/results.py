"""``fewshot-bench results``: the runs in the store, with the settings that tell them apart, their protocol id and
the id of the data they read."""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot_bench.commands.common import add_store_option, print_json, print_table, print_wrapped
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
from fewshot_bench.reports.results_files import write_csv, write_json, write_parquet
from fewshot_bench.workflows import STAGES, results, stored_runs


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``results`` parser."""
    p = sub.add_parser("results", help="list stored runs (or write them to a CSV, Parquet or JSON file)",
                       description="list stored runs, or write them to a file")
    add_store_option(p)
    p.add_argument("--learner", help="only this learner")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--shot", type=int, metavar="K", help="only runs of this shot")
    p.add_argument("--seed", type=int, help="only runs of this seed")
    p.add_argument("--steps", type=int, metavar="N", help="only runs asked to meta-train this many steps")
    p.add_argument("--stage", choices=STAGES, help="only runs (run: scored on test) or search trials (tune)")
    p.add_argument("--protocol", metavar="ID", help="only runs of this protocol (id or prefix, as listed)")
    p.add_argument("--data", metavar="ID", help="only runs that read this data (data id or prefix, as listed)")
    p.add_argument("--execution", action="store_true",
                   help="add how each run was computed: instruction set, threads (train/eval), population, device, "
                        "torch (what can move its last digits)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", nargs="?", const="-", type=Path, metavar="FILE",
                     help="every run with its full provenance as JSON, on stdout or into FILE")
    out.add_argument("--csv", type=Path, metavar="FILE",
                     help="write the runs (one row each, the columns of fewshot_bench.results()) to FILE as CSV")
    out.add_argument("--parquet", type=Path, metavar="FILE",
                     help="the same as Parquet (needs pyarrow: pip install 'fewshot-bench[parquet]')")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the stored runs, newest last, with what tells them apart: steps, preset, overrides and protocol; or
    write them to a file and say where."""
    where = {"shot": args.shot, "seed": args.seed, "steps": args.steps, "stage": args.stage, "data": args.data}
    if args.csv or args.parquet:
        frame = results(args.store, args.learner, args.dataset, args.protocol, **where)
        path = write_csv(frame, args.csv) if args.csv else write_parquet(frame, args.parquet)
        print(f"wrote {len(frame)} run(s) to {path}")
        return 0
    runs = stored_runs(args.store, args.learner, args.dataset, args.protocol, **where)
    if args.json is not None:
        rows = [s.record.to_json() | {"protocol": s.protocol.id, "transductive": s.transductive,
                                      "data_id": data_id_of(s.record), "execution": execution_of(s.record)}
                for s in runs]
        if str(args.json) == "-":
            print_json(rows)
        else:
            print(f"wrote {len(rows)} run(s) to {write_json(rows, args.json)}")
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
        empty=f"no runs in {args.store}" + (" that match the filters" if any(
            v is not None for v in (args.learner, args.dataset, args.protocol, *where.values())) else ""),
    )
    for protocol in sorted({s.protocol for s in runs}, key=lambda p: p.id):
        print_wrapped(f"protocol {protocol.id}: {protocol.description}")
    if any(s.transductive for s in runs):
        print_wrapped(TRANSDUCTIVE_NOTE)
    if any(data_id_of(s.record) is None for s in runs):
        print_wrapped(f"data unknown: {REKEY_HINT}")
    return 0
