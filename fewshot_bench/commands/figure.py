"""``fewshot-bench figure 3|4|5``: the LEO paper's figures from a stored run's saved model.

3: sampled regression models on sines and lines (a ``leo`` run on a regression dataset);
4: t-SNE of LEO latents before and after adaptation (a ``leo`` run on a classification dataset);
5: curvature and coverage, LEO vs Meta-SGD (a ``leo`` run and a ``metasgd`` run of the same
   setting, seed and protocol).
Without ``--run`` the latest suitable run in the store is used: of the protocol with the most
suitable runs (pairs for figure 5), or the one ``--protocol ID``/``--steps N`` picks, with the
learner's default hyperparameters unless ``--set leo.KEY=VALUE`` picks runs made with overrides.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fewshot_bench.api.learner import Learner
from fewshot_bench.commands.common import (
    add_data_option,
    add_protocol_options,
    add_store_option,
    data_dir,
    host_from_args,
    print_json,
    progress_enabled,
)
from fewshot_bench.errors import ConfigError, StoreError
from fewshot_bench.plugin_host import PluginHost
from fewshot_bench.protocol.runner import RunContext, load_dataset, load_model
from fewshot_bench.records.store import ResultStore, RunRecord
from fewshot_bench.reports.combining import parse_learner_overrides, protocol_of
from fewshot_bench.reports.figure_runs import FigureRequest, check_overrides, figure_runs


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``figure`` parser."""
    p = sub.add_parser("figure", help="draw the LEO paper's figure 3, 4 or 5 from stored runs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("number", type=int, choices=(3, 4, 5), help="which figure of the paper")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    add_store_option(p)
    p.add_argument("--run", help="id (or unique prefix) of the LEO run to draw from (default: the latest suitable)")
    p.add_argument("--baseline-run",
                   help="figure 5: id of the Meta-SGD run (default: the latest of the same setting, seed and protocol)")
    add_protocol_options(p)
    p.add_argument("--episodes", type=int, default=1000,
                   help="figures 4-5: validation/test episodes (default 1000, as the paper)")
    p.add_argument("--samples", type=int, default=8, help="figure 3: sampled models per problem (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes drawn (default 0)")
    add_data_option(p)
    p.add_argument("--json", action="store_true", help="print what was drawn as one JSON object")
    p.set_defaults(handler=handle)


def run_data_dir(args: argparse.Namespace, record: RunRecord) -> Path | None:
    """Where to read the run's dataset: ``--data-dir``, else where the run read it, else ``$FEWSHOT_BENCH_DATA``."""
    if args.data_dir is not None:
        return args.data_dir
    stored = record.options.get("data_dir")
    return Path(stored) if stored and Path(stored).is_dir() else data_dir(args)


def model_of(host: PluginHost, record: RunRecord) -> Learner:
    """The saved model of a stored run."""
    path = Path(record.summary["train"]["model"])
    if not path.exists():
        raise StoreError(f"the model of run {record.run_id} is gone ({path}); rerun it with `fewshot-bench run`")
    return load_model(host, path)


def handle(args: argparse.Namespace) -> int:
    """Draw one figure."""
    try:
        from fewshot_bench.reports import figures  # matplotlib and scikit-learn load only for this command
    except ImportError as exc:  # both are in the default install; a trimmed environment gets one line
        raise ConfigError(f"figures need matplotlib and scikit-learn ({exc}); "
                          "python -m pip install 'matplotlib>=3.7' 'scikit-learn>=1.3'") from None

    if args.episodes < 1 or args.samples < 1:
        raise ConfigError("--episodes and --samples must be at least 1")
    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out {args.out} must end in .png")
    torch.set_flush_denormal(True)
    host = host_from_args(args)
    overrides = parse_learner_overrides(args.overrides)
    check_overrides(host, overrides)
    request = FigureRequest(args.number, args.run, args.baseline_run, args.protocol, args.steps, overrides)
    with ResultStore(args.store, create=False) as store:
        chosen = figure_runs(store, host, request)
    record, baseline, selection = chosen.record, chosen.baseline, chosen.selection
    leo = model_of(host, record)
    progress = progress_enabled(args)
    if args.number == 3:
        info = figures.figure_3(leo, args.out, seed=args.seed, samples=args.samples)
    else:
        ctx = RunContext(host=host, store_path=args.store, data_dir=run_data_dir(args, record))
        dataset = load_dataset(ctx, record.dataset, record.options.get("crop", "center"))
        if args.number == 4:
            info = figures.figure_4(leo, dataset.split("val"), args.out, episodes=args.episodes, seed=args.seed,
                                    progress=progress)
        else:
            info = figures.figure_5(leo, model_of(host, baseline), dataset.split("test"), args.out,
                                    problems=args.episodes, seed=args.seed, progress=progress)
    protocol = protocol_of(record)
    result = {
        "figure": args.number, "out": str(args.out), "run": record.run_id,
        **({"baseline_run": baseline.run_id} if baseline else {}),
        "protocol": protocol.id, "protocol_description": protocol.description, **info,
    }
    if args.json:
        print_json(result)
    elif not args.quiet:
        runs = f"run {record.run_id} (seed {record.seed})" + (
            f" and {baseline.learner} run {baseline.run_id} (seed {baseline.seed})" if baseline else "")
        print(f"figure {args.number} from {runs} written to {args.out}")
        print(selection.note())
    return 0
