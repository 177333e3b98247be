"""``fewshot-bench check-plugin LEARNER``: run the conformance checks on an installed learner."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

from tqdm.auto import tqdm

from fewshot_bench.commands.common import host_from_args, print_json, print_table, progress_enabled
from fewshot_bench.errors import ConfigError, PluginError
from fewshot_bench.testing.checks import CHECKS, run_check
from fewshot_bench.testing.harness import CheckOptions


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``check-plugin`` parser."""
    p = sub.add_parser(
        "check-plugin",
        help="run the conformance checks on installed learners",
        description="Run the plugin conformance checks on installed learners; exits 1 naming each failing check. "
        "Checks: " + "; ".join(f"{c.name}: {c.summary}" for c in CHECKS.values()) + ".",
    )
    p.add_argument("learners", nargs="+", metavar="LEARNER", help="learner name(s) (see `fewshot-bench learners`)")
    p.add_argument("--only", action="append", choices=list(CHECKS), metavar="CHECK",
                   help=f"run only this check (repeatable): {', '.join(CHECKS)}")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="CPU budget of the cpu-budget check (default: $FEWSHOT_BENCH_CHECK_BUDGET or 120)")
    p.add_argument("--steps", type=int, metavar="N", help="meta-training steps of the meta-training check (default 30)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    p.set_defaults(handler=handle)


def options_from_args(args: argparse.Namespace) -> CheckOptions:
    """Check options with the command-line sizes applied."""
    opts = CheckOptions()
    if args.budget is not None:
        if args.budget <= 0:
            raise ConfigError("--budget must be a positive number of seconds")
        opts.cpu_budget_s = args.budget
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError("--steps must be at least 1")
        opts.train_steps = args.steps
    return opts


def handle(args: argparse.Namespace) -> int:
    """Run the checks on each learner, print a table (or JSON) and fail naming the failing checks."""
    opts = options_from_args(args)
    host = opts.host = host_from_args(args)
    targets = [(host.learner(name), host.learner_plugin(name)) for name in args.learners]  # unknown names fail here
    names = args.only or list(CHECKS)
    reports, failures = [], []
    for cls, plugin in targets:
        if not args.json and not args.quiet:
            print(f"checking learner {cls.name!r} from distribution {plugin.distribution!r} {plugin.version}")
        t0 = time.perf_counter()
        results = []
        for name in tqdm(names, desc=f"check {cls.name}", unit="check", disable=not progress_enabled(args),
                         leave=False):
            results.append(run_check(CHECKS[name], cls, opts))
        failed = [r.check for r in results if r.status == "failed"]
        if failed:
            failures.append(f"{cls.name!r} (distribution {plugin.distribution!r}) failed {', '.join(failed)}")
        reports.append(
            {
                "learner": cls.name,
                "distribution": plugin.distribution,
                "version": plugin.version,
                "passed": not failed,
                "seconds": round(time.perf_counter() - t0, 3),
                "checks": [{k: v for k, v in asdict(r).items() if k != "traceback"} for r in results],
            }
        )
        if not args.json:
            _print_report(results, args.verbose)
    if args.json:
        print_json({"passed": not failures, "learners": reports})
    if failures:
        raise PluginError("conformance checks failed: " + "; ".join(failures) + " (details above; -v shows tracebacks)")
    return 0


def _print_report(results: list, verbose: bool) -> None:
    print_table(
        {"check": r.check, "result": r.status.upper() if r.status == "failed" else r.status,
         "seconds": f"{r.seconds:.2f}", "detail": r.detail}
        for r in results
    )
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "skipped", "failed")}
    print(f"{len(results)} checks: {counts['passed']} passed, {counts['skipped']} skipped, {counts['failed']} failed\n")
    if verbose:
        for r in results:
            if r.traceback:
                print(f"--- traceback of {r.check} ---\n{r.traceback}", file=sys.stderr)
