"""Populations: S members trained as one batched program give each member exactly its run alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from fewshot_bench.api.learner import Learner, LearnerConfig, LossOutput, TaskSpec
from fewshot_bench.api.tasks import CLASSIFICATION
from fewshot_bench.errors import ConfigError
from fewshot_bench.protocol.evaluate import evaluate
from fewshot_bench.protocol.population import BATCHED, MEMORY_ENV, SEQUENTIAL, Population, parse_bytes
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.step import clip_per_tensor
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions

SEEDS = (0, 1, 2)


def make_member(cls, synthetic, seed, *, checkpoint=None, config=None, **protocol):
    """A MetaTrainer of ``cls`` as a run with ``seed`` builds it (learner built right after torch.manual_seed)."""
    config = config or cls.default_config("synthetic", 1)
    config.meta_batch_size = 4
    torch.manual_seed(seed)
    learner = cls(config, TaskSpec(5, 1, synthetic.feature_dim))
    protocol = {"steps": 20, "val_every": 5, "val_episodes": 20, "patience": None, **protocol}
    spec = RunSpec(cls.name, seed=seed, **protocol)
    options = TrainOptions(val_query=5, checkpoint=checkpoint, run_key=f"key-{seed}")
    return MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"), spec, options, torch.device("cpu"))


def member_accuracies(member, synthetic):
    """Per-episode test accuracies of a trained member, as evaluation computes them for its run."""
    return evaluate(member.learner, synthetic.split("test"), 5, 1, seed=member.spec.seed, episodes=40, n_query=5)


def assert_same_as_alone(alone: list[MetaTrainer], together: list[MetaTrainer], synthetic, atol: float = 1e-6) -> None:
    for a, b in zip(alone, together):
        assert a.result.steps == b.result.steps and a.result.best_step == b.result.best_step
        assert a.result.stopped_early == b.result.stopped_early and a.result.nan_steps == b.result.nan_steps
        assert [h["step"] for h in a.result.history] == [h["step"] for h in b.result.history]
        for ha, hb in zip(a.result.history, b.result.history):
            assert ha["val_metric"] == pytest.approx(hb["val_metric"], abs=atol)
            assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-4, abs=1e-6, nan_ok=True)
        for key, value in a.learner.state_dict().items():
            torch.testing.assert_close(b.learner.state_dict()[key], value, rtol=1e-4, atol=atol)
        torch.testing.assert_close(member_accuracies(b, synthetic), member_accuracies(a, synthetic))


def train_alone_and_together(cls, synthetic, config_changes=None, **protocol):
    def config():
        cfg = cls.default_config("synthetic", 1)
        for k, v in (config_changes or {}).items():
            setattr(cfg, k, v)
        return cfg

    alone = [make_member(cls, synthetic, s, config=config(), **protocol) for s in SEEDS]
    for m in alone:
        m.run()
    together = [make_member(cls, synthetic, s, config=config(), **protocol) for s in SEEDS]
    population = Population(together)
    population.run()
    return alone, together, population


@pytest.mark.equivalence
def test_metasgd_members_equal_their_runs_alone_with_early_stopping(host, synthetic):
    # patience 1 at a validation every 2 steps: members stop at different steps, the others go on.
    alone, together, population = train_alone_and_together(
        host.learner("metasgd"), synthetic, steps=30, val_every=2, patience=1
    )
    assert population.path == BATCHED
    stops = {m.result.steps for m in alone}
    assert any(m.result.stopped_early for m in alone) and len(stops) > 1, stops
    assert_same_as_alone(alone, together, synthetic)


@pytest.mark.equivalence
@pytest.mark.parametrize("name", ["leo", "leo-random-prior", "leo-deterministic"])
def test_leo_members_equal_their_runs_alone(host, synthetic, name):
    # LEO's training amplifies float rounding (the batched products round differently, as 1 and 2
    # threads do alone): a few steps keep the difference at rounding level (docs/speed.md). Four, not six:
    # under ATEN_CPU_CAPABILITY=default (.ci/run) seed 2's loss left its run alone's by 7e-6 at step 4
    # (parameters 5e-8 apart) and by 1.2e-3 at step 6, where AVX2 kernels stayed within 2e-7.
    alone, together, population = train_alone_and_together(host.learner(name), synthetic, steps=4, val_every=2)
    assert population.path == BATCHED, population.why_sequential
    assert_same_as_alone(alone, together, synthetic, atol=1e-4)


@pytest.mark.equivalence
def test_maml_members_equal_their_runs_alone(host, synthetic):
    alone, together, population = train_alone_and_together(host.learner("maml"), synthetic)
    assert population.path in (BATCHED, SEQUENTIAL)
    assert_same_as_alone(alone, together, synthetic)


@dataclass
class NoisyConfig(LearnerConfig):
    outer_lr: float = 1e-2
    dropout: float = 0.3
    draw_from_torch: bool = False  # draw from torch's global generator (not a pure function of the step)


class Noisy(Learner):
    """Prototypes of learned feature scales with dropout and a sampled perturbation: noise in every step."""

    name = "noisy"
    Config = NoisyConfig

    def __init__(self, config, task):
        super().__init__(config, task)
        self.map = torch.nn.Parameter(1 + 0.01 * torch.randn(task.feature_dim))
        self.scale = torch.nn.Parameter(torch.ones(()))

    def _logits(self, batch, noisy):
        support, query = batch.support * self.map, batch.query * self.map
        if noisy:
            cfg = self.config
            dropout = F.dropout if cfg.draw_from_torch else self.noise.dropout
            support = dropout(support, cfg.dropout)
            support = support + 0.1 * self.noise.randn_like(support)
        prototypes = support.mean(dim=2)  # [B, N, D]
        return -self.scale * torch.cdist(query, prototypes)

    def predict(self, batch):
        return self._logits(batch, noisy=False)

    def meta_loss(self, batch):
        logits = self._logits(batch, noisy=True)
        loss = CLASSIFICATION.loss(logits, batch.query_labels)
        return LossOutput(loss, {"query_loss": loss.detach()})


@pytest.mark.equivalence
def test_noise_drawn_from_the_learners_noise_is_each_members_own(synthetic):
    alone, together, population = train_alone_and_together(Noisy, synthetic)
    assert population.path == BATCHED
    assert_same_as_alone(alone, together, synthetic)
    # the members drew different noise: same data order would otherwise give seeds 0 and 1 equal losses
    assert together[0].result.history[-1]["loss"] != together[1].result.history[-1]["loss"]


@pytest.mark.equivalence
def test_a_learner_drawing_from_torchs_generator_trains_its_members_one_after_another(synthetic):
    alone, together, population = train_alone_and_together(Noisy, synthetic, config_changes={"draw_from_torch": True})
    assert population.path == SEQUENTIAL and "random" in population.why_sequential
    assert_same_as_alone(alone, together, synthetic)


@dataclass
class PoisonConfig(NoisyConfig):
    dropout: float = 0.0
    grad_clip_value: float | None = 0.5
    grad_clip_norm: float | None = 0.3


class Poison(Noisy):
    """Non-finite on every step for a member whose ``poison`` parameter is negative (log of it)."""

    name = "poison"
    Config = PoisonConfig

    def __init__(self, config, task):
        super().__init__(config, task)
        self.poison = torch.nn.Parameter(torch.ones(()))

    def meta_loss(self, batch):
        out = super().meta_loss(batch)
        return LossOutput(out.loss + self.poison.log(), out.metrics)

    def nan_fallback_loss(self):
        return 1e-4 * 0.5 * self.map.pow(2).sum()


@pytest.mark.equivalence
def test_a_non_finite_member_takes_its_fallback_and_leaves_the_others_alone(synthetic):
    def members():
        ms = [make_member(Poison, synthetic, s, config=PoisonConfig()) for s in SEEDS]
        with torch.no_grad():
            ms[1].learner.poison.fill_(-1.0)
        return ms

    alone = members()
    for m in alone:
        m.run()
    together = members()
    population = Population(together)
    population.run()
    assert population.path == BATCHED
    assert alone[1].result.nan_steps == 20 and alone[0].result.nan_steps == 0 == alone[2].result.nan_steps
    assert_same_as_alone(alone, together, synthetic)


@pytest.mark.equivalence
def test_member_clipping_is_per_tensor_clipping_of_each_member():
    grads = [torch.randn(3, 4, 5), torch.randn(3, 7) * 0.01]
    separate = [[g[s].clone() for g in grads] for s in range(3)]
    for gs in separate:
        clip_per_tensor(gs, value=0.5, norm=0.3)
    clip_per_tensor(grads, value=0.5, norm=0.3, members=True)
    for s in range(3):
        for g, alone in zip(grads, separate[s]):
            torch.testing.assert_close(g[s], alone)


class Interrupted(Exception):
    pass


@pytest.mark.equivalence
def test_a_population_resumes_from_its_members_checkpoints_to_the_same_numbers(host, synthetic, tmp_path, monkeypatch):
    cls = host.learner("metasgd")
    protocol = {"steps": 30, "val_every": 5, "patience": 2}
    alone = [make_member(cls, synthetic, s, **protocol) for s in SEEDS]
    for m in alone:
        m.run()

    def members():
        return [make_member(cls, synthetic, s, checkpoint=tmp_path / f"{s}.pt", **protocol) for s in SEEDS]

    validate = MetaTrainer.validate
    for killed_at, path in ((7, BATCHED), (8, SEQUENTIAL)):
        for s in SEEDS:
            (tmp_path / f"{s}.pt").unlink(missing_ok=True)
        validations = 0

        def dies(self, killed_at=killed_at):  # killed in the middle of a round of the three members' validations
            nonlocal validations
            validations += 1
            if validations == killed_at:
                raise Interrupted
            return validate(self)

        monkeypatch.setattr(MetaTrainer, "validate", dies)
        with pytest.raises(Interrupted):
            Population(members()).run()
        monkeypatch.setattr(MetaTrainer, "validate", validate)
        resumed = members()
        assert all(m.try_resume() for m in resumed)
        # the 7th validation is the first of the third round: all members resume at step 10, batched;
        # the 8th its second: member 0 resumes at 15, the others at 10, one after another
        assert [m.result.steps for m in resumed] == ([10, 10, 10] if path == BATCHED else [15, 10, 10])
        population = Population(resumed)
        population.run()
        assert population.path == path, population.why_sequential
        assert_same_as_alone(alone, resumed, synthetic)


class Embedded(Noisy):
    """Prototypes in a learned linear embedding (nn.Linear): vmap's backward leaves its weight's gradient transposed."""

    name = "embedded"

    def __init__(self, config, task):
        super().__init__(config, task)
        self.embed = torch.nn.Linear(task.feature_dim, 32, bias=False)

    def _logits(self, batch, noisy):
        prototypes = self.embed(batch.support).mean(dim=2)
        return -self.scale * torch.cdist(self.embed(batch.query), prototypes)


@pytest.mark.equivalence
def test_a_gradient_vmap_leaves_strided_updates_each_element_with_its_own_gradient(synthetic):
    alone, together, population = train_alone_and_together(Embedded, synthetic, config_changes={"dropout": 0.0})
    assert population.path == BATCHED
    assert_same_as_alone(alone, together, synthetic, atol=1e-4)


def test_a_stopped_member_leaves_the_stack(host, synthetic, monkeypatch):
    # patience 1, a validation every 2 steps: members stop at different steps; a stopped
    # member's meta-batches are never drawn again (it is no longer computed).
    drawn: dict[int, list[int]] = {}
    meta_batch = MetaTrainer.meta_batch

    def recorded(self, step):
        drawn.setdefault(self.spec.seed, []).append(step)
        return meta_batch(self, step)

    monkeypatch.setattr(MetaTrainer, "meta_batch", recorded)
    together = [make_member(host.learner("metasgd"), synthetic, s, steps=30, val_every=2, patience=1) for s in SEEDS]
    Population(together).run()
    stops = [m.result.steps for m in together]
    assert len(set(stops)) > 1, stops
    for m in together:
        # the trial step draws step 0 for the first two members once more
        assert sorted(set(drawn[m.spec.seed])) == list(range(m.result.steps)), (m.spec.seed, m.result.steps)


@pytest.mark.equivalence
def test_a_population_short_of_memory_trains_in_groups_with_the_same_numbers(host, synthetic, monkeypatch):
    cls = host.learner("metasgd")
    protocol = {"steps": 20, "val_every": 5, "patience": 1}
    alone = [make_member(cls, synthetic, s, **protocol) for s in SEEDS]
    for m in alone:
        m.run()
    probe = Population([make_member(cls, synthetic, s, **protocol) for s in SEEDS])
    assert probe.probe() is None and probe.member_bytes > probe.parameter_bytes // len(SEEDS)
    monkeypatch.setenv(MEMORY_ENV, str(2 * probe.member_bytes + 1))  # room for two members
    together = [make_member(cls, synthetic, s, **protocol) for s in SEEDS]
    population = Population(together)
    population.run()
    assert population.path == BATCHED and population.groups == [2, 1]
    assert population.budget_bytes == 2 * probe.member_bytes + 1
    assert_same_as_alone(alone, together, synthetic)


def test_unlimited_memory_is_one_group(host, synthetic, monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "1T")
    population = Population([make_member(host.learner("metasgd"), synthetic, s, steps=4, val_every=2) for s in SEEDS])
    population.run()
    assert population.groups == [len(SEEDS)]


@pytest.mark.parametrize(("text", "expected"), [("4096", 4096), ("512M", 512 * 2**20), ("1.5G", 3 * 2**29),
                                                 ("2GiB", 2 * 2**30), ("64kb", 64 * 2**10)])
def test_memory_sizes_read_as_binary_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "G"])
def test_a_memory_setting_that_is_not_a_size_is_one_line_naming_the_variable(text):
    with pytest.raises(ConfigError, match=MEMORY_ENV):
        parse_bytes(text)
