"""``fewshot-bench report --html``: everything a store holds on one self-contained HTML page.

Gathers what the other outputs show, through the same functions (:func:`fewshot_bench.workflows.table`,
:func:`fewshot_bench.workflows.compare`, :mod:`fewshot_bench.reports.curves`), so the page never says
anything the commands would not: Table 1 and Table 2 as the store fills them (with their bar charts),
paired comparisons, learning curves (one figure per protocol) and figure files given by the user;
:mod:`fewshot_bench.reports.html_report` renders them.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fewshot_bench.errors import ConfigError, FewshotBenchError
from fewshot_bench.plugin_host import PluginHost
from fewshot_bench.records.store import DEFAULT_STORE, ResultStore, RunRecord
from fewshot_bench.reports import curves, html_report
from fewshot_bench.reports.html_report import Footnotes, Section, esc, image_html, notes_html
from fewshot_bench.reports.report import title_on_settings
from fewshot_bench.reports.tables import TABLES
from fewshot_bench.workflows import compare, dataset_names, table

DEFAULT_PAIRS = (("leo", "metasgd"),)  # the paper's comparison


@dataclass
class ReportRequest:
    """What goes on the page: the tables' datasets (default: those the store's table runs used), the learner
    pairs to compare, and figure files to include."""

    store: Path = Path(DEFAULT_STORE)
    datasets: list[str] | None = None
    pairs: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_PAIRS))
    figures: list[Path] = field(default_factory=list)
    title: str = "fewshot-bench report"


def table_datasets(runs: Iterable[RunRecord], host: PluginHost) -> list[str] | None:
    """The (at most two) datasets the store's runs of the tables' learners used most, by name as stored
    (None: the paper's datasets, when none)."""
    learners = {name for spec in TABLES.values() for name in spec.learners}
    counts = Counter(r.dataset for r in runs if r.learner in learners and r.way == 5 and r.metric == "accuracy")
    chosen: list[str] = []
    for name, _ in counts.most_common():
        if not any(dataset_names(host, name) & dataset_names(host, c) for c in chosen):
            chosen.append(name)
    return chosen[:2] or None


def table_sections(request: ReportRequest, runs: dict[str, RunRecord], host: PluginHost, notes: Footnotes,
                   folder: Path) -> list[Section]:
    """Table 1 and Table 2 with their bar charts, as the store fills them."""
    datasets = request.datasets or table_datasets(runs.values(), host)
    sections = []
    for number, spec in TABLES.items():
        result = table(number, datasets=datasets, store=request.store, host=host)
        body = html_report.table_html(spec, result.data, result.settings, runs, notes)
        lines = [result.data.selection.note(), *result.data.notes]
        if result.provenance() is not None:
            body += image_html(result.plot(folder / f"table{number}.png"))
        else:
            lines.append(f"no runs yet: `fewshot-bench sweep --table {number}"
                         + (f" --dataset {','.join(datasets)}`" if datasets else "`") + " fills it")
        sections.append(Section(title_on_settings(spec, result.settings), body + notes_html(lines), f"table-{number}"))
    return sections


def comparison_section(request: ReportRequest, runs: dict[str, RunRecord], notes: Footnotes) -> Section:
    """The paired comparisons of each pair of learners, on every setting both have runs of."""
    parts = []
    for a, b in request.pairs:
        try:
            report = compare(a, b, store=request.store)
        except FewshotBenchError as exc:  # say why on the page: one pair missing does not sink the report
            parts.append(f"<h3>{esc(a)} − {esc(b)}</h3>" + notes_html([str(exc)]))
            continue
        parts.append(f"<h3>{esc(a)} − {esc(b)}</h3>")
        if report.comparisons:
            parts.append(html_report.comparison_html(report, runs, notes))
            parts.append(notes_html(["difference: mean over paired test episodes (points), ± half-width of its "
                                     "95% CI; same sign: seeds whose difference has the mean's sign",
                                     report.selection.note(), *report.notes]))
        else:
            parts.append(notes_html([f"no {a} and {b} runs of one setting, seed and protocol to pair yet"]))
    return Section("Paired comparisons (same test episodes)", "".join(parts), "comparisons")


def curve_section(runs: dict[str, RunRecord], folder: Path) -> Section:
    """Learning curves: one figure per protocol (and task kind) of meta-trained runs."""
    parts = []
    for i, selection in enumerate(curves.protocol_groups(runs.values())):
        info = curves.draw(selection, folder / f"curves-{i}.png")
        parts.append(image_html(Path(info["out"])))
        parts.append(notes_html([selection.note()]))
    return Section("Learning curves", "".join(parts) or notes_html(["no meta-trained runs yet"]), "curves")


def figure_section(paths: list[Path]) -> Section | None:
    """The figure files given (PNG or SVG, e.g. from `fewshot-bench figure 4 --out fig4.png`)."""
    if not paths:
        return None
    return Section("Figures", "".join(image_html(p) for p in paths), "figures")


def check_figures(paths: Iterable[Path]) -> None:
    """A one-line error for a figure file that is missing or cannot be inlined (before anything is written)."""
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"--figure {path}: no such file")
        if Path(path).suffix.lower() not in html_report.IMAGE_TYPES:
            raise ConfigError(f"--figure {path}: only .png and .svg files can be inlined (draw it with "
                              "`fewshot-bench figure N --format png` or svg)")


def write_report(out: Path, request: ReportRequest, host: PluginHost) -> Path:
    """Gather every section from the store and write the page to ``out`` (atomically); returns ``out``."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--html {out} must end in .html")
    check_figures(request.figures)
    with ResultStore(request.store, create=False) as db:
        runs = {r.run_id: r for r in db.runs()}
    notes = Footnotes()
    with tempfile.TemporaryDirectory(prefix="fewshot-report-") as tmp:
        folder = Path(tmp)
        sections = table_sections(request, runs, host, notes, folder)
        sections.append(comparison_section(request, runs, notes))
        sections.append(curve_section(runs, folder))
        figures = figure_section(request.figures)
        if figures is not None:
            sections.append(figures)
        text = html_report.page(request.title, sections, notes, request.store)
    return html_report.write(out, text)
