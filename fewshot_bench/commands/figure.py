"""``fewshot-bench figure 3|4|5|curves``: the LEO paper's figures from a stored run's saved model, and
learning curves from stored runs' validation histories.

3: sampled regression models on sines and lines (a ``leo`` run on a regression dataset);
4: t-SNE of LEO latents before and after adaptation (a ``leo`` run on a classification dataset);
5: curvature and coverage, LEO vs Meta-SGD (a ``leo`` run and a ``metasgd`` run of the same
   setting, seed and protocol).
Without ``--run`` the latest suitable run in the store is used: of the protocol with the most
suitable runs (pairs for figure 5), or the one ``--protocol ID``/``--steps N`` picks, with the
learner's default hyperparameters unless ``--set leo.KEY=VALUE`` picks runs made with overrides.
curves: the validation metric and meta-training loss against steps (mean over seeds, band ± 1 std;
   stars: best checkpoints, crosses: early stops) of the runs --learner/--dataset/--shot/--way/--run
   pick, under one protocol (the one with the most runs unless --protocol/--steps picks another).
Every figure is PNG, PDF or SVG (--format, or --out's suffix) with its provenance (learners, setting,
steps, preset, seeds, run ids) in a caption line and in the file's metadata.
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
    comma_list,
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
from fewshot_bench.reports.figure_files import FORMATS, Provenance, figure_format, with_format
from fewshot_bench.reports.figure_runs import FigureRequest, check_overrides, figure_runs


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``figure`` parser."""
    p = sub.add_parser("figure", help="draw the LEO paper's figure 3, 4 or 5, or learning curves, from stored runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("number", choices=("3", "4", "5", "curves"), help="which figure of the paper, or curves")
    p.add_argument("--out", type=Path, required=True, help="file to write (.png, .pdf or .svg)")
    p.add_argument("--format", choices=FORMATS, help="png, pdf or svg (default: --out's suffix)")
    add_store_option(p)
    p.add_argument("--run", action="append", type=comma_list, metavar="ID[,ID]",
                   help="figures 3-5: id (or unique prefix) of the LEO run to draw from (default: the latest "
                        "suitable); curves: the runs to draw (repeatable)")
    p.add_argument("--learner", action="append", type=comma_list, metavar="NAME[,NAME]",
                   help="curves: only these learners' runs")
    p.add_argument("--dataset", action="append", type=comma_list, metavar="NAME[,NAME]",
                   help="curves: only runs on these datasets")
    p.add_argument("--shot", type=int, help="curves: only runs of this shot K")
    p.add_argument("--way", type=int, help="curves: only runs of this way N")
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
        from fewshot_bench.reports import curves, figures  # matplotlib and scikit-learn load only for this command
    except ImportError as exc:  # both are in the default install; a trimmed environment gets one line
        raise ConfigError(f"figures need matplotlib and scikit-learn ({exc}); "
                          "python -m pip install 'matplotlib>=3.7' 'scikit-learn>=1.3'") from None

    if args.episodes < 1 or args.samples < 1:
        raise ConfigError("--episodes and --samples must be at least 1")
    out = with_format(args.out, args.format)
    fmt = figure_format(out, args.format)
    run_ids = [r for group in args.run or [] for r in group]
    if args.number == "curves":
        return draw_curves(args, curves, out, fmt, run_ids)
    for option in ("learner", "dataset", "shot", "way"):
        if getattr(args, option) is not None:
            raise ConfigError(f"--{option} picks the runs of `figure curves`; figure {args.number} takes --run ID")
    if len(run_ids) > 1:
        raise ConfigError(f"figure {args.number} is drawn from one run: give --run once")
    number = int(args.number)
    torch.set_flush_denormal(True)
    host = host_from_args(args)
    overrides = parse_learner_overrides(args.overrides)
    check_overrides(host, overrides)
    request = FigureRequest(number, run_ids[0] if run_ids else None, args.baseline_run, args.protocol, args.steps,
                            overrides)
    with ResultStore(args.store, create=False) as store:
        chosen = figure_runs(store, host, request)
    record, baseline, selection = chosen.record, chosen.baseline, chosen.selection
    leo = model_of(host, record)
    progress = progress_enabled(args)
    protocol = protocol_of(record)
    drawn = [record] + ([baseline] if baseline else [])
    if number == 3:
        provenance = Provenance.of(drawn, protocol.id, [f"{args.samples} samples, episode seed {args.seed}"])
        info = figures.figure_3(leo, out, seed=args.seed, samples=args.samples, provenance=provenance, fmt=fmt)
    else:
        ctx = RunContext(host=host, store_path=args.store, data_dir=run_data_dir(args, record))
        dataset = load_dataset(ctx, record.dataset, record.options.get("crop", "center"))
        what = "validation episodes" if number == 4 else "test problems"
        provenance = Provenance.of(drawn, protocol.id, [f"{args.episodes:,} {what}, episode seed {args.seed}"])
        if number == 4:
            info = figures.figure_4(leo, dataset.split("val"), out, episodes=args.episodes, seed=args.seed,
                                    progress=progress, provenance=provenance, fmt=fmt)
        else:
            info = figures.figure_5(leo, model_of(host, baseline), dataset.split("test"), out,
                                    problems=args.episodes, seed=args.seed, progress=progress,
                                    provenance=provenance, fmt=fmt)
    result = {
        "figure": number, "out": str(out), "format": fmt, "run": record.run_id,
        **({"baseline_run": baseline.run_id} if baseline else {}),
        "protocol": protocol.id, "protocol_description": protocol.description, "caption": provenance.caption(),
        **info,
    }
    if args.json:
        print_json(result)
        return 0
    runs = f"run {record.run_id} (seed {record.seed})" + (
        f" and {baseline.learner} run {baseline.run_id} (seed {baseline.seed})" if baseline else "")
    print(f"figure {number} from {runs} written to {out}")  # even with --quiet: the one thing written
    if not args.quiet:
        print(selection.note())
    return 0


def draw_curves(args: argparse.Namespace, curves, out: Path, fmt: str, run_ids: list[str]) -> int:
    """``figure curves``: the learning curves of the runs the options pick, under one protocol."""
    if args.baseline_run is not None or args.overrides:
        raise ConfigError("--baseline-run and --set pick the runs of figures 3-5; curves take --run ID[,ID], "
                          "--learner, --dataset, --shot and --way")
    request = curves.CurveRequest(
        learners=tuple(n for group in args.learner or [] for n in group),
        datasets=tuple(d for group in args.dataset or [] for d in group),
        shot=args.shot, way=args.way, run_ids=tuple(run_ids), protocol=args.protocol, steps=args.steps,
    )
    with ResultStore(args.store, create=False) as store:
        selection = curves.select(store.runs(), request, resolve=store.run)
    info = curves.draw(selection, out, fmt)
    if args.json:
        print_json({"figure": "curves", "format": fmt, **info})
        return 0
    runs = sum(len(c["run_ids"]) for c in info["curves"])
    print(f"learning curves of {runs} run(s) ({len(info['curves'])} learner/setting group(s)) written to {out}")
    if not args.quiet:
        print(info["note"])
    return 0
