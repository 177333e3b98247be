"""``fewshot-bench learners | datasets | plugins``: what is installed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict

from fewshot_bench.commands.common import host_from_args, print_json, print_table
from fewshot_bench.console.listing_cache import print_cached, warm


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``learners``, ``datasets`` and ``plugins`` parsers."""
    for name, handler, help_ in (
        ("learners", learners, "list installed learners"),
        ("datasets", datasets, "list available datasets"),
        ("plugins", plugins, "list installed plugins, their versions and load errors"),
    ):
        p = sub.add_parser(name, help=help_, description=help_)
        if name == "learners":
            p.add_argument("name", nargs="?", metavar="NAME",
                           help="show one learner: task kinds, every Config key (type, default) and its presets")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=_cached(name, handler))


def _key(command: str, args: argparse.Namespace) -> str:
    """The cache key of a listing: the command and every option that changes what it prints."""
    return json.dumps([command, getattr(args, "name", None), args.json, bool(getattr(args, "strict_plugins", False))])


def _cached(command: str, handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handler`` with its output replayed from the listing cache (:mod:`fewshot_bench.console.listing_cache`)."""
    def cached(args: argparse.Namespace) -> int:
        return print_cached(_key(command, args), lambda: handler(args))

    return cached


def warm_listings() -> None:
    """Cache the plain ``learners``, ``datasets`` and ``plugins`` listings (after a command loaded the plugins)."""
    listings = {}
    for command, handler in (("learners", learners), ("datasets", datasets), ("plugins", plugins)):
        args = argparse.Namespace(name=None, json=False, strict_plugins=False)
        listings[_key(command, args)] = lambda handler=handler, args=args: handler(args)
    warm(listings)


def learners(args: argparse.Namespace) -> int:
    """Print each learner with its distribution and description, or everything about one (``learners NAME``)."""
    host = host_from_args(args, warn=True)
    if getattr(args, "name", None):
        from fewshot_bench.reports.describe import describe, render

        info = describe(host, args.name)
        print_json(info) if args.json else print(render(info))
        return 0
    rows = [
        {
            "learner": name,
            "distribution": reg.plugin.distribution,
            "meta-trained": "yes" if reg.obj.meta_trainable else "no",
            "description": reg.obj.description,
        }
        for name, reg in sorted(host.learners.items())
    ]
    print_json(rows) if args.json else print_table(rows)
    return 0


def datasets(args: argparse.Namespace) -> int:
    """Print each dataset with its aliases and description."""
    host = host_from_args(args)
    rows = [
        {
            "dataset": name,
            "aliases": ", ".join(reg.obj.aliases),
            "distribution": reg.plugin.distribution,
            "description": reg.obj.description,
        }
        for name, reg in sorted(host.datasets.items())
    ]
    print_json(rows) if args.json else print_table(rows)
    return 0


def plugins(args: argparse.Namespace) -> int:
    """Print each plugin (distribution, entry point, version, what it provides) and every load failure."""
    from fewshot_bench.plugin_host import DISABLE_ENV  # imports torch: only when the listing is computed

    host = host_from_args(args)
    if args.json:
        print_json(
            {
                "plugins": [asdict(p) for p in host.plugins.values()],
                "failures": [asdict(f) for f in host.failures],
            }
        )
        return 0
    print_table(
        {
            "distribution": p.distribution,
            "entry point": p.name,
            "version": p.version,
            "provides": ", ".join(p.learners + p.datasets + p.backbones) or ("(disabled)" if p.disabled else "-"),
        }
        for p in host.plugins.values()
    )
    if host.failures:
        print("\nfailed to load:")
        for f in host.failures:
            print(f"  {f.distribution}:{f.plugin} ({f.stage}): {f.error}")
        print(f"\ndisable a plugin with {DISABLE_ENV}=DISTRIBUTION:ENTRYPOINT (comma-separated), "
              f"e.g. {DISABLE_ENV}={host.failures[0].disable}")
    return 0
