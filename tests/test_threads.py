"""Threads chosen per run (fewshot_bench.threads), progress records for logs, `learners NAME`."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.errors import ConfigError
from fewshot_bench.progress import LogProgress, duration, log_interval
from fewshot_bench.store import ResultStore, RunRecord
from fewshot_bench.threads import (
    BIG_STEP,
    ENV,
    choose_big_work_threads,
    choose_threads,
    free_cores,
    parse_threads,
    requested_threads,
)


def build(host, name: str, task: TaskSpec, **config):
    cls = host.learner(name).for_kind(task.kind)
    return cls(cls.Config(**config), task)


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_steps_run_on_one_thread(host):
    sines = build(host, "leo", TaskSpec(1, 5, 1, "regression", "sines-lines"))
    leo = build(host, "leo", TaskSpec(5, 5, 640))
    for learner in (sines, leo):
        choice = choose_threads(learner, cores=16, load=0.0)
        assert choice.threads == 1 and choice.reason.startswith("auto: small step")


def test_big_steps_get_the_free_cores(host):
    big = build(host, "metasgd", TaskSpec(20, 5, 640), meta_batch_size=12)  # 12 x 20 x 20 x 640 inputs
    assert 12 * 20 * 20 * 640 >= BIG_STEP
    assert choose_threads(big, cores=8, load=0.2).threads == 8
    assert choose_threads(big, cores=8, load=5.4).threads == 3  # the rest of the machine is busy
    assert choose_threads(big, cores=2, load=9.0).threads == 1  # never fewer than one
    assert choose_threads(big, cores=8, load=0.0, cap=2).threads == 2  # a sweep worker's share


def test_free_cores():
    assert free_cores(2, 0.0) == 2 and free_cores(2, 0.6) == 1 and free_cores(2, 30.0) == 1 and free_cores(4, 1.4) == 3


def test_requests_override_the_rule(host, monkeypatch):
    sines = build(host, "leo", TaskSpec(1, 5, 1, "regression", "sines-lines"))
    monkeypatch.setenv(ENV, "2")
    assert requested_threads(None) == (2, ENV)
    assert requested_threads("3") == (3, "--threads")
    assert choose_threads(sines, *requested_threads(None)).threads == 2
    monkeypatch.setenv(ENV, "auto")
    assert requested_threads(None) == (None, "")
    monkeypatch.setenv(ENV, "many")
    with pytest.raises(ConfigError, match=ENV):
        requested_threads(None)
    for bad in ("0", "-1", "x"):
        with pytest.raises(ConfigError, match="--threads"):
            parse_threads(bad)


def stored(store, run_id: str) -> RunRecord:
    with ResultStore(store) as db:
        return db.run(run_id)


def values(store, run_id: str):
    with ResultStore(store) as db:
        return db.episode_values(run_id)


def test_run_records_its_threads_outside_its_identity(cli, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    args = ["run", "--learner", "leo", "--dataset", "sines-lines", "--steps", "4", "--val-every", "2",
            "--val-episodes", "4", "--episodes", "8", "--json"]
    auto = cli(*args, "--store", "a.db")
    assert auto.code == 0, auto.err
    two = cli(*args, "--store", "b.db", "--threads", "2")
    assert two.code == 0, two.err
    a, b = stored("a.db", auto.json()["run_id"]), stored("b.db", two.json()["run_id"])
    assert a.hardware["torch_threads"] == 1 and a.hardware["threads_reason"].startswith("auto")
    assert b.hardware["torch_threads"] == 2 and b.hardware["threads_reason"] == "--threads=2"
    assert a.options == b.options and a.run_key == b.run_key  # the protocol and the run key do not see threads


def test_image_work_gets_the_free_cores_unless_asked():
    assert choose_big_work_threads("pretraining conv4", cores=2, load=0.1).threads == 2
    busy = choose_big_work_threads("pretraining conv4", cores=2, load=1.2)
    assert busy.threads == 1 and "1 of 2 cores free" in busy.reason
    assert choose_big_work_threads("embedding", 3, "--threads", cores=2, load=1.2).threads == 3


@pytest.mark.parametrize("command", ["pretrain", "embed"])
def test_image_commands_refuse_a_malformed_thread_count_before_any_work(cli, tmp_path, command):
    extra = ["--backbone", "conv4"] if command == "pretrain" else ["--checkpoint", tmp_path / "x.pt", "--out", tmp_path]
    out = cli(command, *extra, "--data-dir", tmp_path / "no-images", "--threads", "lots")
    assert out.code == 1 and "--threads must be a positive number" in out.err and "Traceback" not in out.err


def test_run_refuses_a_malformed_thread_count(cli):
    r = cli("run", "--learner", "nearest-centroid", "--threads", "0", "--episodes", "5")
    assert r.code == 1 and "--threads must be a positive number" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_results_do_not_depend_on_the_thread_count_for_small_learners(cli):
    """Meta-SGD's 5-way 1-shot step is small: per-episode metrics are equal with 1 and 2 threads."""
    args = ["run", "--learner", "metasgd", "--steps", "6", "--val-every", "3", "--val-episodes", "10",
            "--episodes", "40", "--json"]
    one, two = cli(*args, "--threads", "1", "--store", "one.db"), cli(*args, "--threads", "2", "--store", "two.db")
    assert one.code == 0 and two.code == 0
    v1, v2 = values("one.db", one.json()["run_id"]), values("two.db", two.json()["run_id"])
    assert len(v1) == 40 and np.array_equal(v1, v2)


# --- progress records -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_progress_prints_one_line_per_interval():
    clock, out = Clock(), io.StringIO()
    with LogProgress(1000, "meta-train leo", "step", every=30, scale=12, stream=out, clock=clock) as bar:
        for _ in range(1000):
            clock.t += 0.1  # 10 steps/s: 120 episodes/s
            bar.update(1)
            if bar.n == 500:
                bar.set_postfix(val="0.6120", best="0.6200")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1000 * 0.1 // 30 + 1  # every 30 s, and once at the end
    assert lines[0].startswith("meta-train leo: step 300/1,000 (30.0%) 120 ep/s eta 1m10s")
    assert "val=0.6120 best=0.6200" in lines[-1] and lines[-1].endswith("took 1m40s")


def test_log_progress_is_silent_for_short_work():
    out = io.StringIO()
    with LogProgress(10, "x", every=30, stream=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_progress_interval_from_the_environment():
    assert log_interval({}) == 30.0
    assert log_interval({"FEWSHOT_BENCH_PROGRESS_EVERY": "5"}) == 5.0
    assert log_interval({"FEWSHOT_BENCH_PROGRESS_EVERY": "0"}) is None
    with pytest.raises(ConfigError):
        log_interval({"FEWSHOT_BENCH_PROGRESS_EVERY": "soon"})
    assert duration(42) == "42s" and duration(125) == "2m05s" and duration(3 * 3600 + 12 * 60) == "3h12m"


def test_a_run_logs_progress_when_stderr_is_not_a_terminal(cli, monkeypatch):
    monkeypatch.setenv("FEWSHOT_BENCH_PROGRESS_EVERY", "0.000001")
    r = cli("run", "--learner", "metasgd", "--steps", "4", "--val-every", "2", "--val-episodes", "4", "--episodes", "8")
    assert r.code == 0, r.err
    records = [line for line in r.err.splitlines() if line.startswith("meta-train metasgd: step ")]
    assert records and "4/4 (100.0%)" in records[-1] and "took" in records[-1]
    assert any(line.startswith("test metasgd: ep ") and "8/8 (100.0%)" in line for line in r.err.splitlines())
    assert "meta-train metasgd: step" not in r.out
    quiet = cli("-q", "run", "--learner", "metasgd", "--steps", "4", "--val-every", "2", "--val-episodes", "4",
                "--episodes", "8", "--store", "q.db")
    assert quiet.code == 0 and "meta-train" not in quiet.err


# --- learners NAME ----------------------------------------------------------------------


def test_learners_name_shows_every_option_and_preset(cli):
    r = cli("learners", "leo")
    assert r.code == 0, r.err
    for text in ("classification", "regression", "outer_lr", "latent_steps", "'per-example' | 'per-class'",
                 "--hparams paper|reference (default paper)", "tiered", "model_hidden", "tuple[int, ...]"):
        assert text in r.out, text
    info = cli("learners", "leo", "--json").json()
    kinds = {k["kind"]: k for k in info["kinds"]}
    assert set(kinds) == {"classification", "regression"}
    cls_fields = {f["key"]: f for f in kinds["classification"]["fields"]}
    assert cls_fields["meta_batch_size"] == {"key": "meta_batch_size", "type": "int", "default": "12"}
    presets = {(p["preset"], p["dataset"], p["shot"]) for p in kinds["classification"]["preset_values"]}
    assert ("reference", "tiered", "5") in presets and ("paper", "mini", "1") in presets
    assert kinds["regression"]["class"].endswith("LEORegression")


def test_learners_name_of_an_unknown_learner(cli):
    r = cli("learners", "no-such-learner")
    assert r.code == 1 and "unknown learner 'no-such-learner'" in r.err and "leo" in r.err
