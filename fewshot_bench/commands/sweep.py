"""``fewshot-bench sweep``: run a table's grid of (learner, dataset, shot, seed) cells that the
store does not have yet, on a local process pool or on Ray."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from fewshot_bench.commands.common import (
    add_executor_options,
    add_place_options,
    add_settings_options,
    add_tracking_options,
    comma_list,
    datasets_of,
    host_from_args,
    int_list,
    print_json,
    print_table,
    progress_enabled,
    settings_from_args,
    settings_names,
    slurm_from_args,
    tracking_from_args,
)
from fewshot_bench.records.stats import seeds_summary_text, summarize_seeds
from fewshot_bench.reports.combining import seeds_text
from fewshot_bench.workflows import NOT_SWEEP_SETTINGS, SWEEP_DEFAULTS, RunResult, SweepResult, sweep

SETTINGS = settings_names(without=NOT_SWEEP_SETTINGS)  # the settings every cell shares; --dataset is an axis


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` parser."""
    p = sub.add_parser("sweep", help="run a table's grid of runs (resumable; local pool or Ray)", description=__doc__)
    p.add_argument("--table", choices=["1", "2"],
                   help="the LEO paper's Table 1 or Table 2 (its learners, datasets and shots)")
    p.add_argument("--learners", type=comma_list,
                   help="comma-separated learners: a subset of the table's, or any without --table")
    add_settings_options(p, ["dataset"], axes=["dataset"], notes={
        "dataset": "the datasets replace miniImageNet and tieredImageNet (repeatable; default: the table's, or "
                   "synthetic)"})
    p.add_argument("--shots", type=int_list, help="comma-separated shots K (default: 1,5)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per cell: 0 .. N-1 (default 5, as in the paper)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    add_settings_options(p, SETTINGS, defaults=SWEEP_DEFAULTS, notes={
        "hparams": "for learners that have presets; tuned: each learner's best trial for each setting"})
    p.add_argument("--population", choices=("on", "off"), default="on",
                   help="meta-train each cell's missing seeds together as one batched population (on, default; "
                        "the rows separate runs store) or as separate runs (off)")
    p.add_argument("--population-size", type=int, metavar="S",
                   help="at most S seeds per population (split a population that would not fit)")
    add_executor_options(p)
    add_place_options(p)
    add_tracking_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan (cells to run and already complete) and stop")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Plan the grid, skip what is complete, run the rest and summarise."""
    quiet = args.json or args.quiet
    what = f"table {args.table}" if args.table else "sweep"

    def announce(plan: SweepResult) -> None:
        if not quiet:
            p = plan.protocol
            print(
                f"{what}: {len(plan.learners)} learners x {len(plan.datasets)} dataset(s) x {len(plan.shots)} shots x "
                f"{len(plan.seeds)} seeds = {plan.planned} runs; {plan.already_complete} complete in {args.store}, "
                f"{len(plan.pending)} to run ({p['steps']:,} steps, {p['episodes']:,} test episodes, "
                f"{'train+val' if p['train_on_val'] else 'train'}, early stopping on val)"
            )
        if args.dry_run:
            if args.json:
                print_json(
                    {"planned": plan.planned, "already_complete": plan.already_complete, "pending": plan.pending}
                )
            else:
                for label in plan.pending:
                    print(f"  to run: {label}")
        elif plan.executor is not None and not quiet:
            print(f"running on {plan.executor}")

    report = sweep(
        args.learners, datasets_of(args), args.shots, args.seeds, first_seed=args.first_seed, table=args.table,
        **settings_from_args(args, SETTINGS), store=args.store, data_dir=args.data_dir,
        checkpoint_dir=args.checkpoint_dir, executor=args.executor, workers=args.workers,
        ray_address=args.ray_address, slurm=slurm_from_args(args), device=args.device, dry_run=args.dry_run,
        progress=progress_enabled(args), raise_failures=False, host=host_from_args(args, warn=True), on_plan=announce,
        population=args.population == "on", population_size=args.population_size,
        tracking=tracking_from_args(args),
    )
    if args.dry_run:
        return 0
    cells = grid_cells(report)
    if args.json:
        print_json({"planned": report.planned, "already_complete": report.already_complete, "ran": report.ran,
                    "failed": len(report.failed), "store": str(args.store), "cells": [
                        {"learner": learner, "dataset": dataset, "way": way, "shot": shot, "metric": runs[0].metric,
                         **asdict(summarize_seeds([r.mean for r in runs])), "seeds": [r.seed for r in runs]}
                        for (learner, dataset, way, shot), runs in cells.items()]})
        report.raise_failures()
        return 0
    if not args.quiet:
        print(f"done: {report.ran} run(s) stored, {report.already_complete} already complete, "
              f"{len(report.failed)} failed; store {args.store}")
    if cells:
        print_seed_summary(cells)
    report.raise_failures()
    return 0


def grid_cells(report: SweepResult) -> dict[tuple[str, str, int, int], list[RunResult]]:
    """The sweep's stored runs by cell (learner, dataset, way, shot), in grid order."""
    cells: dict[tuple[str, str, int, int], list[RunResult]] = {}
    for out in report.runs:
        cells.setdefault((out.learner, out.dataset, out.way, out.shot), []).append(out)
    return cells


def print_seed_summary(cells: dict[tuple[str, str, int, int], list[RunResult]]) -> None:
    """Per cell of the grid, the mean ± std over its seeds of each run's mean: the paper's statistic."""
    print_table(
        {"learner": learner, "dataset": dataset, "way": way, "shot": shot, "seeds": seeds_text(r.seed for r in runs),
         "mean ± std over seeds": seeds_summary_text(runs[0].metric, [r.mean for r in runs])}
        for (learner, dataset, way, shot), runs in cells.items()
    )
    print("each cell: mean ± sample std over its seeds of each run's mean over its test episodes (the paper's "
          "statistic); `fewshot-bench table` puts them beside the paper's numbers")