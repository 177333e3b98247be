"""``fewshot-bench sweep``: run a table's grid of (learner, dataset, shot, seed) cells that the
store does not have yet, on a local process pool or on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fewshot_bench.commands.common import (
    add_budget_options,
    add_data_option,
    add_executor_options,
    add_store_option,
    budget_fields,
    host_from_args,
    print_json,
    progress_enabled,
    worker_settings,
)
from fewshot_bench.errors import ConfigError, FewshotBenchError
from fewshot_bench.executors import make_executor
from fewshot_bench.provenance import resolve_device
from fewshot_bench.runner import BUDGETS
from fewshot_bench.sweep import Protocol, grid, plan, run_plan, seed_list
from fewshot_bench.tables import get_table
from fewshot_bench.tune import apply_tuned


def comma_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (argparse type)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def int_list(text: str) -> list[int]:
    """``"1,5"`` -> ``[1, 5]`` (argparse type)."""
    try:
        return [int(t) for t in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` parser."""
    p = sub.add_parser("sweep", help="run a table's grid of runs (resumable; local pool or Ray)", description=__doc__)
    p.add_argument("--table", choices=["1", "2"], help="the LEO paper's Table 1 or Table 2 (its learners, datasets and shots)")
    p.add_argument("--learners", type=comma_list, help="comma-separated learners: a subset of the table's, or any without --table")
    p.add_argument("--dataset", action="append", type=comma_list, metavar="NAME[,NAME]",
                   help="dataset(s) replacing miniImageNet and tieredImageNet (repeatable; default: the table's, or synthetic)")
    p.add_argument("--shots", type=int_list, help="comma-separated shots K (default: 1,5)")
    p.add_argument("--way", type=int, default=5, help="classes per episode N (default 5)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per cell: 0 .. N-1 (default 5, as in the paper)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="paper",
                   help="paper (default: 100,000 steps, 50,000 test episodes) or quick (1,000 steps, 2,000 episodes)")
    add_budget_options(p)
    p.add_argument("--train-on-val", action=argparse.BooleanOptionalAction, default=True,
                   help="meta-train on train + val, early-stop on val (paper stage 3; default on)")
    p.add_argument("--hparams", help="hyperparameter preset for learners that have presets (e.g. LEO: paper, reference), "
                   "or tuned: each learner's best trial of `fewshot-bench tune` for each setting")
    p.add_argument("--crop", default="center", help="feature crop for datasets that have several (center|multiview)")
    add_executor_options(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    add_data_option(p)
    add_store_option(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan (cells to run and already complete) and stop")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")
    p.set_defaults(handler=handle)


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The shared protocol of every cell, budget defaults filled in and checked."""
    protocol = Protocol(
        way=args.way,
        train_on_val=args.train_on_val,
        hparams=args.hparams,
        crop=args.crop,
        **budget_fields(args),
    )
    if protocol.way < 2:
        raise ConfigError("--way must be at least 2")
    return protocol


def grid_axes(args: argparse.Namespace) -> tuple[list[str], list[str], list[int]]:
    """Learners, datasets and shots of the sweep, from --table and the explicit options."""
    datasets = [d for group in args.dataset or [] for d in group]
    if args.table:
        table = get_table(args.table)
        learners = table.learners
        if args.learners:
            outside = [name for name in args.learners if name not in learners]
            if outside:
                raise ConfigError(
                    f"--learners {', '.join(outside)} not in table {table.number}; its learners: {', '.join(learners)}"
                )
            learners = [name for name in learners if name in args.learners]
        return learners, datasets or list(table.datasets), args.shots or list(table.shots)
    if not args.learners:
        raise ConfigError("pass --table 1|2 or --learners NAME[,NAME...]")
    return args.learners, datasets or ["synthetic"], args.shots or [1, 5]


def handle(args: argparse.Namespace) -> int:
    """Plan the grid, skip what is complete, run the rest and summarise."""
    learners, datasets, shots = grid_axes(args)
    protocol = protocol_from_args(args)
    seeds = seed_list(args.seeds, args.first_seed)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # for runs computed in this process (--workers 1)
    host = host_from_args(args, warn=True)
    specs = apply_tuned(grid(host, learners, datasets, shots, seeds, protocol), args.store, host)
    todo = plan(host, specs, args.store)
    quiet = args.json or args.quiet
    what = f"table {args.table}" if args.table else "sweep"
    if not quiet:
        print(
            f"{what}: {len(learners)} learners x {len(datasets)} dataset(s) x {len(shots)} shots x {len(seeds)} seeds "
            f"= {todo.total} runs; {len(todo.done)} complete in {args.store}, {len(todo.pending)} to run "
            f"({protocol.steps:,} steps, {protocol.episodes:,} test episodes, "
            f"{'train+val' if protocol.train_on_val else 'train'}, early stopping on val)"
        )
    if args.dry_run:
        if args.json:
            print_json({"planned": todo.total, "already_complete": len(todo.done), "pending": [j.label for j in todo.pending]})
        else:
            for job in todo.pending:
                print(f"  to run: {job.label}")
        return 0
    settings = worker_settings(args)
    checkpoint_dir = Path(settings.checkpoint_dir)
    executor = make_executor(args.executor, args.workers, settings, args.ray_address, str(device)) if todo.pending else None
    if executor is not None and not quiet:
        print(f"running on {executor.description}")
    report = run_plan(todo, executor, args.store, checkpoint_dir, progress_enabled(args)) if executor else None
    ran = report.ran if report else 0
    failed = report.failed if report else []
    if args.json:
        print_json({"planned": todo.total, "already_complete": len(todo.done), "ran": ran, "failed": len(failed), "store": str(args.store)})
    elif not args.quiet:
        print(f"done: {ran} run(s) stored, {len(todo.done)} already complete, {len(failed)} failed; store {args.store}")
    if failed:
        label, error = failed[0]
        raise FewshotBenchError(
            f"{len(failed)} run(s) failed (first: {label}: {error}); completed runs are stored, run the same command to retry"
        )
    return 0
