"""``fewshot-bench rekey``: give runs stored before data ids the id of their data, when that data is unchanged.

Runs stored by a fewshot-bench older than data ids have run keys without the data, so new
runs never reuse them and tables show their data as ``unknown``. If the files they read are
still the same, ``rekey`` gives them the current data's id (and the keys a run on it gets).
"""

from __future__ import annotations

import argparse

from fewshot_bench.commands.common import add_data_option, add_store_option, data_dir, host_from_args
from fewshot_bench.workflows import rekey


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``rekey`` parser."""
    p = sub.add_parser("rekey", help="give runs stored before data ids the id of their (unchanged) data",
                       description=__doc__)
    p.add_argument("--dataset", required=True, help="the dataset whose runs to re-key (as given to `run`)")
    add_data_option(p)
    p.add_argument("--crop", default="center", help="the crop of the runs to re-key (default center)")
    p.add_argument("--dry-run", action="store_true", help="say what would be re-keyed, change nothing")
    add_store_option(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Re-key the dataset's runs that have no data id, and say how many and what was left."""
    result = rekey(args.dataset, data_dir=data_dir(args), crop=args.crop, store=args.store, dry_run=args.dry_run,
                   host=host_from_args(args))
    verb = "would re-key" if args.dry_run else "re-keyed"
    print(f"{verb} {len(result.rekeyed)} run(s) of {result.dataset} to data {result.data_id[:8]} in {args.store}")
    if result.taken:
        print(f"left {len(result.taken)} run(s) whose new key is stored already (a run made since): "
              + ", ".join(result.taken))
    for folder, run_ids in result.elsewhere.items():
        print(f"left {len(run_ids)} run(s) that read {folder}: re-key them with --data-dir {folder} if it holds "
              "the same data")
    return 0
