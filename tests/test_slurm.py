"""The Slurm executor (``--executor slurm``): its options and job folder here, and on a real Slurm cluster its
sweeps and searches against the local pool's, a requeued job resuming from its checkpoint, a failing job, and
a driver killed mid-sweep re-attaching to its jobs.

The cluster tests need Slurm's commands and a controller that answers (``.ci/slurm-up`` starts a one-node
cluster on this machine; ``.ci/run`` runs it). Without one they skip, except under ``CI=true``, where they
fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import ResultStore
from fewshot_bench.search.slurm import LEDGER, private_folder, slurm_options, slurm_problem

# A tiny protocol: a Slurm job of it takes seconds (most of them starting Python and torch).
TINY = ["--steps", "20", "--val-every", "10", "--val-episodes", "10", "--episodes", "20", "--eval-query", "5"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster():
    """Skip (fail under CI=true) unless a Slurm controller answers ``sinfo``."""
    problem = slurm_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but Slurm is unreachable ({problem}); .ci/slurm-up starts a one-node cluster")
        pytest.skip(f"needs a Slurm cluster ({problem}); run .ci/slurm-up as root to start one on this machine")


def env(**extra: str) -> dict[str, str]:
    """The environment of a CLI process (and so of its Slurm jobs): this checkout first, quick polling."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FEWSHOT_BENCH_SLURM")}
    path = [str(ROOT), *(str(ROOT / "plugins" / p) for p in ("leo", "metasgd", "maml")), base.get("PYTHONPATH", "")]
    base["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    return base | {"FEWSHOT_BENCH_SLURM_POLL": "1", "FEWSHOT_BENCH_PROGRESS_EVERY": "2"} | extra


def fb(*args: str, cwd: Path, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    """``fewshot-bench ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "fewshot_bench.cli", *map(str, args)], cwd=cwd, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


def rows(store: Path) -> dict[str, tuple]:
    """Each stored run's key -> (learner, shot, seed, per-episode values, resumed_from)."""
    with ResultStore(store, create=False) as db:
        return {r.run_key: (r.learner, r.shot, r.seed, db.episode_values(r.run_id).tolist(),
                            r.summary["train"].get("resumed_from")) for r in db.runs()}


def ledger(folder: Path) -> dict[str, str]:
    """The job ids the executor recorded in its job folder."""
    return json.loads((folder / LEDGER).read_text())


# --- options and the job folder (no cluster needed) ---


@pytest.mark.parametrize(("given", "flag"), [
    ({"time": "soon"}, "--slurm-time"), ({"time": "0"}, "--slurm-time"), ({"cpus": "0"}, "--slurm-cpus"),
    ({"mem": "lots"}, "--slurm-mem"), ({"gpus": "-1"}, "--slurm-gpus"), ({"partition": "a b"}, "--slurm-partition"),
    ({"array_parallelism": "0"}, "--slurm-array-parallelism"), ({"extra": ["nokey"]}, "--slurm"),
    ({"extra": ["array=0-9"]}, "--slurm array"), ({"extra": ["mail-type="]}, "--slurm mail-type"),
])
def test_bad_slurm_values_are_one_line_naming_the_option(given, flag):
    with pytest.raises(ConfigError) as caught:
        slurm_options(given, env={})
    assert str(caught.value).startswith(flag) and "\n" not in str(caught.value)


def test_lab_defaults_from_a_file_and_the_environment_under_the_command_line(tmp_path):
    lab = tmp_path / "slurm.toml"
    lab.write_text('partition = "gpu"\ntime = "2:00:00"\ngpus = 1\n[sbatch]\nmail-type = "END"\n')
    env_ = {"FEWSHOT_BENCH_SLURM_CONFIG": str(lab), "FEWSHOT_BENCH_SLURM_TIME": "30"}
    options = slurm_options({"cpus": "4", "extra": ["exclude=node7"]}, env=env_)
    assert (options.partition, options.minutes(), options.cpus, options.gpus) == ("gpu", 30, 4, 1)
    assert options.uses_gpu and dict(options.extra) == {"mail-type": "END", "exclude": "node7"}
    params = options.sbatch_parameters()
    assert params["gpus_per_node"] == 1 and params["additional_parameters"] == {"exclude": "node7", "mail-type": "END"}
    lab.write_text('partiton = "gpu"\n')
    with pytest.raises(ConfigError, match="unknown key 'partiton'"):
        slurm_options({}, env=env_)


def test_a_job_folder_others_can_write_to_is_refused(tmp_path):
    folder = private_folder(tmp_path / "jobs")
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match=r"can be written by others .*refusing to read job results"):
        private_folder(folder)


def test_slurm_options_without_the_slurm_executor_are_refused(cli, tmp_path):
    done = cli("sweep", "--learners", "nearest-centroid", "--shots", "1", "--seeds", "1", *TINY,
               "--slurm-partition", "gpu", "--store", tmp_path / "s.db")
    assert done.code != 0 and done.err.strip().splitlines()[-1].endswith("add --executor slurm")
    assert not (tmp_path / "s.db").exists()


def test_the_python_face_takes_the_slurm_options_by_name_and_checks_them(tmp_path):
    import fewshot_bench as fb

    common = {"learners": ["nearest-centroid"], "shots": [1], "seeds": 1, "steps": 10, "episodes": 20,
              "store": tmp_path / "s.db", "checkpoint_dir": tmp_path / "ck"}
    with pytest.raises(ConfigError, match=r"^--slurm-time '1 hour'"):
        fb.sweep(**common, executor="slurm", slurm={"time": "1 hour"})
    with pytest.raises(ConfigError, match="unknown Slurm option 'partiton'"):
        fb.sweep(**common, executor="slurm", slurm={"partiton": "gpu"})
    with pytest.raises(ConfigError, match="add --executor slurm"):
        fb.tune("metasgd", trials=1, steps=10, store=tmp_path / "s.db", slurm={"gpus": 1})
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "slurm-jobs").exists()


def test_bad_slurm_values_on_the_command_line_stop_the_sweep_before_anything_is_submitted(cli, tmp_path):
    done = cli("sweep", "--learners", "nearest-centroid", "--shots", "1", "--seeds", "1", *TINY,
               "--executor", "slurm", "--slurm-mem", "plenty", "--store", tmp_path / "s.db")
    assert done.code != 0 and done.err.strip().splitlines()[-1].startswith("fewshot-bench: error: --slurm-mem 'plenty'")
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "slurm-jobs").exists()


# --- on a real cluster ---


@pytest.mark.slow  # Slurm jobs start Python and torch
def test_a_sweep_on_slurm_stores_exactly_the_rows_of_the_local_pool(cluster, tmp_path):
    grid = ["sweep", "--learners", "metasgd,nearest-centroid", "--shots", "1", "--seeds", "2", *TINY]
    local = fb(*grid, "--workers", "2", "--store", tmp_path / "local.db", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    on_slurm = fb(*grid, "--executor", "slurm", "--slurm-time", "10", "--store", tmp_path / "slurm.db",
                  "--slurm-folder", tmp_path / "jobs", cwd=tmp_path)
    assert on_slurm.returncode == 0, on_slurm.stderr
    assert rows(tmp_path / "slurm.db") == rows(tmp_path / "local.db")  # same run keys, same per-episode numbers
    assert len(ledger(tmp_path / "jobs")) == 2  # a cell's seeds as one job (population), each cell one job
    assert "slurm: 0 pending, 0 running, 2 done, 0 failed" in on_slurm.stderr  # Slurm's view, in the log
    # It ends with the summary table, as the local pool's: mean ± std over the seeds of each cell.
    assert on_slurm.stdout.splitlines()[-5:-1] == local.stdout.splitlines()[-5:-1]
    assert "±" in on_slurm.stdout.splitlines()[-2] and "done: 4 run(s) stored" in on_slurm.stdout


@pytest.mark.slow
def test_a_search_on_slurm_equals_the_same_search_on_the_local_pool(cluster, tmp_path):
    search = ["tune", "--learner", "metasgd", "--trials", "3", "--sampler", "random", "--seed", "3", *TINY[:6],
              "--json"]
    local = fb(*search, "--workers", "2", "--store", tmp_path / "local.db", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    on_slurm = fb(*search, "--executor", "slurm", "--slurm-array-parallelism", "2", "--slurm-time", "10",
                  "--store", tmp_path / "slurm.db", cwd=tmp_path)
    assert on_slurm.returncode == 0, on_slurm.stderr
    a, b = json.loads(local.stdout.splitlines()[-1]), json.loads(on_slurm.stdout.splitlines()[-1])
    assert a["best"]["values"] == b["best"]["values"] and a["best"]["value"] == b["best"]["value"]
    assert rows(tmp_path / "slurm.db") == rows(tmp_path / "local.db")  # every trial: same values, same numbers
    assert len(ledger(tmp_path / "slurm-jobs")) == 3  # one job per trial


@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [
    ["scontrol", "requeue"],  # Slurm requeues it (preemption with PreemptMode=REQUEUE does the same)
    ["scancel", "--signal=USR2"],  # the time limit's warning: submitit's checkpoint hook requeues it
])
def test_a_requeued_job_resumes_from_its_checkpoint(cluster, tmp_path, interrupt):
    cell = ["sweep", "--learners", "metasgd", "--shots", "1", "--seeds", "1", "--steps", "160", "--val-every", "20",
            "--val-episodes", "10", "--episodes", "20", "--eval-query", "5", "--json"]
    driver = subprocess.Popen([sys.executable, "-m", "fewshot_bench.cli", *cell, "--executor", "slurm",
                               "--slurm-time", "10", "--store", "slurm.db"],
                              cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        checkpoints = tmp_path / "fewshot-checkpoints"
        deadline = time.time() + 180
        while not [p for p in checkpoints.glob("*.pt") if not p.name.endswith(".model.pt")]:
            assert driver.poll() is None, driver.communicate()[1]
            assert time.time() < deadline, "the job wrote no checkpoint"
            time.sleep(0.2)
        (job_id,) = ledger(tmp_path / "slurm-jobs").values()
        subprocess.run([*interrupt, job_id], check=True)
        _release(job_id)
        out, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert driver.returncode == 0, err
    (row,) = rows(tmp_path / "slurm.db").values()
    assert row[4] is not None and row[4] > 0  # resumed_from: the step of its checkpoint
    uninterrupted = fb(*cell, "--workers", "1", "--store", tmp_path / "local.db", cwd=tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    (alone,) = rows(tmp_path / "local.db").values()
    assert row[:4] == alone[:4] and alone[4] is None  # the same row as a run never interrupted


def _release(job_id: str) -> None:
    """Start a requeued job now: Slurm holds a requeued job back for two minutes (its BeginTime)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True).stdout
        if state.startswith("PENDING"):
            subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
            return
        time.sleep(0.2)
    pytest.fail(f"job {job_id} was not requeued")


FLAKY = '''
"""Meta-SGD whose process dies in meta-training while the file $FLAKY_MARKER exists: a job killed as the
out-of-memory killer kills it (no result, no exception), then fixed."""
import os
import signal
import sys

from fewshot_bench.api import hookimpl
from fewshot_bench_metasgd import MetaSGD


class Flaky(MetaSGD):
    name = "flaky"
    description = "Meta-SGD that dies while $FLAKY_MARKER exists"

    def meta_loss(self, batch):
        if os.path.exists(os.environ["FLAKY_MARKER"]):
            print("flaky: out of memory, on purpose", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().meta_loss(batch)


@hookimpl
def fewshot_bench_register_learners(register):
    register(Flaky)
'''


def flaky_plugin(site: Path) -> Path:
    """A plugin distribution (``flaky``) written into ``site``: a module and its dist-info, found on PYTHONPATH."""
    site.mkdir()
    (site / "flaky_plugin.py").write_text(textwrap.dedent(FLAKY))
    info = site / "fewshot_bench_flaky-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fewshot-bench-flaky\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fewshot_bench]\nflaky = flaky_plugin\n")
    return site


@pytest.mark.slow
def test_a_dying_job_is_reported_the_others_complete_and_the_rerun_finishes(cluster, tmp_path):
    site = flaky_plugin(tmp_path / "site")
    marker = tmp_path / "fail"
    marker.touch()
    extra = {"PYTHONPATH": f"{site}{os.pathsep}{env()['PYTHONPATH']}", "FLAKY_MARKER": str(marker)}
    sweep = ["sweep", "--learners", "flaky,nearest-centroid", "--shots", "1", "--seeds", "2", *TINY,
             "--executor", "slurm", "--slurm-time", "10", "--store", "s.db"]
    first = fb(*sweep, cwd=tmp_path, **extra)
    assert first.returncode != 0
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("fewshot-bench: error: 2 run(s) failed (first: flaky synthetic 1-shot seed 0: "
                           "SlurmJobFailed: Slurm job ")
    assert "without a result; stderr: " in last and "flaky: out of memory, on purpose" in last  # its stderr's tail
    assert sorted(r[0] for r in rows(tmp_path / "s.db").values()) == ["nearest-centroid"] * 2  # the others stored
    marker.unlink()
    again = fb(*sweep, "--json", cwd=tmp_path, **extra)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["ran"] == 2  # only what was missing
    assert sorted(r[0] for r in rows(tmp_path / "s.db").values()) == ["flaky"] * 2 + ["nearest-centroid"] * 2


@pytest.mark.slow
def test_a_killed_driver_reattaches_to_its_jobs_and_submits_none_twice(cluster, tmp_path):
    sweep = [sys.executable, "-m", "fewshot_bench.cli", "sweep", "--learners", "metasgd,nearest-centroid",
             "--shots", "1,5", "--seeds", "2", *TINY, "--executor", "slurm", "--slurm-time", "10",
             "--slurm-array-parallelism", "2", "--store", "s.db", "--json"]
    driver = subprocess.Popen(sweep, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jobs = tmp_path / "slurm-jobs"
    deadline = time.time() + 120
    while not (jobs / LEDGER).exists():
        assert driver.poll() is None, driver.communicate()[1]
        assert time.time() < deadline, "nothing was submitted"
        time.sleep(0.1)
    os.kill(driver.pid, signal.SIGKILL)
    driver.communicate()
    submitted = ledger(jobs)
    assert len(submitted) == 4  # four cells, each one population job
    queued = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i"], capture_output=True, text=True)
    assert set(submitted.values()) <= set(queued.stdout.split())  # still queued, running or finished
    again = subprocess.run(sweep, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["ran"] + summary["already_complete"] == 8
    assert "submitted" not in again.stderr and ledger(jobs) == submitted  # re-attached: no job submitted twice
    assert "re-attached to 4 Slurm job(s)" in again.stderr
    stored = rows(tmp_path / "s.db")
    assert len(stored) == 8 and sorted((r[0], r[1], r[2]) for r in stored.values()) == sorted(
        (learner, shot, seed) for learner in ("metasgd", "nearest-centroid") for shot in (1, 5) for seed in (0, 1))
    main = {i.split("_")[0] for i in submitted.values()}
    assert len(main) == 1  # one array
    assert np.isfinite([v for r in stored.values() for v in r[3]]).all()
