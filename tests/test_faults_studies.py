"""`fewshot-bench tune` under bad input: study files that are not intact Optuna studies, two drivers of one study,
search ranges and seeds the learner or numpy refuse, trial values the learner's Config refuses. Each is one line,
exit 1, no traceback, and nothing wrong is stored."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from fewshot_bench_metasgd import MetaSGD, MetaSGDConfig
from helpers import one_line_error

from fewshot_bench import plugin_host
from fewshot_bench.api.hooks import hookimpl
from fewshot_bench.api.search_space import Float
from fewshot_bench.plugin_host import load_plugins
from fewshot_bench.records.store import ResultStore
from fewshot_bench.search.tune import storage_path

TINY = ["--steps", "6", "--val-every", "3", "--val-episodes", "10", "--workers", "1"]
METASGD = ["tune", "--learner", "metasgd", "--dataset", "synthetic", "--shot", "1", *TINY]


def stored_runs(store: Path) -> int:
    with ResultStore(store, create=False) as s:
        return len(s.runs())


def trial_states(store: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(storage_path(store)) as c:
        return c.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


@pytest.mark.parametrize("args, message", [
    (("--seed", "-1"), "--seed -1: seeds run from 0 to 4,294,967,295"),
    (("--seed", "99999999999999999999"), "--seed 99999999999999999999: seeds run from 0"),
    (("--space", "outer_lr=float:-1..1"), "--space outer_lr=float:-1..1: metasgd's outer_lr cannot be -1.0 "
                                          "(must not be negative)"),
    (("--space", "outer_lr=float:0..0.01"), "outer_lr cannot be 0.0 (the meta-learning rate must be positive)"),
    (("--space", "inner_steps=int:-2..3"), "--space inner_steps=int:-2..3: metasgd's inner_steps cannot be -2"),
])
def test_a_seed_or_range_the_learner_refuses_is_one_line_before_any_trial(cli, tmp_path, args, message):
    store = tmp_path / "r.db"
    line = one_line_error(cli(*METASGD, "--trials", "3", *args, "--store", store), message)
    assert "--set" not in line  # no --set was given
    assert not store.exists() and not storage_path(store).exists()


@pytest.fixture(scope="module")
def studied(tmp_path_factory) -> Path:
    """A folder with a results store ``r.db`` and its study file ``r.tune.db`` of one complete trial."""
    from fewshot_bench.workflows import tune

    folder = tmp_path_factory.mktemp("studied")
    tune("metasgd", "synthetic", trials=1, store=folder / "r.db", shot=1, steps=6, val_every=3, val_episodes=10,
         workers=1, checkpoint_dir=folder / "ckpt")
    return folder


def _sql(statement: str):
    return lambda study, store: sqlite3.connect(study).execute(statement).connection.commit()


def _truncate(study: Path, store: Path) -> None:
    study.write_bytes(study.read_bytes()[:20_000])


def _directory(study: Path, store: Path) -> None:
    study.unlink()
    study.mkdir()


DAMAGES = {
    "random bytes": (lambda study, store: study.write_bytes(os.urandom(5000)), "is not an SQLite database"),
    "truncated": (_truncate, "is damaged (database disk image is malformed)"),
    "a directory": (_directory, "is a directory, not a file"),
    "no trial_params": (_sql("DROP TABLE trial_params"), "lacks Optuna's tables trial_params"),
    "bogus alembic_version": (_sql("UPDATE alembic_version SET version_num = 'bogus'"),
                              "has an Optuna schema version Optuna"),
    "no trial_values": (_sql("DELETE FROM trial_values"),
                        "is damaged: 1 complete trial(s) have no value (first: trial 0"),
    "a results store": (lambda study, store: shutil.copyfile(store, study), "is a fewshot-bench results store"),
    "a foreign database": (_sql("CREATE TABLE notes (x)"), "holds tables not Optuna's: notes"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_study_file_that_is_no_intact_optuna_study_is_one_line_and_left_untouched(cli, tmp_path, studied, damage):
    shutil.copytree(studied, tmp_path / "s")
    store, study = tmp_path / "s" / "r.db", storage_path(tmp_path / "s" / "r.db")
    make, message = DAMAGES[damage]
    make(study, store)
    before = study.read_bytes() if study.is_file() else None

    one_line_error(cli(*METASGD, "--trials", "2", "--store", store), f"study file {study} ", message)
    one_line_error(cli("tune", "show", "--study", "metasgd", "--store", store), message)
    assert (study.read_bytes() if study.is_file() else None) == before  # no Optuna tables written into it
    assert stored_runs(store) == 1  # no trial ran


def test_a_study_file_of_an_older_optuna_says_how_to_upgrade_it(cli, tmp_path, studied):
    shutil.copytree(studied, tmp_path / "s")
    store = tmp_path / "s" / "r.db"
    _sql("UPDATE alembic_version SET version_num = 'v3.0.0.d'")(storage_path(store), store)
    one_line_error(cli(*METASGD, "--trials", "2", "--store", store), "has the schema of an older Optuna (v3.0.0.d",
                   "optuna storage upgrade --storage sqlite:///")


def test_an_intact_study_file_is_continued(cli, tmp_path, studied):
    shutil.copytree(studied, tmp_path / "s")
    store = tmp_path / "s" / "r.db"
    r = cli(*METASGD, "--trials", "2", "--store", store, "--json")
    assert r.code == 0, r.err
    assert r.json()["ran"] == 1 and trial_states(store) == [(0, "COMPLETE"), (1, "COMPLETE")]


@pytest.mark.slow  # two tune processes
def test_a_second_driver_of_a_study_is_refused_whatever_its_checkpoint_folder(tmp_path):
    store = tmp_path / "r.db"
    command = [sys.executable, "-m", "fewshot_bench", "-q", "tune", "--learner", "metasgd", "--dataset", "synthetic",
               "--shot", "1", "--steps", "3000", "--val-every", "1000", "--val-episodes", "10", "--workers", "1",
               "--trials", "5", "--store", str(store)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen([*command, "--checkpoint-dir", str(tmp_path / "a")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (storage_path(store).exists() and _running(store)):  # the first driver holds the study
            assert first.poll() is None, first.stderr.read().decode()
            assert time.time() < deadline, "the first driver never started a trial"
            time.sleep(0.1)
        second = subprocess.run([*command, "--checkpoint-dir", str(tmp_path / "b")], env=env, capture_output=True,
                                text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    result = types.SimpleNamespace(code=second.returncode, err=second.stderr)
    one_line_error(result, "another `fewshot-bench tune` is running this study (lock ", f"{storage_path(store)}.")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # it computed nothing


def _running(store: Path) -> bool:
    try:
        return any(state == "RUNNING" for _, state in trial_states(store))
    except sqlite3.Error:  # the first driver is still creating the study's tables
        return False


@dataclass
class PickyConfig(MetaSGDConfig):
    """Meta-SGD's Config with a rule across two fields: each range is valid alone, some pairs are not."""

    def __post_init__(self) -> None:
        if self.outer_lr > self.inner_lr_init:
            raise ValueError("outer_lr must not exceed inner_lr_init")


class Picky(MetaSGD):
    name = "picky"
    Config = PickyConfig
    kinds = ("classification",)
    implementations = {}
    search_space = {"outer_lr": Float(0.1, 0.9), "inner_lr_init": Float(0.1, 0.9)}


def picky_plugin() -> types.ModuleType:
    module = types.ModuleType("picky_learners")

    @hookimpl
    def fewshot_bench_register_learners(register):
        register(Picky)

    module.fewshot_bench_register_learners = fewshot_bench_register_learners
    return module


def test_a_trial_whose_values_the_config_refuses_is_failed_not_left_running(cli, tmp_path, monkeypatch):
    plugin = picky_plugin()
    monkeypatch.setattr(plugin_host, "load_plugins",
                        lambda strict=None: load_plugins(strict=strict, extra=[("picky", plugin)]))
    store = tmp_path / "r.db"
    command = ["tune", "--learner", "picky", "--dataset", "synthetic", "--shot", "1", *TINY, "--trials", "4",
               "--store", store]
    line = one_line_error(cli(*command), "the learner refuses its values inner_lr_init=",
                          "outer_lr must not exceed inner_lr_init")
    assert "--set" not in line  # no --set was given
    failed = int(line.split("trial ")[1].split(" ")[0])
    assert (failed, "FAIL") in trial_states(store) and all(s != "RUNNING" for _, s in trial_states(store))

    again = cli(*command)  # goes on with the next trial numbers (new values), never the failed trial again
    assert f"trial {failed} of" not in again.err
    assert (failed, "FAIL") in trial_states(store) and all(s != "RUNNING" for _, s in trial_states(store))
