"""Tables from the results store: each cell is mean ± std over seeds of the runs' mean test
accuracy, beside the paper's number; rendered as markdown, LaTeX, CSV or JSON, or plotted.

Which runs fill a table: those of its learners on its settings' datasets, way and shot
(and feature crop), all under one shared protocol (see :mod:`fewshot_bench.reports.combining`).
A store can hold runs under several protocols (say a quick 1,000-step try and the
paper's 100,000 steps); they are never mixed. Without ``--protocol``/``--steps``/
``--episodes`` the table uses the protocol that fills the most (row, setting, seed)
cells (the most recent on a tie) and says so under the table. A row uses its learner's
runs with default hyperparameters unless ``--set LEARNER.KEY=VALUE`` selects the runs
made with those overrides; such a row's label names them.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from fewshot_bench.console.table_fit import fit_table
from fewshot_bench.errors import ConfigError
from fewshot_bench.protocol.spec import hparams_source
from fewshot_bench.records import stats
from fewshot_bench.records.store import RunRecord
from fewshot_bench.reports import palette
from fewshot_bench.reports.combining import (
    TRANSDUCTIVE_NOTE,
    Selection,
    choose,
    execution_note,
    is_transductive,
    mark,
    one_data_per_dataset,
    one_per_seed,
    overrides_of,
    overrides_text,
    protocol_of,
    seeds_text,
    set_options,
)
from fewshot_bench.reports.figure_files import Provenance, save
from fewshot_bench.reports.tables import Row, Setting, TableSpec, paper_cell

FORMATS = ("markdown", "latex", "csv", "json")


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
    protocols: int = 0  # shared protocols this cell has runs under (one of them is used)
    paper_mean: float | None = None
    paper_std: float | None = None
    protocol: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    seed_list: list[int] = field(default_factory=list)
    variants: int = 0  # learner configs seen under the protocol and overrides (one is used)
    transductive: bool = False

    @property
    def diff(self) -> float | None:
        """Ours minus the paper's, in accuracy points, when both exist."""
        if self.mean is None or self.paper_mean is None:
            return None
        return self.mean - self.paper_mean


@dataclass
class TableRuns:
    """A table's cells, the protocol that filled them, and notes on what was left out."""

    cells: list[Cell]
    selection: Selection
    notes: list[str] = field(default_factory=list)


def fill_cell(cell: Cell, runs: list[RunRecord], protocols: int = 1) -> Cell:
    """Fill ``cell`` with mean ± std over seeds of ``runs`` (one protocol, one override set; percent)."""
    chosen, cell.variants = one_per_seed(runs)
    cell.protocols = protocols
    if not chosen:
        return cell
    summary = stats.summarize_seeds([100 * r.mean for r in chosen])
    cell.mean, cell.std, cell.seeds = summary.mean, summary.std, summary.seeds
    cell.episodes = min(r.episodes or 0 for r in chosen)
    cell.steps = chosen[0].options.get("steps")
    cell.train_on_val = chosen[0].options.get("train_on_val")
    cell.protocol = protocol_of(chosen[0]).id
    cell.run_ids = [r.run_id for r in chosen]
    cell.seed_list = [r.seed for r in chosen]
    cell.transductive = any(is_transductive(r) for r in chosen)
    return cell


def build_cells(
    table: TableSpec,
    settings: list[Setting],
    runs: list[RunRecord],
    same_dataset: Callable[[str, str], bool],
    crop: str = "center",
    steps: int | None = None,
    episodes: int | None = None,
    protocol: str | None = None,
    overrides: dict[str, dict[str, str]] | None = None,
    data: str | None = None,
) -> TableRuns:
    """Every cell of ``table`` over ``settings`` from ``runs``, all under one shared protocol and, per dataset,
    on one version of its data (``data``: an id prefix picks it; see :func:`protocols.one_data_per_dataset`).

    ``same_dataset(setting_dataset, run_dataset)`` says whether a run's dataset is the
    setting's; ``protocol`` (an id prefix), ``steps`` and ``episodes`` narrow the protocol;
    ``overrides`` ({learner: {key: value}}) selects runs made with those ``--set`` overrides
    instead of the learner's defaults. Reported rows appear only where the paper has numbers.
    """
    overrides = overrides or {}
    outside = sorted(set(overrides) - set(table.learners))
    if outside:
        raise ConfigError(f"--set names learner(s) not in table {table.number}: {', '.join(outside)}; "
                          f"its learners: {', '.join(table.learners)}")
    versions = one_data_per_dataset(_table_runs(table, settings, runs, same_dataset, crop), data)
    pool = versions.runs
    wanted = lambda r: overrides_of(r) == overrides.get(r.learner, {})  # noqa: E731
    # A protocol's score: the (row, setting, seed) cells it fills with the runs the table would use.
    score = lambda rs: len({(r.learner, r.dataset.lower(), r.shot, r.seed) for r in rs if wanted(r)})  # noqa: E731
    selection = choose(pool, protocol, steps, episodes, score=score, unit="cells", what=f" for table {table.number}")
    chosen = [r for r in selection.runs if wanted(r)]
    seen_protocols = _protocols_seen(pool, settings, same_dataset)

    cells, notes, sources = [], list(versions.notes), []
    for row in table.rows:
        row_cells = [_cell(row, s, crop) for s in settings]
        if row.reported:
            if any(c.paper_mean is not None for c in row_cells):
                cells.extend(row_cells)
            continue
        asked = overrides.get(row.learner, {})
        _fill_row(row, row_cells, settings, chosen, same_dataset, seen_protocols, asked)
        cells.extend(row_cells)
        used = {run_id for c in row_cells for run_id in c.run_ids}
        if used:  # where the row's hyperparameters came from: default, a preset, or a search (study, trials, budget)
            sources.append(f"{row.label}: {'; '.join(sorted({hparams_source(r) for r in chosen if r.run_id in used}))}")
        if all(c.mean is None for c in row_cells):
            notes.extend(_other_overrides_note(row, selection.runs, asked))
    if any(not text.endswith(": default") for text in sources):  # all defaults: nothing to say
        notes.append("hyperparameters: " + " | ".join(sources))
    used = {run_id for c in cells for run_id in c.run_ids}
    differs = execution_note(r for r in chosen if r.run_id in used)
    if differs:
        notes.append(differs)
    return TableRuns(cells, selection, notes)


def _setting_of(run: RunRecord, settings: list[Setting], same_dataset: Callable[[str, str], bool]) -> Setting | None:
    """The setting of ``settings`` whose dataset and shot ``run`` has (None: none)."""
    return next((s for s in settings if s.shot == run.shot and same_dataset(s.dataset, run.dataset)), None)


def _table_runs(table: TableSpec, settings: list[Setting], runs: list[RunRecord],
                same_dataset: Callable[[str, str], bool], crop: str) -> list[RunRecord]:
    """The complete runs of the table's learners, way and crop on one of ``settings``, of any protocol and data."""
    return [
        r for r in runs
        if r.way == table.way and r.status == "complete" and r.learner in table.learners
        and r.options.get("crop", "center") == crop and _setting_of(r, settings, same_dataset) is not None
    ]


def _protocols_seen(pool: list[RunRecord], settings: list[Setting],
                    same_dataset: Callable[[str, str], bool]) -> dict[tuple[str, Setting], set[str]]:
    """The protocol ids each (learner, setting) has runs under."""
    seen: dict[tuple[str, Setting], set[str]] = {}
    for r in pool:
        seen.setdefault((r.learner, _setting_of(r, settings, same_dataset)), set()).add(protocol_of(r).id)
    return seen


def _fill_row(row: Row, row_cells: list[Cell], settings: list[Setting], chosen: list[RunRecord],
              same_dataset: Callable[[str, str], bool], seen_protocols: dict[tuple[str, Setting], set[str]],
              asked: dict[str, str]) -> None:
    """Fill a learner's row from the chosen runs and label it: its overrides, and a mark if any run is transductive."""
    for cell, setting in zip(row_cells, settings):
        matching = [r for r in chosen if r.learner == row.learner and r.shot == setting.shot
                    and same_dataset(setting.dataset, r.dataset)]
        fill_cell(cell, matching, len(seen_protocols.get((row.learner, setting), ())))
        cell.overrides = dict(asked)
    transductive = any(c.transductive for c in row_cells)
    label = row.label + (f" [{overrides_text(asked)}]" if asked else "")
    for cell in row_cells:
        cell.row = mark(label, transductive)
        cell.transductive = transductive


def _other_overrides_note(row: Row, runs: list[RunRecord], asked: dict[str, str]) -> list[str]:
    """For an empty row: the note naming the ``--set`` overrides its learner's runs of the protocol were made with."""
    unused = sorted({overrides_text(overrides_of(r)): overrides_of(r) for r in runs
                     if r.learner == row.learner and overrides_of(r) != asked}.items())
    if not unused:
        return []
    what = "with overrides " + overrides_text(asked) if asked else "with the learner's defaults"
    hints = " or ".join(f"`{set_options(row.learner, o)}`" for _, o in unused)
    return [f"{row.label}: no runs {what} under this protocol; runs with other overrides exist: show them with {hints}"]


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


SUFFIXES = (" paper", " Δ", " runs")  # a setting's columns beside its own: the paper's number, ours − paper, runs


def runs_text(cell: Cell) -> str:
    """``seeds × test episodes`` of a cell with runs (``5 × 50,000``)."""
    return f"{cell.seeds} × {cell.episodes:,}"


def common_runs(cells: list[Cell]) -> str | None:
    """The one ``seeds × episodes`` every cell with runs has (None: none has runs, or they differ)."""
    texts = {runs_text(c) for c in cells if c.source == "ours" and c.mean is not None}
    return texts.pop() if len(texts) == 1 else None


def display_frame(cells: list[Cell], settings: list[Setting]) -> pd.DataFrame:
    """One row per table row; per setting the columns that say something: ours ("mean ± std", or missing) where
    any row has runs or the paper has no number, the paper's number and Δ where the paper has one, and runs
    (seeds × episodes) only when they differ between cells (else the notes say it once).

    A table of the paper's datasets with few runs would otherwise be mostly ``missing`` and blank columns.
    """
    uniform = common_runs(cells) is not None or not any(c.mean is not None for c in cells)
    rows: dict[str, dict[str, str]] = {}
    columns = ["model"]
    for s in settings:
        here = [c for c in cells if (c.dataset, c.shot) == (s.dataset, s.shot)]
        paper = any(c.paper_mean is not None for c in here)
        ours = any(c.mean is not None for c in here)
        shown = {
            s.label: ours or not paper,
            f"{s.label} paper": paper,
            f"{s.label} Δ": any(c.diff is not None for c in here),
            f"{s.label} runs": ours and not uniform,
        }
        columns += [name for name, show in shown.items() if show]
        for c in here:
            out = rows.setdefault(c.row, {"model": c.row})
            reported, missing = c.source == "reported", c.mean is None
            out[s.label] = "" if reported else "missing" if missing else _pm(c.mean, c.std)
            out[f"{s.label} paper"] = _pm(c.paper_mean, c.paper_std) or "-"
            out[f"{s.label} Δ"] = "" if c.diff is None else f"{c.diff:+.2f}"
            out[f"{s.label} runs"] = "" if reported else "0" if missing else runs_text(c)
    return pd.DataFrame(list(rows.values()), columns=columns)


def short_headers(columns: list[str]) -> list[str]:
    """Headers with a setting named once: ``mini 1-shot``, ``paper``, ``Δ``; a setting whose own column is not
    shown names itself on the first it has (``mini 1-shot paper``)."""
    out, previous = [], None
    for name in columns:
        suffix = next((x for x in SUFFIXES if name.endswith(x)), None)
        setting = name[: -len(suffix)] if suffix else name
        out.append(suffix.strip() if suffix and setting == previous else name)
        previous = setting
    return out


def numeric_frame(cells: list[Cell], settings: list[Setting], protocol: str | None = None) -> pd.DataFrame:
    """The same table with numbers: per setting mean, std, seeds, episodes, paper mean/std and diff (percent).

    Our rows also carry the shared ``protocol`` id, their learner's ``overrides`` and whether it is ``transductive``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for c in cells:
        out = rows.setdefault(c.row, {"model": c.row, "learner": c.learner or "", "source": c.source})
        if c.source == "ours":
            out["overrides"] = overrides_text(c.overrides)
            out["transductive"] = c.transductive
        prefix = f"{c.dataset}_{c.shot}shot_"
        for name, value in (
            ("mean", c.mean), ("std", c.std), ("seeds", c.seeds if c.source == "ours" else None),
            ("episodes", c.episodes), ("paper_mean", c.paper_mean), ("paper_std", c.paper_std), ("diff", c.diff),
        ):
            out[prefix + name] = value
    frame = pd.DataFrame(list(rows.values()))
    if protocol is not None:
        frame.insert(3, "protocol", [protocol if src == "ours" else "" for src in frame["source"]])
    for col in frame.columns:
        if col.endswith(("_seeds", "_episodes")):
            frame[col] = frame[col].astype("Int64")  # integers with a missing marker, not floats
    return frame


def footnotes(table: TableSpec, data: TableRuns, crop: str, settings: list[Setting] | None = None) -> list[str]:
    """Lines under a rendered table: what a cell is, the protocol and runs that filled it, and what was left out.

    ``settings`` (those rendered) limit the legend to the columns shown: no word on the paper's numbers
    for a table with none.
    """
    cells = data.cells
    ours = [c for c in cells if c.source == "ours" and c.mean is not None]
    frame = display_frame(cells, settings) if settings is not None else None
    shown = list(frame.columns) if frame is not None else []
    common = common_runs(cells)
    legend = [f"{table.way}-way accuracy (%): ours = mean ± std over seeds of each run's mean over its test episodes"]
    if common is not None:
        legend.append(f"every cell with runs: {common} (seeds × test episodes per run)")
    elif ours:
        legend.append("runs = seeds × test episodes per run")
    if frame is None or any(c.endswith(" paper") for c in shown):
        legend.append("paper = the number the LEO paper prints (for other methods, as it cites them)")
    if frame is None or any(c.endswith(" Δ") for c in shown):
        legend.append("Δ = ours − paper (points)")
    lines = ["; ".join(legend)]
    hidden = [s.label for s in settings or [] if s.label not in shown]
    if hidden:
        lines.append(f"no runs yet for {', '.join(hidden)}: only the paper's numbers are shown there")
    if data.selection.protocol is not None:
        lines.append(data.selection.note())
    used = [run_id for c in ours for run_id in c.run_ids]
    if used:
        lines.append(
            f"runs used: {len(used)} (seeds {seeds_text(s for c in ours for s in c.seed_list)}; features: {crop}); "
            "`--format json` lists every cell's run ids"
        )
    lines.extend(data.notes)
    variants = [f"{c.row} {c.dataset} {c.shot}-shot" for c in ours if c.variants > 1]
    if variants:
        lines.append(
            "cells with runs of several learner configs under this protocol (e.g. another plugin version), "
            f"showing the config with most seeds: {', '.join(variants)}"
        )
    if any(c.transductive for c in ours):
        lines.append(TRANSDUCTIVE_NOTE)
    missing = sum(1 for c in cells if c.source == "ours" and c.mean is None)
    if missing:
        lines.append(f"{missing} cell(s) missing: run `fewshot-bench sweep --table {table.number}` "
                     "with the same --dataset and protocol")
    return lines


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return (
        text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("×", r"$\times$").replace("−", "--")
        .replace("†", r"$^\dagger$")
    )


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


def bullet(note: str, width: int | None) -> str:
    """A note as a markdown list item, its lines (and, given a ``width``, their words) wrapped under it."""
    lines = note.splitlines()
    if width is not None:
        lines = [part for line in lines for part in
                 textwrap.wrap(line, max(20, width - 2), subsequent_indent=" " * (len(line) - len(line.lstrip())),
                               break_long_words=False, break_on_hyphens=False) or [line]]
    return "\n".join(["- " + lines[0], *("  " + line for line in lines[1:])])


def title_on_settings(table: TableSpec, settings: list[Setting]) -> str:
    """The table's title naming the datasets it is rendered on (``--dataset synthetic``: "on synthetic")."""
    return table.title_on(list(dict.fromkeys(s.dataset_label for s in settings)))


def render(table: TableSpec, data: TableRuns, settings: list[Setting], fmt: str, crop: str = "center",
           width: int | None = None) -> str:
    """The table as text in ``fmt`` (markdown, latex, csv or json); markdown at most ``width`` characters wide
    where it can be (several tables one under the other, each with the model column: console.table_fit)."""
    cells = data.cells
    title = title_on_settings(table, settings)
    if fmt == "json":
        return json.dumps(
            {
                "table": table.number,
                "title": title,
                "crop": crop,
                **data.selection.to_json(),
                "settings": [asdict(s) for s in settings],
                "cells": [asdict(c) | {"diff": c.diff} for c in cells],
                "notes": footnotes(table, data, crop, settings)[1:],
            },
            default=str,
        )
    protocol = data.selection.protocol.id if data.selection.protocol else None
    if fmt == "csv":
        return numeric_frame(cells, settings, protocol).to_csv(index=False, float_format="%.4f")
    frame = display_frame(cells, settings)
    notes = footnotes(table, data, crop, settings)
    if fmt == "markdown":
        # Each setting's extra columns follow its own: short headers keep the table narrow.
        body = fit_table(frame.values.tolist(), list(frame.columns), "github", width, numparse=False,
                         shorten=short_headers)
        heading = textwrap.wrap(title, width - 4) if width else [title]
        return "\n".join(["**" + "\n".join(heading) + "**", "", body, "", *(bullet(n, width) for n in notes)])
    frame.columns = short_headers(list(frame.columns))
    if fmt == "latex":
        comments = [f"% {_latex_escape(line)}" for n in notes for line in n.splitlines()]
        return "\n".join([f"% {title}", *comments, latex_tabular(frame)])
    raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def plot(table: TableSpec, cells: list[Cell], settings: list[Setting], path: Path, provenance: Provenance | None = None,
         fmt: str | None = None) -> Path:
    """A grouped bar chart of our rows (bars from zero, error bars: std over seeds), paper numbers as markers, in
    each learner's colour; settings no run filled are left out. ``provenance`` goes under it and into its
    metadata."""
    try:
        import matplotlib
    except ImportError as exc:  # in the default install; a trimmed environment gets one line
        raise ConfigError(f"--plot needs matplotlib ({exc}); python -m pip install 'matplotlib>=3.7'") from None

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    by_key = {(c.row, c.dataset, c.shot): c for c in cells}
    # Rows with at least one result, in table order; empty rows would only add blank legend entries.
    ours_rows = list(dict.fromkeys(c.row for c in cells if c.source == "ours" and c.mean is not None))
    learner_of = {c.row: c.learner or "" for c in cells}
    # A setting no row has a result for is an empty gap: leave it out (the caption says which).
    filled = [s for s in settings if any(by_key[(r, s.dataset, s.shot)].mean is not None for r in ours_rows)]
    empty = [s.label for s in settings if s not in filled]
    shown = filled or settings
    width = 0.8 / max(1, len(ours_rows))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(shown) + 0.25 * len(shown) * len(ours_rows) + 3.5), 4.5))
    paper_labelled = False
    for i, label in enumerate(ours_rows):
        look = palette.style(learner_of[label])
        xs, heights, errs, paper_x, paper_y = [], [], [], [], []
        for j, s in enumerate(shown):
            c = by_key[(label, s.dataset, s.shot)]
            x = j - 0.4 + width * (i + 0.5)
            if c.mean is not None:
                xs.append(x)
                heights.append(c.mean)
                errs.append(c.std)
            if c.paper_mean is not None:
                paper_x.append(x)
                paper_y.append(c.paper_mean)
        ax.bar(xs, heights, width * 0.9, yerr=errs, capsize=3, label=label, color=look.colour,
               edgecolor="black", linewidth=0.4, error_kw=dict(lw=1, ecolor="black"))
        if paper_x:
            ax.scatter(paper_x, paper_y, marker="_", s=200, linewidths=2.5, color="black", zorder=3,
                       label=None if paper_labelled else "the paper's number")
            paper_labelled = True
    ax.set_xticks(range(len(shown)), [s.label for s in shown])
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylabel(f"{table.way}-way test accuracy (%)\nbar: mean over seeds, error bar: ± 1 std")
    ax.set_title(title_on_settings(table, settings), fontsize="medium")
    heights = ([c.mean + (c.std or 0) for c in cells if c.mean is not None]
               + [c.paper_mean for c in cells if c.paper_mean is not None and c.source == "ours"])
    # Bars are read by their length: they start at zero, and the top leaves room for the error bars.
    ax.set_ylim(0.0, min(100.0, max(heights) + 5) if heights else 100.0)
    if ours_rows:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no runs in the store yet", ha="center", va="center", transform=ax.transAxes)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    caption: str | Provenance = provenance if provenance is not None else "no runs"
    if empty and provenance is not None:
        caption = replace(provenance, extra=(*provenance.extra, f"no runs yet for {', '.join(empty)} (left out)"))
    return save(fig, Path(path), title_on_settings(table, settings), caption, fmt, dpi=120)
