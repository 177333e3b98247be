"""What the README shows, the install provides; a trimmed environment gets one line naming the pip command."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from helpers import one_line_error

from fewshot_bench.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_figures_and_plots_are_in_the_default_install():
    deps = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert "matplotlib" in deps and "scikit-learn" in deps


def test_figure_without_matplotlib_is_one_line(cli, monkeypatch):
    import fewshot_bench.reports

    monkeypatch.setitem(sys.modules, "fewshot_bench.reports.figures", None)  # as if matplotlib could not be imported
    monkeypatch.delattr(fewshot_bench.reports, "figures", raising=False)  # an earlier test may have imported it
    r = cli("figure", "3", "--out", "fig3.png")
    one_line_error(r, "python -m pip install 'matplotlib>=3.7'")


def test_table_plot_without_matplotlib_is_one_line(monkeypatch):
    from fewshot_bench.reports.report import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"python -m pip install 'matplotlib>=3.7'"):
        plot(None, [], [], Path("t.png"))  # type: ignore[arg-type]
