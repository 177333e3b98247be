"""Paired comparison of two learners on the same test episodes (beyond the paper).

Test episodes are a pure function of (dataset, N, K, Q, seed, index), so two runs with
equal (dataset, way, shot, seed) and queries per class saw exactly the same episodes.
Per-episode differences then cancel the episode-to-episode variance that dominates
each run's own confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fewshot_bench import stats
from fewshot_bench.errors import StoreError
from fewshot_bench.store import ResultStore, RunRecord


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

    @property
    def agree(self) -> int:
        """How many seeds' own differences have the sign of the pooled difference."""
        return sum(1 for p in self.seeds if np.sign(p.diff) == np.sign(self.diff) and p.diff != 0)


def _latest_by_cell(runs: list[RunRecord]) -> dict[tuple, RunRecord]:
    out = {}
    for r in runs:  # oldest first: a later run of the same cell replaces an earlier one
        out[(r.dataset, r.way, r.shot, r.options.get("crop", "center"), r.seed)] = r
    return out


def compare(
    store: ResultStore,
    a: str,
    b: str,
    datasets: set[str] | None = None,
    shot: int | None = None,
    way: int | None = None,
    steps: int | None = None,
) -> list[Comparison]:
    """Pair runs of learners ``a`` and ``b`` by (dataset, way, shot, crop, seed) and compare per setting.

    ``datasets`` (lower-cased names) restricts the datasets; the latest run of each cell is used.
    """
    def keep(r: RunRecord) -> bool:
        return (
            (datasets is None or r.dataset.lower() in datasets)
            and (shot is None or r.shot == shot)
            and (way is None or r.way == way)
            and (steps is None or r.options.get("steps") == steps)
        )

    runs_a = _latest_by_cell([r for r in store.runs(learner=a) if keep(r)])
    runs_b = _latest_by_cell([r for r in store.runs(learner=b) if keep(r)])
    settings: dict[tuple, list[tuple[RunRecord, RunRecord]]] = {}
    for cell in sorted(set(runs_a) & set(runs_b), key=str):
        ra, rb = runs_a[cell], runs_b[cell]
        if ra.options.get("eval_query") != rb.options.get("eval_query"):
            continue  # different queries per class: not the same episodes
        settings.setdefault(cell[:4], []).append((ra, rb))
    if not settings:
        raise StoreError(
            f"no runs of {a!r} and {b!r} share a (dataset, way, shot, seed) with the same test queries in {store.path}; "
            f"run both with the same seeds, e.g. `fewshot-bench sweep --learners {a},{b}`"
        )
    out = []
    for (dataset, n_way, k_shot, crop), pairs in settings.items():
        diffs, values_a, values_b, seeds = [], [], [], []
        for ra, rb in pairs:
            va, vb = store.episode_values(ra.run_id), store.episode_values(rb.run_id)
            n = min(va.size, vb.size)  # episode i is the same in both: the common prefix pairs up
            d = stats.paired_difference(va[:n], vb[:n])
            diffs.append(va[:n].astype(np.float64) - vb[:n])
            values_a.append(va[:n])
            values_b.append(vb[:n])
            seeds.append(SeedPair(ra.seed, ra.run_id, rb.run_id, n, d.mean))
        pooled = stats.summarize_run(np.concatenate(diffs))
        out.append(
            Comparison(
                dataset, n_way, k_shot, crop,
                mean_a=float(np.concatenate(values_a).mean()), mean_b=float(np.concatenate(values_b).mean()),
                diff=pooled.mean, ci95=pooled.ci95, episodes=pooled.episodes, seeds=seeds,
            )
        )
    return out
