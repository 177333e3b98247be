"""The shared outer loop: meta-training improves validation, clipping, the NaN guard."""

from dataclasses import dataclass

import pytest
import torch

from fewshot_bench.api.learner import Learner, LearnerConfig, LossOutput, TaskSpec
from fewshot_bench.api.tasks import CLASSIFICATION
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.protocol.step import clip_per_tensor
from fewshot_bench.protocol.train import MetaTrainer, TrainOptions


def make_trainer(learner, synthetic, **protocol):
    spec = RunSpec(learner.name, **{"steps": 600, "val_every": 200, "val_episodes": 500, "patience": None, **protocol})
    return MetaTrainer(learner, synthetic.split("train"), synthetic.split("val"), spec, TrainOptions(val_query=15),
                       torch.device("cpu"))


def test_metasgd_meta_training_improves_validation_accuracy(host, synthetic):
    cls = host.learner("metasgd")
    torch.manual_seed(0)
    learner = cls(cls.default_config("synthetic", 1), TaskSpec(5, 1, synthetic.feature_dim))
    trainer = make_trainer(learner, synthetic)
    before = trainer.validate()
    result = trainer.run()
    assert result.steps == 600 and result.nan_steps == 0
    assert result.best_val_metric > before + 0.01, (before, result.history)
    # the best validated weights are what is left loaded
    assert trainer.validate() == result.best_val_metric


def test_clip_per_tensor_clips_value_then_each_tensors_own_norm():
    a = torch.tensor([0.5, -0.05, 0.0])
    b = torch.tensor([0.01, 0.01])
    clip_per_tensor([a, b], value=0.1, norm=0.1)
    assert torch.allclose(a, torch.tensor([0.1, -0.05, 0.0]) * (0.1 / torch.tensor([0.1, -0.05]).norm()))
    assert torch.allclose(b, torch.tensor([0.01, 0.01]))  # under the norm: untouched (not a global norm)


@dataclass
class BombConfig(LearnerConfig):
    explode_at: int = 2


class Bomb(Learner):
    """A learner whose loss becomes NaN on some steps."""

    name = "bomb"
    Config = BombConfig

    def __init__(self, config, task):
        super().__init__(config, task)
        self.w = torch.nn.Parameter(torch.ones(task.n_way, task.feature_dim))
        self.calls = 0

    def predict(self, batch):
        return torch.einsum("bqd,md->bqm", batch.query, self.w)

    def meta_loss(self, batch):
        self.calls += 1
        logits = self.predict(batch.inputs())  # predict sees what it sees at evaluation: no query labels
        loss = CLASSIFICATION.loss(logits, batch.query_labels)
        if self.calls == self.config.explode_at:
            loss = loss * float("nan")
        return LossOutput(loss)

    def nan_fallback_loss(self):
        return 0.5 * self.w.pow(2).sum()


def test_nan_guard_uses_the_fallback_and_keeps_parameters_finite(synthetic):
    learner = Bomb(BombConfig(outer_lr=0.1), TaskSpec(5, 1, synthetic.feature_dim))
    trainer = make_trainer(learner, synthetic, steps=4, val_every=4, val_episodes=5)
    before = learner.w.detach().clone()
    trainer.step(0)
    trainer.step(1)  # NaN: the step follows the fallback gradient w, shrinking every weight
    assert torch.isfinite(learner.w).all()
    result = trainer.run()
    assert torch.isfinite(learner.w).all() and result.nan_steps == 0  # only steps inside run() are counted
    assert (learner.w.abs() < before.abs()).any()


@pytest.mark.equivalence
def test_prefetched_meta_batches_are_the_batches_of_their_steps(host, synthetic, monkeypatch):
    """With a free core the next meta-batch is drawn in the background; every step still gets its own batch."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 0)  # as if torch left every core free
    cls = host.learner("metasgd")
    trainer = make_trainer(cls(cls.default_config("synthetic", 1), TaskSpec(5, 1, synthetic.feature_dim)), synthetic)
    for step in [0, 1, 2, 7, 8]:  # in order, then a jump (as after a resume)
        got = trainer.meta_batch(step)
        want = trainer.sampler.batch(step * 12, 12)
        assert torch.equal(got.episode_ids, want.episode_ids) and torch.equal(got.support, want.support)
    assert trainer._next[0] == 9


class _TransposedGradient(torch.autograd.Function):
    """The identity whose backward hands back its gradient as a transposed (non-contiguous) view."""

    @staticmethod
    def forward(ctx, w):
        return w.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.t().contiguous().t()


class Transposer(Bomb):
    """A learner whose weight's gradient comes back laid out column-major, as a plugin's custom function may."""

    name = "transposer"

    def meta_loss(self, batch):
        logits = torch.einsum("bqd,md->bqm", batch.query, _TransposedGradient.apply(self.w))
        return LossOutput(CLASSIFICATION.loss(logits, batch.query_labels))


@pytest.mark.equivalence
def test_a_gradient_laid_out_otherwise_gets_the_adam_step_of_its_own_elements(synthetic):
    torch.manual_seed(0)
    learner = Transposer(BombConfig(outer_lr=0.1), TaskSpec(5, 1, synthetic.feature_dim))
    with torch.no_grad():
        learner.w.copy_(torch.randn_like(learner.w))
    trainer = make_trainer(learner, synthetic, steps=2, val_every=2, val_episodes=5)
    batch = trainer.meta_batch(0)
    reference = torch.nn.Parameter(learner.w.detach().clone())
    (grad,) = torch.autograd.grad(learner.meta_loss(batch).loss, learner.w)
    assert not grad.is_contiguous()  # the case under test
    reference.grad = grad.contiguous()
    torch.optim.Adam([reference], lr=0.1).step()  # the plain, index-by-index Adam
    trainer.update(batch, trainer.profiler)
    assert torch.allclose(learner.w, reference, atol=1e-6)

