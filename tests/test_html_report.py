"""`fewshot-bench report --html`: one self-contained page (nothing fetched, images inlined), every number
with its provenance; and a slow test rendering it in headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import one_line_error
from test_figure_files import add_trained_run, trained_store  # noqa: F401  (the fixture)

pytest.importorskip("matplotlib")

from fewshot_bench.records.store import ResultStore  # noqa: E402


class Page(HTMLParser):
    """What a browser would load from the page: tags, every src/href, and each table cell's title and text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.cells: list[tuple[str, str]] = []  # (title, text) of td with a title
        self.headings: list[str] = []
        self._cell: list | None = None
        self._heading: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "td" and "title" in attrs:
            self._cell = [attrs["title"], ""]
        if tag == "h2":
            self._heading = [""]

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append((self._cell[0], self._cell[1]))
            self._cell = None
        if tag == "h2" and self._heading is not None:
            self.headings.append(self._heading[0])
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        if self._heading is not None:
            self._heading[0] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_report_is_one_self_contained_page_with_each_numbers_provenance(cli, trained_store, tmp_path):  # noqa: F811
    path, records = trained_store
    figure = tmp_path / "curves.png"
    assert cli("figure", "curves", "--store", path, "--out", figure).code == 0
    out = tmp_path / "report.html"
    r = cli("report", "--html", out, "--store", path, "--figure", figure)
    assert r.code == 0, r.err
    assert r.out.strip() == f"report written to {out}"
    page = parse(out)
    # Self-contained: no scripts, stylesheets or frames to fetch; every image a data: URI; links only in-page.
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    images = [link for link in page.links if not link.startswith("#")]
    assert images and all(link.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,"))
                          for link in images), images
    # Table 1 and 2 (each with its bar chart), comparisons, curves (one per protocol), the figure given.
    assert page.headings[:2] == [
        "Table 1: test accuracy on synthetic (5-way)",  # titled by the datasets the store's runs used
        "Table 2: ablation study and comparison to Meta-SGD on synthetic (5-way)"]
    assert {"Paired comparisons (same test episodes)", "Learning curves", "Figures",
            "Provenance of each number"} <= set(page.headings)
    assert page.tags.count("img") == 2 + 1 + 1
    # Each number of ours names its runs, protocol, data and versions on hover.
    leo = [r.run_id for r in records if r.learner == "leo"]
    cells = {text.split("±")[0].strip(): title for title, text in page.cells}
    leo_title = next(title for title in cells.values() if leo[0] in title)
    assert leo[1] in leo_title and "protocol " in leo_title and "data " + "d" * 24 in leo_title
    assert "fewshot-bench 0.1.0" in leo_title and "seeds 0, 1" in leo_title
    assert any(text.startswith("55.") for text in cells), cells  # LEO 1-shot: 55.5 - 1 point over its two runs
    comparison = [title for title, text in page.cells if text.strip().startswith(("+", "-", "−"))]
    assert comparison and any(run_id in comparison[0] for run_id in leo)
    # The numbered notes say the same as the hover titles.
    text = out.read_text()
    assert text.count('id="note-') == len({title for title, _ in page.cells})


def test_report_errors_are_one_line_and_write_nothing(cli, trained_store, tmp_path):  # noqa: F811
    path, _ = trained_store
    one_line_error(cli("report", "--html", tmp_path / "r.pdf", "--store", path), ".html")
    one_line_error(cli("report", "--html", tmp_path / "r.html", "--store", path, "--figure", tmp_path / "no.png"),
                   "no such file")
    one_line_error(cli("report", "--html", tmp_path / "r.html", "--store", tmp_path / "absent.db"), "store")
    one_line_error(cli("report", "--html", tmp_path / "r.html", "--store", path, "--compare", "leo"), "A,B")
    assert not list(tmp_path.glob("r.*"))


def test_report_of_an_empty_store_says_what_fills_it(cli, tmp_path):
    path = tmp_path / "empty.db"
    with ResultStore(path):
        pass
    out = tmp_path / "r.html"
    assert cli("report", "--html", out, "--store", path).code == 0
    text = out.read_text()
    assert "no runs yet: `fewshot-bench sweep --table 1`" in text and "no meta-trained runs yet" in text


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0")


def chromium() -> str:
    """The Chromium binary: skipped when missing, except on CI (.ci/run installs it) where that is a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    return found


def render(browser: str, page: Path, folder: Path) -> tuple[Path, list[str]]:
    """Chromium's screenshot of ``page`` (1280 x 2000) and the console messages it logged."""
    shot = folder / f"{page.stem}.png"
    done = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={folder / ('profile-' + page.stem)}", "--window-size=1280,2000",
         f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert shot.exists(), done.stderr[-2000:]
    return shot, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
def test_report_renders_in_headless_chromium_without_console_errors(cli, trained_store, tmp_path):  # noqa: F811
    from PIL import Image, ImageStat

    browser = chromium()
    path, _ = trained_store
    out = tmp_path / "report.html"
    assert cli("report", "--html", out, "--store", path).code == 0
    shot, console = render(browser, out, tmp_path)
    # Any console message is a fault: the page has no scripts, so only a load or parse error could log one.
    assert not console, console
    with Image.open(shot) as image:
        gray = image.convert("L")
        assert image.size == (1280, 2000)
        assert ImageStat.Stat(gray).stddev[0] > 20  # not blank: text, tables and charts on white
        dark = sum(gray.histogram()[:128]) / (image.size[0] * image.size[1])
        assert dark > 0.005, dark  # some ink: a blank white (or all-grey) page has none
    # The console check sees what it looks for: a page with a script error logs it.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    _, console = render(browser, broken, tmp_path)
    assert any("undefinedFunction" in line for line in console), console
