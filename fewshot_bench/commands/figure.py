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
from collections.abc import Callable
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
from fewshot_bench.reports.combining import (
    Selection,
    choose,
    data_id_of,
    data_text,
    group_by_protocol,
    overrides_of,
    parse_learner_overrides,
    protocol_of,
)


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


def has_model(record: RunRecord) -> bool:
    """Whether a stored run kept its meta-trained model."""
    return bool(record.summary.get("train", {}).get("model"))


def checked(record: RunRecord, kind_ok: Callable[[RunRecord], bool], what: str, hint: str) -> RunRecord:
    """``record`` if it can draw ``what`` and kept its model, else a one-line error."""
    if not kind_ok(record):
        raise ConfigError(f"run {record.run_id} ({record.learner} on {record.dataset}) cannot draw {what}; {hint}")
    if not has_model(record):
        raise StoreError(f"run {record.run_id} has no saved model "
                         f"(stored before models were kept, or not meta-trained); {hint}")
    return record


def candidates(store: ResultStore, learner: str, kind_ok: Callable[[RunRecord], bool],
               overrides: dict[str, str]) -> list[RunRecord]:
    """The ``learner`` runs (oldest first) that pass ``kind_ok``, kept their model and were made with ``overrides``."""
    return [r for r in store.runs(learner=learner) if kind_ok(r) and has_model(r) and overrides_of(r) == overrides]


def suitable(store: ResultStore, args: argparse.Namespace, learner: str, kind_ok: Callable[[RunRecord], bool],
             what: str, hint: str, overrides: dict[str, str]) -> tuple[RunRecord, Selection]:
    """The run given by ``--run``, or the latest suitable ``learner`` run of the chosen protocol."""
    if args.run is not None:
        record = checked(explicit(store, args.run, args), kind_ok, what, hint)
        return record, Selection(protocol_of(record), [record], reason="--run")
    found = candidates(store, learner, kind_ok, overrides)
    if not found:
        unused = ("" if overrides
                  else " with the learner's defaults (runs with --set overrides need --set leo.KEY=VALUE)")
        raise StoreError(f"no {learner} run{unused} in {store.path} to draw {what} from; {hint}")
    selection = latest(found, args, f" of {learner} to draw {what} from", "runs")
    return selection.runs[-1], selection


def latest(found: list[RunRecord], args: argparse.Namespace, what: str, unit: str) -> Selection:
    """The protocol of the latest of ``found`` (oldest first), or the one ``--protocol``/``--steps`` picks;
    its runs in order."""
    if args.protocol is not None or args.steps is not None:
        return choose(found, args.protocol, args.steps, unit=unit, what=what)
    groups = group_by_protocol(found)
    chosen = protocol_of(found[-1])
    others = [(p, len(rs)) for p, rs in groups.items() if p != chosen]
    return Selection(chosen, groups[chosen], others, "the protocol of the latest suitable run", unit, what)


def explicit(store: ResultStore, run_id: str, args: argparse.Namespace) -> RunRecord:
    """The run ``run_id``, refusing one whose protocol is not the one ``--protocol``/``--steps`` asks for."""
    record = store.run(run_id)
    protocol = protocol_of(record)
    if (args.protocol is not None and not protocol.id.startswith(args.protocol.strip().lower())) or (
        args.steps is not None and protocol.get("steps") != args.steps
    ):
        raise ConfigError(f"run {record.run_id} was made under protocol {protocol.label()}, not the one asked for; "
                          "drop --run or --protocol/--steps")
    return record


def baseline_for(store: ResultStore, args: argparse.Namespace, leo: RunRecord, overrides: dict[str, str],
                 same: Callable[[RunRecord], bool], hint: str) -> RunRecord:
    """Figure 5's Meta-SGD run: ``--baseline-run``, else the latest of LEO's setting, seed and protocol."""
    protocol = protocol_of(leo)
    if args.baseline_run is not None:
        baseline = checked(explicit(store, args.baseline_run, args), same, "figure 5's baseline", hint)
        if protocol_of(baseline) != protocol:
            raise ConfigError(
                f"run {leo.run_id} and baseline run {baseline.run_id} were made under different protocols "
                f"({protocol.label()} vs {protocol_of(baseline).label()}); "
                "pick runs of one protocol (see `fewshot-bench results`)"
            )
        if data_id_of(baseline) != data_id_of(leo):
            raise ConfigError(
                f"run {leo.run_id} and baseline run {baseline.run_id} read different data (data "
                f"{data_text(data_id_of(leo))} vs {data_text(data_id_of(baseline))}); pick runs on the same data "
                "(see `fewshot-bench results`)"
            )
        return baseline
    found = [r for r in candidates(store, "metasgd", same, overrides)
             if r.seed == leo.seed and protocol_of(r) == protocol and data_id_of(r) == data_id_of(leo)]
    if not found:
        raise StoreError(
            f"no metasgd run of {leo.dataset} {leo.way}-way {leo.shot}-shot, seed {leo.seed}, under protocol "
            f"{protocol.label()} on data {data_text(data_id_of(leo))} (the LEO run {leo.run_id}'s) with a saved "
            f"model in {store.path}; {hint}"
        )
    return found[-1]


def pair_for_figure_5(store: ResultStore, args: argparse.Namespace, overrides: dict[str, dict[str, str]],
                      is_classification: Callable[[RunRecord], bool]) -> tuple[RunRecord, RunRecord, Selection]:
    """Figure 5's LEO and Meta-SGD runs: same setting, seed and protocol (the chosen protocol's latest such pair)."""
    setting = lambda r: (r.dataset, r.way, r.shot, r.seed, protocol_of(r))  # noqa: E731
    hint = "run `fewshot-bench run --learner metasgd` with the LEO run's dataset, way, shot, seed and options first"
    if args.run is not None:
        leo = checked(explicit(store, args.run, args), is_classification, "figure 5", hint)
        same = lambda r: is_classification(r) and (r.dataset, r.way, r.shot) == (leo.dataset, leo.way, leo.shot)  # noqa: E731
        return (leo, baseline_for(store, args, leo, overrides.get("metasgd", {}), same, hint),
                Selection(protocol_of(leo), reason="--run"))
    leos = candidates(store, "leo", is_classification, overrides.get("leo", {}))
    if not leos:
        raise StoreError(f"no leo run in {store.path} to draw figure 5 from; "
                         "run `fewshot-bench run --learner leo` (any classification dataset) first")
    if args.baseline_run is not None:
        baseline = explicit(store, args.baseline_run, args)
        leos = [r for r in leos if setting(r) == setting(baseline)] or leos
        leo = leos[-1]
        same = lambda r: is_classification(r) and (r.dataset, r.way, r.shot) == (leo.dataset, leo.way, leo.shot)  # noqa: E731
        return leo, baseline_for(store, args, leo, {}, same, hint), Selection(protocol_of(leo), reason="--baseline-run")
    baselines: dict[tuple, RunRecord] = {}
    for r in candidates(store, "metasgd", is_classification, overrides.get("metasgd", {})):
        baselines[setting(r)] = r  # oldest first: the latest of each setting wins
    paired = [r for r in leos if setting(r) in baselines]
    if not paired:
        described = "; ".join(sorted({f"{r.dataset} {r.way}-way {r.shot}-shot seed {r.seed}, "
                                      f"protocol {protocol_of(r).label()}" for r in leos}))
        raise StoreError(f"no metasgd run (with a saved model) matches a leo run's setting, seed and protocol "
                         f"in {store.path} (leo runs: {described}); {hint}")
    selection = latest(paired, args, " of leo with a matching metasgd run", "pairs")
    leo = selection.runs[-1]
    return leo, baselines[setting(leo)], selection


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
    is_regression = lambda r: r.metric == "mse"  # noqa: E731
    is_classification = lambda r: r.metric == "accuracy"  # noqa: E731
    overrides = parse_learner_overrides(args.overrides)
    outside = sorted(set(overrides) - {"leo", "metasgd"})
    if outside:
        raise ConfigError(f"--set names learner(s) that figures do not draw: {', '.join(outside)}; "
                          "use leo.KEY=VALUE or metasgd.KEY=VALUE")
    baseline = None
    with ResultStore(args.store, create=False) as store:
        if args.number == 3:
            record, selection = suitable(store, args, "leo", is_regression, "figure 3",
                                         "run `fewshot-bench run --learner leo --dataset sines-lines` first",
                                         overrides.get("leo", {}))
        elif args.number == 4:
            record, selection = suitable(store, args, "leo", is_classification, "figure 4",
                                         "run `fewshot-bench run --learner leo` (any classification dataset) first",
                                         overrides.get("leo", {}))
        else:
            record, baseline, selection = pair_for_figure_5(store, args, overrides, is_classification)
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
            f" and Meta-SGD run {baseline.run_id} (seed {baseline.seed})" if baseline else "")
        print(f"figure {args.number} from {runs} written to {args.out}")
        print(selection.note())
    return 0
