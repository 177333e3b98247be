"""Faithfulness tests of LEO and its ablations (plugins/leo): small, exact computations on CPU."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from fewshot_bench_leo import LatentEmbeddingOptimization
from fewshot_bench_leo.hparams import PRESETS, dataset_family, nearest_shot, tuned_values
from fewshot_bench_leo.learners import LEARNERS
from fewshot_bench_leo.model import orthogonality_penalty, stddev
from helpers import one_line_error, tiny_batch

from fewshot_bench.api import Noise
from fewshot_bench.api.learner import TaskSpec
from fewshot_bench.api.linear import onehot_labels, support_loss_grad
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions

LEO_NAMES = [cls.name for cls in LEARNERS]


def learner_class(name: str) -> type[LatentEmbeddingOptimization]:
    """The registered class of a LEO learner name."""
    return {cls.name: cls for cls in LEARNERS}[name]


def tiny_learner(name="leo", n=3, k=2, d=6, seed=0, **changes) -> LatentEmbeddingOptimization:
    """A float64 learner with a 3-d latent space and strong regularisers, so every term matters."""
    cls = learner_class(name)
    base = dict(latent_dim=3, dtype="float64", kl_weight=0.3, encoder_penalty_weight=0.2,
                l2_penalty_weight=0.01, orthogonality_penalty_weight=0.05, dropout_rate=0.25)
    torch.manual_seed(seed)
    return cls(dataclasses.replace(cls.Config(), **(base | changes)), TaskSpec(n, k, d))


def seeded_loss(learner, batch, seed=123):
    """The meta-loss with the sampling and dropout noise fixed by a seed (a fresh ``Noise`` keyed by it)."""
    learner.noise = Noise(seed)
    return learner.meta_loss(batch).loss


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.equivalence
def test_analytic_support_gradient_matches_autograd():
    x = F.normalize(torch.randn(3, 8, 5, dtype=torch.float64), dim=-1)
    onehot = onehot_labels(torch.randint(0, 4, (3, 8)), 4, torch.float64)
    w = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    summed_ce = -(onehot * torch.log_softmax(x @ w.transpose(1, 2), -1)).sum()
    (expected,) = torch.autograd.grad(summed_ce, w)
    torch.testing.assert_close(support_loss_grad(x, onehot, w), expected)


@pytest.mark.equivalence
@pytest.mark.parametrize("sampling", [True, False])
def test_latent_gradient_matches_autograd_through_the_decoder(sampling):
    learner = tiny_learner(stochastic=sampling)
    learner.train()
    batch = tiny_batch()
    x = batch.support.reshape(2, -1, 6)
    onehot = onehot_labels(batch.support_labels, 3, x.dtype)
    # Large latents push some stddevs onto their floor, where no gradient must pass.
    z = (3 * torch.randn(2, 3, 2, 3, dtype=torch.float64)).requires_grad_()
    decoded = learner.decoder(z)
    g_w = support_loss_grad(x, onehot, decoded.weights)
    (expected,) = torch.autograd.grad(
        -(onehot * torch.log_softmax(x @ decoded.weights.transpose(1, 2), -1)).sum(), z
    )
    torch.testing.assert_close(learner.latent_gradient(decoded, g_w, copies=2).expand_as(z), expected)


def test_second_order_meta_gradient_matches_finite_differences():
    """The meta-gradient reaches both inner learning rates and every network through the inner loops.

    The encoder penalty is off here: its stop-gradient makes the meta-gradient differ from
    the derivative of the loss by design (tested separately below).
    """
    learner = tiny_learner(encoder_penalty_weight=0.0)
    learner.train()
    batch = tiny_batch()
    params = dict(learner.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(seeded_loss(learner, batch), list(params.values()))))
    eps = 1e-6
    for name in ("inner_lr", "finetune_lr", "encoder_weight", "relation_weights.1", "decoder_weight"):
        p = params[name]
        for index in [(0,), (p.numel() - 1,)]:
            flat_p = p.data.view(-1)
            old = flat_p[index].item()
            flat_p[index] = old + eps
            up = seeded_loss(learner, batch).item()
            flat_p[index] = old - eps
            down = seeded_loss(learner, batch).item()
            flat_p[index] = old
            numeric = (up - down) / (2 * eps)
            analytic = grads[name].reshape(-1)[index].item()
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), name
        assert grads[name].abs().sum() > 0, f"no meta-gradient reaches {name}"


# --- sampling, evaluation, KL ------------------------------------------------------------------


def test_evaluation_is_deterministic_and_training_is_not():
    learner = tiny_learner()
    batch = tiny_batch()
    learner.eval()
    with torch.no_grad():  # as evaluation calls it
        learner.noise = Noise(1)
        first = learner.predict(batch)
        learner.noise = Noise(2)
        second = learner.predict(batch)
    assert torch.equal(first, second)
    assert not first.requires_grad  # no graph is kept at evaluation
    learner.train()
    learner.noise = Noise(1)
    train_a = learner.predict(batch)
    learner.noise = Noise(2)
    train_b = learner.predict(batch)
    assert not torch.equal(train_a, train_b)


def test_kl_is_finite_when_raw_stddev_is_very_negative():
    learner = tiny_learner()
    learner.train()
    mean = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    raw = torch.full_like(mean, -1e4, requires_grad=True)
    z, kl = learner.sample_latents(torch.cat([mean, raw], dim=-1))
    assert torch.isfinite(z).all() and torch.isfinite(kl)
    assert stddev(raw, 0.0).min().item() == 1e-10  # floored, never negative
    grads = torch.autograd.grad(kl, (mean, raw))
    assert all(torch.isfinite(g).all() for g in grads)


def test_monte_carlo_kl_is_log_q_minus_log_prior_at_the_sample():
    learner = tiny_learner()
    learner.train()
    params = torch.randn(2, 3, 1, 6, dtype=torch.float64)
    torch.manual_seed(5)
    z, kl = learner.sample_latents(params)
    mean, raw = params.chunk(2, -1)
    q = torch.distributions.Normal(mean, stddev(raw, 0.0))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(kl, (q.log_prob(z) - p.log_prob(z)).mean())


def test_orthogonality_penalty_matches_hand_computation():
    w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    # correlation of the rows: 1 on the diagonal, 1/sqrt(2) off it; (C - I)^2 = 1/2 twice.
    assert orthogonality_penalty(w).item() == pytest.approx(0.25)
    assert orthogonality_penalty(w, "sum").item() == pytest.approx(1.0)


def test_relation_network_averages_all_ordered_pairs():
    learner = tiny_learner()
    codes = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    w1, w2, w3 = learner.relation_weights
    h = codes.reshape(2, 6, 3)
    expected = torch.zeros(2, 6, 6, dtype=torch.float64)
    for i in range(6):
        for j in range(6):
            pair = torch.cat([h[:, i], h[:, j]], dim=-1)
            expected[:, i] += torch.relu(torch.relu(pair @ w1) @ w2) @ w3 / 6
    torch.testing.assert_close(learner.relation_network(codes), expected.reshape(2, 3, 2, 6))


def test_logits_average_the_k_weight_samples():
    learner = tiny_learner(dropout_rate=0.0)
    learner.train()
    z = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    learner.noise = Noise(3)
    decoded = learner.decoder(z)
    params = z @ learner.decoder_weight
    mean, raw = params[..., :6], params[..., 6:]
    samples = mean + stddev(raw, math.sqrt(2 / (6 + 3))) * Noise(3).randn_like(mean)  # the same first draw
    x = torch.randn(2, 12, 6, dtype=torch.float64)  # [B, M, D] queries
    per_sample = torch.einsum("bqd,bmkd->bqmk", x, samples).mean(-1)
    torch.testing.assert_close(learner.classifier_logits(x, decoded.weights), per_sample)


# --- ablations --------------------------------------------------------------------------------

SWITCHES = {
    "leo": {},
    "leo-deterministic": {"stochastic": False},
    "leo-random-prior": {"prior": "random"},
    "leo-no-finetune": {"finetune_steps": 0},
    "leo-generator-only": {"latent_steps": 0, "finetune_steps": 0},
    "leo-generator-finetune": {"latent_steps": 0},
}


@pytest.mark.parametrize("name", LEO_NAMES)
def test_each_learner_switches_exactly_what_its_name_says(name):
    leo = dataclasses.asdict(learner_class("leo").default_config("mini", 5))
    mine = dataclasses.asdict(learner_class(name).default_config("mini", 5))
    assert {k: v for k, v in mine.items() if leo[k] != v} == SWITCHES[name]
    assert dataclasses.asdict(learner_class(name).Config()) == dataclasses.asdict(
        learner_class(name).default_config("mini", 1)
    )


def test_random_prior_never_calls_the_encoder(monkeypatch):
    calls = []
    for method in ("encoder", "relation_network"):
        monkeypatch.setattr(LatentEmbeddingOptimization, method, lambda self, x, m=method: calls.append(m) or 1 / 0)
    learner = tiny_learner("leo-random-prior")
    batch = tiny_batch()
    learner.train()
    out = learner.meta_loss(batch)
    learner.eval()
    logits = learner.predict(batch)
    assert calls == [] and torch.isfinite(out.loss) and logits.shape == (2, 6, 3)
    assert not hasattr(learner, "encoder_weight")
    with pytest.raises(ZeroDivisionError):  # the spy does fire for LEO itself
        tiny_learner("leo").meta_loss(batch)


def test_no_finetune_leaves_decoded_weights_untouched():
    batch = tiny_batch()
    ablation, full = tiny_learner("leo-no-finetune"), tiny_learner("leo")
    for learner in (ablation, full):
        learner.eval()
    a, f = ablation.adapt(batch), full.adapt(batch)
    assert torch.equal(a.weights, a.decoded_weights)
    assert not torch.equal(f.weights, f.decoded_weights)
    assert not torch.equal(a.z_adapted, a.z_init)  # latent adaptation still happens
    assert not hasattr(ablation, "finetune_lr")


def test_generator_only_performs_no_adaptation():
    batch = tiny_batch()
    learner = tiny_learner("leo-generator-only")
    learner.eval()
    a = learner.adapt(batch)
    assert torch.equal(a.z_adapted, a.z_init) and torch.equal(a.weights, a.decoded_weights)
    assert not hasattr(learner, "inner_lr") and not hasattr(learner, "finetune_lr")


def test_generator_finetune_skips_latent_steps_but_fine_tunes():
    learner = tiny_learner("leo-generator-finetune")
    learner.eval()
    a = learner.adapt(tiny_batch())
    assert torch.equal(a.z_adapted, a.z_init) and not torch.equal(a.weights, a.decoded_weights)


def test_deterministic_samples_nothing_and_has_no_kl():
    batch = tiny_batch()
    learner = tiny_learner("leo-deterministic", dropout_rate=0.0)
    learner.train()
    learner.noise = Noise(1)
    first = learner.meta_loss(batch)
    learner.noise = Noise(2)
    second = learner.meta_loss(batch)
    assert first.metrics["kl"].item() == 0.0
    assert first.loss.item() == second.loss.item()
    stochastic = tiny_learner("leo", dropout_rate=0.0)
    stochastic.train()
    assert seeded_loss(stochastic, batch, 1).item() != seeded_loss(stochastic, batch, 2).item()


def test_dropout_only_in_training():
    learner = tiny_learner(dropout_rate=0.5)
    x = torch.ones(4, 6, dtype=torch.float64)
    learner.train()
    assert (learner.dropout(x) == 0).any()
    learner.eval()
    assert torch.equal(learner.dropout(x), x)


# --- the objective ----------------------------------------------------------------------------


def test_meta_loss_adds_every_weighted_term():
    learner = tiny_learner()
    learner.train()
    out = learner.meta_loss(tiny_batch())
    cfg, m = learner.config, out.metrics
    expected = (m["query_loss"] + cfg.kl_weight * m["kl"] + cfg.encoder_penalty_weight * m["encoder_penalty"]
                + cfg.l2_penalty_weight * m["l2_penalty"]
                + cfg.orthogonality_penalty_weight * m["orthogonality_penalty"])
    assert out.loss.item() == pytest.approx(expected.item())
    weights = [learner.encoder_weight, *learner.relation_weights, learner.decoder_weight]
    assert m["l2_penalty"].item() == pytest.approx(sum(0.5 * w.pow(2).sum().item() for w in weights))
    assert m["encoder_penalty"].item() > 0 and m["kl"].item() != 0


def test_nan_fallback_gradient_is_1e_4_times_the_network_weights():
    learner = tiny_learner()
    params = dict(learner.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(learner.nan_fallback_loss(), list(params.values()),
                                                 allow_unused=True)))
    torch.testing.assert_close(grads["decoder_weight"], 1e-4 * learner.decoder_weight)
    torch.testing.assert_close(grads["encoder_weight"], 1e-4 * learner.encoder_weight)
    assert grads["inner_lr"] is None and grads["finetune_lr"] is None  # learning rates are not regularised


def test_injected_nan_takes_the_guard_path(synthetic, monkeypatch):
    learner = learner_class("leo")(learner_class("leo").default_config("synthetic", 1), TaskSpec(5, 1, 640))
    trainer = MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"),
                          RunSpec("leo", steps=1, val_episodes=4), TrainOptions(val_query=5), torch.device("cpu"))
    before = {k: v.detach().clone() for k, v in learner.named_parameters()}
    original = type(learner).meta_loss
    monkeypatch.setattr(type(learner), "meta_loss",
                        lambda self, b: (lambda o: type(o)(o.loss * float("nan"), o.metrics))(original(self, b)))
    metrics = trainer.step(0)
    assert metrics["nan_step"].item() == 1.0
    after = dict(learner.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    # Fallback gradients 1e-4 * w shrink the network weights; the learning rates get none.
    assert after["decoder_weight"].abs().sum() < before["decoder_weight"].abs().sum()
    assert torch.equal(after["inner_lr"], before["inner_lr"])


def test_float64_config_computes_in_float64():
    learner = tiny_learner()
    assert all(p.dtype == torch.float64 for p in learner.parameters())
    learner.eval()
    assert learner.predict(tiny_batch()).dtype == torch.float64


def test_bad_switch_value_is_a_config_error():
    from fewshot_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="prior"):
        tiny_learner(prior="uniform")


# --- hyperparameters --------------------------------------------------------------------------


def test_presets_hold_table6_and_the_reference_readme():
    assert tuned_values("tiered", 5)["orthogonality_penalty_weight"] == 0.0081711619
    assert tuned_values("miniImageNet", 1)["dropout_rate"] == pytest.approx(1 - 0.711524088)
    assert tuned_values("tiered", 1, "reference")["kl_weight"] == 2.034189e-3
    assert tuned_values("mini", 5, "reference")["dropout_rate"] == 0.300299
    assert set(PRESETS) == {"paper", "reference"}


def test_unknown_dataset_and_shot_fall_back_to_mini_and_the_nearer_shot():
    assert dataset_family("tiered-imagenet") == "tiered" and dataset_family("omniglot") is None
    assert nearest_shot(2) == 1 and nearest_shot(4) == 5 and nearest_shot(10) == 5
    assert tuned_values("synthetic", 20) == PRESETS["paper"][("mini", 5)]


# --- end to end -------------------------------------------------------------------------------


def test_cli_lists_the_seven_learners_with_their_distributions(cli):
    rows = {r["learner"]: r["distribution"] for r in cli("learners", "--json").json()}
    assert {n: rows[n] for n in LEO_NAMES} == {n: "fewshot-bench-leo" for n in LEO_NAMES}
    assert rows["maml"] == "fewshot-bench-maml"


@pytest.mark.parametrize("name", LEO_NAMES)
def test_each_learner_runs_from_the_cli(cli, name):
    res = cli("run", "--learner", name, "--steps", "2", "--val-every", "2", "--val-episodes", "4",
              "--episodes", "20", "--eval-query", "5", "--json")
    assert res.code == 0, res.err
    out = res.json()
    assert out["learner"] == name and 0.0 <= out["accuracy"] <= 1.0 and out["steps"] == 2


def test_cli_reference_preset_and_unknown_preset(cli):
    ok = cli("run", "--learner", "leo", "--hparams", "reference", "--steps", "1", "--val-every", "1",
             "--val-episodes", "2", "--episodes", "4", "--eval-query", "2", "--set", "latent_steps=2", "--json")
    assert ok.code == 0, ok.err
    bad = cli("run", "--learner", "leo", "--hparams", "table7", "--steps", "1")
    one_line_error(bad, "unknown LEO hyperparameter preset 'table7'")


def test_meta_training_improves_validation_accuracy(synthetic):
    torch.manual_seed(0)
    cls = learner_class("leo")
    learner = cls(cls.default_config("synthetic", 1), TaskSpec(5, 1, 640))
    spec = RunSpec("leo", steps=100, val_every=100, val_episodes=200, patience=None)
    trainer = MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"), spec, TrainOptions(val_query=15),
                          torch.device("cpu"))
    before = trainer.validate()
    result = trainer.run()
    assert result.best_val_metric > before + 0.05, (before, result.best_val_metric)


def test_encoder_penalty_stops_the_gradient_at_the_adapted_latents():
    learner = tiny_learner()
    learner.train()
    penalty = learner.encoder_penalty(learner.adapt(tiny_batch()))
    to_lr, to_encoder = torch.autograd.grad(penalty, (learner.inner_lr, learner.encoder_weight), allow_unused=True)
    assert to_lr is None  # the adapted latents are a constant target
    assert to_encoder.abs().sum() > 0


def test_equations_objective_reads_eq6_and_eq7_literally():
    batch = tiny_batch()
    literal, ref = tiny_learner(objective="equations"), tiny_learner(objective="reference")
    literal.train()
    out = literal.meta_loss(batch)
    m, cfg = out.metrics, literal.config
    episode_terms = m["query_loss"] + cfg.kl_weight * m["kl"] + cfg.encoder_penalty_weight * m["encoder_penalty"]
    expected = (2 * episode_terms + cfg.l2_penalty_weight * m["l2_penalty"]
                + cfg.orthogonality_penalty_weight * m["orthogonality_penalty"])
    assert out.loss.item() == pytest.approx(expected.item())  # summed over the 2 episodes
    assert m["l2_penalty"].item() == pytest.approx(2 * ref.l2_penalty().item())  # ||w||^2, not l2_loss
    assert m["orthogonality_penalty"].item() == pytest.approx(
        orthogonality_penalty(literal.decoder_weight, "sum").item())
    # The KL is the closed form: deterministic given the encoder, whatever the noise.
    assert seeded_loss(literal, batch, 1) != seeded_loss(literal, batch, 2)
    literal.config = dataclasses.replace(cfg, dropout_rate=0.0)
    literal.noise = Noise(1)
    kl_a = literal.meta_loss(batch).metrics["kl"]
    literal.noise = Noise(2)
    kl_b = literal.meta_loss(batch).metrics["kl"]
    assert torch.equal(kl_a, kl_b) and kl_a.item() > 0


def test_latent_copies_per_example_or_per_class():
    batch = tiny_batch(k=2)
    per_example, per_class = tiny_learner(), tiny_learner(latent_copies="per-class")
    # In training, K independently sampled latents per class, or one.
    assert per_example.train().adapt(batch).z_init.shape == (2, 3, 2, 3)
    assert per_class.train().adapt(batch).z_init.shape == (2, 3, 1, 3)
    # Without sampling the K copies are equal and one is held; it moves by g / K per step.
    a, c = per_example.eval().adapt(batch), per_class.eval().adapt(batch)
    assert a.z_init.shape == c.z_init.shape == (2, 3, 1, 3)
    torch.testing.assert_close(a.z_init, c.z_init)  # the same class means
    assert not torch.allclose(a.weights, c.weights)
    # At 1-shot the two readings are the same computation.
    one_shot = tiny_batch(k=1)
    torch.testing.assert_close(per_example.predict(one_shot), per_class.predict(one_shot))


def test_dropout_keeps_features_with_probability_one_minus_rate_and_rescales():
    learner = tiny_learner(dropout_rate=0.3)
    learner.train()
    out = learner.dropout(torch.ones(200_000, dtype=torch.float64))
    kept = out != 0
    assert kept.double().mean().item() == pytest.approx(0.7, abs=0.005)
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))
