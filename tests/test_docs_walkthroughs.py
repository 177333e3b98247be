"""docs/plugins.md's dataset and backbone walk-throughs, alone, make working plugins.

Each walk-through's Python is written out as a module, exactly as printed, and installed as
pip would install its distribution (the module and a dist-info declaring its entry point in
the ``fewshot_bench`` group) into a temporary directory put on ``sys.path``; then the real
CLI lists it and runs a learner on it end to end. The modules import nothing of
fewshot-bench but ``fewshot_bench.api``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from test_docs_plugins import FENCE, section

DATASET = "## Walk-through: a dataset plugin"
BACKBONE = "## Walk-through: a backbone plugin"


def walkthrough_code(heading: str) -> str:
    """The walk-through's plugin module: the Python blocks of its section, in order."""
    blocks = [body for kind, body in FENCE.findall(section(heading)) if kind == "python"]
    assert blocks, f"no Python in {heading!r}"
    return "\n".join(blocks)


def fewshot_imports(code: str) -> set[str]:
    """The modules of fewshot-bench that ``code`` imports."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] == "fewshot_bench"}


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Install a module as a plugin distribution (what ``pip install`` leaves) and make it discoverable."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for key in ("FEWSHOT_BENCH_DISABLE_PLUGINS", "FEWSHOT_BENCH_STRICT_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    installed = []

    def run(module: str, code: str, distribution: str, entry_point: str) -> None:
        (site / f"{module}.py").write_text(code, encoding="utf-8")
        info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[fewshot_bench]\n{entry_point} = {module}\n")
        installed.append(module)

    yield run
    for module in installed:
        sys.modules.pop(module, None)


@pytest.mark.parametrize("heading", [DATASET, BACKBONE])
def test_walkthrough_plugins_import_only_the_api(heading):
    """What the walk-throughs teach keeps to the promise: a plugin imports only fewshot_bench.api."""
    assert fewshot_imports(walkthrough_code(heading)) == {"fewshot_bench.api"}


def write_csv_features(root: Path, dim: int = 16, rows: int = 25) -> None:
    """train/val/test CSVs of Gaussian classes (10, 6 and 6 of them), rows ``label,feature,...`` in no order."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for split, classes in (("train", 10), ("val", 6), ("test", 6)):
        lines = []
        for c in range(classes):
            mean = rng.normal(0.0, 2.0, dim)
            lines += [",".join([f"{split}-{c}", *(f"{v:.5f}" for v in mean + rng.normal(0.0, 1.0, dim))])
                      for _ in range(rows)]
        rng.shuffle(lines)
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def test_dataset_walkthrough_loads_class_sorted_splits(install, tmp_path):
    """The CSV dataset, installed: the harness finds its entry point and the dataset by its alias, and each split
    holds its classes' rows, class by class, L2-normalised."""
    from fewshot_bench.api import DataRequest, FeatureSplit
    from fewshot_bench.plugin_host import load_plugins

    install("my_features", walkthrough_code(DATASET), "fewshot-bench-csv-features", "csv-features")
    write_csv_features(tmp_path / "csv")
    host = load_plugins()
    assert host.datasets["csv-features"].plugin.distribution == "fewshot-bench-csv-features"
    data = host.dataset("CSV").load(DataRequest(data_dir=tmp_path / "csv"))
    assert data.name == "csv-features" and set(data.splits) == {"train", "val", "test"}
    test = data.split("test")
    assert isinstance(test, FeatureSplit) and test.num_classes == 6 and list(test.counts) == [25] * 6
    assert test.class_names[0] == "test-0" and abs(float(test.features[0].norm()) - 1.0) < 1e-5


@pytest.mark.slow
def test_dataset_walkthrough_is_a_dataset_a_learner_runs_on(install, cli, tmp_path):
    """The CSV dataset, installed from the walk-through alone: listed, meta-trained and tested on, identified by
    content, and a missing file is a one-line error."""
    install("my_features", walkthrough_code(DATASET), "fewshot-bench-csv-features", "csv-features")
    data = tmp_path / "csv"
    write_csv_features(data)
    listed = cli("datasets")
    assert listed.code == 0 and "csv-features" in listed.out, listed.err
    r = cli("run", "--learner", "metasgd", "--dataset", "csv", "--data-dir", data, "--shot", "1", "--steps", "10",
            "--val-every", "10", "--val-episodes", "10", "--episodes", "40", "--json")
    assert r.code == 0, r.err
    result = r.json()
    assert result["dataset"] == "csv-features" and result["accuracy"] > 0.6, result  # 5-way: chance is 0.2
    (stored,) = cli("results", "--json").json()  # which distribution made the number (docs: options.plugin)
    assert stored["options"]["plugin"] == "fewshot-bench-metasgd" and "fewshot-bench-metasgd" in stored["versions"]
    (data / "test.csv").unlink()
    r = cli("run", "--learner", "nearest-centroid", "--dataset", "csv-features", "--data-dir", data)
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and "test.csv does not exist" in r.err, r.err


@pytest.mark.usefixtures("one_thread")
def test_backbone_walkthrough_pretrains_exports_and_its_features_beat_chance(install, cli, omniglot, tmp_path):
    """The pooled-MLP backbone, installed from the walk-through alone: pretrained with its --set options on real
    Omniglot, its features exported and meta-tested."""
    install("my_backbone", walkthrough_code(BACKBONE), "fewshot-bench-pooled-mlp", "pooled-mlp")
    limits = ("--max-classes", "8", "--max-images", "10")
    checkpoint, features = tmp_path / "pooled.pt", tmp_path / "features"
    r = cli("pretrain", "--backbone", "pooled-mlp", "--set", "grid=4", "--set", "width=32", "--data-dir", omniglot,
            "--out", checkpoint, "--epochs", "4", "--batch-size", "16", *limits)
    assert r.code == 0, r.err
    r = cli("embed", "--checkpoint", checkpoint, "--data-dir", omniglot, "--out", features, *limits)
    assert r.code == 0, r.err
    r = cli("run", "--learner", "nearest-centroid", "--dataset", "features", "--data-dir", features,
            "--shot", "1", "--episodes", "100", "--json")
    assert r.code == 0, r.err
    assert r.json()["accuracy"] > 0.3, r.json()  # 5-way: chance is 0.2
