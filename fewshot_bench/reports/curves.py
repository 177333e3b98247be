"""Learning curves: the validation metric (and the training loss) against meta-training steps, from the
history every stored run keeps.

Runs are grouped by learner and setting (dataset, way, shot); a group's line is the mean over its
seeds and its band the standard deviation (min to max for two seeds would say the same with less
honesty about spread: with one seed there is no band). Curves are drawn for one shared protocol at a
time, like tables and comparisons (:mod:`fewshot_bench.reports.combining`): a 200-step try beside a
100,000-step run would only squash one of them. Each seed's best checkpoint (the weights the run
kept) is a star; a run that stopped early (patience ran out) ends in a cross.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewshot_bench.errors import ConfigError, StoreError
from fewshot_bench.records.store import RunRecord
from fewshot_bench.reports import figure_files, palette
from fewshot_bench.reports.combining import Selection, choose, one_per_seed, protocol_of

LINESTYLES = ("-", "--", "-.", ":")
METRIC_LABELS = {"accuracy": "validation accuracy (%)", "mse": "validation MSE"}


@dataclass(frozen=True)
class CurveRequest:
    """Which runs to draw: any of learners, datasets, shot, way or run ids, under one protocol."""

    learners: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    shot: int | None = None
    way: int | None = None
    run_ids: tuple[str, ...] = ()
    protocol: str | None = None
    steps: int | None = None


@dataclass
class Curve:
    """One learner on one setting: its seeds' validation histories on a shared step axis."""

    learner: str
    dataset: str
    way: int
    shot: int
    metric: str
    runs: list[RunRecord]
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [seeds, steps], nan after a stop
    losses: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def label(self) -> str:
        """``LEO, synthetic 5-way 1-shot (2 seeds)``."""
        seeds = len(self.runs)
        return (f"{palette.style(self.learner).label}, {self.dataset} {self.way}-way {self.shot}-shot "
                f"({seeds} seed{'s' if seeds != 1 else ''})")

    def to_json(self) -> dict[str, Any]:
        """The curve's numbers, JSON-ready (nan as None)."""
        clean = lambda a: [[None if np.isnan(v) else float(v) for v in row] for row in a]  # noqa: E731
        return {
            "learner": self.learner, "dataset": self.dataset, "way": self.way, "shot": self.shot,
            "metric": self.metric, "run_ids": [r.run_id for r in self.runs], "seeds": [r.seed for r in self.runs],
            "steps": [int(s) for s in self.steps], "val_metric": clean(self.values), "loss": clean(self.losses),
            "best_steps": [train_of(r).get("best_step") for r in self.runs],
            "stopped_early": [bool(train_of(r).get("stopped_early")) for r in self.runs],
        }


def train_of(run: RunRecord) -> dict[str, Any]:
    """A run's meta-training summary (empty for a run that did not meta-train)."""
    return run.summary.get("train") or {}


def history_of(run: RunRecord) -> list[dict[str, Any]]:
    """A run's validation history: ``{"step", "val_metric", "loss"}`` per validation (empty when none)."""
    history = train_of(run).get("history")
    return [p for p in history if isinstance(p, dict) and "step" in p] if isinstance(history, list) else []


def select(runs: Iterable[RunRecord], request: CurveRequest, resolve=None) -> Selection:
    """The runs with a validation history that ``request`` asks for, all of one shared protocol.

    ``resolve(run_id)`` finds a run by its id or a unique prefix (the store's :meth:`run`); run ids
    given pick those runs whatever the other filters say.
    """
    with_history = [r for r in runs if history_of(r)]
    if request.run_ids:
        by_id = {r.run_id: r for r in with_history}
        picked = []
        for run_id in request.run_ids:
            record = resolve(run_id) if resolve is not None else by_id.get(run_id)
            if record is None or record.run_id not in by_id:
                raise StoreError(f"run {run_id} has no validation history to draw (not meta-trained, or not stored)")
            picked.append(by_id[record.run_id])
        pool = list({r.run_id: r for r in picked}.values())  # a run named twice is drawn once
    else:
        datasets = {d.lower() for d in request.datasets}
        pool = [r for r in with_history
                if (not request.learners or r.learner in request.learners)
                and (not datasets or r.dataset.lower() in datasets)
                and (request.shot is None or r.shot == request.shot)
                and (request.way is None or r.way == request.way)]
    if not pool:
        asked = ", ".join(f"{k} {v}" for k, v in (("learner", ",".join(request.learners)),
                                                  ("dataset", ",".join(request.datasets)),
                                                  ("shot", request.shot), ("way", request.way)) if v)
        raise StoreError(f"no meta-trained runs{' with ' + asked if asked else ''} in the store to draw learning "
                         "curves from; `fewshot-bench results` lists what it holds")
    selection = choose(pool, request.protocol, request.steps, what=" for learning curves")
    metrics = sorted({r.metric for r in selection.runs})
    if len(metrics) > 1:
        raise ConfigError(f"the runs chosen mix metrics ({', '.join(metrics)}); "
                          "pick one task kind with --learner or --dataset")
    return selection


def curves(runs: list[RunRecord]) -> list[Curve]:
    """The runs (one protocol) as curves: one per learner and setting, one run per seed, steps aligned."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault((r.learner, r.dataset, r.way, r.shot, r.metric), []).append(r)
    out = []
    for (learner, dataset, way, shot, metric), members in groups.items():
        chosen, _ = one_per_seed(members)
        chosen.sort(key=lambda r: r.seed)
        curve = Curve(learner, dataset, way, shot, metric, chosen)
        steps = sorted({int(p["step"]) for r in chosen for p in history_of(r)})
        index = {s: i for i, s in enumerate(steps)}
        curve.steps = np.array(steps)
        curve.values = np.full((len(chosen), len(steps)), np.nan)
        curve.losses = np.full((len(chosen), len(steps)), np.nan)
        for i, r in enumerate(chosen):
            for p in history_of(r):
                curve.values[i, index[int(p["step"])]] = p.get("val_metric", np.nan)
                curve.losses[i, index[int(p["step"])]] = p.get("loss", np.nan)
        out.append(curve)
    return out


def _scale(metric: str) -> float:
    """Accuracies are drawn in percent, as tables print them."""
    return 100.0 if metric == "accuracy" else 1.0


def _band(ax: Any, steps: np.ndarray, values: np.ndarray, colour: str, style: str, label: str) -> None:
    """Mean over seeds as a line, ± one standard deviation as a band (where two or more seeds have a value)."""
    present = (~np.isnan(values)).sum(0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step only one seed reached has no std: no band there
        mean = np.nanmean(np.where(present > 0, values, 0.0), axis=0)
        std = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    mean[present == 0] = np.nan
    ax.plot(steps, mean, style, color=colour, lw=1.8, label=label)
    several = present > 1
    if several.any():
        ax.fill_between(steps, np.where(several, mean - std, np.nan), np.where(several, mean + std, np.nan),
                        color=colour, alpha=0.18, lw=0)


def draw(selection: Selection, out: Path, fmt: str | None = None) -> dict[str, Any]:
    """Draw the selection's curves into ``out`` (PNG, PDF or SVG) with their provenance; what was drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    drawn = curves(selection.runs)
    metric = drawn[0].metric
    scale = _scale(metric)
    has_loss = any(not np.isnan(c.losses).all() for c in drawn)
    fig, axes = plt.subplots(1, 2 if has_loss else 1, figsize=(13 if has_loss else 7.5, 4.8), squeeze=False)
    val_ax = axes[0, 0]
    settings = list(dict.fromkeys((c.dataset, c.way, c.shot) for c in drawn))
    marked = {"best": False, "early": False}
    for c in drawn:
        look = palette.style(c.learner)
        style = LINESTYLES[settings.index((c.dataset, c.way, c.shot)) % len(LINESTYLES)]
        _band(val_ax, c.steps, c.values * scale, look.colour, style, c.label)
        if has_loss:
            _band(axes[0, 1], c.steps, c.losses, look.colour, style, c.label)
        for r in c.runs:
            train = train_of(r)
            best = train.get("best_step")
            if best in set(c.steps.tolist()) and train.get("best_val_metric") is not None:
                val_ax.plot(best, train["best_val_metric"] * scale, "*", ms=11, color=look.colour, mec="black",
                            mew=0.6, zorder=4)
                marked["best"] = True
            if train.get("stopped_early"):
                last = history_of(r)[-1]
                val_ax.plot(last["step"], last["val_metric"] * scale, "X", ms=8, color=look.colour,
                            mec="black", mew=0.6, zorder=4)
                marked["early"] = True
    # Only the marks drawn are explained; many curves get the legend beside the panels, not over the data.
    marks = [Line2D([], [], ls="", marker="*", ms=11, color="white", mec="black", label="best checkpoint (kept)"),
             Line2D([], [], ls="", marker="X", ms=8, color="white", mec="black", label="stopped early (patience)")]
    handles, _ = val_ax.get_legend_handles_labels()
    handles += [m for m, shown in zip(marks, (marked["best"], marked["early"])) if shown]
    if len(handles) <= 5:
        val_ax.legend(handles=handles, fontsize=7.5, loc="best")
    else:
        fig.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 0.92))
    val_ax.set_ylabel(METRIC_LABELS.get(metric, f"validation {metric}"))
    val_ax.set_title(f"(a) {METRIC_LABELS.get(metric, metric)}: mean over seeds, band ± 1 std", fontsize=10)
    if has_loss:
        axes[0, 1].set_ylabel("meta-training loss (at each validation)")
        axes[0, 1].set_title("(b) meta-training loss: mean over seeds, band ± 1 std", fontsize=10)
        if all((c.losses[~np.isnan(c.losses)] > 0).all() for c in drawn):
            axes[0, 1].set_yscale("log")
            from matplotlib.ticker import FuncFormatter

            axes[0, 1].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            axes[0, 1].yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    for ax in axes.flat:
        ax.set_xlabel("meta-training step")
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    protocol = selection.protocol
    title = f"Learning curves, protocol {protocol.id}" if protocol else "Learning curves"
    fig.suptitle(title)
    fig.tight_layout()
    provenance = figure_files.Provenance.of(selection.runs, protocol.id if protocol else "")
    path = figure_files.save(fig, out, title, provenance, fmt)
    return {"out": str(path), "protocol": protocol.id if protocol else None,
            "protocol_description": protocol.description if protocol else None,
            "note": selection.note(), "curves": [c.to_json() for c in drawn]}


def protocol_groups(runs: Iterable[RunRecord]) -> list[Selection]:
    """Every protocol's meta-trained runs, one selection per protocol and metric (the HTML report draws each);
    search trials (``stage=tune``) are left out: they are configurations tried, not results."""
    by_protocol: dict[Any, list[RunRecord]] = {}
    for r in runs:
        if history_of(r) and r.status == "complete" and r.options.get("stage") != "tune":
            by_protocol.setdefault((protocol_of(r), r.metric), []).append(r)
    return [Selection(p, rs, reason="one of each protocol") for (p, _), rs in by_protocol.items()]
