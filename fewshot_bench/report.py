"""Tables from the results store: each cell is mean ± std over seeds of the runs' mean test
accuracy, beside the paper's number; rendered as markdown, LaTeX, CSV or JSON, or plotted.

Which runs fill a cell: those of the row's learner on the setting's dataset, way and shot
(and feature crop). A store can hold runs of the same cell under several protocols (say
a quick 1,000-step try and the paper's 100,000 steps); they are never mixed. The cell
uses the protocol with the most seeds (the most recent on a tie), and says how many
protocols it saw; ``--steps``/``--episodes`` pick one explicitly.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tabulate import tabulate

from fewshot_bench import stats
from fewshot_bench.errors import ConfigError
from fewshot_bench.store import RunRecord
from fewshot_bench.tables import Row, Setting, TableSpec, paper_cell

FORMATS = ("markdown", "latex", "csv", "json")
# Run options that identify a protocol: everything but the cell itself and the seed.
CELL_OPTIONS = {"learner", "dataset", "way", "shot", "seed", "plugin"}


@dataclass
class Cell:
    """One (row, setting) cell: ours (percent, over seeds) and the paper's number."""

    row: str
    learner: str | None
    source: str
    dataset: str
    shot: int
    mean: float | None = None
    std: float | None = None
    seeds: int = 0
    episodes: int | None = None
    steps: int | None = None
    train_on_val: bool | None = None
    protocols: int = 0
    paper_mean: float | None = None
    paper_std: float | None = None

    @property
    def diff(self) -> float | None:
        """Ours minus the paper's, in accuracy points, when both exist."""
        if self.mean is None or self.paper_mean is None:
            return None
        return self.mean - self.paper_mean


def protocol_signature(run: RunRecord) -> str:
    """What a run's protocol is, apart from the cell and the seed: options and learner config."""
    options = {k: v for k, v in run.options.items() if k not in CELL_OPTIONS}
    return json.dumps({"options": options, "config": run.config}, sort_keys=True, default=str)


def select_runs(runs: list[RunRecord]) -> tuple[list[RunRecord], int]:
    """One run per seed, all under one protocol (most seeds, then most recent); and how many protocols there were."""
    groups: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    for run in runs:  # oldest first, so a later run of the same seed wins
        groups[protocol_signature(run)][run.seed] = run
    if not groups:
        return [], 0
    best = max(groups.values(), key=lambda g: (len(g), max(r.created_at for r in g.values())))
    return sorted(best.values(), key=lambda r: r.seed), len(groups)


def fill_cell(cell: Cell, runs: list[RunRecord]) -> Cell:
    """Fill ``cell`` with mean ± std over seeds of the chosen runs (accuracies in percent)."""
    chosen, cell.protocols = select_runs(runs)
    if not chosen:
        return cell
    summary = stats.summarize_seeds([100 * r.accuracy for r in chosen])
    cell.mean, cell.std, cell.seeds = summary.mean, summary.std, summary.seeds
    cell.episodes = min(r.episodes or 0 for r in chosen)
    cell.steps = chosen[0].options.get("steps")
    cell.train_on_val = chosen[0].options.get("train_on_val")
    return cell


def build_cells(
    table: TableSpec,
    settings: list[Setting],
    runs: list[RunRecord],
    same_dataset: Callable[[str, str], bool],
    crop: str = "center",
    steps: int | None = None,
    episodes: int | None = None,
) -> list[Cell]:
    """Every cell of ``table`` over ``settings`` from ``runs``; reported rows only where the paper has numbers.

    ``same_dataset(setting_dataset, run_dataset)`` says whether a run's dataset is the setting's.
    """
    def wanted(r: RunRecord) -> bool:
        return (
            r.way == table.way
            and r.status == "complete"
            and r.options.get("crop", "center") == crop
            and (steps is None or r.options.get("steps") == steps)
            and (episodes is None or r.episodes == episodes)
        )

    pool = [r for r in runs if wanted(r)]
    cells = []
    for row in table.rows:
        row_cells = [_cell(row, s, crop) for s in settings]
        if row.reported:
            if any(c.paper_mean is not None for c in row_cells):
                cells.extend(row_cells)
            continue
        for cell, setting in zip(row_cells, settings):
            matching = [r for r in pool if r.learner == row.learner and r.shot == setting.shot and same_dataset(setting.dataset, r.dataset)]
            cells.append(fill_cell(cell, matching))
    return cells


def _cell(row: Row, setting: Setting, crop: str) -> Cell:
    paper = paper_cell(row, setting, crop)
    return Cell(
        row=row.label,
        learner=row.learner,
        source="reported" if row.reported else "ours",
        dataset=setting.dataset,
        shot=setting.shot,
        paper_mean=paper.mean if paper else None,
        paper_std=paper.std if paper else None,
    )


# --- rendering -----------------------------------------------------------------------------


def _pm(mean: float | None, std: float | None) -> str:
    return "" if mean is None else f"{mean:.2f} ± {std:.2f}"


def display_frame(cells: list[Cell], settings: list[Setting]) -> pd.DataFrame:
    """One row per table row, per setting: ours ("mean ± std", or missing), paper, Δ and runs (seeds × episodes)."""
    with_paper = {s.label for s in settings if any(c.paper_mean is not None for c in cells if (c.dataset, c.shot) == (s.dataset, s.shot))}
    rows: dict[str, dict[str, str]] = {}
    for c in cells:
        label = f"{c.dataset} {c.shot}-shot"
        out = rows.setdefault(c.row, {"model": c.row})
        if c.source == "reported":
            out[label], out[f"{label} runs"] = "reported", ""
        elif c.mean is None:
            out[label], out[f"{label} runs"] = "missing", "0"
        else:
            out[label] = _pm(c.mean, c.std)
            out[f"{label} runs"] = f"{c.seeds} × {c.episodes:,}"
        if label in with_paper:
            out[f"{label} paper"] = _pm(c.paper_mean, c.paper_std) or "-"
            out[f"{label} Δ"] = "" if c.diff is None else f"{c.diff:+.2f}"
    columns = ["model"]
    for s in settings:
        columns += [s.label] + ([f"{s.label} paper", f"{s.label} Δ"] if s.label in with_paper else []) + [f"{s.label} runs"]
    return pd.DataFrame(list(rows.values()), columns=columns)


def numeric_frame(cells: list[Cell], settings: list[Setting]) -> pd.DataFrame:
    """The same table with numbers: per setting mean, std, seeds, episodes, paper mean/std and diff (percent)."""
    rows: dict[str, dict[str, Any]] = {}
    for c in cells:
        out = rows.setdefault(c.row, {"model": c.row, "learner": c.learner or "", "source": c.source})
        prefix = f"{c.dataset}_{c.shot}shot_"
        for name, value in (
            ("mean", c.mean), ("std", c.std), ("seeds", c.seeds if c.source == "ours" else None),
            ("episodes", c.episodes), ("paper_mean", c.paper_mean), ("paper_std", c.paper_std), ("diff", c.diff),
        ):
            out[prefix + name] = value
    frame = pd.DataFrame(list(rows.values()))
    for col in frame.columns:
        if col.endswith(("_seeds", "_episodes")):
            frame[col] = frame[col].astype("Int64")  # integers with a missing marker, not floats
    return frame


def footnotes(table: TableSpec, cells: list[Cell], crop: str) -> list[str]:
    """Lines under a rendered table: what a cell is and which protocols filled it."""
    ours = [c for c in cells if c.source == "ours" and c.mean is not None]
    lines = [
        f"{table.way}-way accuracy (%): ours = mean ± std over seeds of each run's mean over its test episodes; "
        "runs = seeds × test episodes per run; paper = the LEO paper's number; Δ = ours − paper (points)",
    ]
    protocols = sorted({(c.steps, c.train_on_val) for c in ours}, key=str)
    if protocols:
        described = "; ".join(f"{s:,} steps on {'train+val' if tv else 'train'}" for s, tv in protocols if s is not None)
        lines.append(f"meta-training: {described or 'none'}; features: {crop}")
    mixed = [f"{c.row} {c.dataset} {c.shot}-shot" for c in cells if c.protocols > 1]
    if mixed:
        lines.append(f"cells with runs under several protocols (showing the one with most seeds; pick with --steps/--episodes): {', '.join(mixed)}")
    missing = sum(1 for c in cells if c.source == "ours" and c.mean is None)
    if missing:
        lines.append(f"{missing} cell(s) missing: run `fewshot-bench sweep --table {table.number}` with the same --dataset")
    return lines


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("×", r"$\times$").replace("−", "--")


def latex_tabular(frame: pd.DataFrame) -> str:
    """A booktabs ``tabular`` of a frame of strings, every cell escaped."""
    line = lambda values: " & ".join(_latex_escape(str(v)) for v in values) + r" \\"  # noqa: E731
    return "\n".join(
        [
            r"\begin{tabular}{l" + "c" * (len(frame.columns) - 1) + "}",
            r"\toprule",
            line(frame.columns),
            r"\midrule",
            *(line(row) for row in frame.values.tolist()),
            r"\bottomrule",
            r"\end{tabular}",
        ]
    )


def render(table: TableSpec, cells: list[Cell], settings: list[Setting], fmt: str, crop: str = "center") -> str:
    """The table as text in ``fmt`` (markdown, latex, csv or json)."""
    if fmt == "json":
        return json.dumps(
            {
                "table": table.number,
                "title": table.title,
                "crop": crop,
                "settings": [asdict(s) for s in settings],
                "cells": [asdict(c) | {"diff": c.diff} for c in cells],
            },
            default=str,
        )
    if fmt == "csv":
        return numeric_frame(cells, settings).to_csv(index=False, float_format="%.4f")
    frame = display_frame(cells, settings)
    # Each setting's extra columns follow its own: short headers keep the table narrow.
    frame.columns = [c.rsplit(" ", 1)[1] if c.endswith((" paper", " Δ", " runs")) else c for c in frame.columns]
    notes = footnotes(table, cells, crop)
    if fmt == "markdown":
        body = tabulate(frame.values.tolist(), headers=list(frame.columns), tablefmt="github", disable_numparse=True)
        return "\n".join([f"**{table.title}**", "", body, "", *(f"- {n}" for n in notes)])
    if fmt == "latex":
        return "\n".join([f"% {table.title}", *(f"% {_latex_escape(n)}" for n in notes), latex_tabular(frame)])
    raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def plot(table: TableSpec, cells: list[Cell], settings: list[Setting], path: Path) -> None:
    """A grouped bar chart of our rows (error bars: std over seeds), paper numbers as markers."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    by_key = {(c.row, c.dataset, c.shot): c for c in cells}
    # Rows with at least one result; empty rows would only add blank legend entries.
    ours_rows = [r.label for r in table.rows if not r.reported and any(c.mean is not None for c in cells if c.row == r.label)]
    width = 0.8 / max(1, len(ours_rows))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(settings) + 0.25 * len(settings) * len(ours_rows) + 3.5), 4.5))
    colors = plt.get_cmap("tab10").colors
    paper_labelled = False
    for i, label in enumerate(ours_rows):
        xs, heights, errs, paper_x, paper_y = [], [], [], [], []
        for j, s in enumerate(settings):
            c = by_key[(label, s.dataset, s.shot)]
            x = j - 0.4 + width * (i + 0.5)
            if c.mean is not None:
                xs.append(x)
                heights.append(c.mean)
                errs.append(c.std)
            if c.paper_mean is not None:
                paper_x.append(x)
                paper_y.append(c.paper_mean)
        ax.bar(xs, heights, width * 0.9, yerr=errs, capsize=3, label=label, color=colors[i % len(colors)])
        if paper_x:
            ax.scatter(paper_x, paper_y, marker="_", s=200, linewidths=2, color="black", zorder=3,
                       label=None if paper_labelled else "paper")
            paper_labelled = True
    ax.set_xticks(range(len(settings)), [s.label for s in settings])
    ax.set_xlim(-0.6, len(settings) - 0.4)
    ax.set_ylabel(f"{table.way}-way test accuracy (%)")
    ax.set_title(table.title)
    heights = [c.mean for c in cells if c.mean is not None] + [c.paper_mean for c in cells if c.paper_mean is not None and c.source == "ours"]
    if heights:
        ax.set_ylim(max(0.0, min(heights) - 10), min(100.0, max(heights) + 5))
    if ours_rows:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no runs in the store yet", ha="center", va="center", transform=ax.transAxes)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")  # the suffix picks the image format
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
