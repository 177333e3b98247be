"""A run's settings and protocol: :class:`RunSettings`, the options ``run``, ``sweep`` and ``tune`` share, and
:class:`RunSpec`, the one dataclass that they and the trainer share.

Settings are what a user gives (a named budget, values left to the dataset); a spec is
everything that identifies a run (with the learner's resolved config, its run key), made from
settings by :meth:`RunSettings.spec`; a :class:`Job` is a spec with the key the driver
expects, as executors ship it to workers. Torch-free: commands that only read the store
import it without torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from fewshot_bench.config import parse_assignments
from fewshot_bench.errors import ConfigError, ConfigTypeError, ConfigValueError
from fewshot_bench.records.store import RunRecord

TUNED = "tuned"  # --hparams tuned: the best trial of a hyperparameter search (fewshot_bench.search.tune)
TUNE_STAGE = "tune"  # the stage of a search trial: scored on the validation split, never on test

# Budgets: "quick" finishes a Meta-SGD run on the synthetic default in about a minute on
# two CPU cores; "paper" is the LEO paper's protocol (100k steps, 50k test episodes).
BUDGETS = {
    "quick": {"steps": 1_000, "episodes": 2_000, "val_every": 250, "val_episodes": 200},
    "paper": {"steps": 100_000, "episodes": 50_000, "val_every": 1_000, "val_episodes": 2_000},
}


# Bounds on what a user gives, so that a slip of the keyboard cannot take all memory or run for days unasked.
# A count (steps, episodes, shot, a --set value, ...) above COUNT_LIMIT, or more than SEED_LIMIT seeds in one
# command, asks for --allow-large (allow_large=True); nothing ever passes the LARGE_ limits (int32 sizes and
# indices, a list of seeds held in memory).
COUNT_LIMIT = 10**6
LARGE_COUNT_LIMIT = 2**31 - 1
SEED_LIMIT = 10_000
LARGE_SEED_LIMIT = 1_000_000
MAX_SEED = 2**32 - 1  # seeds are hashed as unsigned 64-bit words with room for the step
ALLOW_LARGE = "--allow-large (allow_large=True)"


def whole_number(name: str, value: Any) -> int:
    """``value`` as an int: an int (numpy's too) or a whole float; a one-line TypeError or ValueError naming ``name``.

    A bool, a string or a fraction is refused rather than converted: ``True`` would be stored as
    seed 1 under another run key, ``"30"`` and ``7.5`` are not what the command line accepts.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigTypeError(f"{name} must be a whole number, not {value!r} ({type(value).__name__})")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not float(value).is_integer():
        raise ConfigValueError(f"{name} must be a whole number, not {value!r}")
    return int(value)


def check_count(shown: str, value: int, allow_large: bool, limit: int = COUNT_LIMIT,
                hard: int = LARGE_COUNT_LIMIT) -> None:
    """Refuse ``value`` above ``limit`` unless ``allow_large``, and above ``hard`` always: one line starting with
    ``shown`` (what the user gave, e.g. ``--steps 2,000,000``)."""
    if value > hard:
        raise ConfigValueError(f"{shown}: at most {hard:,}, even with --allow-large")
    if value > limit and not allow_large:
        raise ConfigValueError(f"{shown}: more than {limit:,}; pass {ALLOW_LARGE} if you mean it")


def seed_count(count: int, allow_large: bool) -> None:
    """Refuse more seeds than one command may hold (see :data:`SEED_LIMIT`) before any list of them is made."""
    check_count(f"{count:,} seeds in one command", count, allow_large, SEED_LIMIT, LARGE_SEED_LIMIT)


def seed_values(seeds: Iterable[Any] | str, allow_large: bool = False) -> list[int]:
    """``seeds`` (an iterable of whole numbers, a range, or ``"A-B"``/``"A,B,..."`` as ``--seeds`` takes them) as a
    list of distinct seeds in 0..MAX_SEED; bounded before it is made, so a huge range allocates nothing."""
    text = seeds if isinstance(seeds, str) else None
    if text is not None:
        seeds = parse_seeds(text)
    if isinstance(seeds, range) or hasattr(seeds, "__len__"):
        seed_count(len(seeds), allow_large)
        values = [whole_number("seeds", s) for s in seeds]
    elif isinstance(seeds, Iterable):
        values = []
        for s in seeds:  # a generator: counted as it is read
            values.append(whole_number("seeds", s))
            seed_count(len(values), allow_large)
    else:
        raise ConfigTypeError(f"seeds must be an iterable of seeds or a range like '0-4', not {seeds!r}")
    shown = repr(text) if text is not None else _shown(values)
    if not values or len(set(values)) != len(values):
        raise ConfigValueError(f"seeds {shown}: give one or more distinct seeds, e.g. 0-4")
    if not all(0 <= s <= MAX_SEED for s in values):
        raise ConfigValueError(f"seeds {shown}: seeds run from 0 to {MAX_SEED:,}")
    return values


def _shown(values: list[int]) -> str:
    return str(values) if len(values) <= 10 else f"[{values[0]}, {values[1]}, ..., {values[-1]}] ({len(values):,})"


def parse_seeds(text: str) -> range | list[int]:
    """``"A-B"`` (inclusive, as a range: nothing is materialised) or ``"A,B,..."``; a ValueError if neither."""
    try:
        if "-" in text.strip().strip("-"):
            first, last = (int(part) for part in text.split("-", 1))
            return range(first, last + 1)
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigValueError(f"seeds {text!r} is not a seed range like 0-4 or a list like 0,1,2") from None


def budget_help() -> str:
    """``--budget``'s help, from :data:`BUDGETS`."""
    return "named budget: " + "; ".join(
        f"{name}: {b['steps']:,} steps, {b['episodes']:,} test episodes, validation every {b['val_every']:,} "
        f"on {b['val_episodes']:,} episodes" for name, b in BUDGETS.items()
    )


def setting(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None, flag: str | None = None,
            metavar: str | None = None, parse: Callable[[str], Any] | None = None,
            choices: tuple[str, ...] | None = None, gather: Callable[[list[str]], Any] | None = None) -> Any:
    """A :class:`RunSettings` field and its command-line option, which the commands generate from it.

    ``flag`` defaults to ``--field-name``; ``parse`` turns the option's text into the value (argparse's
    ``type``); ``gather`` makes the option repeatable and turns the texts given into the value. A field
    without ``help`` has no option.
    """
    meta = {"help": help, "flag": flag, "metavar": metavar, "parse": parse, "choices": choices, "gather": gather}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSettings:
    """What a run is made under besides its learner and seed, as a user gives it.

    The one definition of these options: ``run``, ``sweep`` and ``tune`` generate their
    command-line options from the fields (:func:`fewshot_bench.commands.common.add_settings_options`)
    and the Python API takes the fields as keywords. None is a default resolved later: the
    dataset's way and shot (:func:`fewshot_bench.protocol.runner.episode_shape`), the budget's
    steps and episodes (:meth:`budget_fields`); :meth:`spec` makes a run's :class:`RunSpec`.
    """

    dataset: str = setting("synthetic", "dataset name (see `fewshot-bench datasets`)", metavar="NAME")
    way: int | None = setting(None, "classes per episode N (default 5; 1 for regression)", parse=int, metavar="N")
    shot: int | None = setting(None, "support examples per class K (default 1, or the dataset's own, e.g. 5 for "
                                     "sines-lines)", parse=int, metavar="K")
    budget: str = setting("quick", budget_help(), choices=tuple(sorted(BUDGETS)))
    steps: int | None = setting(None, "meta-training steps (overrides --budget)", parse=int, metavar="N")
    episodes: int | None = setting(None, "test episodes per run (overrides --budget)", parse=int, metavar="N")
    val_every: int | None = setting(None, "validate every N steps (overrides --budget)", parse=int, metavar="N")
    val_episodes: int | None = setting(None, "validation episodes (overrides --budget)", parse=int, metavar="N")
    patience: int | None = setting(20, "validations without improvement before stopping (0: never stop)",
                                   parse=int, metavar="N")
    eval_query: int | None = setting(None, "queries per class at test time (default: all remaining examples)",
                                     parse=int, metavar="N")
    train_on_val: bool = setting(False, "meta-train on train + val classes (paper stage 3); early-stop on val")
    hparams: str | None = setting(None, "hyperparameter preset of the learner, e.g. paper or reference (LEO), "
                                        "or tuned[:STUDY] (the best trial of `fewshot-bench tune`)", metavar="PRESET")
    overrides: Mapping[str, Any] = setting(help="set a field of the learner's Config (repeatable)", factory=dict,
                                           flag="--set", metavar="KEY=VALUE", gather=parse_assignments)
    crop: str = setting("center", "feature crop, of those the dataset offers (see `fewshot-bench datasets`; LEO's "
                                   "miniImageNet has center and multiview)", metavar="CROP")
    allow_large: bool = setting(False, f"allow counts above {COUNT_LIMIT:,} (steps, episodes, shot, --set values, "
                                       f"...) and more than {SEED_LIMIT:,} seeds in one command")
    # TUNE_STAGE: a search trial, scored on the validation split (set by `tune`, not an option).
    stage: str = "run"

    def __post_init__(self) -> None:
        """Each field checked as its option checks it, for Python callers too (one line naming the field)."""
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int | None" and value is not None:
                check_count(f"{_flag(f)} {value:,}", value, self.allow_large)
        for key, value in self.overrides.items():
            for number in _whole_numbers(value):
                check_count(f"--set {key}={number}", number, self.allow_large)

    def budget_fields(self) -> dict[str, Any]:
        """The RunSpec fields of the budget: the named budget's values with the ones given over it, checked.

        A run may take 0 steps; a search trial (stage ``tune``) trains at least one, validates
        within them, and is scored on its validation episodes. Patience 0 or None: never stop early.
        """
        if self.budget not in BUDGETS:
            raise ConfigError(f"unknown budget {self.budget!r}; use {' or '.join(sorted(BUDGETS))}")
        trial = self.stage == TUNE_STAGE
        given = {"steps": self.steps, "episodes": self.episodes, "val_every": self.val_every,
                 "val_episodes": self.val_episodes}
        fields = {key: BUDGETS[self.budget][key] if value is None else value for key, value in given.items()}
        for name, value in fields.items():
            minimum = 0 if name == "steps" and not trial else 1
            if value < minimum and not (trial and name == "episodes"):  # a trial's episodes are its validation's
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {minimum}")
        if trial:
            fields |= {"episodes": fields["val_episodes"], "val_every": min(fields["val_every"], fields["steps"])}
        return {**fields, "patience": self.patience or None, "eval_query": self.eval_query}

    def spec(self, learner: str, seed: int = 0) -> RunSpec:
        """The :class:`RunSpec` of ``learner`` and ``seed`` under these settings (way and shot resolved)."""
        if self.way is None or self.shot is None:
            raise ValueError("resolve way and shot (runner.episode_shape) before making a spec")
        return RunSpec(
            learner=learner, dataset=self.dataset, way=self.way, shot=self.shot, seed=seed, **self.budget_fields(),
            train_on_val=self.train_on_val, hparams=self.hparams, overrides=dict(self.overrides), crop=self.crop,
            stage=self.stage,
        )


def _flag(f: dataclasses.Field) -> str:
    """The option of a settings field (``--set`` for ``overrides``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _checked(f: dataclasses.Field, value: Any) -> Any:
    """``value`` of settings field ``f``, of the field's type (a whole number as an int) and among its choices."""
    kind, choices = f.type, f.metadata.get("choices")
    if kind == "int | None":
        return None if value is None else whole_number(f.name, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigTypeError(f"{f.name} must be True or False, not {value!r}")
        return value
    if kind.startswith("Mapping"):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigTypeError(f"{f.name} must map Config keys to values, like {{'inner_steps': 5}}, not {value!r}")
        return value
    if not isinstance(value, str) and not (value is None and kind == "str | None"):
        raise ConfigTypeError(f"{f.name} must be a {'name' if kind == 'str' else 'name or None'}, not {value!r}")
    if choices and value not in choices:
        raise ConfigValueError(f"{_flag(f)} {value!r}: choose one of {', '.join(choices)}")
    return value


def _whole_numbers(value: Any) -> Iterator[int]:
    """The whole numbers a ``--set`` value holds (``5``, ``"5"``, ``"128,128"``, ``(128, 128)``): counts to bound."""
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _whole_numbers(item)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        yield int(value)
    elif isinstance(value, str):
        for part in value.split(","):
            try:
                yield int(part)
            except ValueError:
                continue


def settings_of(settings: RunSettings | None = None, **fields: Any) -> RunSettings:
    """``settings`` (default: the defaults) with ``fields`` given over it: how the Python API takes them as keywords."""
    known = {f.name for f in dataclasses.fields(RunSettings)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}; the settings are {', '.join(sorted(known))}")
    return replace(settings or RunSettings(), **fields)


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
