"""Statistics of the protocol.

* Per run: the mean accuracy over its test episodes, with a 95% confidence interval
  ``ci95 = 1.96 * s / sqrt(n)``, where ``s`` is the sample standard deviation (ddof=1) of
  the per-episode accuracies and ``n`` the number of episodes (normal approximation, as in
  the few-shot literature).
* Across runs (seeds): the mean of the run means ± their sample standard deviation
  (ddof=1), which is what the LEO paper reports (5 seeds).

And these numbers as people read them (:func:`metric_text`, :func:`seeds_summary_text`), with why
a run's meta-training stopped early (:func:`stop_text`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class RunSummary:
    """Mean and 95% CI half-width over one run's episodes."""

    mean: float
    ci95: float
    std: float
    episodes: int


@dataclass(frozen=True)
class SeedSummary:
    """Mean ± sample standard deviation of run means over seeds."""

    mean: float
    std: float
    seeds: int


def summarize_run(values: np.ndarray) -> RunSummary:
    """Mean, sample std and 95% CI half-width of per-episode values."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n == 0:
        raise ValueError("no episodes to summarise")
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    return RunSummary(float(v.mean()), Z95 * std / math.sqrt(n), std, n)


def summarize_seeds(run_means: list[float] | np.ndarray) -> SeedSummary:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed) of run means."""
    v = np.asarray(run_means, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no runs to summarise")
    return SeedSummary(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


def paired_difference(a: np.ndarray, b: np.ndarray) -> RunSummary:
    """Mean and 95% CI of per-episode differences ``a - b`` (the same episodes in both)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired runs need the same episodes (got {a.size} and {b.size})")
    return summarize_run(a - b)


def metric_name(metric: str) -> str:
    """``accuracy``, or ``MSE``: a task kind's metric, in words."""
    return metric if metric == "accuracy" else metric.upper()


def metric_text(metric: str, value: float | None, prefix: str = "") -> str:
    """A metric's value as people read it: accuracy in percent, a regression MSE as ``MSE 1.2345`` (``-``: none).

    With a ``prefix`` (``±`` of a half-width) the value follows it alone: ``±0.12%``, ``±0.0123``.
    """
    if value is None:
        return "-"
    if metric == "accuracy":
        return f"{prefix}{100 * value:.2f}%"
    return f"{prefix}{value:.4f}" if prefix else f"{metric_name(metric)} {value:.4f}"


def seeds_summary_text(metric: str, run_means: list[float]) -> str:
    """Mean ± sample std over seeds of run means, as people read it (the paper's statistic): ``45.73% ± 0.53%``.

    One seed has no spread: it says so instead of ``± 0.00``.
    """
    s = summarize_seeds(run_means)
    spread = metric_text(metric, s.std, "± ") if s.seeds > 1 else "(one seed: no std)"
    return f"{metric_text(metric, s.mean)} {spread}"


def stop_text(train: dict, steps: int, patience: int | None) -> str | None:
    """When and why meta-training stopped before ``steps`` (None: it ran them all, or did not meta-train).

    ``train`` is a stored run's ``summary["train"]`` (steps taken, best step and metric, history, stopped_early).
    """
    if not train.get("stopped_early"):
        return None
    taken, best_step = int(train.get("steps", 0)), int(train.get("best_step", 0))
    metric = train.get("metric", "accuracy")
    since_best = sum(1 for point in train.get("history", []) if point["step"] > best_step)
    where = f"stopped early at step {taken:,} of {steps:,}"
    if patience is not None and since_best >= patience:
        best = metric_text(metric, train.get("best_val_metric")).removeprefix(f"{metric_name(metric)} ")
        return (f"{where}: validation {metric_name(metric)} had not improved on step {best_step:,}'s {best} for "
                f"{since_best} validation(s) (--patience {patience}); the step {best_step:,} weights were evaluated")
    return f"{where}: training was stopped by its caller (a search's pruner) after {since_best} validation(s)"
