"""The statistics' definitions."""

import math

import numpy as np
import pytest

from fewshot_bench.records.stats import paired_difference, summarize_run, summarize_seeds


def test_run_summary_is_mean_and_normal_95_ci():
    v = np.array([0.2, 0.4, 0.6, 0.8])
    s = summarize_run(v)
    assert s.mean == pytest.approx(0.5)
    assert s.std == pytest.approx(np.std(v, ddof=1))
    assert s.ci95 == pytest.approx(1.959964 * np.std(v, ddof=1) / 2, rel=1e-6)
    assert s.episodes == 4


def test_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        s = summarize_run(rng.binomial(1, 0.6, size=400).astype(float))
        hits += abs(s.mean - 0.6) <= s.ci95
    assert 0.93 < hits / 2000 < 0.97


def test_seed_summary_uses_sample_std():
    s = summarize_seeds([0.60, 0.62, 0.64])
    assert s.mean == pytest.approx(0.62)
    assert s.std == pytest.approx(0.02)
    assert summarize_seeds([0.5]).std == 0.0
    with pytest.raises(ValueError):
        summarize_seeds([])


def test_paired_difference():
    a, b = np.array([1.0, 0.5, 1.0]), np.array([0.5, 0.5, 0.0])
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.5)
    assert math.isfinite(d.ci95)
    with pytest.raises(ValueError):
        paired_difference(a, b[:2])
