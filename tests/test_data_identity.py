"""A run's identity covers its data: other data is never reused, the same data in another folder is,
and outputs never combine runs of one dataset that read different data."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
from helpers import one_line_error

import fewshot_bench as fb
from fewshot_bench.data.leo import write_embeddings
from fewshot_bench.records.store import ResultStore
from fewshot_bench.reports.combining import data_id_of
from fewshot_bench.workflows import rekey

QUICK = {"shot": 1, "episodes": 60}


def export(features, folder, noise: float = 0.0, seed: int = 0):
    """Write the real Omniglot features as a ``features`` folder, optionally with Gaussian noise added."""
    z = np.load(features)
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        x = z[split] + noise * rng.normal(0, z[split].std(), z[split].shape).astype(np.float32)
        # <prefix>-<class>-<class>_<file>: the class is the alphabet and character, without separators.
        classes = ["".join(c for c in "_".join(k.split("/")[:-1]) if c.isalnum()) for k in z[f"{split}_keys"]]
        keys = [f"omniglot-{c}-{c}_{k.split('/')[-1]}" for c, k in zip(classes, z[f"{split}_keys"])]
        write_embeddings(folder / f"{split}_embeddings.npz", x, None, keys)
    return folder


def test_a_noisy_copy_of_the_features_is_other_data(shared_features, tmp_path, host):
    """The issue's case: the same command on a noisy copy of the features folder runs it, never reusing the
    original's number; a byte-for-byte copy elsewhere is the same data and reuses it."""
    store = tmp_path / "r.db"
    omni = export(shared_features, tmp_path / "omni")
    omni2 = export(shared_features, tmp_path / "omni2", noise=3.0)
    same = shutil.copytree(omni, tmp_path / "elsewhere")
    run = lambda folder: fb.run("nearest-centroid", "features", data_dir=folder, store=store, host=host, **QUICK)  # noqa: E731

    first, noisy, copy = run(omni), run(omni2), run(same)
    assert not noisy.reused and noisy.run_key != first.run_key
    assert noisy.mean < first.mean - 0.3  # real features score ~94%; buried in noise ~30%
    fresh = fb.run("nearest-centroid", "features", data_dir=omni2, store=tmp_path / "fresh.db", host=host, **QUICK)
    assert fresh.mean == noisy.mean  # what a fresh store gives: the noisy data's own number
    assert copy.reused and copy.run_key == first.run_key and copy.mean == first.mean
    listed = fb.results(store)
    assert listed["data_id"].nunique() == 2 and listed["data_id"].notna().all()


def test_an_edited_file_is_identified_again(shared_features, tmp_path, host):
    """A file whose content changed (its size and modification time with it) gets a new digest: the cached
    digest is trusted only while both are those recorded."""
    folder = export(shared_features, tmp_path / "omni")
    store = tmp_path / "r.db"
    before = fb.run("nearest-centroid", "features", data_dir=folder, store=store, host=host, **QUICK)
    export(shared_features, folder, noise=0.5, seed=1)  # the same names, other rows
    after = fb.run("nearest-centroid", "features", data_dir=folder, store=store, host=host, **QUICK)
    assert not after.reused and after.run_key != before.run_key


def test_the_content_digest_is_computed_once_per_file(shared_features, tmp_path, host, monkeypatch):
    """Identifying a split reads the file once; later identifications reuse its parse cache's digest."""
    from fewshot_bench.data import leo_datasets
    from fewshot_bench.data.base import DataRequest

    folder = export(shared_features, tmp_path / "omni")
    reads = []
    real = leo_datasets.read_embeddings
    monkeypatch.setattr(leo_datasets, "read_embeddings", lambda path, **kw: reads.append(path) or real(path, **kw))
    identify = host.dataset("features").identify
    first = identify(DataRequest(data_dir=folder))
    assert sorted(first) == ["test", "train", "val"] and len(reads) == 3
    assert identify(DataRequest(data_dir=folder)) == first and len(reads) == 3
    trial = identify(DataRequest(data_dir=folder, splits=("train", "val")))
    assert sorted(trial) == ["train", "val"]


def test_the_synthetic_data_id_is_its_generators(host, tmp_path):
    """A generated dataset is identified by what generates it: the same id on every machine and run."""
    a = fb.run("nearest-centroid", "synthetic", store=tmp_path / "a.db", host=host, **QUICK)
    b = fb.run("logreg", "synthetic", store=tmp_path / "a.db", host=host, **QUICK, overrides={"iterations": 5})
    ids = set(fb.results(tmp_path / "a.db")["data_id"])
    assert len(ids) == 1 and a.run_key != b.run_key


def make_legacy(store, run_id: str) -> None:
    """Turn a stored run into what a fewshot-bench before data ids stored: no data id, the key of spec and config."""
    from fewshot_bench.protocol.spec import RunSpec

    with sqlite3.connect(store) as c:
        options = json.loads(c.execute("SELECT options FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])
        config = json.loads(c.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])
        spec = RunSpec(**{k: options[k] for k in RunSpec.__dataclass_fields__ if k in options})
        for key in ("data_id", "data_digests", "eval_query_resolved"):
            options.pop(key)
        c.execute("UPDATE runs SET run_key = ?, options = ? WHERE run_id = ?",
                  (spec.key_without_data(config), json.dumps(options), run_id))


def test_runs_stored_before_data_ids_are_never_matched_until_rekeyed(shared_features, tmp_path, host, cli):
    folder = export(shared_features, tmp_path / "omni")
    store = tmp_path / "r.db"
    old = fb.run("nearest-centroid", "features", data_dir=folder, store=store, host=host, **QUICK)
    make_legacy(store, old.run_id)
    with ResultStore(store) as db:
        assert db.find_complete(old.run_key) is None
        assert data_id_of(db.run(old.run_id)) is None
    listed = cli("results", "--store", store)
    assert "unknown" in listed.out and "fewshot-bench rekey" in listed.out

    other = export(shared_features, tmp_path / "omni2", noise=3.0)
    elsewhere = rekey("features", data_dir=other, store=store, host=host)  # recorded in another folder: left alone
    assert elsewhere.rekeyed == [] and list(elsewhere.elsewhere.values()) == [[old.run_id]]

    line = cli("rekey", "--dataset", "features", "--data-dir", folder, "--store", store)
    assert line.code == 0 and line.out.startswith("re-keyed 1 run(s) of features to data")
    again = fb.run("nearest-centroid", "features", data_dir=folder, store=store, host=host, **QUICK)
    assert again.reused and again.run_id == old.run_id and again.run_key == old.run_key


def test_tables_and_compare_never_combine_two_versions_of_a_dataset(tmp_path, cli):
    """Two learners' runs on two versions of one dataset: each output uses one version, says so, and --data picks."""
    from test_protocols import add_run

    store = tmp_path / "r.db"
    with ResultStore(store) as db:
        for seed in (0, 1):
            add_run(db, "metasgd", seed, 0.6, data_id="a" * 24)
            add_run(db, "leo", seed, 0.7, data_id="a" * 24)
        add_run(db, "metasgd", 0, 0.2, data_id="b" * 24)
        add_run(db, "leo", 0, 0.25, data_id="b" * 24)
    table = cli("table", "2", "--dataset", "synthetic", "--store", store)
    assert table.code == 0, table.err
    assert "shown: aaaaaaaa" in table.out and "bbbbbbbb: 2 runs" in table.out and "--data ID" in table.out
    picked = cli("table", "2", "--dataset", "synthetic", "--store", store, "--data", "bbb", "--format", "json")
    cells = {c["learner"]: c for c in json.loads(picked.out)["cells"] if c["source"] == "ours" and c["shot"] == 1}
    assert cells["metasgd"]["seeds"] == 1 and abs(cells["metasgd"]["mean"] - 20) < 5
    pair = cli("compare", "leo", "metasgd", "--store", store, "--json")
    assert [r["seeds"].__len__() for r in pair.json()] == [2] and "aaaaaaaa" in pair.out
    wrong = cli("compare", "leo", "metasgd", "--store", store, "--data", "ccc")
    one_line_error(wrong, "--data ccc")


def test_an_output_says_when_its_runs_were_executed_differently(tmp_path, cli):
    """Rows of one protocol computed with other threads or as a population are combined, with one line saying so."""
    from test_protocols import add_run

    store = tmp_path / "r.db"
    with ResultStore(store) as db:
        for seed in (0, 1):
            add_run(db, "metasgd", seed, 0.6)
            add_run(db, "leo", seed, 0.7)
    with sqlite3.connect(store) as c:
        for threads, (run_id,) in enumerate(c.execute("SELECT run_id FROM runs WHERE learner = 'leo'").fetchall()):
            execution = {"isa": "AVX2", "train_threads": threads + 1, "eval_threads": 2, "population": {"size": 1},
                         "device": "cpu", "torch": "2.14.1"}
            c.execute("UPDATE runs SET hardware = ? WHERE run_id = ?", (json.dumps({"execution": execution}), run_id))
    table = cli("table", "2", "--dataset", "synthetic", "--store", store)
    assert "execution differs between these runs" in table.out and "AVX2 threads 1/2 alone cpu" in table.out
    shown = cli("results", "--store", store, "--execution")
    assert "AVX2 threads 2/2 alone cpu torch 2.14.1" in shown.out


@pytest.mark.slow  # a sweep of two learners over two shots
def test_one_sweep_over_two_shots_fills_both_columns_of_table_2(tmp_path, cli):
    """The README's workflow: a sweep over shots is one protocol (eval_query as declared: all), so table 2 shows
    every cell it ran, 1-shot and 5-shot alike."""
    store = tmp_path / "r.db"
    ran = cli("sweep", "--learners", "metasgd,leo-deterministic", "--dataset", "synthetic", "--shots", "1,5",
              "--seeds", "1", "--steps", "4", "--val-every", "2", "--val-episodes", "5", "--episodes", "20",
              "--workers", "1", "--store", store)
    assert ran.code == 0, ran.err
    table = cli("table", "2", "--dataset", "synthetic", "--store", store, "--format", "json")
    cells = [c for c in json.loads(table.out)["cells"] if c["learner"] in ("metasgd", "leo-deterministic")
             and c["source"] == "ours"]
    assert len(cells) == 4 and all(c["mean"] is not None for c in cells), cells
    assert "eval_query=all" in cli("results", "--store", store).out



def test_a_dataset_plugin_whose_identify_fails_gets_a_one_line_error(cli, monkeypatch, synthetic, tmp_path):
    """A third-party dataset's broken identify hook stops the run before any work, naming the dataset."""
    import types

    from fewshot_bench import plugin_host
    from fewshot_bench.api.hooks import hookimpl
    from fewshot_bench.data.base import DatasetSpec

    def broken(request):
        raise KeyError("no such split file")

    @hookimpl
    def fewshot_bench_register_datasets(register):
        register(DatasetSpec("broken", lambda request: synthetic, "identify fails", identify=broken))

    module = types.ModuleType("broken_datasets")
    module.fewshot_bench_register_datasets = fewshot_bench_register_datasets
    load = plugin_host.load_plugins
    monkeypatch.setattr(plugin_host, "load_plugins",
                        lambda strict=None: load(strict=strict, extra=[("broken", module)]))
    store = tmp_path / "r.db"
    r = cli("run", "--learner", "nearest-centroid", "--dataset", "broken", "--episodes", "5", "--store", store)
    one_line_error(r, "dataset 'broken' could not identify its data: KeyError")
    assert not store.exists() or "broken" not in cli("results", "--store", store).out
