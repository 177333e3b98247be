"""A stored run's *protocol*: the settings two runs must share to be compared or combined.

Every command that combines runs (``table``, ``compare``, ``figure``) uses this module, so
they all agree on one rule:

* The **shared protocol** of a run is its budget and evaluation settings: meta-training
  steps, validation interval, validation episodes, patience, test episodes, queries per
  class at test time, train-on-val, the hyperparameter preset (``--hparams``) and the
  feature crop. Every run combined into one output (all rows of a table, both learners of
  a comparison, both runs of figure 5) has the same shared protocol; it has a short id
  (:attr:`Protocol.id`, 8 hex digits of a hash) and a readable description.
* A run's **overrides** (``--set KEY=VALUE`` when it was run) belong to its learner: two
  learners keep their own defaults, but the runs of one learner in one output all have the
  same overrides. Unless asked otherwise (``--set LEARNER.KEY=VALUE`` on the combining
  command), a learner's runs with its defaults are used, never runs with overrides.
* The cell, the seed and the plugin distribution are not part of the protocol; neither is
  the resolved learner config (it follows from the learner's defaults, the preset and the
  overrides). Two runs of one cell and seed whose configs differ anyway (a plugin changed
  its defaults) are *variants*: a cell uses one variant (:func:`one_per_seed`).

The **data** is not part of the protocol (a table's columns are different datasets) but is
never mixed either: :func:`one_data_per_dataset` keeps, for each dataset name, the runs of
one version of its data (one data id, the content digest of what the runs read), says so
when the store holds several, and ``--data ID`` picks another. Runs stored before data ids
(data ``unknown``) are a version of their own. How each run was *executed* (CPU instruction
set, threads, population, device, torch version) can move its last digits but not its
identity; :func:`execution_note` says when the runs combined into one output differ in it.

When the store holds several shared protocols for what was asked, :func:`choose` picks
one deterministically (the one with the most runs, then the most recent) and its
:meth:`Selection.note` says so and how to pick another (``--protocol ID``).

Runs of learners whose class sets ``transductive = True`` are marked with a dagger (the
runner records the flag in each run's ``options``; runs stored without it count as inductive).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import RunRecord

# The shared protocol's settings, in display order (keys of a stored run's ``options``).
SHARED_KEYS = ("steps", "val_every", "val_episodes", "patience", "episodes", "eval_query", "train_on_val", "hparams",
               "crop")
ID_LENGTH = 8
UNRECORDED = "-"

TRANSDUCTIVE_MARK = "†"
TRANSDUCTIVE_NOTE = f"{TRANSDUCTIVE_MARK} transductive: predictions use the other queries of the episode"


def _text(key: str, value: Any) -> str:
    if key == "hparams":
        return "default" if value is None else str(value)
    if key == "patience" and value is None:
        return "off"
    if key == "eval_query" and value is None:
        return "all"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass(frozen=True)
class Protocol:
    """The shared protocol of a run: its settings and a short id hashed from them."""

    settings: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        """8 hex digits, stable across processes and versions for the same settings."""
        blob = json.dumps(dict(self.settings), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:ID_LENGTH]

    def get(self, key: str) -> Any:
        """The value of one setting."""
        return dict(self.settings).get(key)

    @property
    def description(self) -> str:
        """``steps=200 val_every=100 ... crop=center``: the settings as the CLI names them."""
        return " ".join(f"{k}={_text(k, v)}" for k, v in self.settings)

    def label(self) -> str:
        """``1a2b3c4d (steps=200 ...)``."""
        return f"{self.id} ({self.description})"

    def differences(self, other: Protocol) -> str:
        """The settings this protocol sets otherwise than ``other`` (``steps=200 train_on_val=no``)."""
        theirs = dict(other.settings)
        return " ".join(f"{k}={_text(k, v)}" for k, v in self.settings if k not in theirs or theirs[k] != v) \
            or self.description

    def to_json(self) -> dict[str, Any]:
        """Id, settings and description as a JSON-ready dict."""
        return {"id": self.id, "description": self.description, "settings": dict(self.settings)}


def protocol_of(run: RunRecord) -> Protocol:
    """The shared protocol a stored run was made under."""
    options = dict(run.options)
    options.setdefault("episodes", run.episodes)
    options.setdefault("crop", "center")
    if isinstance(options.get("steps"), int) and isinstance(options.get("val_every"), int):
        options["val_every"] = min(options["val_every"], options["steps"])  # what training used
    # A setting a run stored by an older fewshot-bench does not record reads "-".
    settings = tuple((k, options.get(k, UNRECORDED)) for k in SHARED_KEYS)
    if options.get("stage", "run") != "run":  # search trials (scored on val) never combine with test runs
        settings += (("stage", options["stage"]),)
    return Protocol(settings)


def overrides_of(run: RunRecord) -> dict[str, str]:
    """The ``--set`` overrides the run was made with (empty: the learner's defaults)."""
    return {str(k): str(v) for k, v in (run.options.get("overrides") or {}).items()}


def overrides_text(overrides: dict[str, str]) -> str:
    """``a=1 b=x,y`` (empty for none)."""
    return " ".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def set_options(learner: str, overrides: dict[str, str]) -> str:
    """The ``--set LEARNER.KEY=VALUE`` options that select runs with these overrides."""
    return " ".join(f"--set {learner}.{k}={v}" for k, v in sorted(overrides.items()))


def parse_learner_overrides(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["maml.hidden_sizes=128,128"]`` -> ``{"maml": {"hidden_sizes": "128,128"}}``."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for item in items:
        name, eq, value = item.partition("=")
        learner, dot, key = name.strip().rpartition(".")
        if not eq or not dot or not learner or not key:
            raise ConfigError("--set expects LEARNER.KEY=VALUE (the override a learner's runs were made with), "
                              f"got {item!r}")
        out[learner][key] = value.strip()
    return dict(out)


def config_digest(run: RunRecord) -> str:
    """A hash of the run's resolved learner config."""
    return hashlib.sha256(json.dumps(run.config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def is_transductive(run: RunRecord) -> bool:
    """Whether the run's learner is transductive (False for runs stored without the flag)."""
    return bool(run.options.get("transductive", False))


def mark(name: str, transductive: bool) -> str:
    """``name`` with the transductive dagger when it applies."""
    return f"{name}{TRANSDUCTIVE_MARK}" if transductive else name


def seeds_text(seeds: Iterable[int]) -> str:
    """``0-4``, ``0, 2, 5`` or ``none``: a compact list of seeds."""
    values = sorted(set(seeds))
    if not values:
        return "none"
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(map(str, values))


def one_per_seed(runs: list[RunRecord]) -> tuple[list[RunRecord], int]:
    """One run per seed from the runs of one learner in one cell under one protocol and overrides.

    A run key stored twice counts once (the latest). Runs whose configs differ are never
    mixed: the config with the most seeds is used (the most recent on a tie). Returns the
    runs by seed and how many configs there were.
    """
    by_config: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    for run in sorted(runs, key=lambda r: r.created_at):  # stable: a later run of the same seed wins
        by_config[config_digest(run)][run.seed] = run
    if not by_config:
        return [], 0
    best = max(by_config.values(), key=lambda g: (len(g), max(r.created_at for r in g.values())))
    return sorted(best.values(), key=lambda r: r.seed), len(by_config)


@dataclass
class Selection:
    """The protocol chosen for an output, its runs, and the protocols that were not chosen."""

    protocol: Protocol | None
    runs: list[RunRecord] = field(default_factory=list)
    others: list[tuple[Protocol, int]] = field(default_factory=list)
    reason: str = "the only one"
    unit: str = "runs"
    what: str = ""  # what the runs were asked for, e.g. " for table 2"

    def note(self) -> str:
        """The protocol used and, when there were others, why this one, each other on a line of its own (what
        it sets differently) and how to pick another."""
        if self.protocol is None:
            return "protocol: none (no runs)"
        line = f"protocol {self.protocol.label()}"
        if self.others:
            line += (
                f", chosen as {self.reason}; the store holds several protocols{self.what or ' for this'}, "
                "the others (pick one with --protocol ID):"
            )
            return "\n".join([line, *(f"  - {p.id} ({p.differences(self.protocol)}): {count(n, self.unit)}"
                                       for p, n in self.others)])
        if self.reason != "the only one":
            line += f", chosen by {self.reason}"
        return line

    def to_json(self) -> dict[str, Any]:
        """The chosen protocol and the others, JSON-ready."""
        return {
            "protocol": self.protocol.to_json() if self.protocol else None,
            "chosen_by": self.reason,
            "other_protocols": [p.to_json() | {self.unit.replace(" ", "_"): n} for p, n in self.others],
        }


def count(n: int, unit: str) -> str:
    """``1 run``, ``3 runs``, ``1 paired seed``."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def listing(groups: dict[Protocol, list[RunRecord]]) -> str:
    """``1a2b3c4d (steps=...): 4 runs; ...`` for an error message."""
    return "; ".join(f"{p.label()}: {count(len(rs), 'runs')}" for p, rs in groups.items()) or "none"


def group_by_protocol(runs: Iterable[RunRecord]) -> dict[Protocol, list[RunRecord]]:
    """Runs grouped by shared protocol (insertion order: the first run of each)."""
    groups: dict[Protocol, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(protocol_of(run), []).append(run)
    return groups


def choose(
    runs: Iterable[RunRecord],
    protocol: str | None = None,
    steps: int | None = None,
    episodes: int | None = None,
    score: Callable[[list[RunRecord]], int] = len,
    unit: str = "runs",
    what: str = "",
) -> Selection:
    """Pick one shared protocol among ``runs``.

    ``protocol`` (an id or a unique prefix of one), ``steps`` and ``episodes`` narrow the
    choice and raise a one-line :class:`ConfigError` listing the protocols there are when
    nothing is left. Among several, the one with the highest ``score`` (default: most runs)
    wins, then the one with the most recent run, then the smallest id. ``what`` names what
    was asked for in errors (e.g. ``" for table 2"``).
    """
    groups = group_by_protocol(runs)
    if not groups:
        return Selection(None, unit=unit, what=what)
    asked = []
    kept = dict(groups)
    if steps is not None:
        kept = {p: rs for p, rs in kept.items() if p.get("steps") == steps}
        asked.append(f"--steps {steps}")
    if episodes is not None:
        kept = {p: rs for p, rs in kept.items() if p.get("episodes") == episodes}
        asked.append(f"--episodes {episodes}")
    if protocol is not None:
        wanted = protocol.strip().lower()
        kept = {p: rs for p, rs in kept.items() if p.id.startswith(wanted)}
        asked.append(f"--protocol {protocol}")
        if len(kept) > 1:
            raise ConfigError(f"--protocol {protocol} matches several protocols{what}: {listing(kept)}; "
                              "give more of the id")
    if not kept:
        raise ConfigError(f"no runs{what} with {' '.join(asked)}; the store holds: {listing(groups)}")
    ranked = sorted(kept.items(), key=lambda item: item[0].id)
    ranked.sort(key=lambda item: max(r.created_at for r in item[1]), reverse=True)  # stable: ties keep the id order
    ranked.sort(key=lambda item: score(item[1]), reverse=True)
    (best, best_runs), rest = ranked[0], ranked[1:]
    narrowed = f" among those with {' '.join(asked)}" if asked else ""
    if rest:
        reason = f"the one with the most {unit}{narrowed}"
    elif asked:
        reason = " ".join(asked)
    else:
        reason = "the only one"
    # Protocols that would give nothing (say, one learner's runs only) are no alternative.
    others = [(p, n) for p, n in ((p, score(rs)) for p, rs in rest) if n > 0]
    return Selection(best, list(best_runs), others, reason if others or asked else "the only one", unit, what)


# --- data versions and execution ---------------------------------------------------------

REKEY_HINT = ("runs stored before data ids are never matched to new runs; if their data is unchanged, "
              "`fewshot-bench rekey --dataset NAME [--data-dir DIR]` gives them its id")


def data_id_of(run: RunRecord) -> str | None:
    """The content id of the data a run read (None: stored before data ids)."""
    value = run.options.get("data_id")
    return value if isinstance(value, str) and value else None


def data_text(data_id: str | None) -> str:
    """A data id as listings show it: 8 hex digits, or ``unknown``."""
    return data_id[:ID_LENGTH] if data_id else "unknown"


@dataclass
class DataChoice:
    """The runs of one data version per dataset name, and a note for each dataset that had several."""

    runs: list[RunRecord]
    notes: list[str] = field(default_factory=list)


def one_data_per_dataset(runs: Iterable[RunRecord], wanted: str | None = None) -> DataChoice:
    """For each dataset name, the runs of one data version: ``wanted`` (an id prefix) where it matches, else the
    version with the most runs (then the most recent); rows of different data are never combined."""
    # A search's trials identify only the splits they read (train and val): they are versions among themselves
    # (and never combine with test runs anyway: their stage is part of the protocol).
    by_dataset: dict[tuple[str, str], dict[str | None, list[RunRecord]]] = defaultdict(dict)
    for run in runs:
        by_dataset[run.dataset.lower(), run.options.get("stage", "run")].setdefault(data_id_of(run), []).append(run)
    prefix = (wanted or "").strip().lower()
    if prefix and not any(d and d.startswith(prefix) for groups in by_dataset.values() for d in groups):
        versions = "; ".join(f"{name}: {', '.join(data_text(d) for d in groups)}"
                             for (name, _), groups in by_dataset.items())
        raise ConfigError(f"no runs with --data {wanted}; the data ids there are: {versions or 'none'}")
    kept, notes = [], []
    for groups in by_dataset.values():
        matching = {d: rs for d, rs in groups.items() if prefix and d and d.startswith(prefix)}
        candidates = matching or groups
        ranked = sorted(candidates.items(), key=lambda item: (len(item[1]), max(r.created_at for r in item[1])),
                        reverse=True)
        (chosen, chosen_runs), others = ranked[0], [item for item in groups.items() if item[0] != ranked[0][0]]
        kept.extend(chosen_runs)
        if others:
            name = chosen_runs[0].dataset + ("" if chosen_runs[0].options.get("stage", "run") == "run" else " (trials)")
            why = f"--data {wanted}" if matching else "the one with the most runs"
            listed = "; ".join(f"{data_text(d)}: {count(len(rs), 'runs')}" for d, rs in others)
            note = (f"data: {name}'s runs read {len(groups)} versions of its data; shown: {data_text(chosen)} "
                    f"({count(len(chosen_runs), 'runs')}, {why}); the others: {listed}; pick one with --data ID")
            if None in groups:
                note += f"; {REKEY_HINT}"
            notes.append(note)
    return DataChoice(kept, notes)


def execution_of(run: RunRecord) -> dict[str, Any]:
    """How a run was executed, as far as its record says (what can move its last digits, not its identity)."""
    recorded = run.hardware.get("execution")
    if isinstance(recorded, dict):
        return recorded
    return {"isa": None, "train_threads": run.hardware.get("torch_threads"), "eval_threads": None,
            "population": None, "device": run.hardware.get("device"), "torch": run.versions.get("torch")}


def execution_text(execution: dict[str, Any]) -> str:
    """``AVX2 threads 1/2 alone cpu torch 2.14.1``: an execution in a few words (``?`` where unrecorded)."""
    def shown(value: Any) -> str:
        return "?" if value is None else str(value)

    population = execution.get("population")
    size = population.get("size", 1) if isinstance(population, dict) else None
    together = "?" if size is None else "alone" if size <= 1 else f"population {size}"
    return (f"{shown(execution.get('isa'))} threads {shown(execution.get('train_threads'))}/"
            f"{shown(execution.get('eval_threads'))} {together} {shown(execution.get('device'))} "
            f"torch {shown(execution.get('torch'))}")


def execution_note(runs: Iterable[RunRecord]) -> str | None:
    """One line when ``runs`` (combined into one output) were executed differently, else None."""
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        counts[execution_text(execution_of(run))] += 1
    if len(counts) < 2:
        return None
    listed = "; ".join(f"{text}: {count(n, 'runs')}" for text, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"execution differs between these runs (instruction set, threads train/eval, population, device, torch): "
            f"{listed}; their last digits may differ by rounding (docs/architecture.md, 'Same run, same number')")
