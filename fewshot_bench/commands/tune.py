"""``fewshot-bench tune``: search a learner's hyperparameters on the validation split (the paper's
stage 2), resumably, on a local pool or Ray; ``tune show`` reports a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fewshot_bench.commands.common import (
    add_executor_options,
    add_place_options,
    add_settings_options,
    add_tracking_options,
    host_from_args,
    print_json,
    print_table,
    progress_enabled,
    settings_from_args,
    settings_names,
    slurm_from_args,
    tracking_from_args,
)
from fewshot_bench.errors import ConfigError, FewshotBenchError
from fewshot_bench.records.stats import metric_name, metric_text
from fewshot_bench.search.space import SPEC_HELP
from fewshot_bench.search.tune import (
    PRUNERS,
    SAMPLERS,
    Pruning,
    SearchReport,
    SearchRequest,
    budget_text,
    load_study,
    plot_study,
    steps_trained,
    storage_path,
    study_names,
    trial_budget,
    trials_table,
)
from fewshot_bench.workflows import NOT_TUNE_SETTINGS, search_request, tune

SETTINGS = settings_names(without=NOT_TUNE_SETTINGS)  # a trial is scored on validation: no test-time settings
NOTES = {"budget": "per trial", "val_episodes": "early stopping and the trial's score",
         "overrides": "fixed, not searched"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tune`` parser."""
    p = sub.add_parser("tune", help="search a learner's hyperparameters on the validation split (resumable)",
                       description=__doc__)
    p.add_argument("action", nargs="?", choices=["show"], help="show: report a study (trials, best config, plot)")
    p.add_argument("--learner", help="learner name (see `fewshot-bench learners`)")
    p.add_argument("--trials", type=int, default=20,
                   help="completed trials the study should have in all (default 20; a rerun with more extends it)")
    p.add_argument("--sampler", choices=SAMPLERS, default="random", help="random search (default, as the paper) or tpe")
    p.add_argument("--score", choices=["best", "last"], default="best",
                   help="a trial's score: its best validation score (default, the paper's) or the last one "
                        "(favours hyperparameters that stay good to the end of training)")
    p.add_argument("--pruner", choices=PRUNERS, default="none",
                   help="stop a trial at a validation where it is worse than the finished trials "
                        "(median, or hyperband: successive halving); none (default): every trial runs its budget")
    p.add_argument("--pruner-warmup", type=int, metavar="N",
                   help="never prune a trial at its first N validations (default 0)")
    p.add_argument("--pruner-startup", type=int, metavar="N",
                   help="median: prune only once N trials have completed (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's run (default 0)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                   help=f"search KEY over SPEC instead of the learner's range ({SPEC_HELP}; repeatable)")
    add_settings_options(p, SETTINGS, notes=NOTES)
    p.add_argument("--study", help="show: the study's name (or a unique prefix) instead of --learner/--dataset/...")
    add_executor_options(p)
    add_place_options(p)
    add_tracking_options(p)
    p.add_argument("--report", action="store_true", help="after the search, print the trials table and the best config")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw validation score over trials and per hyperparameter")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")
    p.set_defaults(handler=handle)


def search_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`fewshot_bench.workflows.search_request`'s options from the command line."""
    return {"space": args.space, "sampler": args.sampler, "seed": args.seed, "score": args.score,
            "pruner": args.pruner, "pruner_warmup": args.pruner_warmup, "pruner_startup": args.pruner_startup,
            **settings_from_args(args, SETTINGS)}


def handle(args: argparse.Namespace) -> int:
    """Run (or extend, or resume) a study; or show one."""
    if args.action == "show":
        return show(args)
    quiet = args.json or args.quiet

    planned: list[SearchRequest] = []

    def announce(request: SearchRequest) -> None:
        planned.append(request)
        if not quiet:
            print_plan(request, args.trials)

    report = tune(
        args.learner, trials=args.trials, store=args.store, data_dir=args.data_dir, checkpoint_dir=args.checkpoint_dir,
        executor=args.executor, workers=args.workers, ray_address=args.ray_address, slurm=slurm_from_args(args),
        device=args.device,
        progress=progress_enabled(args), host=host_from_args(args, warn=True), on_request=announce,
        tracking=tracking_from_args(args), **search_options(args),
    )
    print_report(args, report, planned[0])
    if args.report or args.plot:
        study = load_study(args.store, report.study)
        if args.report and not args.json:
            print_table(trials_table(study))
        if args.plot:
            path = plot_study(study, args.plot)
            if not args.json:
                print(f"plot: {path}")
    if report.failed:
        number, error = report.failed[0]
        raise FewshotBenchError(
            f"{len(report.failed)} trial(s) failed (first: trial {number}: {error}); completed trials are stored, "
            "run the same command to go on"
        )
    return 0


def print_plan(request: SearchRequest, trials: int) -> None:
    """What the search will do: its study, trials, budget and score; what it searches and fixes."""
    base = request.base
    print(f"tune {request.learner} on {request.dataset}, {base.way}-way {base.shot}-shot: study "
          f"{request.study_name}, {trials} trials ({request.sampler} search, seed {request.seed}); "
          f"per trial {budget_text(trial_budget(base))}, scored by its {request.score} validation "
          f"{metric_name(request.metric)} (the test split is not read)"
          + ("" if request.pruning.kind == "none" else f"; {request.pruning.text()}"))
    print("searching: " + ", ".join(f"{k}={p.text()}" for k, p in sorted(request.space.items()))
          + ("; fixed: " + ", ".join(f"{k}={v}" for k, v in sorted(base.overrides.items()))
             if base.overrides else ""))


def print_report(args: argparse.Namespace, report: SearchReport, request: SearchRequest) -> None:
    """The search's summary: a JSON line, or what it ran, the best trial and how to use it."""
    if args.json:
        print_json({"study": report.study, "storage": report.storage, "complete": report.complete,
                    "pruned": report.pruned, "ran": report.ran, "resumed": report.resumed, "failed": len(report.failed),
                    "best": report.best, "store": str(args.store)})
    elif not args.quiet:
        pruned = f", {report.pruned} pruned" if report.pruned else ""
        print(f"done: {report.ran} trial(s) run, {report.complete} complete{pruned} in study {report.study} "
              f"({report.storage}); trials stored in {args.store}")
        if report.best:
            values = " ".join(f"--set {k}={v}" for k, v in report.best["values"].items())
            score = metric_text(request.metric, report.best["value"])
            print(f"best: trial {report.best['trial']}, validation {score}: {values}")
            print(f"use it: fewshot-bench run --learner {request.learner} --dataset {request.dataset} "
                  f"--way {request.base.way} --shot {request.base.shot} --hparams tuned")


def show(args: argparse.Namespace) -> int:
    """``tune show``: the trials table, the best config and (``--plot``) the plot of a study."""
    if args.study is None:
        if not args.learner:
            raise ConfigError("tune show needs --study NAME or --learner NAME (with --dataset/--way/--shot)")
        name = search_request(args.learner, host=host_from_args(args), **search_options(args)).study_name
        if name not in study_names(args.store):
            others = [n for n in study_names(args.store) if n.startswith(f"{args.learner}-")]
            raise ConfigError(f"no study {name} beside {args.store}; "
                              f"studies of {args.learner}: {', '.join(others) or 'none'}"
                              " (show one with --study NAME)")
    else:
        name = args.study
    study = load_study(args.store, name)
    rows = trials_table(study)
    complete = [row for row in rows if row["state"] == "complete"]
    pruned = [row for row in rows if row["state"] == "pruned"]
    best = study.best_trial if complete else None
    definition = study.user_attrs.get("definition", {})
    metric = "accuracy" if study.direction.name == "MAXIMIZE" else "mse"  # regression, the one minimised metric
    took, full = steps_trained(study)
    if args.json:
        print_json({
            "study": study.study_name, "storage": str(storage_path(args.store)), "definition": definition,
            "trials": rows, "steps": {"trained": took, "without pruning": full}, "best": None if best is None else
            {"trial": best.number, "value": best.value, "params": best.params, "run_id": best.user_attrs.get("run_id")},
        })
    else:
        print(f"study {study.study_name} ({storage_path(args.store)}): "
              f"{len(complete)} complete{f', {len(pruned)} pruned' if pruned else ''} of {len(rows)} trial(s)")
        if definition:
            b = definition.get("budget", {})
            print(f"  {definition.get('learner')} on {definition.get('dataset')}, {definition.get('way')}-way "
                  f"{definition.get('shot')}-shot; {definition.get('sampler')} search, seed {definition.get('seed')}, "
                  f"score {definition.get('score', 'best')} validation {metric_name(metric)}; "
                  f"per trial {budget_text(b) if b else '?'}"
                  + (f"; {Pruning(**definition['pruner']).text()}" if "pruner" in definition else ""))
            print("  space: " + ", ".join(f"{k}={v}" for k, v in definition.get("space", {}).items())
                  + ("; fixed: " + ", ".join(f"{k}={v}" for k, v in definition["fixed"].items())
                     if definition.get("fixed") else ""))
        print_table(rows)
        if "pruner" in definition:
            saved = f", {1 - took / full:.0%} fewer than without pruning ({full:,})" if full else ""
            print(f"meta-training steps: {took:,}{saved}")
        if best is not None:
            print(f"best: trial {best.number}, validation {best.value:.4f} (run {best.user_attrs.get('run_id', '-')}): "
                  + " ".join(f"{k}={v!r}" for k, v in sorted(best.params.items())))
    if args.plot:
        path = plot_study(study, args.plot)
        if not args.json:
            print(f"plot: {path}")
    return 0
