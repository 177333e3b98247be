"""A run's protocol, :class:`RunSpec`: the one dataclass that ``run``, ``sweep``, ``tune`` and the trainer share.

A spec is everything that identifies a run (with the learner's resolved config, its run
key); a :class:`Job` is a spec with the key the driver expects, as executors ship it to
workers. Torch-free: commands that only read the store import it without torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import RunRecord

TUNED = "tuned"  # --hparams tuned: the best trial of a hyperparameter search (fewshot_bench.search.tune)
TUNE_STAGE = "tune"  # the stage of a search trial: scored on the validation split, never on test

# Budgets: "quick" finishes a Meta-SGD run on the synthetic default in about a minute on
# two CPU cores; "paper" is the LEO paper's protocol (100k steps, 50k test episodes).
BUDGETS = {
    "quick": {"steps": 1_000, "episodes": 2_000, "val_every": 250, "val_episodes": 200},
    "paper": {"steps": 100_000, "episodes": 50_000, "val_every": 1_000, "val_episodes": 2_000},
}


def budget_fields(
    budget: str = "quick",
    steps: int | None = None,
    episodes: int | None = None,
    val_every: int | None = None,
    val_episodes: int | None = None,
    patience: int | None = 20,
    eval_query: int | None = None,
) -> dict[str, Any]:
    """RunSpec fields of a named budget with the values given over it, checked; patience 0 or None: never stop early."""
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; use {' or '.join(sorted(BUDGETS))}")
    given = {"steps": steps, "episodes": episodes, "val_every": val_every, "val_episodes": val_episodes}
    fields = {key: BUDGETS[budget][key] if value is None else value for key, value in given.items()}
    for name, value in fields.items():
        minimum = 0 if name == "steps" else 1
        if value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {minimum}")
    return {**fields, "patience": patience or None, "eval_query": eval_query}


@dataclass
class RunSpec:
    """Everything that identifies a run; equal specs give equal results.

    ``run`` builds one, ``sweep`` one per cell of its grid, ``tune`` one per trial, and the
    trainer reads how long and how to meta-train from it.
    """

    learner: str
    dataset: str = "synthetic"
    way: int = 5
    shot: int = 1
    seed: int = 0
    steps: int = BUDGETS["quick"]["steps"]
    episodes: int = BUDGETS["quick"]["episodes"]
    val_every: int = BUDGETS["quick"]["val_every"]
    val_episodes: int = BUDGETS["quick"]["val_episodes"]
    patience: int | None = 20
    eval_query: int | None = None
    train_on_val: bool = False
    hparams: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    crop: str = "center"
    # TUNE_STAGE: a search trial (paper stage 2), scored on the validation split; the test split is never read.
    stage: str = "run"
    # With hparams="tuned": the tuned preset's values and where they came from (fewshot_bench.search.tune.with_tuned).
    tuned: dict[str, Any] | None = None

    def key(self, config: dict[str, Any], data_id: str) -> str:
        """The run's identity: a stable hash of the spec, the resolved learner config and the data it reads.

        ``data_id`` is the content digest of the splits the run reads (fewshot_bench.data.identity),
        so the same data in another folder gives the same key and other data never does.
        """
        return with_data(self.key_without_data(config), data_id)

    def key_without_data(self, config: dict[str, Any]) -> str:
        """A hash of the spec and the resolved config alone: the whole run key of runs stored before data ids."""
        # The resolved config holds the tuned values; ordinary runs keep the keys they had before stages.
        ident = {k: v for k, v in asdict(self).items() if k not in ("overrides", "stage", "tuned")}
        if self.stage != "run":
            ident["stage"] = self.stage
        ident["config"] = config
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]

    @property
    def label(self) -> str:
        """A short human name of the run, e.g. ``leo synthetic 5-shot seed 3``."""
        return f"{self.learner} {self.dataset} {self.shot}-shot seed {self.seed}"


def with_data(key_without_data: str, data_id: str) -> str:
    """A run key from the key of its spec and config and its data id (how `rekey` adopts a run stored without one)."""
    return hashlib.sha256(f"{key_without_data}:data={data_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Job:
    """A run to compute and the key it will be stored under (what executors hand to workers)."""

    spec: RunSpec
    key: str

    @property
    def label(self) -> str:
        """A short human name of the job (its spec's)."""
        return self.spec.label

    def validation_hook(self) -> Callable[[Any], bool] | None:
        """The trainer's callback after each validation of this job's run (``TrainOptions.on_validation``), or None.

        Called in the worker; a search's trial returns its pruner (:class:`fewshot_bench.search.tune.TrialJob`).
        """
        return None


@dataclass(frozen=True)
class PopulationJob:
    """Runs of one cell (its seeds) to meta-train together as one population, shipped to a worker like a job."""

    members: tuple[Job, ...]

    @property
    def label(self) -> str:
        """A short human name: the cell and its seeds, e.g. ``leo synthetic 5-shot seeds 0-4``."""
        seeds = [job.spec.seed for job in self.members]
        span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))
        first = self.members[0].spec
        return f"{first.learner} {first.dataset} {first.shot}-shot seeds {span}"


def cell_of(spec: RunSpec) -> str:
    """What identifies ``spec``'s cell: every field but the seed (runs of one cell can train as one population)."""
    return json.dumps({k: v for k, v in asdict(spec).items() if k != "seed"}, sort_keys=True, default=str)


def is_trial(run: RunRecord) -> bool:
    """Whether a stored run is a search trial (scored on validation, not test)."""
    return run.options.get("stage") == TUNE_STAGE


def hparams_source(run: RunRecord) -> str:
    """Where a stored run's hyperparameters came from, in a few words (for `results` and `table`)."""
    o = run.options
    if is_trial(run):
        tune = o.get("tune", {})
        return f"trial {tune.get('trial', '?')} of {tune.get('study', '?')}"
    preset = o.get("hparams")
    if preset == TUNED:
        t = o.get("tuned") or {}
        if "study" not in t:
            return "tuned (nothing to tune: defaults)"
        b = t.get("budget", {})
        last = ", by last validation" if t.get("objective") == "last" else ""
        trials = f"best of {t['trials']} trials (trial {t['trial']}{last})"
        return f"tuned: {t['study']}, {trials}, {b.get('steps', '?')} steps"
    return preset or "default"
