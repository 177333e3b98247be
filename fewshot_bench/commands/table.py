"""``fewshot-bench table 1|2``: the LEO paper's Table 1 or 2 from the results store, ours beside the paper's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fewshot_bench.commands.common import (
    add_protocol_options,
    add_store_option,
    comma_list,
    datasets_of,
    host_from_args,
)
from fewshot_bench.console.table_fit import terminal_width
from fewshot_bench.reports.combining import parse_learner_overrides
from fewshot_bench.reports.figure_files import figure_format
from fewshot_bench.reports.report import FORMATS
from fewshot_bench.workflows import table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``table`` parser."""
    p = sub.add_parser("table", help="render Table 1 or 2 from the store beside the paper's numbers",
                       description=__doc__)
    p.add_argument("number", choices=["1", "2"], help="which table of the LEO paper")
    p.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default markdown)")
    p.add_argument("--dataset", action="append", type=comma_list, metavar="NAME[,NAME]",
                   help="dataset(s) replacing miniImageNet and tieredImageNet (as given to `sweep`)")
    p.add_argument("--crop", default="center", help="feature crop the runs used (center|multiview; default center)")
    add_protocol_options(p, episodes=True, data=True)
    p.add_argument("--plot", type=Path, metavar="FILE.png|pdf|svg",
                   help="also draw the table as a grouped bar chart (format by the suffix), and print its path")
    add_store_option(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Render the table (and the plot) from the store."""
    if args.plot:
        figure_format(args.plot)  # a bad suffix is an error before anything is read or written
    result = table(
        args.number, datasets=datasets_of(args), crop=args.crop, steps=args.steps, episodes=args.episodes,
        protocol=args.protocol, overrides=parse_learner_overrides(args.overrides), store=args.store,
        host=host_from_args(args), data=args.data,
    )
    print(result.render(args.format, terminal_width()))
    if args.plot:
        # Machine formats keep stdout parseable: the path goes to stderr there.
        machine = args.format in ("json", "csv")
        print(f"table {args.number} plot written to {result.plot(args.plot)}", file=sys.stderr if machine else None)
    return 0
