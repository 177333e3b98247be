"""Threads chosen per phase of a run (fewshot_bench.protocol.threads), progress records for logs, `learners NAME`."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import fewshot_bench as fb
from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.console.progress import LogProgress, duration, log_interval
from fewshot_bench.errors import ConfigError
from fewshot_bench.protocol import threads as threads_module
from fewshot_bench.protocol.threads import (
    BIG_EVAL,
    BIG_STEP,
    ENV,
    FREE,
    choose_big_work_threads,
    choose_eval_threads,
    choose_threads,
    eval_size,
    free_cores,
    parse_threads,
    requested_threads,
)
from fewshot_bench.records.store import ResultStore, RunRecord


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
        assert choose_threads(learner, FREE, "--threads", cores=16, load=0.0).threads == 1


def test_big_steps_get_all_the_cores_whatever_the_load(host):
    big = build(host, "metasgd", TaskSpec(20, 5, 640), meta_batch_size=12)  # 12 x 20 x 20 x 640 inputs
    assert 12 * 20 * 20 * 640 >= BIG_STEP
    for load in (0.0, 0.2, 5.4, 9.0):  # the default never looks at what else runs
        choice = choose_threads(big, cores=8, load=load)
        assert choice.threads == 8 and choice.reason.startswith("auto: big step") and "load" not in choice.reason
    assert choose_threads(big, cores=8, load=9.0, cap=2).threads == 2  # a sweep worker's share
    # --threads free opts in to the load: the cores the rest of the machine leaves free, at least one.
    assert choose_threads(big, FREE, cores=8, load=0.2).threads == 8
    busy = choose_threads(big, FREE, cores=8, load=5.4)
    assert busy.threads == 3 and busy.reason.startswith("free: big step")
    assert "3 of 8 cores free (load 5.4)" in busy.reason
    assert choose_threads(big, FREE, cores=2, load=9.0).threads == 1
    assert choose_threads(big, FREE, cores=8, load=0.0, cap=2).threads == 2


def test_free_cores():
    assert free_cores(2, 0.0) == 2 and free_cores(2, 0.6) == 1 and free_cores(2, 30.0) == 1 and free_cores(4, 1.4) == 3


def test_evaluation_chooses_for_its_own_work():
    paper = dict(episodes=50_000, n_way=5, k_shot=1, n_query=599, feature_dim=640)  # LEO's 50k test episodes
    tiny = dict(episodes=8, n_way=5, k_shot=1, n_query=5, feature_dim=640)  # a test's run
    assert eval_size(**paper) >= BIG_EVAL > eval_size(**tiny)
    for load in (0.0, 1.2, 9.0):  # auto: the machine's cores for many episodes, whatever the load
        choice = choose_eval_threads(**paper, cores=2, load=load)
        assert choice.threads == 2 and choice.reason.startswith("auto: evaluation of 50,000 episodes")
    assert choose_eval_threads(**paper, cores=8, load=0.0, cap=4).threads == 4
    small = choose_eval_threads(**tiny, cores=8, load=0.0)
    assert small.threads == 1 and small.reason.startswith("auto: small evaluation of 8 episodes")
    busy = choose_eval_threads(**paper, requested=FREE, cores=2, load=1.2)
    assert busy.threads == 1 and busy.reason.startswith("free: evaluation")
    assert "1 of 2 cores free (load 1.2)" in busy.reason
    assert choose_eval_threads(**paper, requested=3, source="--threads", cores=2).reason == "--threads=3"


def test_requests_override_the_rule(host, monkeypatch):
    sines = build(host, "leo", TaskSpec(1, 5, 1, "regression", "sines-lines"))
    monkeypatch.setenv(ENV, "2")
    assert requested_threads(None) == (2, ENV)
    assert requested_threads("3") == (3, "--threads")
    assert requested_threads("free") == (FREE, "--threads")
    assert choose_threads(sines, *requested_threads(None)).threads == 2
    monkeypatch.setenv(ENV, "auto")
    assert requested_threads(None) == (None, "")
    monkeypatch.setenv(ENV, "Free")
    assert requested_threads(None) == (FREE, ENV)
    monkeypatch.setenv(ENV, "many")
    with pytest.raises(ConfigError, match=ENV):
        requested_threads(None)
    for bad in ("0", "-1", "x", "all"):
        with pytest.raises(ConfigError, match="--threads") as err:
            parse_threads(bad)
        message = str(err.value)
        assert "\n" not in message and all(word in message for word in ("N", "'auto'", "'free'", repr(bad)))


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
    free = cli(*args, "--store", "c.db", "--threads", "free")
    assert free.code == 0, free.err
    a, b = stored("a.db", auto.json()["run_id"]), stored("b.db", two.json()["run_id"])
    c = stored("c.db", free.json()["run_id"])
    assert a.hardware["torch_threads"] == 1 and a.hardware["threads_reason"].startswith("auto")
    assert b.hardware["torch_threads"] == 2 and b.hardware["threads_reason"] == "--threads=2"
    assert b.hardware["eval_threads"] == 2 and b.hardware["eval_threads_reason"] == "--threads=2"  # both phases
    assert c.hardware["threads_reason"].startswith("free: small step")
    assert a.options == b.options == c.options and a.run_key == b.run_key == c.run_key  # threads are not identity


def test_a_run_records_the_evaluation_threads_it_chose(tmp_path, monkeypatch):
    """Evaluation chooses its own threads (here: big work, so all the cores), then training's come back."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(threads_module, "cpu_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "BIG_EVAL", 1)  # this tiny evaluation counts as big work

    def no_load():
        raise AssertionError("auto looked at the machine's load")

    monkeypatch.setattr(threads_module, "load_average", no_load)
    torch.set_num_threads(1)
    result = fb.run("metasgd", store=tmp_path / "s.db", steps=2, val_every=2, val_episodes=4, episodes=6, eval_query=3)
    hw = stored(tmp_path / "s.db", result.run_id).hardware
    assert hw["torch_threads"] == 1 and hw["threads_reason"].startswith("auto: small step")
    assert hw["eval_threads"] == 2 and hw["eval_threads_reason"].startswith("auto: evaluation of 6 episodes")
    assert torch.get_num_threads() == 1  # the training phase's choice is restored after evaluation

    monkeypatch.setattr(threads_module, "load_average", lambda: 1.2)  # free looks, and says so
    free = fb.run("metasgd", store=tmp_path / "f.db", steps=2, val_every=2, val_episodes=4, episodes=6, eval_query=3,
                  threads="free")
    hw = stored(tmp_path / "f.db", free.run_id).hardware
    assert hw["eval_threads"] == 1 and hw["eval_threads_reason"].startswith("free: evaluation of 6 episodes")
    assert "1 of 2 cores free (load 1.2)" in hw["eval_threads_reason"]
    with pytest.raises(ConfigError, match="'free'"):
        fb.run("metasgd", store=tmp_path / "x.db", steps=2, episodes=6, threads="half")


def test_image_work_gets_all_the_cores_unless_asked():
    for load in (0.1, 1.2, 9.0):  # the default never looks at the load: the same backbone busy or idle
        choice = choose_big_work_threads("pretraining conv4", cores=2, load=load)
        assert choice.threads == 2 and choice.reason.startswith("auto: pretraining conv4")
    busy = choose_big_work_threads("pretraining conv4", FREE, "--threads", cores=2, load=1.2)
    assert busy.threads == 1 and busy.reason == "free: pretraining conv4, 1 of 2 cores free (load 1.2): 1 thread(s)"
    assert choose_big_work_threads("pretraining conv4", FREE, cores=2, load=0.1).threads == 2
    assert choose_big_work_threads("embedding", 3, "--threads", cores=2, load=1.2).threads == 3


@pytest.mark.parametrize("command", ["pretrain", "embed"])
def test_image_commands_refuse_a_malformed_thread_count_before_any_work(cli, tmp_path, command):
    extra = ["--backbone", "conv4"] if command == "pretrain" else ["--checkpoint", tmp_path / "x.pt", "--out", tmp_path]
    out = cli(command, *extra, "--data-dir", tmp_path / "no-images", "--threads", "lots")
    assert out.code == 1 and "--threads must be a positive number" in out.err and "Traceback" not in out.err
    assert "'free'" in out.err


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
