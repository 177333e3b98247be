"""Experiment tracking (docs/tracking.md): runs logged to TensorBoard and MLflow, live and from the store, read back
with TensorBoard's own event reader and MLflow's client; tracking changes no run key and no number."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error

from fewshot_bench.records.store import ResultStore

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # never reach out to MLflow's servers from the tests

ROOT = Path(__file__).resolve().parent.parent
TINY = ("--steps", "20", "--val-every", "10", "--val-episodes", "20", "--episodes", "50")
METASGD = ("run", "--learner", "metasgd", *TINY)


def events(folder: Path):
    """TensorBoard's own reader over one run folder, everything loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    reader.Reload()
    return reader


def scalars(reader, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in reader.Scalars(tag)]


def text(reader, tag: str) -> str:
    return reader.Tensors(tag)[-1].tensor_proto.string_val[0].decode()


def stored(store: Path) -> list:
    """(record, per-episode values) of every run in ``store``, oldest first."""
    with ResultStore(store, create=False) as db:
        return [(r, db.episode_values(r.run_id)) for r in db.runs()]


def only_folder(log_dir: Path) -> Path:
    (folder,) = [p for p in log_dir.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store (SQLite) for the module: creating its tables is MLflow's slowest step."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # MLflow keeps one store per URI, its artifact root (./mlruns) resolved where it was first opened: there.
    here = os.getcwd()
    os.chdir(folder)
    try:
        MlflowClient(uri).search_experiments()  # creates the tables once
    finally:
        os.chdir(here)
    return uri


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_a_tensorboard_run_streams_its_training_and_computes_what_an_untracked_run_does(cli, tmp_path, caplog):
    caplog.set_level("INFO", logger="fewshot_bench")
    plain = cli(*METASGD, "--store", "plain.db")
    assert plain.code == 0, plain.err
    tracked = cli(*METASGD, "--store", "tracked.db", "--tracker", "tensorboard", "--log-dir", "tb")
    assert tracked.code == 0, tracked.err
    assert "tracking: TensorBoard run tb/metasgd-synthetic-5w1s-seed0-" in caplog.text
    [(record, values)] = stored(tmp_path / "tracked.db")
    [(untracked, untracked_values)] = stored(tmp_path / "plain.db")
    assert record.run_key == untracked.run_key  # tracking is no part of the run's identity
    assert np.array_equal(values, untracked_values)  # nor of its numbers
    assert record.summary["train"]["history"] == untracked.summary["train"]["history"]

    folder = only_folder(tmp_path / "tb")
    assert folder.name == f"metasgd-synthetic-5w1s-seed0-{record.run_key[:8]}"
    reader = events(folder)
    assert [step for step, _ in scalars(reader, "train/loss")] == list(range(1, 21))  # every step, live
    history = record.summary["train"]["history"]
    val = scalars(reader, "val/accuracy")
    assert [s for s, _ in val] == [10, 20]
    assert [v for _, v in val] == pytest.approx([p["val_metric"] for p in history], abs=1e-6)
    # The loss at each validation step is the one the store keeps in its history.
    losses = dict(scalars(reader, "train/loss"))
    assert [losses[p["step"]] for p in history] == pytest.approx([p["loss"] for p in history], rel=1e-6)
    assert [s for s, _ in scalars(reader, "train/step_time_s")] == [10, 20]
    assert all(v > 0 for _, v in scalars(reader, "train/step_time_s"))
    assert scalars(reader, "test/accuracy") == [(20, pytest.approx(record.mean, abs=1e-6))]
    assert scalars(reader, "test/accuracy_ci95") == [(20, pytest.approx(record.ci95, abs=1e-6))]
    params = text(reader, "params/text_summary")
    for row in (f"| run_key | {record.run_key} |", f"| run_id | {record.run_id} |",
                f"| data_id | {record.options['data_id']} |", "| config.outer_lr |", "| protocol | ", "| steps | 20 |"):
        assert row in params
    assert "_hparams_/session_start_info" in reader.PluginTagToContent("hparams")

    # The tracked command again: the stored run is reused (same key), and TensorBoard already shows it.
    caplog.clear()
    again = cli(*METASGD, "--store", "tracked.db", "--tracker", "tensorboard", "--log-dir", "tb")
    assert again.code == 0 and "reusing it" in again.err and "0 run(s) logged" in caplog.text, again.err
    assert len(stored(tmp_path / "tracked.db")) == 1 and only_folder(tmp_path / "tb") == folder

    # The untracked run, exported: the same curves at validation steps, the same final numbers.
    out = cli("export", "--to", "tensorboard", "--log-dir", "exported", "--store", "plain.db")
    assert out.code == 0 and out.out.startswith("exported 1 run(s) to TensorBoard folder exported"), out.err
    exported = events(only_folder(tmp_path / "exported"))
    assert scalars(exported, "val/accuracy") == val
    assert scalars(exported, "test/accuracy") == scalars(reader, "test/accuracy")
    assert scalars(exported, "val/best_accuracy") == scalars(reader, "val/best_accuracy")
    assert f"| run_key | {record.run_key} |" in text(exported, "params/text_summary")


@pytest.mark.slow
def test_mlflow_logs_a_live_run_and_export_logs_each_stored_run_once(cli, tmp_path, tracking_uri):
    from mlflow import MlflowClient

    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    uri = ("--tracking-uri", tracking_uri)
    r = cli(*METASGD, "--tracker", "mlflow", *uri, "--experiment", "live")
    assert r.code == 0, r.err
    [(record, _)] = stored(tmp_path / "fewshot-results.db")
    [run] = mlflow_runs(tracking_uri, "live")
    client = MlflowClient(tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"metasgd-synthetic-5w1s-seed0-{record.run_key[:8]}"
    assert run.data.tags["fewshot_bench.run_id"] == record.run_id
    params = run.data.params
    assert params["run_key"] == record.run_key and params["run_id"] == record.run_id
    assert params["data_id"] == record.options["data_id"] and params["learner"] == "metasgd"
    assert float(params["config.outer_lr"]) == record.config["outer_lr"] and params["steps"] == "20"
    assert len(params["protocol"]) == 8
    val = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/accuracy")]
    assert val == [(p["step"], pytest.approx(p["val_metric"])) for p in record.summary["train"]["history"]]
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in loss) == list(range(1, 21))
    assert len(client.get_metric_history(run.info.run_id, "train/step_time_s")) == 2
    assert run.data.metrics["test/accuracy"] == pytest.approx(record.mean)
    assert run.data.metrics["test/accuracy_ci95"] == pytest.approx(record.ci95)

    # Export: a second run (untracked) is logged with the figure attached; the live one is there already.
    assert cli("run", "--learner", "nearest-centroid", "--episodes", "50").code == 0
    plt.figure()
    plt.plot([0, 1])
    plt.savefig(tmp_path / "fig.png")
    plt.close("all")
    out = cli("export", "--to", "mlflow", *uri, "--experiment", "live", "--artifact", "fig.png", "--json")
    assert out.code == 0, out.err
    report = out.json()
    assert len(report["logged"]) == 1 and report["skipped"] == [record.run_id]
    runs = mlflow_runs(tracking_uri, "live")
    assert len(runs) == 2
    baseline = runs[1]
    assert baseline.data.tags["fewshot_bench.run_id"] == report["logged"][0]
    assert baseline.data.params["learner"] == "nearest-centroid" and "test/accuracy" in baseline.data.metrics
    assert [a.path for a in client.list_artifacts(baseline.info.run_id, "figures")] == ["figures/fig.png"]
    assert baseline.info.artifact_uri.startswith(str(Path(tracking_uri[len("sqlite:///"):]).parent))
    # Again: nothing new.
    again = cli("export", "--to", "mlflow", *uri, "--experiment", "live", "--json")
    assert again.json()["logged"] == [] and len(mlflow_runs(tracking_uri, "live")) == 2


def test_export_of_a_stored_run_reads_back_in_tensorboard(cli, tmp_path):
    assert cli("run", "--learner", "nearest-centroid", "--episodes", "50").code == 0
    [(record, _)] = stored(tmp_path / "fewshot-results.db")
    out = cli("export", "--to", "tensorboard", "--log-dir", "tb", "--learner", "nearest-centroid")
    assert out.code == 0 and out.out.startswith("exported 1 run(s) to TensorBoard folder tb"), out.err
    reader = events(tmp_path / "tb" / f"nearest-centroid-synthetic-5w1s-seed0-{record.run_key[:8]}")
    assert scalars(reader, "test/accuracy") == [(0, pytest.approx(record.mean, abs=1e-6))]
    assert scalars(reader, "test/accuracy_ci95") == [(0, pytest.approx(record.ci95, abs=1e-6))]
    assert "val/accuracy" not in reader.Tags()["scalars"]  # not meta-trained: no curves
    assert f"| run_id | {record.run_id} |" in text(reader, "params/text_summary")


@pytest.mark.slow
def test_export_filters_by_learner_run_key_and_run(cli, tmp_path):
    for seed in ("0", "1"):
        assert cli("run", "--learner", "nearest-centroid", "--episodes", "50", "--seed", seed).code == 0
    assert cli(*METASGD).code == 0
    records = [r for r, _ in stored(tmp_path / "fewshot-results.db")]

    def export(*args: str) -> list[str]:
        r = cli("export", "--to", "tensorboard", "--log-dir", "tb", "--json", *args)
        assert r.code == 0, r.err
        return r.json()["logged"]

    assert export("--learner", "metasgd") == [records[2].run_id]
    assert export("--run-key", records[1].run_key[:10]) == [records[1].run_id]
    assert export("--run", records[0].run_id[:6]) == [records[0].run_id]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted(
        f"{r.learner}-synthetic-5w1s-seed{r.seed}-{r.run_key[:8]}" for r in records)
    assert export() == []  # every stored run is there already
    one_line_error(cli("export", "--to", "tensorboard", "--log-dir", "tb", "--learner", "maml"),
                   "no stored run", "matches")


@pytest.mark.slow
def test_a_sweep_logs_each_stored_cell_once(cli, tmp_path, caplog):
    caplog.set_level("INFO", logger="fewshot_bench")
    sweep = ("sweep", "--learners", "nearest-centroid", "--shots", "1", "--seeds", "2", "--episodes", "50",
             "--workers", "1", "--tracker", "tensorboard", "--log-dir", "tb")
    r = cli(*sweep)
    assert r.code == 0 and "2 run(s) logged" in caplog.text, r.err
    records = [r for r, _ in stored(tmp_path / "fewshot-results.db")]
    folders = sorted((tmp_path / "tb").iterdir())
    names = sorted(f"nearest-centroid-synthetic-5w1s-seed{r.seed}-{r.run_key[:8]}" for r in records)
    assert [f.name for f in folders] == names
    by_seed = {r.seed: r for r in records}
    for folder in folders:
        record = by_seed[int(folder.name.split("seed")[1].split("-")[0])]
        assert scalars(events(folder), "test/accuracy") == [(0, pytest.approx(record.mean, abs=1e-6))]
    caplog.clear()
    again = cli(*sweep)
    assert again.code == 0 and "0 run(s) logged" in caplog.text and sorted((tmp_path / "tb").iterdir()) == folders


@pytest.mark.parametrize("tracker", ["mlflow", "tensorboard"])
def test_a_missing_extra_is_one_line_naming_it_before_any_work(cli, tmp_path, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # as if the package were not installed
    r = cli("run", "--learner", "nearest-centroid", "--episodes", "50", "--tracker", tracker)
    one_line_error(r, f"--tracker {tracker} needs the {tracker} extra", f"pip install 'fewshot-bench[{tracker}]'")
    assert not (tmp_path / "fewshot-results.db").exists()
    one_line_error(cli("export", "--to", tracker), f"'fewshot-bench[{tracker}]'")


@pytest.mark.parametrize("args, needle", [
    (("--tracker", "tensorboard", "--tracking-uri", "sqlite:///x.db"), "MLflow's"),
    (("--tracker", "mlflow", "--log-dir", "tb"), "--log-dir is TensorBoard's"),
    (("--experiment", "x"), "add --tracker mlflow"),
    pytest.param(("--tracker", "mlflow", "--tracking-uri", "nosuchscheme://x"),  # imports mlflow: seconds
                 "MLflow cannot open tracking URI nosuchscheme://x", marks=pytest.mark.slow),
])
def test_tracking_options_are_checked_before_any_work(cli, tmp_path, args, needle):
    one_line_error(cli("run", "--learner", "nearest-centroid", "--episodes", "50", *args), needle)
    store = tmp_path / "fewshot-results.db"
    assert not store.exists() or stored(store) == []  # nothing computed, nothing stored


def test_tensorboard_refuses_a_figure_it_cannot_show_before_writing(cli, tmp_path):
    (tmp_path / "fig.pdf").write_bytes(b"%PDF-1.4\n")
    one_line_error(cli("export", "--to", "tensorboard", "--artifact", "fig.pdf"), "PNG figures only")
    one_line_error(cli("export", "--to", "tensorboard", "--artifact", "missing.png"), "no such file")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_commands_without_a_tracker_import_neither_backend():
    code = ("import sys, fewshot_bench.workflows, fewshot_bench.protocol.runner, fewshot_bench.commands.run, "
            "fewshot_bench.commands.sweep, fewshot_bench.commands.export; "
            "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch.utils.tensorboard') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_extras_are_declared_and_the_test_install_has_them():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["tensorboard"] == ["tensorboard>=2.14"] and extras["mlflow"] == ["mlflow>=2.9"]
    line = next(x for x in (ROOT / "requirements-test.txt").read_text().splitlines() if x.startswith("-e .["))
    assert {"tensorboard", "mlflow"} <= set(line[len("-e .["):-1].split(","))


@pytest.mark.slow
def test_a_search_logs_its_stored_trials(cli, tmp_path):
    r = cli("tune", "--learner", "metasgd", "--trials", "2", "--steps", "20", "--val-every", "10",
            "--val-episodes", "20", "--workers", "1", "--tracker", "tensorboard", "--log-dir", "tb")
    assert r.code == 0, r.err
    trials = [r for r, _ in stored(tmp_path / "fewshot-results.db")]
    assert len(trials) == 2 and {t.options["stage"] for t in trials} == {"tune"}
    for trial in trials:
        reader = events(tmp_path / "tb" / f"metasgd-synthetic-5w1s-seed0-{trial.run_key[:8]}")
        history = trial.summary["train"]["history"]
        assert scalars(reader, "val/accuracy") == [(p["step"], pytest.approx(p["val_metric"], abs=1e-6))
                                                    for p in history]
        assert "| stage | tune |" in text(reader, "params/text_summary")


@pytest.mark.slow
def test_seeds_trained_as_a_population_are_logged_from_their_records(cli, tmp_path):
    r = cli(*METASGD, "--seeds", "0-1", "--tracker", "tensorboard", "--log-dir", "tb")
    assert r.code == 0, r.err
    records = [r for r, _ in stored(tmp_path / "fewshot-results.db")]
    assert sorted(r.seed for r in records) == [0, 1]
    for record in records:
        reader = events(tmp_path / "tb" / f"metasgd-synthetic-5w1s-seed{record.seed}-{record.run_key[:8]}")
        assert [s for s, _ in scalars(reader, "val/accuracy")] == [10, 20]
        assert scalars(reader, "test/accuracy") == [(20, pytest.approx(record.mean, abs=1e-6))]
