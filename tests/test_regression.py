"""Few-shot regression: the sines-lines family, the regression task kind through the CLI, LEO vs from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot_bench.api.mlp import MLP, inner_gradient
from fewshot_bench.api.tasks import CLASSIFICATION, REGRESSION
from fewshot_bench.data import regression
from fewshot_bench.data.regression import SinesLinesSampler, fit_lines, fit_sines


def test_episodes_are_pure_functions_of_seed_stream_and_id():
    sampler = SinesLinesSampler(k_shot=5, n_query=7, seed=3, stream="test")
    whole = sampler.batch(0, 20)
    part = sampler.batch(6, 4)
    assert torch.equal(whole.support[6:10], part.support) and torch.equal(whole.query_labels[6:10], part.query_labels)
    assert whole.support.shape == (20, 1, 5, 1) and whole.query.shape == whole.query_labels.shape == (20, 7, 1)
    more_queries = SinesLinesSampler(5, 50, seed=3, stream="test").batch(0, 20)
    assert torch.equal(more_queries.support_labels, whole.support_labels)  # support does not depend on Q
    other = SinesLinesSampler(5, 7, seed=3, stream="val").batch(0, 20)
    assert not torch.equal(other.support, whole.support)


def test_task_distribution_matches_the_paper():
    sampler = SinesLinesSampler(k_shot=5, n_query=45, seed=0, stream="train")
    ids = np.arange(4000)
    problems = sampler.problems(ids)
    x, y = sampler.points(ids, 50)
    assert 0.45 < (problems.mode == regression.SINE).mean() < 0.55
    assert x.min() >= -5 and x.max() < 5
    sine = problems.mode == regression.SINE
    assert problems.p1[sine].min() >= 0.1 and problems.p1[sine].max() <= 5
    assert problems.p2[sine].min() >= 0 and problems.p2[sine].max() <= np.pi
    assert np.abs(problems.p1[~sine]).max() <= 3 and np.abs(problems.p2[~sine]).max() <= 3
    noise = y - problems(x)
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.3) < 0.01


def test_least_squares_fits_and_ambiguity():
    x = np.array([[-4.0, -2.0, 0.0, 1.0, 3.0]])
    _, line_rms = fit_lines(x, 2 * x - 1)
    coef, sine_rms = fit_sines(x, 1.5 * np.sin(x - 0.5))
    assert line_rms[0] < 1e-6 and sine_rms[0] < 1e-6
    assert np.allclose(coef[0], [1.5 * np.cos(0.5), -1.5 * np.sin(0.5)])
    assert not regression.ambiguous(x, 3 * np.sin(x))[0]  # a large sine over wide inputs is no line


def test_task_kinds_and_mlp():
    assert REGRESSION.better(0.5, 1.0) and not CLASSIFICATION.better(0.5, 1.0)
    mlp = MLP()
    assert mlp.n_params == 1761  # the paper's Table 3: 2 x 1761 decoder outputs
    theta = mlp.init(3).requires_grad_()
    x, y = torch.randn(3, 5, 1), torch.randn(3, 5, 1)
    grad = inner_gradient(mlp, theta, x, y, create_graph=False)
    # Episodes are independent: episode 0's gradient ignores episode 1's data.
    y2 = y.clone()
    y2[1] += 5
    assert torch.allclose(grad[0], inner_gradient(mlp, theta, x, y2, create_graph=False)[0])
    assert not torch.allclose(grad[1], inner_gradient(mlp, theta, x, y2, create_graph=False)[1])


def test_run_reports_mse_and_refuses_classifiers(cli):
    out = cli("run", "--learner", "mlp-scratch", "--dataset", "sines-lines", "--episodes", "50", "--json")
    assert out.code == 0, out.err
    result = out.json()
    assert "mse" in result and "accuracy" not in result and (result["way"], result["shot"]) == (1, 5)
    assert 0.09 < result["mse"] < 50
    wrong = cli("run", "--learner", "nearest-centroid", "--dataset", "sines-lines")
    assert wrong.code == 1 and "regression" in wrong.err and "Traceback" not in wrong.err
    way = cli("run", "--learner", "leo", "--dataset", "sines-lines", "--way", "5")
    assert way.code == 1 and "--way" in way.err


@pytest.mark.parametrize("learner", ["metasgd", "maml"])
def test_gradient_baselines_train_on_regression(cli, learner):
    out = cli("run", "--learner", learner, "--dataset", "sines-lines", "--steps", "30", "--val-every", "15",
              "--val-episodes", "20", "--episodes", "50", "--json")
    assert out.code == 0, out.err
    assert np.isfinite(out.json()["mse"]) and out.json()["best_val_mse"] is not None


@pytest.mark.slow
def test_leo_regression_beats_the_mlp_from_scratch(cli):
    common = ("--dataset", "sines-lines", "--episodes", "500", "--json")
    scratch = cli("run", "--learner", "mlp-scratch", *common)
    leo = cli("run", "--learner", "leo", "--steps", "600", "--val-every", "200", "--val-episodes", "100", *common)
    assert scratch.code == 0 and leo.code == 0, (scratch.err, leo.err)
    assert leo.json()["mse"] < scratch.json()["mse"], (leo.json()["mse"], scratch.json()["mse"])
