"""``fewshot-bench table 1|2``: the LEO paper's Table 1 or 2 from the results store, ours beside the paper's."""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot_bench.commands.common import add_store_option, host_from_args
from fewshot_bench.commands.sweep import comma_list
from fewshot_bench.plugins import PluginHost
from fewshot_bench.protocols import parse_learner_overrides
from fewshot_bench.report import FORMATS, build_cells, plot, render
from fewshot_bench.store import ResultStore
from fewshot_bench.tables import PAPER_DATASETS, get_table, settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``table`` parser."""
    p = sub.add_parser("table", help="render Table 1 or 2 from the store beside the paper's numbers", description=__doc__)
    p.add_argument("number", choices=["1", "2"], help="which table of the LEO paper")
    p.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default markdown)")
    p.add_argument("--dataset", action="append", type=comma_list, metavar="NAME[,NAME]",
                   help="dataset(s) replacing miniImageNet and tieredImageNet (as given to `sweep`)")
    p.add_argument("--crop", default="center", help="feature crop the runs used (center|multiview; default center)")
    add_protocol_options(p, episodes=True)
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the table as a grouped bar chart")
    add_store_option(p)
    p.set_defaults(handler=handle)


def add_protocol_options(parser: argparse.ArgumentParser, episodes: bool = False) -> None:
    """``--protocol ID``, ``--steps N`` (and ``--episodes N``) and ``--set LEARNER.KEY=VALUE``: which stored runs to combine."""
    parser.add_argument("--protocol", metavar="ID",
                        help="use runs of this protocol (id or unique prefix, as `fewshot-bench results` shows; default: chosen and named in the output)")
    parser.add_argument("--steps", type=int, help="only runs meta-trained for this many steps")
    if episodes:
        parser.add_argument("--episodes", type=int, help="only runs evaluated on this many test episodes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="LEARNER.KEY=VALUE",
                        help="use the learner's runs made with this --set override (repeatable; default: runs with its defaults)")


def dataset_names(host: PluginHost, name: str) -> set[str]:
    """Every name a dataset goes by (its canonical name and aliases), lower-cased."""
    names = {name.lower()}
    try:
        spec = host.dataset(name)
    except Exception:  # not installed here: the store may still hold its runs under this name
        return names
    return names | {spec.name.lower(), *(a.lower() for a in spec.aliases)}


def handle(args: argparse.Namespace) -> int:
    """Render the table (and the plot) from the store."""
    table = get_table(args.number)
    host = host_from_args(args)
    names = lambda n: dataset_names(host, n)  # noqa: E731
    paper_of = lambda n: next((p for p in PAPER_DATASETS if names(n) & names(p)), None)  # noqa: E731
    chosen = [d for group in args.dataset or [] for d in group]
    cols = settings(table, chosen or None, paper_of)
    with ResultStore(args.store, create=False) as store:
        runs = store.runs()
    data = build_cells(
        table, cols, runs, lambda setting_ds, run_ds: run_ds.lower() in names(setting_ds),
        crop=args.crop, steps=args.steps, episodes=args.episodes, protocol=args.protocol,
        overrides=parse_learner_overrides(args.overrides),
    )
    print(render(table, data, cols, args.format, args.crop))
    if args.plot:
        plot(table, data.cells, cols, args.plot, data.selection.protocol.id if data.selection.protocol else None)
    return 0
