"""`fewshot-bench tune`: trials stored with stage=tune, the test split never read, kill -9 and resume,
extending a study, tuned presets in run/sweep/results/table, --set/--space, errors, and Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from helpers import one_line_error

from fewshot_bench import plugin_host
from fewshot_bench.api.hooks import hookimpl
from fewshot_bench.api.search_space import Choice, Float, Int
from fewshot_bench.data.base import DatasetSpec, FeatureDataset
from fewshot_bench.errors import ConfigError
from fewshot_bench.plugin_host import load_plugins
from fewshot_bench.records.store import ResultStore
from fewshot_bench.search.space import parse_spec
from fewshot_bench.search.tune import storage_path

# Seconds per trial on two busy cores: a few steps, validation on a few episodes.
TINY = ["--steps", "6", "--val-every", "3", "--val-episodes", "10", "--workers", "1"]
METASGD = ["tune", "--learner", "metasgd", "--dataset", "synthetic", "--shot", "1"]


def trials_in(store: Path) -> list:
    with ResultStore(store, create=False) as s:
        return [r for r in s.runs() if r.options.get("stage") == "tune"]


def study_states(store: Path, name: str) -> dict[int, tuple[str, dict]]:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage_path(store)}")
    return {t.number: (t.state.name, t.params) for t in study.get_trials(deepcopy=False)}


def test_search_stores_every_trial_as_a_run_and_more_trials_extend_it(cli, tmp_path):
    store = tmp_path / "t.db"
    first = cli(*METASGD, "--trials", "2", *TINY, "--store", store, "--json")
    assert first.code == 0, first.err
    summary = first.json()
    assert summary["complete"] == 2 and summary["ran"] == 2 and summary["failed"] == 0
    name = summary["study"]
    assert name.startswith("metasgd-synthetic-5way-1shot-")
    runs = trials_in(store)
    assert sorted(r.options["tune"]["trial"] for r in runs) == [0, 1]
    for run in runs:
        assert run.options["stage"] == "tune" and run.options["tune"]["study"] == name
        assert not run.options["train_on_val"]  # stage 2: meta-train on train only
        searched = {"outer_lr", "inner_lr_init", "grad_clip_value", "grad_clip_norm", "l2_penalty_weight"}
        assert set(run.options["tune"]["values"]) == searched == set(run.options["overrides"])
        # Scored on the validation episodes early stopping used: the best validation accuracy itself.
        assert run.mean == pytest.approx(run.summary["train"]["best_val_metric"], abs=1e-6)
        assert run.episodes == 10
        assert "model" not in run.summary["train"]  # trials keep no model files
    assert {n: s for n, (s, _) in study_states(store, name).items()} == {0: "COMPLETE", 1: "COMPLETE"}

    more = cli(*METASGD, "--trials", "3", *TINY, "--store", store, "--json")
    assert more.json()["study"] == name and more.json()["ran"] == 1 and more.json()["complete"] == 3
    again = cli(*METASGD, "--trials", "3", *TINY, "--store", store, "--json")
    assert again.json()["ran"] == 0
    assert sorted(r.options["tune"]["trial"] for r in trials_in(store)) == [0, 1, 2]

    # Trials are not test runs: their protocol is their own, and `results` says what they are.
    listing = cli("results", "--store", store)
    assert f"trial 0 of {name}" in listing.out and "stage=tune" in listing.out

    shown = cli("tune", "show", "--study", name[:-3], "--store", store, "--plot", tmp_path / "study.png")
    assert shown.code == 0, shown.err
    assert "3 complete of 3" in shown.out and "best: trial" in shown.out and "outer_lr" in shown.out
    assert (tmp_path / "study.png").stat().st_size > 0


def test_score_last_scores_each_trial_by_its_last_validation(cli, tmp_path):
    store = tmp_path / "last.db"
    best = cli(*METASGD, "--trials", "1", *TINY, "--store", store, "--json")
    last = cli(*METASGD, "--trials", "2", *TINY, "--score", "last", "--store", store, "--json")
    assert last.code == 0, last.err
    assert last.json()["study"] != best.json()["study"]  # another objective, another study
    runs = [r for r in trials_in(store) if r.options["tune"]["study"] == last.json()["study"]]
    for run in runs:
        assert run.options["tune"]["objective"] == "last"
        assert run.options["tune"]["score"] == run.summary["train"]["history"][-1]["val_metric"]
    top = max(runs, key=lambda r: (r.options["tune"]["score"], -r.options["tune"]["trial"]))
    assert last.json()["best"]["trial"] == top.options["tune"]["trial"]


@pytest.mark.slow  # two searches
def test_the_same_seed_gives_the_same_trials(cli, tmp_path):
    a = cli(*METASGD, "--trials", "2", *TINY, "--store", tmp_path / "a.db", "--json")
    b = cli(*METASGD, "--trials", "2", *TINY, "--store", tmp_path / "b.db", "--json")
    assert a.json()["study"] == b.json()["study"]
    assert study_states(tmp_path / "a.db", a.json()["study"]) == study_states(tmp_path / "b.db", b.json()["study"])
    c = cli(*METASGD, "--trials", "2", *TINY, "--seed", "1", "--store", tmp_path / "c.db", "--json")
    assert c.json()["study"] != a.json()["study"]


@pytest.mark.slow  # a process pool
def test_a_search_on_a_local_pool_keeps_one_trial_per_worker_in_flight(cli, tmp_path):
    store = tmp_path / "pool.db"
    tiny = [*TINY[:-1], "2"]  # --workers 2
    r = cli(*METASGD, "--trials", "3", *tiny, "--sampler", "tpe", "--store", store, "--json")
    assert r.code == 0, r.err
    assert r.json()["complete"] == 3 and r.json()["ran"] == 3
    assert sorted(x.options["tune"]["trial"] for x in trials_in(store)) == [0, 1, 2]


class ForbiddenSplit:
    """A split that fails the test the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read ({name})")


def guarded_plugin(synthetic) -> types.ModuleType:
    module = types.ModuleType("guarded_datasets")

    @hookimpl
    def fewshot_bench_register_datasets(register):
        splits = {"train": synthetic.split("train"), "val": synthetic.split("val"), "test": ForbiddenSplit()}
        register(DatasetSpec("guarded", lambda request: FeatureDataset("guarded", splits), "test split forbidden"))

    module.fewshot_bench_register_datasets = fewshot_bench_register_datasets
    return module


@pytest.mark.parametrize("pruner", [[], ["--pruner", "median", "--pruner-startup", "1"]], ids=["none", "median"])
def test_a_search_never_reads_the_test_split(cli, tmp_path, monkeypatch, synthetic, pruner):
    plugin = guarded_plugin(synthetic)
    with_guarded = lambda strict=None: load_plugins(strict=strict, extra=[("guarded", plugin)])  # noqa: E731
    # the driver's, and the in-process worker's (--workers 1)
    monkeypatch.setattr(plugin_host, "load_plugins", with_guarded)
    store = tmp_path / "g.db"
    r = cli("tune", "--learner", "metasgd", "--dataset", "guarded", "--trials", "2", *TINY, *pruner, "--store", store,
            "--json")
    assert r.code == 0, r.err
    assert len(trials_in(store)) + r.json()["pruned"] == 2
    # The guard is real: an ordinary run reads the test split and trips it.
    with pytest.raises(AssertionError, match="test split was read"):
        cli("run", "--learner", "metasgd", "--dataset", "guarded", "--steps", "2", "--val-every", "2",
            "--val-episodes", "5", "--episodes", "5", "--store", store)


def _tune_command(store: Path, trials: int) -> list[str]:
    return [sys.executable, "-m", "fewshot_bench", "-q", *METASGD, "--trials", str(trials), "--steps", "60",
            "--val-every", "20", "--val-episodes", "20", "--workers", "1", "--store", str(store), "--json"]


@pytest.mark.slow  # kills a search mid-trial and resumes it: a minute
def test_kill_9_mid_search_then_rerun_loses_and_repeats_no_trial(tmp_path):
    store = tmp_path / "k.db"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_tune_command(store, 4), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if store.exists() and len(trials_in(store)) >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the search ended before it could be killed: {proc.stderr.read()}"
        time.sleep(0.5)  # into the next trial
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    stored_before = {r.run_id: r.options["tune"]["trial"] for r in trials_in(store)}
    assert 1 <= len(stored_before) < 4

    done = subprocess.run(_tune_command(store, 4), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["complete"] == 4
    runs = trials_in(store)
    numbers = [r.options["tune"]["trial"] for r in runs]
    assert len(runs) == 4 and len(set(numbers)) == 4 and len({r.run_key for r in runs}) == 4
    assert all(stored_before[r.run_id] == r.options["tune"]["trial"] for r in runs if r.run_id in stored_before)
    states = study_states(store, summary["study"])
    assert sum(state == "COMPLETE" for state, _ in states.values()) == 4
    assert not [n for n, (state, _) in states.items() if state == "RUNNING"]

    # The same trials as a search that was never interrupted (one worker, seeded per trial number).
    clean = subprocess.run(_tune_command(tmp_path / "clean.db", 4), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=900)
    assert clean.returncode == 0, clean.stderr
    reference = study_states(tmp_path / "clean.db", summary["study"])
    complete = {n: p for n, (s, p) in states.items() if s == "COMPLETE"}
    if len(states) == 4:  # no trial was caught half-sampled (then it is failed and replaced)
        assert complete == {n: p for n, (s, p) in reference.items()}


@pytest.mark.slow  # a killed search
def test_a_trial_stored_just_before_a_kill_is_told_not_recomputed(cli, tmp_path, monkeypatch):
    import fewshot_bench.search.tune as tune

    store = tmp_path / "d.db"
    store_trial = tune._store_trial

    def die_after_storing_trial_1(outcome, job, *args):
        store_trial(outcome, job, *args)
        if job.number == 1:
            raise SystemExit(137)  # as if killed between the store's commit and the study's update

    monkeypatch.setattr(tune, "_store_trial", die_after_storing_trial_1)
    assert cli(*METASGD, "--trials", "3", *TINY, "--store", store).code == 137
    monkeypatch.setattr(tune, "_store_trial", store_trial)
    name = next(iter({r.options["tune"]["study"] for r in trials_in(store)}))
    assert study_states(store, name)[1][0] == "RUNNING" and len(trials_in(store)) == 2

    again = cli(*METASGD, "--trials", "3", *TINY, "--store", store, "--json")
    assert again.code == 0, again.err
    assert again.json()["complete"] == 3 and again.json()["resumed"] == 1 and again.json()["ran"] == 1
    assert sorted(r.options["tune"]["trial"] for r in trials_in(store)) == [0, 1, 2]
    assert [s for s, _ in study_states(store, name).values()] == ["COMPLETE"] * 3


def test_a_trial_killed_while_its_values_were_written_is_failed_and_replaced(cli, tmp_path):
    import optuna

    store = tmp_path / "s.db"
    first = cli(*METASGD, "--trials", "1", *TINY, "--store", store, "--json")
    assert first.code == 0, first.err
    name = first.json()["study"]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage_path(store)}")
    study.ask()  # trial 1, running with none of its values: as a driver killed while sampling leaves it

    again = cli(*METASGD, "--trials", "2", *TINY, "--store", store, "--json")
    assert again.code == 0, again.err
    assert (again.json()["complete"], again.json()["ran"], again.json()["resumed"]) == (2, 1, 0)
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{storage_path(store)}").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["failed"] == "interrupted while sampling"
    assert sorted(r.options["tune"]["trial"] for r in trials_in(store)) == [0, 2]


@pytest.mark.slow  # a search, a run and a sweep
def test_run_and_sweep_use_the_tuned_preset_and_tables_say_where_it_came_from(cli, tmp_path):
    store = tmp_path / "p.db"
    budget = ["--steps", "4", "--val-every", "2", "--val-episodes", "5", "--episodes", "10", "--eval-query", "5"]
    missing = cli("run", "--learner", "metasgd", "--hparams", "tuned", *budget, "--store", store)
    one_line_error(missing, "no tuned hyperparameters for metasgd on synthetic 5-way 1-shot")
    assert not store.exists()  # nothing half-written

    tuned = cli(*METASGD, "--trials", "3", *TINY, "--set", "init_std=0.02", "--store", store, "--json")
    assert tuned.code == 0, tuned.err
    name = tuned.json()["study"]
    best = tuned.json()["best"]
    r = cli("run", "--learner", "metasgd", "--hparams", "tuned", *budget, "--store", store, "--json")
    assert r.code == 0, r.err
    with ResultStore(store, create=False) as s:
        run = s.run(r.json()["run_id"])
        best_trial = s.run(best["run_id"])
    assert run.config == best_trial.config  # the best trial's config exactly, fixed keys included
    assert run.config["init_std"] == 0.02
    assert run.options["hparams"] == "tuned" and run.options["stage"] == "run" and not run.options["overrides"]
    assert run.options["tuned"]["study"] == name and run.options["tuned"]["trials"] == 3
    assert run.options["tuned"]["trial"] == best["trial"] and run.options["tuned"]["budget"]["steps"] == 6

    listing = cli("results", "--store", store)
    assert f"tuned: {name}, best of 3 trials (trial {best['trial']}), 6 steps" in listing.out

    # A learner with nothing to search runs its defaults under the same preset name, so tables can hold both.
    nc = cli("run", "--learner", "nearest-centroid", "--hparams", "tuned", *budget, "--store", store)
    assert nc.code == 0, nc.err
    table = cli("table", "1", "--dataset", "synthetic", "--store", store)
    assert table.code == 0, table.err
    assert f"Meta-SGD (our features): tuned: {name}" in table.out and "hyperparameters:" in table.out

    # sweep: every cell needs a study (or nothing to tune); a missing one is one line naming it.
    sweep = ["sweep", "--learners", "metasgd,nearest-centroid", "--dataset", "synthetic", "--seeds", "1",
             "--hparams", "tuned", *budget, "--workers", "1", "--store", store, "--json"]
    no_five = cli(*sweep, "--shots", "1,5")
    one_line_error(no_five, "metasgd synthetic 5-way 5-shot")
    ok = cli(*sweep, "--shots", "1")
    assert ok.code == 0, ok.err
    with ResultStore(store, create=False) as s:
        swept = [x for x in s.runs() if x.options.get("train_on_val")]
    assert {x.learner for x in swept} == {"metasgd", "nearest-centroid"}
    assert all(x.options["hparams"] == "tuned" for x in swept)
    assert next(x for x in swept if x.learner == "metasgd").config == best_trial.config


def test_set_fixes_a_key_and_space_overrides_ranges(cli, tmp_path):
    store = tmp_path / "s.db"
    r = cli(*METASGD, "--trials", "3", *TINY, "--set", "outer_lr=0.002", "--space", "inner_lr_init=float:0.5..0.6",
            "--space", "init_std=choice:0.01,0.03", "--space", "inner_steps=int:2..3", "--store", store, "--json")
    assert r.code == 0, r.err
    for run in trials_in(store):
        assert run.config["outer_lr"] == 0.002
        assert 0.5 <= run.config["inner_lr_init"] <= 0.6
        assert run.config["init_std"] in (0.01, 0.03) and run.config["inner_steps"] in (2, 3)
        assert run.options["tune"]["values"]["outer_lr"] == "0.002"
    params = study_states(store, r.json()["study"])[0][1]
    assert "outer_lr" not in params and {"inner_lr_init", "init_std", "inner_steps"} <= set(params)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--learner", "nope"), "nope"),
        (("--learner", "metasgd", "--space", "nope=log:1e-3..1e-2"), "unknown option 'nope' for learner metasgd"),
        (("--learner", "metasgd", "--space", "outer_lr=log:1e-3"), "--space outer_lr=log:1e-3: expected"),
        (("--learner", "metasgd", "--space", "outer_lr=log:0..1"), "a log range needs LOW > 0"),
        (("--learner", "metasgd", "--space", "first_order=float:0..1"), "is not a real number"),
        (("--learner", "metasgd", "--set", "nope=1"), "unknown option 'nope'"),
        (("--learner", "nearest-centroid"), "nothing to search for learner 'nearest-centroid'"),
        (("--learner", "metasgd", "--trials", "0"), "--trials must be at least 1"),
        (("--learner", "metasgd", "--set", "outer_lr=1", "--set", "inner_lr_init=1", "--set", "grad_clip_value=1",
          "--set", "grad_clip_norm=1", "--set", "l2_penalty_weight=0"), "all its keys are fixed"),
        (("--learner", "metasgd", "--pruner-warmup", "1"), "need --pruner median or hyperband"),
        (("--learner", "metasgd", "--pruner", "hyperband", "--pruner-startup", "1"), "is the median pruner's"),
        (("--learner", "metasgd", "--pruner", "median", "--pruner-warmup", "2"), "leaves no validation to prune at"),
        (("--learner", "metasgd", "--pruner", "median", "--pruner-warmup", "-1"), "--pruner-warmup must be at least 0"),
        (("--learner", "logreg", "--space", "C=log:0.01..100", "--pruner", "median"), "not meta-trained"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(cli, tmp_path, args, message):
    store = tmp_path / "e.db"
    r = cli("tune", "--dataset", "synthetic", *args, *TINY, "--store", store)
    one_line_error(r, message)
    assert not store.exists() and not storage_path(store).exists()


def test_show_without_a_study_is_one_line(cli, tmp_path):
    one_line_error(cli("tune", "show", "--study", "x", "--store", tmp_path / "none.db"), "no search studies beside")


def test_range_syntax():
    assert parse_spec("k", "log:1e-4..1e-2") == Float(1e-4, 1e-2, log=True)
    assert parse_spec("k", "float:0.1..0.5") == Float(0.1, 0.5)
    assert parse_spec("k", "int:1..10:log") == Int(1, 10, log=True)
    assert parse_spec("k", "choice:a,b") == Choice("a", "b")
    for bad in ("1..2", "log:2..1", "int:1.5..3", "float:0.1..0.5:log", "choice:", "what:1..2"):
        with pytest.raises(ConfigError):
            parse_spec("k", bad)


def test_every_built_in_meta_learner_declares_a_valid_space(host):
    from fewshot_bench.protocol.runner import resolve_config
    from fewshot_bench.protocol.spec import RunSpec
    from fewshot_bench.search.space import check_space

    for name in ("leo", "leo-deterministic", "leo-random-prior", "leo-no-finetune", "leo-generator-only",
                 "leo-generator-finetune", "metasgd", "maml"):
        cls = host.learner(name)
        assert cls.search_space, name
        check_space(resolve_config(cls, RunSpec(learner=name)), cls.search_space, {}, name)
    # The paper's Table 6 values lie inside LEO's ranges.
    from fewshot_bench_leo.hparams import PRESETS

    space = host.learner("leo").search_space
    for preset in PRESETS.values():
        for values in preset.values():
            for key, value in values.items():
                assert space[key].low <= value <= space[key].high, (key, value)


@pytest.mark.slow  # starts a local Ray instance
def test_a_search_through_a_local_ray_instance(cli, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="ERROR", log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    except Exception as exc:  # no Ray on this machine: nothing to test
        pytest.skip(f"ray could not start: {exc}")
    try:
        r = cli(*METASGD, "--trials", "3", "--steps", "6", "--val-every", "3", "--val-episodes", "10",
                "--executor", "ray", "--store", tmp_path / "ray.db", "--json")
        assert r.code == 0, r.err
        assert r.json()["complete"] == 3 and ray.is_initialized()
    finally:
        ray.shutdown()
    runs = trials_in(tmp_path / "ray.db")
    assert sorted(x.options["tune"]["trial"] for x in runs) == [0, 1, 2]
    assert all(x.hardware["torch_threads"] == 1 for x in runs)  # computed in Ray workers, one CPU each


# --- pruning --------------------------------------------------------------------------------------

# inner_lr_init=1e-9 cannot adapt to an episode (chance, 20%); 1.0 can (about 50% on synthetic): the random sampler
# (seed 0) draws 1.0 for trial 0, then 1e-9 for trials 1 and 2, so those validate worse than trial 0 at step 3.
PRUNED = [*METASGD, *TINY, "--space", "inner_lr_init=choice:1e-9,1.0", "--space", "outer_lr=float:1e-3..2e-3",
          "--set", "grad_clip_value=1", "--set", "grad_clip_norm=1", "--set", "l2_penalty_weight=0"]
MEDIAN = ["--pruner", "median", "--pruner-startup", "1"]


def study_curves(store: Path, name: str) -> dict[int, tuple[str, dict, dict, dict]]:
    """Each trial's state, values, validation curve and pruner marks: what a pruner decides on."""
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage_path(store)}")
    return {t.number: (t.state.name, t.params, t.intermediate_values, t.system_attrs)
            for t in study.get_trials(deepcopy=False)}


def test_a_median_pruned_search_prunes_the_trials_that_validate_worse(cli, tmp_path):
    store = tmp_path / "m.db"
    r = cli(*PRUNED, *MEDIAN, "--trials", "3", "--store", store, "--json")
    assert r.code == 0, r.err
    summary = r.json()
    assert (summary["complete"], summary["pruned"], summary["ran"]) == (1, 2, 3)
    name = summary["study"]
    curves = study_curves(store, name)
    assert [curves[n][0] for n in range(3)] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert [curves[n][1]["inner_lr_init"] for n in range(3)] == ["1.0", "1e-9", "1e-9"]
    # Pruned at the first validation (step 3), worse than the complete trial there; its curve stops there.
    good = curves[0][2]
    assert set(good) == {3, 6}
    for n in (1, 2):
        assert set(curves[n][2]) == {3} and curves[n][2][3] < good[3]
    # A pruned trial is not a finished run: not in the store (no table, compare or preset sees it), no checkpoint left.
    assert [x.options["tune"]["trial"] for x in trials_in(store)] == [0]
    assert [p.name for p in (tmp_path / "fewshot-checkpoints").glob("*.pt")] == []
    assert summary["best"]["trial"] == 0
    # Pruned trials count towards --trials: the same command has nothing left to do.
    again = cli(*PRUNED, *MEDIAN, "--trials", "3", "--store", store, "--json")
    assert (again.json()["ran"], again.json()["pruned"]) == (0, 2)

    shown = cli("tune", "show", "--study", name, "--store", store, "--plot", tmp_path / "pruned.png")
    assert shown.code == 0, shown.err
    assert "1 complete, 2 pruned of 3 trial(s)" in shown.out and "median pruning" in shown.out
    assert "pruned at" in shown.out and "meta-training steps: 12, 33% fewer than without pruning (18)" in shown.out
    rows = [line.split() for line in shown.out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[1] for row in rows] == ["pruned", "pruned"]
    assert (tmp_path / "pruned.png").stat().st_size > 0


def test_a_pruner_is_part_of_the_study_and_none_changes_nothing(cli, tmp_path):
    default = cli(*METASGD, "--trials", "1", *TINY, "--store", tmp_path / "a.db", "--json")
    none = cli(*METASGD, "--trials", "1", *TINY, "--pruner", "none", "--store", tmp_path / "b.db", "--json")
    median = cli(*METASGD, "--trials", "1", *TINY, *MEDIAN, "--store", tmp_path / "c.db", "--json")
    assert default.json()["study"] == none.json()["study"] != median.json()["study"]
    name = none.json()["study"]
    a, b = (study_curves(tmp_path / f"{x}.db", name) for x in "ab")
    assert a == b and not a[0][3]  # no pruner marks
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{storage_path(tmp_path / 'b.db')}")
    assert "pruner" not in study.user_attrs["definition"]
    assert set(study.trials[0].user_attrs) == {"run_key", "run_id"}  # no pruning snapshot: the study of before


@pytest.mark.slow  # two searches
def test_the_same_seed_gives_the_same_pruning_decisions(cli, tmp_path):
    a = cli(*PRUNED, *MEDIAN, "--trials", "3", "--store", tmp_path / "a.db", "--json")
    b = cli(*PRUNED, *MEDIAN, "--trials", "3", "--store", tmp_path / "b.db", "--json")
    assert a.json()["study"] == b.json()["study"] and a.json()["pruned"] == 2
    assert study_curves(tmp_path / "a.db", a.json()["study"]) == study_curves(tmp_path / "b.db", b.json()["study"])


@pytest.mark.slow  # three searches, one of them killed
@pytest.mark.parametrize("where", ["worker", "driver"])
def test_a_trial_pruned_when_the_search_was_killed_is_pruned_again_on_resume(cli, tmp_path, monkeypatch, where):
    """Killed in the worker (its checkpoint written, the pruner about to say stop) or in the driver (its curve
    written, not yet told): the rerun computes it again, resuming its checkpoint, and prunes it where it was."""
    import optuna

    import fewshot_bench.search.tune as tune

    clean = cli(*PRUNED, *MEDIAN, "--trials", "3", "--store", tmp_path / "clean.db", "--json")
    store = tmp_path / "k.db"
    if where == "worker":
        ask = tune.PruningPlan.__call__

        def die_at_trial_1(plan, result):
            if plan.number == 1:
                raise SystemExit(137)  # as if killed after trial 1's first validation and checkpoint
            return ask(plan, result)

        monkeypatch.setattr(tune.PruningPlan, "__call__", die_at_trial_1)
    else:
        tell = optuna.study.Study.tell

        def die_telling_pruned(study, trial, *args, state=None, **kwargs):
            if state == optuna.trial.TrialState.PRUNED:
                raise SystemExit(137)  # as if killed between writing the curve and telling the study
            return tell(study, trial, *args, state=state, **kwargs)

        monkeypatch.setattr(optuna.study.Study, "tell", die_telling_pruned)
    assert cli(*PRUNED, *MEDIAN, "--trials", "3", "--store", store).code == 137
    monkeypatch.undo()
    name = clean.json()["study"]
    assert study_curves(store, name)[1][0] == "RUNNING"
    if where == "worker":
        assert list((tmp_path / "fewshot-checkpoints").glob("*.pt"))  # trial 1's, at its first validation

    again = cli(*PRUNED, *MEDIAN, "--trials", "3", "--store", store, "--json")
    assert again.code == 0, again.err
    assert again.json()["resumed"] == 1 and (again.json()["complete"], again.json()["pruned"]) == (1, 2)
    assert study_curves(store, name) == study_curves(tmp_path / "clean.db", name)  # nothing lost, repeated or changed
    assert [x.options["tune"]["trial"] for x in trials_in(store)] == [0]


@pytest.mark.slow  # a search
def test_a_hyperband_search_prunes_and_keeps_its_rungs(cli, tmp_path):
    r = cli(*PRUNED, "--pruner", "hyperband", "--trials", "3", "--store", tmp_path / "h.db", "--json")
    assert r.code == 0, r.err
    curves = study_curves(tmp_path / "h.db", r.json()["study"])
    assert [curves[n][0] for n in range(3)] == ["COMPLETE", "PRUNED", "PRUNED"]
    # The rung each reached (successive halving's bookkeeping, written by the worker's pruner) is in the study.
    assert all(curves[n][3]["completed_rung_0"] == curves[n][2][3] for n in range(3))


def test_a_pruning_plan_is_a_picklable_pure_function_of_the_validations():
    import pickle

    from fewshot_bench.protocol.spec import RunSpec
    from fewshot_bench.search.tune import FinishedTrial, PruningPlan, make_pruning

    trial = RunSpec("metasgd", steps=20, val_every=10, val_episodes=5, stage="tune")

    finished = tuple(FinishedTrial(n, True, 0.6, ((10, 0.5), (20, 0.6)), ()) for n in (0, 2))  # trial 1: not finished
    plan = PruningPlan("s", "maximize", make_pruning("median", warmup=1, startup=2), trial, 3, finished)
    assert pickle.loads(pickle.dumps(plan)) == plan  # shipped to pool and Ray workers
    worse = [{"step": 10, "val_metric": 0.2}, {"step": 20, "val_metric": 0.3}]
    assert plan.replay(worse)[0] == 20  # not at validation 1 (warmup 1), then worse than the median
    assert plan.replay(worse[:1]) == plan.replay(worse[:1]) == (None, {})
    assert plan.replay([{"step": 10, "val_metric": 0.2}, {"step": 20, "val_metric": 0.7}])[0] is None

    class Result:
        history = worse

    assert plan(Result()) is False  # the trainer's callback: stop
    too_few = PruningPlan("s", "maximize", make_pruning("median", startup=3), trial, 3, finished)
    assert too_few.replay(worse)[0] is None  # 2 complete trials, startup 3
