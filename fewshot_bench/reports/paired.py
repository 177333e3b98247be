"""Paired comparison of two learners on the same test episodes (beyond the paper).

Test episodes are a pure function of (dataset, N, K, Q, seed, index), so two runs with
equal (dataset, way, shot, seed) and queries per class saw exactly the same episodes.
Per-episode differences then cancel the episode-to-episode variance that dominates
each run's own confidence interval. Only runs made under one shared protocol (same
budget, test episodes and queries, validation, preset, train-on-val and crop; see
:mod:`fewshot_bench.reports.combining`) are paired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fewshot_bench.errors import ConfigError, StoreError
from fewshot_bench.records import stats
from fewshot_bench.records.store import ResultStore, RunRecord
from fewshot_bench.reports.combining import (
    Selection,
    choose,
    execution_note,
    group_by_protocol,
    is_transductive,
    one_data_per_dataset,
    one_per_seed,
    overrides_of,
    overrides_text,
    set_options,
)


@dataclass
class SeedPair:
    """One seed: the two runs compared and their mean per-episode difference (A - B)."""

    seed: int
    run_a: str
    run_b: str
    episodes: int
    diff: float


@dataclass
class Comparison:
    """A - B in one setting, pooled over seeds: mean per-episode difference and its 95% CI."""

    dataset: str
    way: int
    shot: int
    crop: str
    mean_a: float
    mean_b: float
    diff: float
    ci95: float
    episodes: int
    seeds: list[SeedPair] = field(default_factory=list)
    protocol: str = ""  # id of the shared protocol of every run compared

    @property
    def agree(self) -> int:
        """How many seeds' own differences have the sign of the pooled difference."""
        return sum(1 for p in self.seeds if np.sign(p.diff) == np.sign(self.diff) and p.diff != 0)


@dataclass
class PairedReport:
    """The comparisons of one ``compare``, the protocol they were made under and the runs' learners."""

    a: str
    b: str
    selection: Selection
    comparisons: list[Comparison]
    overrides_a: dict[str, str] = field(default_factory=dict)
    overrides_b: dict[str, str] = field(default_factory=dict)
    transductive_a: bool = False
    transductive_b: bool = False
    notes: list[str] = field(default_factory=list)  # data versions left out, execution that differs


def _with_overrides(runs: list[RunRecord], learner: str, wanted: dict[str, str]) -> list[RunRecord]:
    """The runs made with exactly ``wanted`` overrides, or an error naming the override sets there are."""
    kept = [r for r in runs if overrides_of(r) == wanted]
    if runs and not kept:
        sets = sorted({overrides_text(overrides_of(r)): overrides_of(r) for r in runs}.items())
        what = f"with --set {overrides_text(wanted)}" if wanted else "with the learner's defaults (no --set)"
        hints = " or ".join(f"`{set_options(learner, o)}`" if o else "no --set" for _, o in sets)
        raise StoreError(f"no runs of {learner!r} {what} match; its runs were made with other overrides: use {hints}")
    return kept


def _cells(runs: list[RunRecord]) -> dict[tuple, list[RunRecord]]:
    out: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        out.setdefault((r.dataset, r.way, r.shot, r.seed), []).append(r)
    return out


def compare(
    store: ResultStore,
    a: str,
    b: str,
    datasets: set[str] | None = None,
    shot: int | None = None,
    way: int | None = None,
    steps: int | None = None,
    protocol: str | None = None,
    overrides: dict[str, dict[str, str]] | None = None,
    data: str | None = None,
) -> PairedReport:
    """Pair runs of learners ``a`` and ``b`` by (dataset, way, shot, seed) under one protocol and compare per setting.

    ``datasets`` (lower-cased names) restricts the datasets. Only runs of one shared
    protocol are paired (see :mod:`fewshot_bench.reports.combining`): ``protocol`` (an id prefix)
    or ``steps`` picks it, else the protocol with the most paired seeds. Each learner's
    runs are those with its defaults unless ``overrides`` ({learner: {key: value}}) names
    the ``--set`` overrides to use. A cell's seed is used once (the latest run of one config).
    Runs of one dataset that read different data are never paired: one version per dataset is
    used (``data``, an id prefix, picks it; :func:`protocols.one_data_per_dataset`).
    """
    overrides = overrides or {}
    outside = sorted(set(overrides) - {a, b})
    if outside:
        raise ConfigError(f"--set names learner(s) not compared: {', '.join(outside)}; "
                          f"use {a}.KEY=VALUE or {b}.KEY=VALUE")
    runs_a = _complete_runs(store, a, overrides.get(a, {}), datasets, shot, way)
    runs_b = _complete_runs(store, b, overrides.get(b, {}), datasets, shot, way)
    versions = one_data_per_dataset(runs_a + runs_b, data)  # never pair runs that read different data
    runs_a = [r for r in versions.runs if r.learner == a]
    runs_b = [r for r in versions.runs if r.learner == b]
    selection = choose(runs_a + runs_b, protocol, steps, score=lambda runs: _paired_seeds(runs, a, b),
                       unit="paired seeds", what=f" for {a!r} and {b!r}")
    if selection.protocol is None or _paired_seeds(selection.runs, a, b) == 0:
        raise _nothing_paired(store, a, b, runs_a, runs_b)
    settings = _pairs_by_setting(selection.runs, a, b)
    crop = selection.protocol.get("crop")
    comparisons = [_comparison(store, setting, pairs, crop, selection.protocol.id)
                   for setting, pairs in settings.items()]
    paired_runs = [run for pairs in settings.values() for pair in pairs for run in pair]
    notes = versions.notes + [note for note in [execution_note(paired_runs)] if note]
    return PairedReport(
        a, b, selection, comparisons, overrides.get(a, {}), overrides.get(b, {}),
        transductive_a=any(is_transductive(r) for r in runs_a), transductive_b=any(is_transductive(r) for r in runs_b),
        notes=notes,
    )


def _complete_runs(store: ResultStore, learner: str, wanted: dict[str, str], datasets: set[str] | None,
                   shot: int | None, way: int | None) -> list[RunRecord]:
    """``learner``'s complete runs of the asked datasets, shot and way, made with exactly ``wanted`` overrides."""
    kept = [
        r for r in store.runs(learner=learner)
        if r.status == "complete" and (datasets is None or r.dataset.lower() in datasets)
        and (shot is None or r.shot == shot) and (way is None or r.way == way)
    ]
    return _with_overrides(kept, learner, wanted)


def _paired_seeds(runs: list[RunRecord], a: str, b: str) -> int:
    """How many (dataset, way, shot, seed) both ``a`` and ``b`` ran among ``runs``."""
    by_learner: dict[str, set[tuple]] = {a: set(), b: set()}
    for r in runs:
        by_learner[r.learner].add((r.dataset, r.way, r.shot, r.seed))
    return len(by_learner[a] & by_learner[b])


def _nothing_paired(store: ResultStore, a: str, b: str, runs_a: list[RunRecord],
                    runs_b: list[RunRecord]) -> StoreError:
    """The error when no protocol holds a seed both learners ran: the protocols each learner's runs have."""
    def described(runs: list[RunRecord]) -> str:
        return ", ".join(p.id + f" ({p.description})" for p in group_by_protocol(runs)) or "none"

    return StoreError(
        f"no runs of {a!r} and {b!r} share a (dataset, way, shot, seed) under the same protocol in {store.path} "
        f"({a}: {described(runs_a)}; {b}: {described(runs_b)}); "
        f"run both with the same seeds and options, e.g. `fewshot-bench sweep --learners {a},{b}`"
    )


def _pairs_by_setting(runs: list[RunRecord], a: str, b: str) -> dict[tuple, list[tuple[RunRecord, RunRecord]]]:
    """The (run of ``a``, run of ``b``) of each seed both ran, by (dataset, way, shot); one run per seed each."""
    cells_a = _cells([r for r in runs if r.learner == a])
    cells_b = _cells([r for r in runs if r.learner == b])
    settings: dict[tuple, list[tuple[RunRecord, RunRecord]]] = {}
    for cell in sorted(set(cells_a) & set(cells_b), key=str):
        (ra,), _ = one_per_seed(cells_a[cell])
        (rb,), _ = one_per_seed(cells_b[cell])
        settings.setdefault(cell[:3], []).append((ra, rb))
    return settings


def _comparison(store: ResultStore, setting: tuple, pairs: list[tuple[RunRecord, RunRecord]], crop: str,
                protocol: str) -> Comparison:
    """A - B in one (dataset, way, shot) setting: per-episode differences of each seed's pair, pooled over seeds."""
    diffs, values_a, values_b, seeds = [], [], [], []
    for ra, rb in sorted(pairs, key=lambda p: p[0].seed):
        va, vb = store.episode_values(ra.run_id), store.episode_values(rb.run_id)
        n = min(va.size, vb.size)  # episode i is the same in both: the common prefix pairs up
        d = stats.paired_difference(va[:n], vb[:n])
        diffs.append(va[:n].astype(np.float64) - vb[:n])
        values_a.append(va[:n])
        values_b.append(vb[:n])
        seeds.append(SeedPair(ra.seed, ra.run_id, rb.run_id, n, d.mean))
    pooled = stats.summarize_run(np.concatenate(diffs))
    dataset, n_way, k_shot = setting
    return Comparison(
        dataset, n_way, k_shot, crop,
        mean_a=float(np.concatenate(values_a).mean()), mean_b=float(np.concatenate(values_b).mean()),
        diff=pooled.mean, ci95=pooled.ci95, episodes=pooled.episodes, seeds=seeds, protocol=protocol,
    )
