"""``fewshot-bench compare A B``: the paired per-episode difference between two learners on the same test episodes.

Only runs made under one protocol are paired (same steps, test episodes and queries,
validation, preset, train-on-val and crop); with several in the store, the one with the
most paired seeds is used and named; ``--protocol ID`` or ``--steps N`` picks another.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from fewshot_bench.commands.common import (
    add_protocol_options,
    add_store_option,
    comma_list,
    datasets_of,
    host_from_args,
    print_json,
    print_table,
)
from fewshot_bench.reports.combining import TRANSDUCTIVE_NOTE, mark, overrides_text, parse_learner_overrides, seeds_text
from fewshot_bench.workflows import compare


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` parser."""
    p = sub.add_parser("compare", help="paired difference of two learners on the same test episodes",
                       description=__doc__)
    p.add_argument("a", help="first learner")
    p.add_argument("b", help="second learner")
    p.add_argument("--dataset", action="append", type=comma_list, metavar="NAME[,NAME]", help="only these datasets")
    p.add_argument("--shot", type=int, help="only this shot K")
    p.add_argument("--way", type=int, help="only this way N")
    add_protocol_options(p, data=True)
    add_store_option(p)
    p.add_argument("--json", action="store_true", help="print JSON (with every seed's pair and the protocol)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print, per setting, A - B with its 95% CI and how many seeds agree on the sign; then the protocol and
    runs used."""
    report = compare(
        args.a, args.b, datasets=datasets_of(args), shot=args.shot, way=args.way, steps=args.steps,
        protocol=args.protocol, overrides=parse_learner_overrides(args.overrides), store=args.store,
        host=host_from_args(args) if args.dataset else None, data=args.data,
    )
    results = report.comparisons
    if args.json:
        extra = {
            **report.selection.to_json(),
            "overrides_a": report.overrides_a, "overrides_b": report.overrides_b,
            "transductive_a": report.transductive_a, "transductive_b": report.transductive_b, "notes": report.notes,
        }
        print_json([asdict(r) | {"agree": r.agree} | extra for r in results])
        return 0

    def name(learner: str, overrides: dict[str, str], transductive: bool) -> str:
        return mark(learner, transductive) + (f" [{overrides_text(overrides)}]" if overrides else "")

    a = name(args.a, report.overrides_a, report.transductive_a)
    b = name(args.b, report.overrides_b, report.transductive_b)
    print_table(
        {
            "dataset": r.dataset + ("" if r.crop == "center" else f" ({r.crop})"),
            "way": r.way,
            "shot": r.shot,
            "seeds": seeds_text(p.seed for p in r.seeds),
            "episodes": f"{r.episodes:,}",
            a: f"{100 * r.mean_a:.2f}%",
            b: f"{100 * r.mean_b:.2f}%",
            f"{a} - {b}": difference_text(r.diff, r.ci95),
            "same sign": f"{r.agree}/{len(r.seeds)} seeds",
        }
        for r in results
    )
    print("difference: mean over paired test episodes (points), ± half-width of its 95% CI (shown to the first "
          "digit that is not 0)")
    if any(r.ci95 == 0 for r in results):
        print("± 0: every paired episode differs by exactly the same amount (often 0: both learners predicted "
              "alike on every episode), so the mean has no spread to show")
    print(report.selection.note())
    for note in report.notes:
        print(note)
    pairs = sum(len(r.seeds) for r in results)
    print(f"runs used: {pairs} pair(s) of {args.a} and {args.b} runs; --json lists every pair's run ids")
    if report.transductive_a or report.transductive_b:
        print(TRANSDUCTIVE_NOTE)
    return 0


def difference_text(diff: float, ci95: float) -> str:
    """``+1.67 ± 0.42`` in points, with as many decimals as the half-width needs to show its first digit (up to
    6): ``+0.0031 ± 0.0012``, never ``± 0.00`` for a spread that is there; ``± 0`` for none at all."""
    d, c = 100 * diff, 100 * ci95
    if c == 0:
        return f"{d:+.2f} ± 0"
    decimals = 2
    while round(c, decimals) == 0 and decimals < 6:
        decimals += 1
    return f"{d:+.{decimals}f} ± {c:.{decimals}f}"
