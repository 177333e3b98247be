"""Paper-ready figures: one palette across figures 4, 5 and the table plot, provenance in every format's
metadata, table plots without empty groups, and learning curves (`figure curves`) from stored histories."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from fewshot_bench.api import TaskSpec  # noqa: E402
from fewshot_bench.records.store import ResultStore, RunRecord  # noqa: E402
from fewshot_bench.reports import figures, palette  # noqa: E402
from fewshot_bench.reports.figure_files import Provenance, read_metadata  # noqa: E402

STEPS = 40
VERSIONS = {"fewshot-bench": "0.1.0", "fewshot-bench-leo": "0.1.0", "torch": "2.x"}


def add_trained_run(store: ResultStore, learner: str, shot: int, seed: int, curve: list[float],
                    stopped_early: bool = False, dataset: str = "synthetic") -> RunRecord:
    """Store a meta-trained run shaped like the runner's: validation history every 10 steps, best checkpoint,
    per-episode accuracies (their mean a little under the best validation)."""
    history = [{"step": 10 * (i + 1), "val_metric": v, "loss": 2.0 - v} for i, v in enumerate(curve)]
    best = int(np.argmax(curve))
    values = np.full(20, curve[best] - 0.01, dtype=np.float32) + np.linspace(-0.01, 0.01, 20, dtype=np.float32)
    options = {"learner": learner, "dataset": dataset, "way": 5, "shot": shot, "seed": seed, "steps": STEPS,
               "val_every": 10, "val_episodes": 20, "patience": 2, "episodes": values.size, "train_on_val": False,
               "crop": "center", "eval_query": None, "hparams": None, "data_id": "d" * 24, "plugin": "p"}
    train = {"history": history, "best_step": history[best]["step"], "best_val_metric": curve[best],
             "stopped_early": stopped_early, "steps": history[-1]["step"], "metric": "accuracy"}
    record = RunRecord.new(
        run_key=f"{learner}-{dataset}-{shot}-{seed}", learner=learner, dataset=dataset, way=5, shot=shot, seed=seed,
        status="complete", metric="accuracy", mean=float(values.astype(np.float64).mean()), ci95=0.01,
        episodes=values.size, config={}, options=options, summary={"train": train}, versions=VERSIONS,
        hardware={}, timings={},
    )
    store.add_run(record, values)
    return record


@pytest.fixture
def trained_store(tmp_path) -> tuple[Path, list[RunRecord]]:
    """LEO and Meta-SGD on synthetic 1-shot, seeds 0 and 1 (Meta-SGD seed 1 stopped early); no 5-shot runs."""
    path = tmp_path / "trained.db"
    with ResultStore(path) as s:
        records = [
            add_trained_run(s, "leo", 1, 0, [0.40, 0.50, 0.55, 0.54]),
            add_trained_run(s, "leo", 1, 1, [0.42, 0.48, 0.57, 0.56]),
            add_trained_run(s, "metasgd", 1, 0, [0.45, 0.47, 0.49, 0.50]),
            add_trained_run(s, "metasgd", 1, 1, [0.44, 0.46, 0.45], stopped_early=True),
        ]
    return path, records


def svg_colours(path: Path) -> set[str]:
    """Every fill and stroke colour an SVG file uses (lower-case hex)."""
    return {c.lower() for c in re.findall(r"(?:fill|stroke):\s*(#[0-9a-fA-F]{6})", path.read_text())}


def untrained(host, name: str, dataset) -> torch.nn.Module:
    """A freshly built learner on the synthetic dataset, 5-way 1-shot (figures only need its adaptation)."""
    from fewshot_bench.protocol.runner import build_learner

    cls = host.learner(name).for_kind(dataset.kind)
    torch.manual_seed(0)
    task = TaskSpec(5, 1, dataset.feature_dim, dataset.kind, "synthetic")
    return build_learner(cls, cls.default_config("synthetic", 1), task, torch.device("cpu"))


@pytest.mark.slow  # t-SNE and LEO's latents: about a minute on a shared 2-core machine
def test_one_palette_colours_each_learner_alike_in_figures_4_5_and_the_table_plot(cli, host, synthetic,
                                                                                   trained_store, tmp_path):
    path, records = trained_store
    leo, metasgd = untrained(host, "leo", synthetic), untrained(host, "metasgd", synthetic)
    f4, f5, plot = tmp_path / "f4.svg", tmp_path / "f5.svg", tmp_path / "t2.svg"
    figures.figure_4(leo, synthetic.split("val"), f4, episodes=10)
    figures.figure_5(leo, metasgd, synthetic.split("test"), f5, problems=10, provenance=Provenance.of(records[::2]))
    table = cli("table", "2", "--dataset", "synthetic", "--store", path, "--plot", plot)
    assert table.code == 0, table.err
    leo_colour, metasgd_colour = palette.colour("leo"), palette.colour("metasgd")
    assert leo_colour.lower() != metasgd_colour.lower()
    for figure in (f4, f5, plot):
        assert leo_colour.lower() in svg_colours(figure), figure.name
    for figure in (f5, plot):
        assert metasgd_colour.lower() in svg_colours(figure), figure.name
    assert metasgd_colour.lower() not in svg_colours(f4)  # figure 4 draws LEO alone: no other learner's colour
    # Unnamed (plugin) learners get a stable look of their own.
    assert palette.style("my-plugin") == palette.style("my-plugin") and palette.style("my-plugin").label
    # Figure 5's provenance went under it and into its metadata; figure 4 drawn outside a run says so.
    assert read_metadata(f5)["caption"] == Provenance.of(records[::2]).caption()
    assert "not drawn from a stored run" in read_metadata(f4)["caption"]


def test_provenance_is_in_the_metadata_of_png_pdf_and_svg(cli, trained_store, tmp_path):
    path, records = trained_store
    leo_runs = [r.run_id for r in records if r.learner == "leo"]
    for fmt in ("png", "pdf", "svg"):
        out = tmp_path / f"curves.{fmt}"
        r = cli("figure", "curves", "--learner", "leo", "--store", path, "--out", out)
        assert r.code == 0, r.err
        assert f"written to {out}" in r.out  # every command that writes a file prints its path
        meta = read_metadata(out)
        assert meta["title"].startswith("Learning curves, protocol ")
        caption = meta["caption"]
        assert all(run_id in caption for run_id in leo_runs), caption
        assert "synthetic 5-way 1-shot" in caption and f"{STEPS} steps" in caption and "seeds 0,1" in caption
        assert "preset default" in caption
    # The same text, read by each format's own means.
    from PIL import Image

    with Image.open(tmp_path / "curves.png") as image:
        assert image.text["Description"] == read_metadata(tmp_path / "curves.png")["caption"]
    svg = ET.parse(tmp_path / "curves.svg").getroot()
    assert any(leo_runs[0] in (e.text or "") for e in svg.iter("{http://purl.org/dc/elements/1.1/}description"))
    assert leo_runs[0].encode() in (tmp_path / "curves.pdf").read_bytes()


def test_table_plot_leaves_out_empty_groups_and_prints_its_path(cli, trained_store, tmp_path):
    path, records = trained_store
    out = tmp_path / "t2.svg"
    r = cli("table", "2", "--dataset", "synthetic", "--store", path, "--plot", out)
    assert r.code == 0, r.err
    assert f"table 2 plot written to {out}" in r.out
    assert {palette.colour("leo").lower(), palette.colour("metasgd").lower()} <= svg_colours(out)
    caption = read_metadata(out)["caption"]
    assert "no runs yet for synthetic 5-shot (left out)" in caption
    assert all(rec.run_id in caption for rec in records)
    assert "protocol" not in read_metadata(out)["title"]  # titled by the table, the protocol is in the caption
    csv = cli("table", "2", "--dataset", "synthetic", "--store", path, "--plot", tmp_path / "t.svg",
              "--format", "csv")
    assert csv.code == 0 and csv.out.startswith("model,") and "written to" in csv.err  # stdout stays CSV
    bad = cli("table", "2", "--store", path, "--plot", tmp_path / "t.jpg")
    one_line_error(bad, ".png")
    assert not (tmp_path / "t.jpg").exists()


def test_learning_curves_average_seeds_and_mark_best_checkpoints_and_early_stops(cli, trained_store, tmp_path):
    path, records = trained_store
    r = cli("figure", "curves", "--store", path, "--out", tmp_path / "c.svg", "--json")
    assert r.code == 0, r.err
    assert {palette.colour("leo").lower(), palette.colour("metasgd").lower()} <= svg_colours(tmp_path / "c.svg")
    drawn = {c["learner"]: c for c in r.json()["curves"]}
    assert set(drawn) == {"leo", "metasgd"}
    leo = drawn["leo"]
    assert leo["steps"] == [10, 20, 30, 40] and leo["seeds"] == [0, 1]
    assert np.allclose(np.mean(leo["val_metric"], axis=0), [0.41, 0.49, 0.56, 0.55])
    assert leo["best_steps"] == [30, 30] and leo["stopped_early"] == [False, False]
    metasgd = drawn["metasgd"]
    assert metasgd["val_metric"][1] == [0.44, 0.46, 0.45, None]  # seed 1 stopped early after step 30
    assert metasgd["stopped_early"] == [False, True] and metasgd["best_steps"] == [40, 20]
    assert metasgd["loss"][0] == pytest.approx([1.55, 1.53, 1.51, 1.50])

    picked = cli("figure", "curves", "--store", path, "--out", tmp_path / "one", "--format", "pdf", "--run",
                 records[0].run_id[:8], "--json")
    assert picked.code == 0, picked.err
    assert [c["run_ids"] for c in picked.json()["curves"]] == [[records[0].run_id]]
    assert (tmp_path / "one.pdf").read_bytes().startswith(b"%PDF-")  # --format adds the suffix

    none = cli("figure", "curves", "--store", path, "--out", tmp_path / "x.png", "--learner", "maml")
    one_line_error(none, "no meta-trained runs")
    mismatch = cli("figure", "curves", "--store", path, "--out", tmp_path / "x.png", "--format", "pdf")
    one_line_error(mismatch, "--format")
    wrong = cli("figure", "4", "--store", path, "--out", tmp_path / "x.png", "--learner", "leo")
    one_line_error(wrong, "--learner")
    assert not any(tmp_path.glob("x.*"))
