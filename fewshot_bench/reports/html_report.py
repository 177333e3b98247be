"""One self-contained HTML page of what a store holds: Table 1 and Table 2 as the store fills them, paired
comparisons, learning curves and figures, every number with its provenance.

Self-contained means it opens anywhere, offline, years later: styles inline, images inlined as base64
``data:`` URIs, no scripts, fonts or anything fetched. Each of our numbers carries its provenance as a
hover title (run ids, protocol, data id, versions) and a numbered footnote with the same text, so a
printed copy keeps it too.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fewshot_bench import atomic
from fewshot_bench.records.store import RunRecord
from fewshot_bench.reports.combining import data_id_of, protocol_of
from fewshot_bench.reports.figure_files import read_metadata
from fewshot_bench.reports.paired import PairedReport
from fewshot_bench.reports.report import Cell, TableRuns
from fewshot_bench.reports.tables import Setting, TableSpec

IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1a1a1a; background: #ffffff; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; } td.model { text-align: left; }
td.ours { background: #f7fbff; cursor: help; } td.missing { color: #999; } td.reported { color: #555; }
sup { font-size: .7em; } .note { color: #444; font-size: .85em; } .provenance { font-size: .8em; color: #444; }
figure { margin: 1em 0; } figure img { max-width: min(100%, 760px); border: 1px solid #eee; }
figcaption { font-size: .8em; color: #444; }
"""


@dataclass
class Footnotes:
    """Numbered provenance footnotes, one per distinct text."""

    texts: list[str] = field(default_factory=list)

    def mark(self, text: str) -> int:
        """The footnote number of ``text`` (added when new)."""
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


def esc(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def provenance_text(runs: Iterable[RunRecord]) -> str:
    """Where a number came from: its runs, their protocol, data id(s) and software versions."""
    runs = list(runs)
    if not runs:
        return ""
    protocols = sorted({protocol_of(r).label() for r in runs})
    data = sorted({data_id_of(r) or "unknown" for r in runs})
    versions = sorted({f"{k} {v}" for r in runs for k, v in (r.versions or {}).items()
                       if k.startswith("fewshot-bench") or k == "torch"})
    return (f"runs {', '.join(r.run_id for r in runs)} (seeds {', '.join(str(r.seed) for r in runs)}); "
            f"protocol {'; '.join(protocols)}; data {', '.join(data)}; versions {', '.join(versions) or 'unknown'}")


def _number(value: float | None, std: float | None) -> str:
    return "" if value is None else f"{value:.2f} ± {std or 0:.2f}"


def table_html(spec: TableSpec, data: TableRuns, settings: list[Setting], runs: dict[str, RunRecord],
               notes: Footnotes) -> str:
    """The table as HTML: per setting our number (hover: provenance; footnote mark), the paper's and Δ."""
    by_key: dict[tuple, Cell] = {(c.row, c.dataset, c.shot): c for c in data.cells}
    rows = list(dict.fromkeys(c.row for c in data.cells))
    with_paper = [any(c.paper_mean is not None for c in data.cells if (c.dataset, c.shot) == (s.dataset, s.shot))
                  for s in settings]
    head = ["<tr><th rowspan=2>model</th>"] + [
        f"<th colspan={3 if paper else 1}>{esc(s.label)}</th>" for s, paper in zip(settings, with_paper)]
    sub = ["<tr>"] + [("<th>ours</th><th>paper</th><th>Δ</th>" if paper else "<th>ours</th>") for paper in with_paper]
    body = []
    for row in rows:
        tds = [f'<td class="model">{esc(row)}</td>']
        for s, paper in zip(settings, with_paper):
            c = by_key[(row, s.dataset, s.shot)]
            if c.source == "reported":
                tds.append('<td class="reported">reported</td>')
            elif c.mean is None:
                tds.append('<td class="missing">missing</td>')
            else:
                text = provenance_text(runs[i] for i in c.run_ids if i in runs)
                n = notes.mark(text)
                tds.append(f'<td class="ours" title="{esc(text)}">{esc(_number(c.mean, c.std))}'
                           f'<sup><a href="#note-{n}">{n}</a></sup></td>')
            if paper:
                diff = "" if c.diff is None else f"{c.diff:+.2f}"
                tds.append(f"<td>{esc(_number(c.paper_mean, c.paper_std) or '-')}</td><td>{esc(diff)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return ("<table>\n<thead>" + "".join(head) + "</tr>" + "".join(sub) + "</tr></thead>\n<tbody>\n"
            + "\n".join(body) + "\n</tbody></table>")


def comparison_html(report: PairedReport, runs: dict[str, RunRecord], notes: Footnotes) -> str:
    """A paired comparison A − B per setting as HTML, each difference with its runs' provenance."""
    head = (f"<tr><th>dataset</th><th>way</th><th>shot</th><th>seeds</th><th>episodes</th><th>{esc(report.a)}</th>"
            f"<th>{esc(report.b)}</th><th>{esc(report.a)} − {esc(report.b)} (± 95% CI)</th><th>same sign</th></tr>")
    body = []
    for c in report.comparisons:
        used = [runs[i] for p in c.seeds for i in (p.run_a, p.run_b) if i in runs]
        text = provenance_text(used)
        n = notes.mark(text)
        body.append(
            f'<tr><td class="model">{esc(c.dataset)}</td><td>{c.way}</td><td>{c.shot}</td>'
            f"<td>{esc(', '.join(str(p.seed) for p in c.seeds))}</td><td>{c.episodes:,}</td>"
            f"<td>{100 * c.mean_a:.2f}%</td><td>{100 * c.mean_b:.2f}%</td>"
            f'<td class="ours" title="{esc(text)}">{100 * c.diff:+.2f} ± {100 * c.ci95:.2f}'
            f'<sup><a href="#note-{n}">{n}</a></sup></td><td>{c.agree}/{len(c.seeds)}</td></tr>'
        )
    return "<table>\n<thead>" + head + "</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table>"


def image_html(path: Path, caption: str = "") -> str:
    """A PNG or SVG file inlined as a ``data:`` URI, with its provenance caption (from its metadata, else
    ``caption``)."""
    path = Path(path)
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: only {', '.join(IMAGE_TYPES)} images can be inlined")
    meta = read_metadata(path)
    text = meta.get("caption") or caption
    alt = meta.get("title") or path.name
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(alt)}" title="{esc(text)}" src="data:{kind};base64,{data}">'
            f"<figcaption>{esc(alt)}<br><span class=provenance>{esc(text)}</span></figcaption></figure>")


def notes_html(lines: Iterable[str]) -> str:
    """Notes under a section, one paragraph each."""
    return "".join(f'<p class="note">{esc(line)}</p>' for line in lines)


@dataclass
class Section:
    """A titled part of the page: its HTML body."""

    title: str
    body: str
    anchor: str = ""


def page(title: str, sections: list[Section], notes: Footnotes, store: Path) -> str:
    """The whole report: a table of contents, the sections, then the provenance footnotes."""
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    parts = [f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>\n{s.body}\n</section>' for s in sections]
    footnotes = "".join(f'<li id="note-{i}">{esc(text)}</li>' for i, text in enumerate(notes.texts, 1))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<p class=\"note\">From the results store {esc(store)}, written {esc(when)} by "
        "fewshot-bench. Hover over a number for the runs it came from; the numbered notes at the end say the "
        f"same.</p>\n<ul>{toc}</ul>\n" + "\n".join(parts)
        + f'\n<section id="provenance"><h2>Provenance of each number</h2><ol>{footnotes}</ol></section>\n'
        "</body>\n</html>\n"
    )


def write(path: Path, text: str) -> Path:
    """Write the page to ``path`` atomically (never a half-written report)."""
    return atomic.write_text(Path(path), text, "HTML report")
