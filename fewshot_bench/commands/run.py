"""``fewshot-bench run``: one learner, one setting, one seed, end to end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fewshot_bench import preflight
from fewshot_bench.api.tasks import task_kind
from fewshot_bench.commands.common import (
    add_budget_options,
    add_data_option,
    add_store_option,
    budget_fields,
    data_dir,
    host_from_args,
    print_json,
    print_table,
    progress_enabled,
    progress_every,
)
from fewshot_bench.config import parse_assignments
from fewshot_bench.errors import ConfigError
from fewshot_bench.log_hold import hold_logs, release_logs
from fewshot_bench.plugins import PluginHost
from fewshot_bench.provenance import resolve_device
from fewshot_bench.runner import BUDGETS, RunContext, RunSpec, execute
from fewshot_bench.threads import requested_threads
from fewshot_bench.tune import with_tuned


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` parser."""
    p = sub.add_parser("run", help="meta-train and evaluate one learner", description=__doc__)
    p.add_argument("--learner", required=True, help="learner name (see `fewshot-bench learners`)")
    p.add_argument("--dataset", default="synthetic", help="dataset name (default: synthetic)")
    p.add_argument("--way", type=int, help="classes per episode N (default 5; 1 for regression)")
    p.add_argument("--shot", type=int, help="support examples per class K (default 1, or the dataset's own, e.g. 5 for sines-lines)")
    p.add_argument("--seed", type=int, default=0, help="seed of the run: initialisation, noise and episodes")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="quick",
                   help="quick (default: 1,000 steps, 2,000 test episodes) or paper (100,000 steps, 50,000 episodes)")
    add_budget_options(p)
    p.add_argument("--train-on-val", action="store_true", help="meta-train on train + val classes (paper stage 3); early-stop on val")
    p.add_argument("--hparams", help="hyperparameter preset of the learner, e.g. paper or reference (LEO), "
                   "or tuned[:STUDY] (the best trial of `fewshot-bench tune`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the learner's Config (repeatable)")
    p.add_argument("--crop", default="center", help="feature crop for datasets that have several (center|multiview)")
    add_data_option(p)
    add_store_option(p)
    p.add_argument("--checkpoint-dir", type=Path, help="where in-progress checkpoints go (default: beside the store)")
    p.add_argument("--restart", action="store_true",
                   help="delete this run's checkpoint (unread) and meta-train from the start instead of resuming")
    p.add_argument("--rerun", action="store_true",
                   help="run again even if the store has this run (same run key); the new run replaces the stored one")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", metavar="N|auto",
                   help="torch intra-op threads (default: $FEWSHOT_BENCH_THREADS, else auto: 1 for small models, "
                        "the free cores for big meta-batches; recorded with the run)")
    p.add_argument("--profile", action="store_true", help="print where the run's time went")
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="on CUDA, run every meta-training step eagerly instead of replaying a captured CUDA graph")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(handler=handle)


def episode_shape(args: argparse.Namespace, host: PluginHost | None) -> tuple[int, int]:
    """(N, K) from ``--way``/``--shot``, defaulting to 5-way 1-shot or to what the dataset's task kind fixes."""
    way, shot = args.way, args.shot
    if host is None:
        return (5 if way is None else way), (1 if shot is None else shot)
    dataset = host.dataset(args.dataset)
    fixed = task_kind(dataset.kind).fixed_way
    if fixed is not None and way not in (None, fixed):
        raise ConfigError(f"{dataset.name} is a {dataset.kind} dataset with {fixed}-way episodes; drop --way {way}")
    way = way if way is not None else (fixed or 5)
    shot = shot if shot is not None else (dataset.default_shot or 1)
    return way, shot


def spec_from_args(args: argparse.Namespace, host: PluginHost | None = None) -> RunSpec:
    """A RunSpec from parsed arguments, budget and dataset defaults filled in."""
    way, shot = episode_shape(args, host)
    spec = RunSpec(
        learner=args.learner,
        dataset=args.dataset,
        way=way,
        shot=shot,
        seed=args.seed,
        train_on_val=args.train_on_val,
        hparams=args.hparams,
        overrides=parse_assignments(args.overrides),
        crop=args.crop,
        **budget_fields(args),
    )
    return spec


def handle(args: argparse.Namespace) -> int:
    """Run one learner and report its metric (accuracy, or query MSE for regression)."""
    hold_logs()  # notes logged while checking (a preset's fallback) are dropped if a check fails: one line
    host = host_from_args(args, warn=True)
    spec = with_tuned(spec_from_args(args, host), args.store, host)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # inner loops can produce subnormals: ~100x slower on CPU
    host.learner(spec.learner)  # fail fast on an unknown learner
    requested_threads(args.threads)  # and on a malformed --threads or $FEWSHOT_BENCH_THREADS
    ctx = RunContext(
        host=host,
        store_path=args.store,
        data_dir=data_dir(args),
        device=device,
        checkpoint_dir=args.checkpoint_dir or args.store.resolve().parent / "fewshot-checkpoints",
        progress=progress_enabled(args),
        progress_every=progress_every(args),
        profile=args.profile,
        cuda_graph=args.cuda_graph,
        restart=args.restart,
        threads=args.threads,
    )
    # Everything the command line, the config, the store and the checkpoint folder can tell, before any work.
    run_key = preflight.prepare(spec, ctx)
    stored = None if args.rerun else preflight.stored_run(args.store, run_key)
    release_logs()
    if stored is not None:  # one run key, one complete row: reuse it
        print(f"fewshot-bench: run {stored.run_id} in {args.store} is this run (run key {run_key}); "
              "reusing it (--rerun runs it again)", file=sys.stderr)
        out = {**stored.to_json(), "run_id": stored.run_id}
    else:
        if not args.json and not args.quiet:
            print(
                f"{spec.learner} on {spec.dataset}, {spec.way}-way {spec.shot}-shot, seed {spec.seed}; "
                f"budget {args.budget}: {spec.steps:,} meta-training steps, {spec.episodes:,} test episodes"
                + ("" if args.budget == "paper" else " (the paper's protocol: --budget paper)")
            )
        out = execute(spec, ctx, rerun=args.rerun)
        if out.get("stored_by_other"):
            print(f"fewshot-bench: another process stored this run first as {out['run_id']}; kept that row", file=sys.stderr)
    # The record's "accuracy" column holds the task kind's main metric; report it by its name.
    metric = out["summary"].get("metric", "accuracy")
    result = {
        "run_id": out["run_id"],
        "learner": out["learner"],
        "dataset": out["dataset"],
        "way": out["way"],
        "shot": out["shot"],
        "seed": out["seed"],
        metric: out["accuracy"],
        "ci95": out["ci95"],
        "episodes": out["episodes"],
        "steps": out["summary"]["train"].get("steps", 0),
        f"best_val_{metric}": out["summary"]["train"].get("best_val_accuracy"),
        "store": str(args.store),
    }
    if args.profile and not args.json:
        print_table(out["timings"].get("profile", []))
    if args.json:
        if args.profile:
            result["profile"] = out["timings"].get("profile", [])
        print_json(result)
    else:
        headline = (
            f"accuracy {100 * result[metric]:.2f}% ± {100 * result['ci95']:.2f}%"
            if metric == "accuracy"
            else f"query {metric.upper()} {result[metric]:.4f} ± {result['ci95']:.4f}"
        )
        print(f"{headline} (95% CI over {result['episodes']:,} episodes); run {result['run_id']} stored in {args.store}")
    return 0
