"""``fewshot-bench run``: one learner, one setting, one seed, end to end."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from fewshot_bench.commands.common import (
    add_place_options,
    add_settings_options,
    add_tracking_options,
    host_from_args,
    print_json,
    print_table,
    progress_enabled,
    progress_every,
    settings_from_args,
    settings_names,
    tracking_from_args,
)
from fewshot_bench.console.log_hold import hold_logs, release_logs
from fewshot_bench.errors import ConfigError
from fewshot_bench.protocol.spec import parse_seeds
from fewshot_bench.records.stats import seeds_summary_text, stop_text, summarize_seeds
from fewshot_bench.reports.combining import seeds_text
from fewshot_bench.workflows import CheckedRun, RunResult, run

SETTINGS = settings_names()  # every setting of a run (fewshot_bench.protocol.spec.RunSettings) is an option


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` parser."""
    p = sub.add_parser("run", help="meta-train and evaluate one learner", description=__doc__)
    p.add_argument("--learner", required=True, help="learner name (see `fewshot-bench learners`)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="seed of the run: initialisation, noise and episodes")
    seeds.add_argument("--seeds", type=seed_range, metavar="A-B|A,B,...",
                       help="one run per seed (e.g. 0-4), stored as separate runs would be; the seeds not stored yet "
                            "meta-train together as one population")
    p.add_argument("--population", choices=("on", "off"), default="on",
                   help="with --seeds: train the seeds as one batched population (on, default) or one after another")
    p.add_argument("--population-size", type=int, metavar="S",
                   help="with --seeds: at most S seeds per population (split a population that would not fit)")
    add_settings_options(p, SETTINGS)
    add_place_options(p)
    p.add_argument("--restart", action="store_true",
                   help="delete this run's checkpoint (unread) and meta-train from the start instead of resuming")
    p.add_argument("--rerun", action="store_true",
                   help="run again even if the store has this run (same run key); the new run replaces the stored one")
    p.add_argument("--threads", metavar="N|auto|free",
                   help="torch intra-op threads, N for meta-training and evaluation alike (default: "
                        "$FEWSHOT_BENCH_THREADS, else auto: each phase chooses from the cores and its work's size, "
                        "never the load: 1 for small meta-training steps, all the cores for big ones and for "
                        "evaluating many episodes; free: the same but the cores other processes leave free, so the "
                        "result may depend on the machine's load; recorded with the run)")
    p.add_argument("--profile", action="store_true", help="print where the run's time went")
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="on CUDA, run every meta-training step eagerly instead of replaying a captured CUDA graph")
    add_tracking_options(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(handler=handle)


def seed_range(text: str) -> range | list[int]:
    """``A-B`` (inclusive, a range: never a list) or ``A,B,...``: distinct non-negative seeds (an argparse type).

    How many is checked with the other settings (``--allow-large``): :func:`fewshot_bench.workflows.check_seeds`.
    """
    try:
        seeds = parse_seeds(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed range like 0-4 or a list like 0,1,2") from None
    lowest = seeds.start if isinstance(seeds, range) else min(seeds, default=0)  # min() would walk a range
    repeated = not isinstance(seeds, range) and len(set(seeds)) != len(seeds)
    if not seeds or lowest < 0 or repeated:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more distinct seeds, e.g. 0-4")
    return seeds


def protocol_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's learner, seed and settings (:func:`fewshot_bench.workflows.run_spec`) from parsed arguments."""
    seed = {} if getattr(args, "seeds", None) is not None else {"seed": args.seed}
    return {"learner": args.learner, **seed, **settings_from_args(args, SETTINGS)}


def handle(args: argparse.Namespace) -> int:
    """Run one learner and report its metric (accuracy, or query MSE for regression)."""
    hold_logs()  # notes logged while checking (a preset's fallback) are dropped if a check fails: one line

    def announce(checked: CheckedRun) -> None:
        release_logs()
        spec = checked.spec
        if checked.stored is not None:
            print(f"fewshot-bench: run {checked.stored.run_id} in {args.store} is this run "
                  f"(run key {checked.run_key}); reusing it (--rerun runs it again)", file=sys.stderr)
        elif not args.json and not args.quiet:
            training = (f"{spec.steps:,} meta-training steps" if checked.meta_trained
                        else f"no meta-training ({spec.learner} has none)" if spec.steps else "no meta-training")
            print(
                f"{spec.learner} on {spec.dataset}, {spec.way}-way {spec.shot}-shot, seed {spec.seed}; "
                f"budget {args.budget}: {training}, {spec.episodes:,} test episodes"
                + ("" if args.budget == "paper" else " (the paper's protocol: --budget paper)")
            )

    outs = run(
        **protocol_of(args), store=args.store, data_dir=args.data_dir, checkpoint_dir=args.checkpoint_dir,
        device=args.device, threads=args.threads, rerun=args.rerun, restart=args.restart, profile=args.profile,
        cuda_graph=args.cuda_graph, progress=progress_enabled(args), progress_every=progress_every(args),
        host=host_from_args(args, warn=True), on_checked=announce, seeds=args.seeds,
        population=args.population == "on", population_size=args.population_size,
        tracking=tracking_from_args(args),
    )
    results = [report_run(args, out) for out in outs] if args.seeds else report_run(args, outs)
    if args.seeds and not args.json:
        first = outs[0]
        print(f"seeds {seeds_text(out.seed for out in outs)}: {'accuracy ' if first.metric == 'accuracy' else ''}"
              f"{seeds_summary_text(first.metric, [out.mean for out in outs])} (mean ± std over {len(outs)} "
              "seed(s) of each run's mean, the paper's statistic)")
    if args.seeds and not args.json and not args.quiet:
        report_population(outs)
    if args.json:
        over_seeds = {"over_seeds": asdict(summarize_seeds([out.mean for out in outs]))} if args.seeds else {}
        print_json({"runs": results, **over_seeds} if args.seeds else results)
    return 0


def report_population(outs: list[RunResult]) -> None:
    """One line per population the seeds just computed trained in: its size, path and peak memory."""
    seen = []
    for out in outs:
        timings = out.provenance["timings"]
        pop = timings.get("population")
        if out.reused or not pop or "peak_bytes" not in pop:
            continue
        ident = (timings.get("train_s"), pop["peak_bytes"], pop["members"])  # the same for every member of one
        if ident in seen:
            continue
        seen.append(ident)
        why = f" ({pop['why_sequential']})" if pop.get("why_sequential") else ""
        groups = pop.get("groups") or []
        if len(groups) > 1:  # memory was short: the groups trained one after another
            why += (f" in {len(groups)} groups of {', '.join(map(str, groups))} (about "
                    f"{pop['member_bytes'] / 2**20:,.0f} MiB a member, {pop['budget_bytes'] / 2**20:,.0f} MiB to use)")
        print(f"population of {pop['members']} seed(s), {pop['path']}{why}: peak memory "
              f"{pop['peak_bytes'] / 2**20:,.0f} MiB ({pop['peak_source']}); parameters, gradients and Adam state "
              f"{pop['parameter_bytes'] / 2**20:,.1f} MiB", file=sys.stderr)


def report_run(args: argparse.Namespace, out: RunResult) -> dict[str, Any]:
    """Print one stored run's metric (unless --json); returns what --json prints of it."""
    if out.stored_by_other:
        print(f"fewshot-bench: another process stored this run first as {out.run_id}; kept that row", file=sys.stderr)
    result = {
        "run_id": out.run_id,
        "learner": out.learner,
        "dataset": out.dataset,
        "way": out.way,
        "shot": out.shot,
        "seed": out.seed,
        out.metric: out.mean,
        "ci95": out.ci95,
        "episodes": len(out.per_episode),
        "steps": out.steps,
        f"best_val_{out.metric}": out.best_val,
        "data_id": out.data_id,
        "stopped_early": bool(out.summary.get("train", {}).get("stopped_early")),
        "store": str(args.store),
    }
    profile = out.provenance["timings"].get("profile", [])
    if args.profile and not args.json:
        print_table(profile)
    if args.json:
        if args.profile:
            result["profile"] = profile
    else:
        headline = (
            f"accuracy {100 * out.mean:.2f}% ± {100 * out.ci95:.2f}%"
            if out.metric == "accuracy"
            else f"query {out.metric.upper()} {out.mean:.4f} ± {out.ci95:.4f}"
        )
        seed = f"seed {out.seed}: " if args.seeds else ""
        episodes = f"95% CI over {result['episodes']:,} episodes"
        print(f"{seed}{headline} ({episodes}); run {out.run_id} stored in {args.store}")
        stopped = stop_text(out.summary.get("train", {}), out.options["steps"], out.options.get("patience"))
        if stopped:
            print(f"{seed}{stopped}")
    return result
