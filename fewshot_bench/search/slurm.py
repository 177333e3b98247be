"""The Slurm executor: a sweep's populations or a search's trials as Slurm jobs, through submitit.

One job computes one unit (a cell's missing seeds as one population, a lone run, or a trial) with
:func:`~fewshot_bench.search.executors.compute_job` and returns its outcome; the driver, the only
writer of the store and the study, reads each result from the job folder. Units submitted together
go out as one job array (submitit's batch submission, ``--slurm-array-parallelism`` at once).

Nothing is lost or repeated: a job killed at its time limit or requeued (preemption, ``scontrol
requeue``) starts again and resumes from its run's checkpoint; the job id of every unit is recorded
in the job folder (``jobs.json``) the moment it is submitted, so a driver killed and started again
re-attaches to the jobs still queued or running and collects those that finished, instead of
submitting them again. Job states come from ``squeue`` (``sacct`` needs Slurm's accounting
database, which many clusters do not run). The job folder holds pickles the driver unpickles: it is
made private (0700) and never read when another user can write to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
import traceback
from dataclasses import dataclass, fields, replace
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Mapping

from fewshot_bench.atomic import write_text
from fewshot_bench.errors import ConfigError, FewshotBenchError
from fewshot_bench.protocol.runner import RunOutcome
from fewshot_bench.protocol.spec import Job, PopulationJob
from fewshot_bench.search.executors import Executor, Finished, WorkerSettings, compute_job

log = logging.getLogger(__name__)

CONFIG_ENV = "FEWSHOT_BENCH_SLURM_CONFIG"  # a lab's defaults (TOML); else ~/.config/fewshot-bench/slurm.toml
ENV_PREFIX = "FEWSHOT_BENCH_SLURM_"  # FEWSHOT_BENCH_SLURM_PARTITION=gpu, ...: defaults over the file's
POLL_ENV = "FEWSHOT_BENCH_SLURM_POLL"  # seconds between two looks at squeue (default 5)
LEDGER = "jobs.json"  # unit -> Slurm job id, written by the driver as it submits
# sbatch keys the executor sets itself: a pass-through value would break collecting or requeueing.
OWN_KEYS = {"array", "output", "error", "open-mode", "signal", "job-name", "wrap", "parsable", "requeue", "no-requeue"}
# squeue's states (man squeue, JOB STATE CODES) as the driver counts them.
PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "PREEMPTED", "RESIZING", "SIGNALING", "STOPPED", "SPECIAL_EXIT"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}
RESULT_GRACE_S = 30.0  # a finished job's result may reach a shared filesystem's client a little later
STDERR_TAIL = 5  # lines of a failed job's stderr in its report


@dataclass(frozen=True)
class SlurmOptions:
    """What every job asks Slurm for, as ``--slurm-*`` options, environment variables or a lab's config file."""

    partition: str | None = None
    time: str = "60"  # minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS (sbatch's forms)
    cpus: int = 1  # --cpus-per-task; the job's torch threads
    mem: str | None = None  # e.g. 8G
    gpus: int = 0  # GPUs per job (gpus_per_node); > 0 runs the job with --device cuda
    gres: str | None = None  # e.g. gpu:a100:1, as the cluster names them
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64  # jobs of an array running at once; trials of a search in flight
    folder: str | None = None  # the job folder (default: slurm-jobs beside the checkpoint folder)
    extra: tuple[tuple[str, str], ...] = ()  # --slurm KEY=VALUE: any other sbatch option

    @property
    def uses_gpu(self) -> bool:
        """Whether a job asks for a GPU (``--slurm-gpus`` or a ``gpu`` gres)."""
        return self.gpus > 0 or (self.gres or "").split(":")[0] == "gpu"

    def minutes(self) -> int:
        """The time limit in whole minutes (rounded up), as submitit takes it."""
        return _minutes(self.time)

    def sbatch_parameters(self) -> dict[str, Any]:
        """submitit's ``SlurmExecutor`` parameters for these options."""
        params: dict[str, Any] = {"time": self.minutes(), "cpus_per_task": self.cpus,
                                  "array_parallelism": self.array_parallelism, "job_name": "fewshot-bench"}
        named = {"partition": self.partition, "mem": self.mem, "gres": self.gres, "account": self.account,
                 "qos": self.qos, "constraint": self.constraint}
        params.update({k: v for k, v in named.items() if v is not None})
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params


# Each option's flag, for the one-line errors that name it.
FLAGS = {"partition": "--slurm-partition", "time": "--slurm-time", "cpus": "--slurm-cpus", "mem": "--slurm-mem",
         "gpus": "--slurm-gpus", "gres": "--slurm-gres", "account": "--slurm-account", "qos": "--slurm-qos",
         "constraint": "--slurm-constraint", "array_parallelism": "--slurm-array-parallelism",
         "folder": "--slurm-folder", "extra": "--slurm"}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_.:,&|()!*\[\]+@/=-]+$")  # partition, account, qos, gres, constraint
_KEY = re.compile(r"^[a-z][a-z0-9_-]*$")


def _minutes(text: str) -> int:
    match = _TIME.match(text.strip())
    if not match:
        raise ConfigError(f"--slurm-time {text!r}: use minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS")
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:
        seconds = int(a) * 60
    if seconds < 60:
        raise ConfigError(f"--slurm-time {text!r}: a job needs at least one minute")
    return -(-seconds // 60)


def _count(name: str, value: Any, least: int) -> int:
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text) or int(text) < least:
        raise ConfigError(f"{FLAGS[name]} {value!r}: a whole number, at least {least}")
    return int(text)


def _word(name: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text or not _NAME.match(text):
        raise ConfigError(f"{FLAGS[name]} {value!r}: one word of letters, digits and _.:,&|()!*[]+@/=-")
    return text


def parse_extra(items: Iterable[str] | Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``--slurm KEY=VALUE`` items (or a mapping) as checked sbatch options; keys without their dashes."""
    pairs = list(items.items()) if isinstance(items, Mapping) else [_split(item) for item in items]
    out = {}
    for key, value in pairs:
        key = str(key).strip().lstrip("-").replace("_", "-")
        text = str(value).strip()
        if not _KEY.match(key):
            raise ConfigError(f"--slurm {key}={value}: not an sbatch option name (e.g. --slurm mail-type=END)")
        if key in OWN_KEYS:
            raise ConfigError(f"--slurm {key}: set by fewshot-bench itself (it collects and requeues the jobs)")
        if not text or any(ch in text for ch in "\n\r\0"):
            raise ConfigError(f"--slurm {key}={value!r}: the value must be one non-empty line")
        out[key] = text
    return tuple(sorted(out.items()))


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"--slurm {item!r}: use KEY=VALUE (an sbatch option, e.g. --slurm mail-type=END)")
    key, value = item.split("=", 1)
    return key, value


def lab_defaults(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A lab's defaults: the config file (``$FEWSHOT_BENCH_SLURM_CONFIG`` or ~/.config/fewshot-bench/slurm.toml),
    then ``FEWSHOT_BENCH_SLURM_<OPTION>`` variables over it."""
    env = os.environ if env is None else env
    path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else Path.home() / ".config" / "fewshot-bench" / "slurm.toml"
    values: dict[str, Any] = {}
    if env.get(CONFIG_ENV) or path.is_file():
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"Slurm defaults {path}: {exc}") from None
        known = {f.name for f in fields(SlurmOptions)} | {"sbatch"}
        if unknown := sorted(set(values) - known):
            raise ConfigError(f"Slurm defaults {path}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        if "sbatch" in values:
            values["extra"] = values.pop("sbatch")
    for f in fields(SlurmOptions):
        if f.name != "extra" and env.get(ENV_PREFIX + f.name.upper()):
            values[f.name] = env[ENV_PREFIX + f.name.upper()]
    return values


def slurm_options(given: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> SlurmOptions:
    """The checked options: ``given`` (the command line's, None values left out) over the lab's defaults.

    A bad value is a one-line :class:`ConfigError` naming its option, before anything is submitted.
    """
    given = dict(given or {})
    known = {f.name for f in fields(SlurmOptions)}
    if unknown := sorted(set(given) - known):
        raise ConfigError(f"unknown Slurm option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    lab = lab_defaults(env)
    extra = dict(parse_extra(lab.pop("extra", ()) or ()))
    extra.update(parse_extra(given.pop("extra", ()) or ()))  # the command line's add to (or replace) the lab's
    merged = {**lab, **{k: v for k, v in given.items() if v is not None}}
    base = SlurmOptions()
    options = SlurmOptions(
        partition=_word("partition", merged.get("partition")),
        time=str(merged.get("time", base.time)),
        cpus=_count("cpus", merged.get("cpus", base.cpus), 1),
        mem=merged.get("mem"),
        gpus=_count("gpus", merged.get("gpus", base.gpus), 0),
        gres=_word("gres", merged.get("gres")),
        account=_word("account", merged.get("account")),
        qos=_word("qos", merged.get("qos")),
        constraint=_word("constraint", merged.get("constraint")),
        array_parallelism=_count("array_parallelism", merged.get("array_parallelism", base.array_parallelism), 1),
        folder=str(merged["folder"]) if merged.get("folder") else None,
        extra=tuple(sorted(extra.items())),
    )
    options.minutes()  # checks --slurm-time
    if options.mem is not None and not _MEM.match(str(options.mem).strip()):
        raise ConfigError(f"--slurm-mem {options.mem!r}: a size such as 8G, 500M or 16000 (megabytes)")
    return replace(options, mem=None if options.mem is None else str(options.mem).strip().upper())


# --- the job folder --------------------------------------------------------------------------------


def private_folder(path: Path) -> Path:
    """``path`` created private (0700) if missing, and checked: refused when another user could plant a pickle."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path)
    return path


def check_private(path: Path) -> None:
    """A one-line :class:`ConfigError` unless ``path`` is a folder of this user that no one else can write to."""
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"Slurm job folder {path} is not a folder; choose another --slurm-folder")
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ConfigError(
            f"Slurm job folder {path} can be written by others (owner uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}): refusing to read job results from it; `chmod 700` it if it is yours, "
            "or choose another --slurm-folder"
        )


def unit_id(job: Job | PopulationJob) -> str:
    """What names a unit across drivers: the run keys it computes (a trial's: its run key too)."""
    keys = [m.key for m in job.members] if isinstance(job, PopulationJob) else [job.key]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]


class Ledger:
    """The job id of every unit submitted from this job folder (``jobs.json``), written as jobs are submitted."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LEDGER
        self.ids: dict[str, str] = {}
        if self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{self.path} is not the executor's job list ({exc}); remove it to start afresh") \
                    from None
            if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
                raise ConfigError(f"{self.path} is not the executor's job list; remove it to start afresh")
            self.ids = loaded

    def record(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Record (unit, job id) pairs and write the list atomically."""
        self.ids.update(pairs)
        self.write()

    def forget(self, unit: str) -> None:
        """Drop a unit whose job failed (the next driver submits it again)."""
        if self.ids.pop(unit, None) is not None:
            self.write()

    def write(self) -> None:
        """Write the list atomically."""
        write_text(self.path, json.dumps(self.ids, indent=0, sort_keys=True), "the Slurm job list")


# --- Slurm's view ----------------------------------------------------------------------------------


def slurm_problem() -> str | None:
    """Why Slurm cannot be used from here (None: ``sinfo`` answers)."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "sbatch and squeue are not on PATH (run on a Slurm login node)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if done.returncode != 0:
        return f"sinfo failed: {_last_line(done.stderr)}"
    return None


def squeue_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The state of each job (array tasks one by one) that ``squeue`` still knows; a job it forgot is absent."""
    mains = sorted({jid.split("_")[0] for jid in job_ids})
    if not mains:
        return {}
    done = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(mains)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Invalid job id" not in done.stderr:  # every job forgotten: squeue says so
        raise SlurmUnreachable(f"squeue failed: {_last_line(done.stderr)}")
    states = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1].rstrip("+")
    return states


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"


class SlurmUnreachable(RuntimeError):
    """squeue did not answer (the controller restarting): the driver waits and asks again."""


class SlurmJobFailed(RuntimeError):
    """A job that ended without an outcome, or whose unit raised: its job id, what happened, its stderr's tail."""


# --- the jobs --------------------------------------------------------------------------------------


class Unit:
    """What a Slurm job runs: one unit on a worker, returning its outcome (or the exception it raised).

    submitit calls :meth:`checkpoint` when the job is timed out or preempted and requeues it: the
    requeued job computes the same unit, which resumes from its run's checkpoint.
    """

    def __init__(self, job: Job | PopulationJob, settings: WorkerSettings) -> None:
        self.job, self.settings = job, settings

    def __call__(self) -> RunOutcome | list[RunOutcome] | BaseException:
        try:
            return compute_job(self.job, self.settings)
        except Exception as exc:  # returned, so the driver sees a user error as one (it stops the sweep)
            traceback.print_exc(file=sys.stderr)
            try:
                pickle.dumps(exc)
                return exc
            except Exception:  # an exception that cannot travel: its text does
                return SlurmJobFailed(f"{type(exc).__name__}: {exc}")

    def checkpoint(self) -> Any:
        """Requeue the same unit (submitit's hook on timeout or preemption); the run's checkpoint resumes it."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


@dataclass
class Tracked:
    """A submitted unit the driver waits for."""

    job: Job | PopulationJob
    job_id: str
    paths: Any  # submitit's JobPaths
    gone_since: float | None = None  # when squeue stopped knowing it without a result in the folder
    state: str = "PENDING"


@dataclass
class Tally:
    """Units by Slurm's view: pending, running, done, failed."""

    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0

    def text(self) -> str:
        """``slurm: 3 pending, 2 running, 4 done, 0 failed``."""
        return f"slurm: {self.pending} pending, {self.running} running, {self.done} done, {self.failed} failed"


class SlurmExecutor(Executor):
    """Units as Slurm jobs (arrays when submitted together), through submitit; see the module's docstring."""

    def __init__(self, options: SlurmOptions, settings: WorkerSettings, poll_s: float | None = None,
                 progress: bool = False, log_every: float | None = 30.0) -> None:
        try:
            import submitit
        except ImportError:
            raise ConfigError("--executor slurm needs submitit: python -m pip install 'fewshot-bench[slurm]'") \
                from None
        if problem := slurm_problem():
            raise ConfigError(f"--executor slurm: {problem}")
        self.options = options
        self.folder = private_folder(Path(options.folder or "slurm-jobs").resolve())
        self.settings = replace(settings, device="cuda" if options.uses_gpu else settings.device,
                                threads=options.cpus)
        self.submitit = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=3)
        self.submitit.update_parameters(**options.sbatch_parameters())
        self.ledger = Ledger(self.folder)
        check_with_sbatch(self.submitit, self.folder)
        self.workers = options.array_parallelism  # trials a search keeps in flight
        self.poll_s = poll_s or poll_interval()
        self.progress, self.log_every = progress, log_every
        self.tracked: dict[str, Tracked] = {}
        self.tally = Tally()

    @property
    def description(self) -> str:
        where = f"partition {self.options.partition}" if self.options.partition else "the default partition"
        gpu = ", a GPU each" if self.options.uses_gpu else ""
        return (f"Slurm ({where}, {self.options.cpus} CPU(s){gpu}, {self.options.minutes()} min each, at most "
                f"{self.options.array_parallelism} at once; job folder {self.folder})")

    def run(self, jobs: Iterable[Job | PopulationJob], in_flight: int | None = None) -> Finished:
        source = iter(jobs)
        self.start(list(islice(source, in_flight)))
        bar = self._bar()
        last_line = time.monotonic()
        try:
            while self.tracked:
                finished = self.poll()
                for tracked, outcome in finished:
                    yield tracked.job, outcome
                    if in_flight:
                        self.start(list(islice(source, 1)))
                bar.total = self.tally.done + self.tally.failed + len(self.tracked)
                bar.update(len(finished))
                bar.set_postfix_str(self.tally.text())
                now = time.monotonic()
                if not self.progress and self.log_every and now - last_line >= self.log_every:
                    log.info("%s", self.tally.text())
                    last_line = now
                if self.tracked and not finished:
                    time.sleep(self.poll_s)
        finally:
            bar.close()
        log.info("%s", self.tally.text())

    def _bar(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=len(self.tracked), desc="slurm jobs", unit="job", disable=not self.progress, leave=False)

    def start(self, units: list[Job | PopulationJob]) -> None:
        """Re-attach to the units already queued, running or finished; submit the others as one array."""
        if not units:
            return
        known = squeue_states(self.ledger.ids[u] for u in map(unit_id, units) if u in self.ledger.ids)
        fresh, attached = [], []
        for job in units:
            job_id = self.ledger.ids.get(unit_id(job))
            if job_id is not None and (known.get(job_id, "") in PENDING | RUNNING or self._has_result(job_id)):
                self._track(job, job_id)
                attached.append(job_id)
            else:
                fresh.append(job)
        if attached:
            log.info("re-attached to %d Slurm job(s) already queued, running or finished: %s", len(attached),
                     _id_text(attached))
        if fresh:
            self.submit(fresh)

    def submit(self, units: list[Job | PopulationJob]) -> None:
        """Submit ``units`` (an array when there are several) and record their job ids at once."""
        if len(units) == 1:
            submitted = [self.submitit.submit(Unit(units[0], self.settings))]
        else:
            with self.submitit.batch():
                submitted = [self.submitit.submit(Unit(job, self.settings)) for job in units]
        self.ledger.record((unit_id(job), s.job_id) for job, s in zip(units, submitted))
        for job, s in zip(units, submitted):
            self._track(job, s.job_id)
        log.info("submitted %d Slurm job(s): %s", len(submitted), _id_text([s.job_id for s in submitted]))

    def _track(self, job: Job | PopulationJob, job_id: str) -> None:
        from submitit.core.utils import JobPaths

        self.tracked[job_id] = Tracked(job, job_id, JobPaths(self.folder, job_id=job_id, task_id=0))

    def _has_result(self, job_id: str) -> bool:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=job_id, task_id=0).result_pickle.exists()

    def poll(self) -> list[tuple[Tracked, Any]]:
        """One look at Slurm's view: the units that finished since the last, with their outcomes; the tally."""
        try:
            states = squeue_states(self.tracked)
        except (SlurmUnreachable, subprocess.TimeoutExpired) as exc:
            log.warning("%s; asking again", exc)
            return []
        finished = []
        pending = running = 0
        now = time.monotonic()
        for job_id, tracked in list(self.tracked.items()):
            state = states.get(job_id)
            tracked.state = state or "GONE"
            if state in PENDING:
                pending += 1
                continue
            if state in RUNNING:
                running += 1
                continue
            outcome = self.collect(tracked, state, now)
            if outcome is None:  # ended, its result not visible yet
                running += 1
                continue
            del self.tracked[job_id]
            failed = isinstance(outcome, BaseException)
            self.tally.failed += failed
            self.tally.done += not failed
            if failed:  # forgotten: the next driver submits the unit again
                self.ledger.forget(unit_id(tracked.job))
            finished.append((tracked, outcome))
        self.tally.pending, self.tally.running = pending, running
        return finished

    def collect(self, tracked: Tracked, state: str | None, now: float) -> Any:
        """The outcome of an ended job (an exception for a failed one); None while its result may still come."""
        result = tracked.paths.result_pickle
        if result.exists():
            check_private(self.folder)
            from submitit.core.utils import pickle_load

            try:
                kind, value = pickle_load(result)
            except Exception as exc:
                return self.failure(tracked, f"its result could not be read ({type(exc).__name__}: {exc})")
            if kind != "success":  # submitit's own failure (the unit returns its exceptions)
                return self.failure(tracked, f"it raised: {_last_line(str(value))}")
            if isinstance(value, FewshotBenchError):  # a user error: the driver stops, as with the other executors
                try:
                    return type(value)(f"Slurm job {tracked.job_id}: {value}")
                except Exception:  # an error type that takes other arguments: as it is
                    return value
            if isinstance(value, BaseException):
                return self.failure(tracked, f"{type(value).__name__}: {value}")
            return value
        if tracked.gone_since is None:
            tracked.gone_since = now
        if now - tracked.gone_since < RESULT_GRACE_S and state in (None, "COMPLETED"):
            return None
        return self.failure(tracked, f"it ended {state or 'and left the queue'} without a result")

    def failure(self, tracked: Tracked, what: str) -> SlurmJobFailed:
        """A failed job as the driver reports it: job id, what happened, the tail of its stderr."""
        tail = _tail(tracked.paths.stderr, STDERR_TAIL)
        return SlurmJobFailed(f"Slurm job {tracked.job_id}: {what}" + (f"; stderr: {tail}" if tail else "")
                              + f" (log {tracked.paths.stderr})")

    def close(self) -> None:
        if self.tracked:  # left queued or running: the same command re-attaches to them
            log.warning("%d Slurm job(s) left queued or running (%s): run the same command to collect them, or "
                        "scancel them", len(self.tracked), _id_text(list(self.tracked)))
        self.tracked = {}


def poll_interval() -> float:
    """Seconds between two looks at ``squeue``: ``$FEWSHOT_BENCH_SLURM_POLL``, default 5."""
    raw = os.environ.get(POLL_ENV, "").strip() or "5"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise ConfigError(f"{POLL_ENV} must be a number of seconds from 0.1 to 3600, not {raw!r}")
    return seconds


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` non-blank lines of a job's stderr (without submitit's own log lines), joined with `` | ``."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip() and "submitit" not in line]
    return " | ".join(kept[-lines:])


def _id_text(ids: list[str]) -> str:
    return ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")


def check_with_sbatch(executor: Any, folder: Path) -> None:
    """Ask Slurm whether it would accept the jobs (``sbatch --test-only``): a partition, account, QoS or limit it
    refuses is one line now, before anything is submitted."""
    script = folder / "test-only.sh"
    write_text(script, executor._make_submission_file_text("true", "test-only"), "the Slurm test script")
    try:
        done = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--executor slurm: sbatch --test-only failed: {exc}") from None
    finally:
        script.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ConfigError(f"Slurm refuses the jobs' options: {_last_line(done.stderr)} (check the --slurm-* options)")


def make_slurm_executor(given: Mapping[str, Any] | None, settings: WorkerSettings, device: str = "cpu",
                        progress: bool = False, log_every: float | None = 30.0) -> SlurmExecutor:
    """The Slurm executor with the options ``given`` over the lab's defaults; the job folder defaults to
    ``slurm-jobs`` beside the checkpoint folder (both must be on a filesystem the nodes share)."""
    options = slurm_options(given)
    if options.folder is None and settings.checkpoint_dir:
        options = replace(options, folder=str(Path(settings.checkpoint_dir).parent / "slurm-jobs"))
    return SlurmExecutor(options, replace(settings, device=device), progress=progress, log_every=log_every)
