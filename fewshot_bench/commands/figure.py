"""``fewshot-bench figure 3|4|5``: the LEO paper's figures from a stored run's saved model.

3: sampled regression models on sines and lines (a ``leo`` run on a regression dataset);
4: t-SNE of LEO latents before and after adaptation (a ``leo`` run on a classification dataset);
5: curvature and coverage, LEO vs Meta-SGD (a ``leo`` run and a ``metasgd`` run of the same setting).
Without ``--run`` the latest suitable run in the store is used.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from fewshot_bench.commands.common import add_data_option, add_store_option, data_dir, host_from_args, print_json, progress_enabled
from fewshot_bench.errors import ConfigError, StoreError
from fewshot_bench.learner import Learner
from fewshot_bench.plugins import PluginHost
from fewshot_bench.runner import RunContext, load_dataset, load_model
from fewshot_bench.store import ResultStore, RunRecord


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``figure`` parser."""
    p = sub.add_parser("figure", help="draw the LEO paper's figure 3, 4 or 5 from stored runs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("number", type=int, choices=(3, 4, 5), help="which figure of the paper")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    add_store_option(p)
    p.add_argument("--run", help="id (or unique prefix) of the LEO run to draw from (default: the latest suitable)")
    p.add_argument("--baseline-run", help="figure 5: id of the Meta-SGD run (default: the latest of the same setting)")
    p.add_argument("--episodes", type=int, default=1000, help="figures 4-5: validation/test episodes (default 1000, as the paper)")
    p.add_argument("--samples", type=int, default=8, help="figure 3: sampled models per problem (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes drawn (default 0)")
    add_data_option(p)
    p.add_argument("--json", action="store_true", help="print what was drawn as one JSON object")
    p.set_defaults(handler=handle)


def suitable(store: ResultStore, run_id: str | None, learner: str, kind_ok: Callable[[RunRecord], bool], what: str, hint: str) -> RunRecord:
    """The given run, or the latest ``learner`` run that passes ``kind_ok`` and kept its model."""
    if run_id is not None:
        record = store.run(run_id)
        if not kind_ok(record):
            raise ConfigError(f"run {record.run_id} ({record.learner} on {record.dataset}) cannot draw {what}; {hint}")
    else:
        found = [r for r in store.runs(learner=learner) if kind_ok(r) and r.summary.get("train", {}).get("model")]
        if not found:
            raise StoreError(f"no {learner} run in {store.path} to draw {what} from; {hint}")
        record = found[-1]
    if not record.summary.get("train", {}).get("model"):
        raise StoreError(f"run {record.run_id} has no saved model (stored before models were kept, or not meta-trained); {hint}")
    return record


def model_of(host: PluginHost, record: RunRecord) -> Learner:
    """The saved model of a stored run."""
    path = Path(record.summary["train"]["model"])
    if not path.exists():
        raise StoreError(f"the model of run {record.run_id} is gone ({path}); rerun it with `fewshot-bench run`")
    return load_model(host, path)


def handle(args: argparse.Namespace) -> int:
    """Draw one figure."""
    from fewshot_bench import figures  # matplotlib and scikit-learn load only for this command

    if args.episodes < 1 or args.samples < 1:
        raise ConfigError("--episodes and --samples must be at least 1")
    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out {args.out} must end in .png")
    torch.set_flush_denormal(True)
    host = host_from_args(args)
    is_regression = lambda r: r.metric == "mse"  # noqa: E731
    is_classification = lambda r: r.metric == "accuracy"  # noqa: E731
    with ResultStore(args.store, create=False) as store:
        if args.number == 3:
            record = suitable(store, args.run, "leo", is_regression, "figure 3",
                              "run `fewshot-bench run --learner leo --dataset sines-lines` first")
        else:
            record = suitable(store, args.run, "leo", is_classification, f"figure {args.number}",
                              "run `fewshot-bench run --learner leo` (any classification dataset) first")
        baseline = None
        if args.number == 5:
            same = lambda r: is_classification(r) and (r.dataset, r.way, r.shot) == (record.dataset, record.way, record.shot)  # noqa: E731
            baseline = suitable(store, args.baseline_run, "metasgd", same, "figure 5's baseline",
                                f"run `fewshot-bench run --learner metasgd --dataset {record.dataset} --way {record.way} --shot {record.shot}` first")
    leo = model_of(host, record)
    progress = progress_enabled(args)
    if args.number == 3:
        info = figures.figure_3(leo, args.out, seed=args.seed, samples=args.samples)
    else:
        ctx = RunContext(host=host, store_path=args.store, data_dir=data_dir(args))
        dataset = load_dataset(ctx, record.dataset, record.options.get("crop", "center"))
        if args.number == 4:
            info = figures.figure_4(leo, dataset.split("val"), args.out, episodes=args.episodes, seed=args.seed, progress=progress)
        else:
            info = figures.figure_5(leo, model_of(host, baseline), dataset.split("test"), args.out,
                                    problems=args.episodes, seed=args.seed, progress=progress)
    result = {"figure": args.number, "out": str(args.out), "run": record.run_id, **({"baseline_run": baseline.run_id} if baseline else {}), **info}
    if args.json:
        print_json(result)
    elif not args.quiet:
        print(f"figure {args.number} from run {record.run_id} written to {args.out}")
    return 0
