"""``fewshot-bench report --html OUT.html``: one self-contained HTML page of what the store holds.

Table 1 and Table 2 as the store fills them (on the datasets the store's runs used, or --dataset),
with their bar charts; the paired comparison of LEO and Meta-SGD (--compare A,B for others); the
learning curves of each protocol; and figure files given with --figure (PNG or SVG, e.g. from
`fewshot-bench figure 4 --out fig4.png`). Every number carries its provenance (run ids, protocol,
data id, versions) as a hover title and a numbered note. Images are inlined: the file opens offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot_bench.commands.common import add_store_option, comma_list, host_from_args
from fewshot_bench.errors import ConfigError
from fewshot_bench.report_page import DEFAULT_PAIRS, ReportRequest, write_report


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` parser."""
    p = sub.add_parser("report", help="write one self-contained HTML page of the store's tables, comparisons and "
                                      "curves", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--html", type=Path, required=True, metavar="OUT.html", help="the HTML file to write")
    add_store_option(p)
    p.add_argument("--dataset", action="append", type=comma_list, metavar="NAME[,NAME]",
                   help="the tables' datasets (default: the ones the store's runs used, else mini and tiered)")
    p.add_argument("--compare", action="append", type=comma_list, metavar="A,B",
                   help="a pair of learners to compare (repeatable; default leo,metasgd)")
    p.add_argument("--figure", action="append", type=Path, default=[], metavar="FILE",
                   help="a figure file (PNG or SVG) to include (repeatable)")
    p.add_argument("--title", default="fewshot-bench report", help="the page's title")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Write the page and print its path."""
    pairs = [tuple(pair) for pair in args.compare] if args.compare else list(DEFAULT_PAIRS)
    bad = [",".join(pair) for pair in pairs if len(pair) != 2]
    if bad:
        raise ConfigError(f"--compare takes two learners A,B, not {bad[0]!r}")
    request = ReportRequest(
        store=args.store, datasets=[d for group in args.dataset for d in group] if args.dataset else None,
        pairs=pairs, figures=list(args.figure), title=args.title,
    )
    out = write_report(args.html, request, host_from_args(args))
    print(f"report written to {out}")
    return 0
