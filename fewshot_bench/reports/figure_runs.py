"""Which stored runs ``fewshot-bench figure 3|4|5`` draws: the run given, or the latest suitable one.

A figure is drawn by default from the runs of the learners that declare it (``Learner.figures``,
on their class of the figure's task kind); figure 5 pairs such a run with a run of the learner
it declares as its baseline (``Learner.figure_baseline``) of the same setting, seed, protocol
and data. Without ``--run`` the latest suitable run (pair) is used: of the protocol of the latest
one, or of the one ``--protocol``/``--steps`` picks, with the learners' default hyperparameters
unless ``--set LEARNER.KEY=VALUE`` picks runs made with overrides. No matplotlib here: the
command reports a bad choice of runs even where figures cannot be drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fewshot_bench.api.tasks import task_kind
from fewshot_bench.errors import ConfigError, StoreError
from fewshot_bench.plugin_host import PluginHost
from fewshot_bench.records.store import ResultStore, RunRecord
from fewshot_bench.reports.combining import (
    Selection,
    choose,
    data_id_of,
    data_text,
    group_by_protocol,
    overrides_of,
    protocol_of,
)

# The task kind of each figure's runs: 3 draws sampled models on the sines-and-lines regression, 4 and 5 classifiers.
FIGURE_KINDS = {3: "regression", 4: "classification", 5: "classification"}
RunCheck = Callable[[RunRecord], bool]


@dataclass(frozen=True)
class FigureRequest:
    """Which runs figure ``number`` is drawn from (the options ``--run``, ``--baseline-run``, ``--protocol``...)."""

    number: int
    run: str | None = None
    baseline_run: str | None = None
    protocol: str | None = None
    steps: int | None = None
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # {learner: {key: value}}


@dataclass(frozen=True)
class FigureRuns:
    """The run a figure is drawn from, figure 5's baseline run, and how the protocol was chosen."""

    record: RunRecord
    baseline: RunRecord | None
    selection: Selection


def drawn_by(host: PluginHost, number: int) -> list[str]:
    """The learners whose runs figure ``number`` is drawn from by default (their class of its kind declares it)."""
    kind = FIGURE_KINDS[number]
    classes = {name: host.learner(name) for name in host.learners}
    return sorted(name for name, cls in classes.items() if kind in cls.kinds and number in cls.for_kind(kind).figures)


def baseline_of(host: PluginHost, learner: str) -> str | None:
    """The learner figure 5 compares ``learner``'s runs with (None: it declares none)."""
    if learner not in host.learners:
        return None
    return host.learner(learner).for_kind(FIGURE_KINDS[5]).figure_baseline


def check_overrides(host: PluginHost, overrides: dict[str, dict[str, str]]) -> None:
    """A one-line error when ``--set`` names a learner no figure draws (neither a figure's learner nor a baseline)."""
    drawn = list(dict.fromkeys(name for number in FIGURE_KINDS for name in drawn_by(host, number)))
    named = list(dict.fromkeys(drawn + [b for b in (baseline_of(host, name) for name in drawn) if b]))
    outside = sorted(set(overrides) - set(named))
    if outside:
        raise ConfigError(f"--set names learner(s) that figures do not draw: {', '.join(outside)}; "
                          f"use {' or '.join(f'{name}.KEY=VALUE' for name in named)}")


def figure_runs(store: ResultStore, host: PluginHost, request: FigureRequest) -> FigureRuns:
    """The runs to draw ``request.number`` from (one-line errors when there are none)."""
    learners = drawn_by(host, request.number)
    if not learners:
        raise ConfigError(f"no installed learner draws figure {request.number} (none declares it in "
                          "Learner.figures); `fewshot-bench plugins` lists what is installed")
    of_kind = kind_check(request.number)
    if request.number == 5:
        return pair_for_figure_5(store, host, request, learners, of_kind)
    hint = (f"run `fewshot-bench run --learner {learners[0]} --dataset sines-lines` first" if request.number == 3
            else f"run `fewshot-bench run --learner {learners[0]}` (any classification dataset) first")
    record, selection = suitable(store, request, learners, of_kind, f"figure {request.number}", hint)
    return FigureRuns(record, None, selection)


def kind_check(number: int) -> RunCheck:
    """Whether a run solved the task kind of figure ``number`` (by its metric)."""
    metric = task_kind(FIGURE_KINDS[number]).metric
    return lambda r: r.metric == metric


def has_model(record: RunRecord) -> bool:
    """Whether a stored run kept its meta-trained model."""
    return bool(record.summary.get("train", {}).get("model"))


def checked(record: RunRecord, kind_ok: RunCheck, what: str, hint: str) -> RunRecord:
    """``record`` if it can draw ``what`` and kept its model, else a one-line error."""
    if not kind_ok(record):
        raise ConfigError(f"run {record.run_id} ({record.learner} on {record.dataset}) cannot draw {what}; {hint}")
    if not has_model(record):
        raise StoreError(f"run {record.run_id} has no saved model "
                         f"(stored before models were kept, or not meta-trained); {hint}")
    return record


def candidates(store: ResultStore, learners: list[str], kind_ok: RunCheck,
               overrides: dict[str, dict[str, str]]) -> list[RunRecord]:
    """The runs of ``learners`` (oldest first) that pass ``kind_ok``, kept their model and were made with each
    learner's ``overrides``."""
    return [r for r in store.runs() if r.learner in learners and kind_ok(r) and has_model(r)
            and overrides_of(r) == overrides.get(r.learner, {})]


def suitable(store: ResultStore, request: FigureRequest, learners: list[str], kind_ok: RunCheck, what: str,
             hint: str) -> tuple[RunRecord, Selection]:
    """The run given by ``--run``, or the latest suitable run of ``learners`` of the chosen protocol."""
    if request.run is not None:
        record = checked(explicit(store, request.run, request), kind_ok, what, hint)
        return record, Selection(protocol_of(record), [record], reason="--run")
    found = candidates(store, learners, kind_ok, request.overrides)
    names = " or ".join(learners)
    if not found:
        unused = ("" if any(request.overrides.get(name) for name in learners)
                  else f" with the learner's defaults (runs with --set overrides need --set "
                       f"{' or '.join(f'{name}.KEY=VALUE' for name in learners)})")
        raise StoreError(f"no {names} run{unused} in {store.path} to draw {what} from; {hint}")
    selection = latest(found, request, f" of {names} to draw {what} from", "runs")
    return selection.runs[-1], selection


def latest(found: list[RunRecord], request: FigureRequest, what: str, unit: str) -> Selection:
    """The protocol of the latest of ``found`` (oldest first), or the one ``--protocol``/``--steps`` picks;
    its runs in order."""
    if request.protocol is not None or request.steps is not None:
        return choose(found, request.protocol, request.steps, unit=unit, what=what)
    groups = group_by_protocol(found)
    chosen = protocol_of(found[-1])
    others = [(p, len(rs)) for p, rs in groups.items() if p != chosen]
    return Selection(chosen, groups[chosen], others, "the protocol of the latest suitable run", unit, what)


def explicit(store: ResultStore, run_id: str, request: FigureRequest) -> RunRecord:
    """The run ``run_id``, refusing one whose protocol is not the one ``--protocol``/``--steps`` asks for."""
    record = store.run(run_id)
    protocol = protocol_of(record)
    if (request.protocol is not None and not protocol.id.startswith(request.protocol.strip().lower())) or (
        request.steps is not None and protocol.get("steps") != request.steps
    ):
        raise ConfigError(f"run {record.run_id} was made under protocol {protocol.label()}, not the one asked for; "
                          "drop --run or --protocol/--steps")
    return record


# --- figure 5: a run and its baseline's ---------------------------------------------------------


def setting(r: RunRecord) -> tuple:
    """What figure 5's two runs share: dataset, way, shot, seed and protocol."""
    return r.dataset, r.way, r.shot, r.seed, protocol_of(r)


def baseline_hint(baseline: str, learner: str) -> str:
    """What to run when figure 5 finds no baseline run."""
    return (f"run `fewshot-bench run --learner {baseline}` with the {learner} run's dataset, way, shot, seed and "
            "options first")


def same_task(record: RunRecord, of_kind: RunCheck) -> RunCheck:
    """Whether a run is of ``record``'s task kind, dataset, way and shot."""
    return lambda r: of_kind(r) and (r.dataset, r.way, r.shot) == (record.dataset, record.way, record.shot)


def pair_for_figure_5(store: ResultStore, host: PluginHost, request: FigureRequest, learners: list[str],
                      of_kind: RunCheck) -> FigureRuns:
    """Figure 5's run and its baseline's: same setting, seed and protocol (the chosen protocol's latest such pair)."""
    if request.run is not None:
        record = explicit(store, request.run, request)
        baseline = baseline_learner(host, record.learner, learners)
        hint = baseline_hint(baseline, record.learner)
        checked(record, of_kind, "figure 5", hint)
        found = baseline_for(store, request, record, baseline, same_task(record, of_kind), hint)
        return FigureRuns(record, found, Selection(protocol_of(record), reason="--run"))
    found = candidates(store, learners, of_kind, request.overrides)
    if not found:
        raise StoreError(f"no {' or '.join(learners)} run in {store.path} to draw figure 5 from; "
                         f"run `fewshot-bench run --learner {learners[0]}` (any classification dataset) first")
    if request.baseline_run is not None:
        given = explicit(store, request.baseline_run, request)
        record = ([r for r in found if setting(r) == setting(given)] or found)[-1]
        hint = baseline_hint(baseline_learner(host, record.learner, learners), record.learner)
        baseline = explicit_baseline(store, request, record, same_task(record, of_kind), hint)
        return FigureRuns(record, baseline, Selection(protocol_of(record), reason="--baseline-run"))
    return latest_pair(store, host, request, found, learners)


def baseline_learner(host: PluginHost, learner: str, learners: list[str]) -> str:
    """The learner whose runs figure 5 compares ``learner``'s with: its own declaration, else (a run given with
    ``--run`` of a learner that declares none) that of the first learner declaring figure 5."""
    for name in (learner, *learners):
        baseline = baseline_of(host, name)
        if baseline is not None:
            return baseline
    raise ConfigError(f"learner {learners[0]!r} draws figure 5 but declares no baseline (Learner.figure_baseline)")


def latest_pair(store: ResultStore, host: PluginHost, request: FigureRequest, found: list[RunRecord],
                learners: list[str]) -> FigureRuns:
    """The latest of ``found`` with a baseline run of its setting, seed and protocol, of the chosen protocol."""
    baselines_of = {name: baseline_learner(host, name, learners) for name in learners}
    wanted = sorted(set(baselines_of.values()))
    latest_baseline: dict[tuple, RunRecord] = {}
    for r in candidates(store, wanted, kind_check(5), request.overrides):
        latest_baseline[(r.learner, *setting(r))] = r  # oldest first: the latest of each setting wins
    paired = [r for r in found if (baselines_of[r.learner], *setting(r)) in latest_baseline]
    names, baseline_names = " or ".join(learners), " or ".join(wanted)
    if not paired:
        described = "; ".join(sorted({f"{r.dataset} {r.way}-way {r.shot}-shot seed {r.seed}, "
                                      f"protocol {protocol_of(r).label()}" for r in found}))
        raise StoreError(f"no {baseline_names} run (with a saved model) matches a {names} run's setting, seed and "
                         f"protocol in {store.path} ({names} runs: {described}); "
                         f"{baseline_hint(baseline_names, names)}")
    selection = latest(paired, request, f" of {names} with a matching {baseline_names} run", "pairs")
    record = selection.runs[-1]
    return FigureRuns(record, latest_baseline[(baselines_of[record.learner], *setting(record))], selection)


def baseline_for(store: ResultStore, request: FigureRequest, record: RunRecord, learner: str, same: RunCheck,
                 hint: str) -> RunRecord:
    """Figure 5's baseline run: ``--baseline-run``, else the latest ``learner`` run of ``record``'s setting, seed,
    protocol and data."""
    if request.baseline_run is not None:
        return explicit_baseline(store, request, record, same, hint)
    protocol = protocol_of(record)
    found = [r for r in candidates(store, [learner], same, request.overrides)
             if r.seed == record.seed and protocol_of(r) == protocol and data_id_of(r) == data_id_of(record)]
    if not found:
        raise StoreError(
            f"no {learner} run of {record.dataset} {record.way}-way {record.shot}-shot, seed {record.seed}, under "
            f"protocol {protocol.label()} on data {data_text(data_id_of(record))} (the {record.learner} run "
            f"{record.run_id}'s) with a saved model in {store.path}; {hint}"
        )
    return found[-1]


def explicit_baseline(store: ResultStore, request: FigureRequest, record: RunRecord, same: RunCheck,
                      hint: str) -> RunRecord:
    """The run ``--baseline-run`` names, refused unless of ``record``'s task, protocol and data."""
    protocol = protocol_of(record)
    baseline = checked(explicit(store, request.baseline_run, request), same, "figure 5's baseline", hint)
    if protocol_of(baseline) != protocol:
        raise ConfigError(
            f"run {record.run_id} and baseline run {baseline.run_id} were made under different protocols "
            f"({protocol.label()} vs {protocol_of(baseline).label()}); "
            "pick runs of one protocol (see `fewshot-bench results`)"
        )
    if data_id_of(baseline) != data_id_of(record):
        raise ConfigError(
            f"run {record.run_id} and baseline run {baseline.run_id} read different data (data "
            f"{data_text(data_id_of(record))} vs {data_text(data_id_of(baseline))}); pick runs on the same data "
            "(see `fewshot-bench results`)"
        )
    return baseline
