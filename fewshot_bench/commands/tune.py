"""``fewshot-bench tune``: search a learner's hyperparameters on the validation split (the paper's
stage 2), resumably, on a local pool or Ray; ``tune show`` reports a study."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fewshot_bench.commands.common import (
    add_data_option,
    add_executor_options,
    add_store_option,
    host_from_args,
    print_json,
    print_table,
    progress_enabled,
)
from fewshot_bench.config import parse_assignments
from fewshot_bench.errors import ConfigError, FewshotBenchError
from fewshot_bench.protocol.runner import episode_shape
from fewshot_bench.protocol.spec import BUDGETS
from fewshot_bench.records.provenance import resolve_device
from fewshot_bench.search.executors import make_executor
from fewshot_bench.search.space import SPEC_HELP, parse_space
from fewshot_bench.search.tune import (
    PRUNERS,
    SAMPLERS,
    Budget,
    Pruning,
    executor_capacity,
    load_study,
    make_pruning,
    make_request,
    plot_study,
    search,
    steps_trained,
    storage_path,
    study_names,
    trials_table,
)
from fewshot_bench.workflows import worker_settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tune`` parser."""
    p = sub.add_parser("tune", help="search a learner's hyperparameters on the validation split (resumable)",
                       description=__doc__)
    p.add_argument("action", nargs="?", choices=["show"], help="show: report a study (trials, best config, plot)")
    p.add_argument("--learner", help="learner name (see `fewshot-bench learners`)")
    p.add_argument("--dataset", default="synthetic", help="dataset name (default: synthetic)")
    p.add_argument("--way", type=int, help="classes per episode N (default 5)")
    p.add_argument("--shot", type=int, help="support examples per class K (default 1)")
    p.add_argument("--trials", type=int, default=20,
                   help="completed trials the study should have in all (default 20; a rerun with more extends it)")
    p.add_argument("--sampler", choices=SAMPLERS, default="random", help="random search (default, as the paper) or tpe")
    p.add_argument("--score", choices=["best", "last"], default="best",
                   help="a trial's score: its best validation accuracy (default, the paper's) or the last one "
                        "(favours hyperparameters that stay good to the end of training)")
    p.add_argument("--pruner", choices=PRUNERS, default="none",
                   help="stop a trial at a validation where it is worse than the finished trials "
                        "(median, or hyperband: successive halving); none (default): every trial runs its budget")
    p.add_argument("--pruner-warmup", type=int, metavar="N",
                   help="never prune a trial at its first N validations (default 0)")
    p.add_argument("--pruner-startup", type=int, metavar="N",
                   help="median: prune only once N trials have completed (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial's run (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a Config key (not searched; repeatable)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                   help=f"search KEY over SPEC instead of the learner's range ({SPEC_HELP}; repeatable)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="quick",
                   help="per-trial budget: quick (default: 1,000 steps, validation every 250 on 200 episodes) or paper")
    p.add_argument("--steps", type=int, help="meta-training steps per trial (overrides --budget)")
    p.add_argument("--val-every", type=int, help="validate every N steps (overrides --budget)")
    p.add_argument("--val-episodes", type=int,
                   help="validation episodes: early stopping and the trial's score (overrides --budget)")
    p.add_argument("--patience", type=int, default=20,
                   help="validations without improvement before stopping (0: never)")
    p.add_argument("--crop", default="center", help="feature crop for datasets that have several (center|multiview)")
    p.add_argument("--study", help="show: the study's name (or a unique prefix) instead of --learner/--dataset/...")
    add_executor_options(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    add_data_option(p)
    add_store_option(p)
    p.add_argument("--report", action="store_true", help="after the search, print the trials table and the best config")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw validation score over trials and per hyperparameter")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")
    p.set_defaults(handler=handle)


def request_from_args(args: argparse.Namespace, host):
    """The checked search request of the command line (nothing written yet)."""
    if not args.learner:
        raise ConfigError("tune needs --learner NAME")
    way, shot = episode_shape(host, args.dataset, args.way, args.shot)
    return make_request(
        host, args.learner, args.dataset, way, shot,
        Budget.named(args.budget, args.steps, args.val_every, args.val_episodes, args.patience),
        space=parse_space(args.space), fixed=parse_assignments(args.overrides),
        sampler=args.sampler, seed=args.seed, crop=args.crop, score=args.score,
        pruning=make_pruning(args.pruner, args.pruner_warmup, args.pruner_startup),
    )


def handle(args: argparse.Namespace) -> int:
    """Run (or extend, or resume) a study; or show one."""
    if args.action == "show":
        return show(args)
    host = host_from_args(args, warn=True)
    request = request_from_args(args, host)
    if args.trials < 1:
        raise ConfigError("--trials must be at least 1")
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # for trials computed in this process (--workers 1)
    settings = worker_settings(args.store, args.data_dir, args.checkpoint_dir)
    checkpoint_dir = Path(settings.checkpoint_dir)
    quiet = args.json or args.quiet
    if not quiet:
        print(f"tune {request.learner} on {request.dataset}, {request.way}-way {request.shot}-shot: study "
              f"{request.study_name}, {args.trials} trials ({request.sampler} search, seed {request.seed}); "
              f"per trial {request.budget.text()}, scored by its {request.score} validation accuracy "
              "(the test split is not read)"
              + ("" if request.pruning.kind == "none" else f"; {request.pruning.text()}"))
        print("searching: " + ", ".join(f"{k}={p.text()}" for k, p in sorted(request.space.items()))
              + ("; fixed: " + ", ".join(f"{k}={v}" for k, v in sorted(request.fixed.items()))
                 if request.fixed else ""))
    executor = make_executor(args.executor, args.workers, settings, args.ray_address, str(device))
    report = search(request, host, args.store, args.trials, executor, executor_capacity(executor),
                    checkpoint_dir, progress_enabled(args), Path(settings.data_dir) if settings.data_dir else None)
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
            print(f"best: trial {report.best['trial']}, validation {100 * report.best['value']:.2f}%: {values}")
            print(f"use it: fewshot-bench run --learner {request.learner} --dataset {request.dataset} "
                  f"--way {request.way} --shot {request.shot} --hparams tuned")
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


def show(args: argparse.Namespace) -> int:
    """``tune show``: the trials table, the best config and (``--plot``) the plot of a study."""
    if args.study is None:
        if not args.learner:
            raise ConfigError("tune show needs --study NAME or --learner NAME (with --dataset/--way/--shot)")
        host = host_from_args(args)
        name = request_from_args(args, host).study_name
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
                  f"score {definition.get('score', 'best')} validation accuracy; "
                  f"per trial {Budget(**b).text() if b else '?'}"
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
