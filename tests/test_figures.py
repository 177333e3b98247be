"""Figures 3-5 drawn by the CLI from real (short) runs stored by `fewshot-bench run`."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import one_line_error

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHORT = ("--steps", "20", "--val-every", "10", "--val-episodes", "20", "--episodes", "20", "--json")


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000, (path, len(data))


@pytest.mark.slow
def test_figures_4_and_5_from_classification_runs(cli):
    leo = cli("run", "--learner", "leo", *SHORT)
    assert leo.code == 0, leo.err
    missing = cli("figure", "5", "--out", "f5.png", "--episodes", "30")
    assert missing.code == 1 and "metasgd" in missing.err and not Path("f5.png").exists()
    assert cli("run", "--learner", "metasgd", *SHORT).code == 0

    four = cli("figure", "4", "--out", "f4.png", "--episodes", "30", "--json")
    assert four.code == 0, four.err
    assert four.json()["run"] == leo.json()["run_id"] and four.json()["codes"] == 150
    assert four.json()["mean_shift"] > 0  # the latent steps moved the codes
    assert_png(Path("f4.png"))

    five = cli("figure", "5", "--out", "f5.png", "--episodes", "30", "--json")
    assert five.code == 0, five.err
    out = five.json()
    assert all(out[k] > 0 for k in ("hess_z", "hess_theta", "hess_metasgd", "step_leo", "step_metasgd",
                                    "decoder_singular_values"))
    assert_png(Path("f5.png"))


def test_figure_4_reads_the_runs_data_where_the_run_read_it(cli, tmp_path):
    """README order: `run --dataset features --data-dir feats/` then `figure 4`: the figure finds feats/ itself."""
    from leo_fixtures import make_split

    from fewshot_bench.data.leo import write_embeddings

    feats = tmp_path / "feats"
    for i, split in enumerate(("train", "val", "test")):
        write_embeddings(feats / f"{split}_embeddings.npz", *make_split([f"c{i}{j}" for j in range(6)], 20, dim=16))
    leo = cli("run", "--learner", "leo", "--dataset", "features", "--data-dir", feats, *SHORT)
    assert leo.code == 0, leo.err
    four = cli("figure", "4", "--out", "f4.png", "--episodes", "10", "--json")
    assert four.code == 0, four.err
    assert four.json()["run"] == leo.json()["run_id"]
    moved = tmp_path / "elsewhere"
    feats.rename(moved)  # gone from where the run read it: --data-dir says where it is now
    again = cli("figure", "4", "--out", "f4.png", "--episodes", "10", "--data-dir", moved, "--json")
    assert again.code == 0, again.err


def test_figure_3_from_a_regression_run(cli):
    run = cli("run", "--learner", "leo", "--dataset", "sines-lines", *SHORT)
    assert run.code == 0, run.err
    out = cli("figure", "3", "--out", "f3.png", "--samples", "4", "--json")
    assert out.code == 0, out.err
    problems = out.json()["problems"]
    assert len(problems) == 6 and sum("ambiguous" in p["label"] for p in problems) == 3
    assert all(p["sample_spread"] > 0 for p in problems)  # LEO samples models at evaluation
    assert_png(Path("f3.png"))


def test_figure_errors_are_one_line(cli):
    assert cli("figure", "3", "--out", "x.png").code == 1  # no store
    bad = cli("figure", "4", "--out", "x.jpg")
    one_line_error(bad, "png")
