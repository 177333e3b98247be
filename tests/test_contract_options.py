"""The contract's declared options: presets (``Learner.presets``, ``default_config(..., preset)``)
and ``Learner.adaptation``, which figures read instead of a learner's private attributes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fewshot_bench_leo import LEARNERS
from fewshot_bench_maml import MAML
from fewshot_bench_metasgd import MetaSGD
from helpers import tiny_batch

from fewshot_bench.api import ConfigError, Learner, LearnerConfig, TaskSpec
from fewshot_bench.protocol.runner import resolve_config
from fewshot_bench.protocol.spec import RunSpec
from fewshot_bench.reports.describe import describe

N, K, D = 3, 2, 6


def built(cls: type[Learner], **changes) -> Learner:
    """``cls`` in float64 for the tiny task, in evaluation mode, with a seeded initialisation."""
    torch.manual_seed(0)
    config = dataclasses.replace(cls.default_config("synthetic", K), dtype="float64", **changes)
    return cls(config, TaskSpec(N, K, D)).to(torch.float64).eval()


class Presets(Learner):
    """A learner with two presets and no override of default_config."""

    name = "two-presets"
    presets = ("first", "second")


class NoPresetArgument(Learner):
    """A learner written before presets were declared: default_config takes no ``preset``."""

    name = "no-preset-argument"

    @classmethod
    def default_config(cls, dataset: str, k_shot: int) -> LearnerConfig:
        return LearnerConfig(outer_lr=0.5)


def test_check_preset_names_the_default_and_refuses_unknown_names_in_one_line():
    assert Presets.check_preset(None) == "first" and Presets.check_preset("second") == "second"
    assert Learner.check_preset(None) is None
    with pytest.raises(ConfigError, match="unknown hyperparameter preset 'third' .* use --hparams first or second"):
        Presets.default_config("synthetic", 1, preset="third")
    with pytest.raises(ConfigError, match="it has none") as err:
        Learner.default_config("synthetic", 1, preset="paper")
    assert "\n" not in str(err.value)


def test_presets_are_read_from_the_class_not_from_default_configs_signature(host):
    leo = host.learner("leo")
    assert leo.presets == ("paper", "reference") and leo.check_preset(None) == "paper"
    assert leo.for_kind("regression").presets == ("paper",)
    # A learner without presets is called without ``preset``, so an older default_config still works.
    spec = RunSpec(learner=NoPresetArgument.name, hparams="paper")
    assert resolve_config(NoPresetArgument, spec).outer_lr == 0.5
    with pytest.raises(ConfigError, match="has no hyperparameter presets"):
        resolve_config(NoPresetArgument, dataclasses.replace(spec, hparams="reference"))
    kinds = {k["kind"]: k for k in describe(host, "leo")["kinds"]}
    assert kinds["classification"]["presets"] == ["paper", "reference"]
    assert kinds["classification"]["default_preset"] == kinds["regression"]["default_preset"] == "paper"


@pytest.mark.equivalence
@pytest.mark.parametrize("cls", LEARNERS, ids=lambda c: c.name)
def test_leo_reports_latents_decoded_weights_and_decoder(cls):
    learner, batch = built(cls, latent_dim=4), tiny_batch(n=N, k=K, d=D)
    with torch.no_grad():
        a = learner.adaptation(batch.inputs())
        loops = learner.adapt(batch.inputs())
    assert a.latent_initial.shape == a.latent_adapted.shape == (2, N, 1, 4)  # one copy per class at evaluation
    assert a.initial.shape == a.adapted.shape == a.decoded.shape == (2, N, D) and a.decoder.shape == (4, D)
    torch.testing.assert_close(a.decoded, a.latent_adapted.squeeze(2) @ a.decoder)
    torch.testing.assert_close(a.initial, a.latent_initial.squeeze(2) @ a.decoder)
    torch.testing.assert_close(a.adapted, loops.weights)
    torch.testing.assert_close(a.adapted, learner.linear_readout(batch.inputs())[0])


def test_metasgd_and_maml_report_initial_and_adapted_weights():
    batch = tiny_batch(n=N, k=K, d=D)
    for learner in (built(MetaSGD, init_std=0.5), built(MAML, init_std=0.5)):
        with torch.no_grad():
            a = learner.adaptation(batch.inputs())
        assert a.initial.shape == a.adapted.shape == (2, N, D) and a.latent_initial is None and a.decoder is None
        torch.testing.assert_close(a.adapted, learner.linear_readout(batch.inputs())[0])
        assert not torch.equal(a.initial, a.adapted)  # the inner steps moved the weights
    hidden = built(MAML, hidden_sizes=(4,))
    with torch.no_grad():
        a = hidden.adaptation(batch.inputs())
    assert a.initial.shape == a.adapted.shape == (2, D * 4 + 4 + 4 * N)  # every layer, flattened


def test_learners_without_an_inner_loop_report_none(host):
    learner = host.learner("nearest-centroid")
    config = learner.default_config("synthetic", K)
    assert learner(config, TaskSpec(N, K, D)).adaptation(tiny_batch(n=N, k=K, d=D).inputs()) is None
