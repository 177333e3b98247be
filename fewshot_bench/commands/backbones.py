"""``fewshot-bench backbones``: list the installed feature backbones and their options."""

from __future__ import annotations

import argparse

from fewshot_bench.backbones.checkpoint import backbone_options
from fewshot_bench.commands.common import host_from_args, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``backbones`` parser."""
    p = sub.add_parser("backbones", help="list feature backbones (for pretrain / embed)", description=__doc__)
    p.add_argument("--json", action="store_true", help="print the list as one JSON object")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print one row per backbone: name, distribution and its --set options with defaults."""
    host = host_from_args(args)
    rows = []
    for name in sorted(host.backbones):
        reg = host.backbones[name]
        try:
            opts = ", ".join(f"{k}={v}" for k, v in backbone_options(reg.obj).items())
        except (TypeError, ValueError):  # a factory without an inspectable signature
            opts = "?"
        rows.append({"backbone": name, "distribution": reg.plugin.distribution, "options (--set)": opts})
    if args.json:
        print_json({"backbones": rows})
    else:
        print_table(rows)
    return 0
