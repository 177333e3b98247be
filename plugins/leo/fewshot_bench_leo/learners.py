"""The six registered LEO learners of the paper's Tables 1-2: one implementation, switches per name.

Each ablation is its own class with its own Config defaults (so ``Config()``,
``default_config`` and ``fewshot-bench learners`` all agree); the tuned values come from
the same preset as LEO's, because the paper does not publish the separate random searches
it ran for the ablations (appendix B.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fewshot_bench_leo.hparams import SEARCH_SPACE
from fewshot_bench_leo.model import LatentEmbeddingOptimization, LEOConfig
from fewshot_bench_leo.regression import LEORegression


class LEO(LatentEmbeddingOptimization):
    """LEO as in the paper: stochastic conditional generator, latent adaptation, then fine-tuning."""

    name = "leo"
    description = "LEO: stochastic conditional generator, 5 latent steps, 5 fine-tuning steps (paper Table 1)"
    # Regression (paper §4.1, appendix A.2): one latent generates a whole MLP; see regression.py.
    kinds = ("classification", "regression")
    implementations = {"regression": LEORegression}
    figures = (4, 5)  # the paper's t-SNE of latents and curvature/coverage against Meta-SGD
    figure_baseline = "metasgd"


@dataclass
class DeterministicConfig(LEOConfig):
    """LEO without sampling: means for latents and weights, no KL term."""

    stochastic: bool = False


class LEODeterministic(LatentEmbeddingOptimization):
    """Table 2 "LEO (deterministic)": no sampling of latents or weights, no KL."""

    name = "leo-deterministic"
    description = "LEO ablation: means only, no sampling of latents or weights, no KL (paper Table 2)"
    Config = DeterministicConfig
    search_space = {k: v for k, v in SEARCH_SPACE.items() if k != "kl_weight"}  # no sampling, no KL


@dataclass
class RandomPriorConfig(LEOConfig):
    """LEO whose initial latents are drawn from N(0, I) instead of the encoder."""

    prior: Literal["encoder", "random"] = "random"


class LEORandomPrior(LatentEmbeddingOptimization):
    """Table 2 "LEO (random prior)": the encoder and relation network replaced by the prior p(z)."""

    name = "leo-random-prior"
    description = "LEO ablation: latents drawn from the prior N(0, I), then adapted (paper Table 2)"
    Config = RandomPriorConfig


@dataclass
class NoFinetuneConfig(LEOConfig):
    """LEO with 0 fine-tuning steps."""

    finetune_steps: int = 0


class LEONoFinetune(LatentEmbeddingOptimization):
    """Table 2 "LEO (no fine-tuning)": latent adaptation only."""

    name = "leo-no-finetune"
    description = "LEO ablation: latent adaptation, no fine-tuning in parameter space (paper Table 2)"
    Config = NoFinetuneConfig


@dataclass
class GeneratorOnlyConfig(LEOConfig):
    """The conditional generator alone: no latent steps, no fine-tuning steps."""

    latent_steps: int = 0
    finetune_steps: int = 0


class LEOGeneratorOnly(LatentEmbeddingOptimization):
    """Table 2 "conditional generator only": encoder, relation network and decoder, no adaptation."""

    name = "leo-generator-only"
    description = "LEO ablation: conditional generator only, no adaptation (paper Table 2)"
    Config = GeneratorOnlyConfig
    # No latent steps: the encoder penalty (adapted minus initial latents) is always 0.
    search_space = {k: v for k, v in SEARCH_SPACE.items() if k != "encoder_penalty_weight"}


@dataclass
class GeneratorFinetuneConfig(LEOConfig):
    """The conditional generator followed by fine-tuning: no latent steps."""

    latent_steps: int = 0


class LEOGeneratorFinetune(LatentEmbeddingOptimization):
    """Table 2 "conditional generator + fine-tuning": no latent adaptation, fine-tuning on."""

    name = "leo-generator-finetune"
    description = "LEO ablation: conditional generator + fine-tuning, no latent adaptation (paper Table 2)"
    Config = GeneratorFinetuneConfig
    search_space = {k: v for k, v in SEARCH_SPACE.items() if k != "encoder_penalty_weight"}  # no latent steps


LEARNERS = (LEO, LEODeterministic, LEORandomPrior, LEONoFinetune, LEOGeneratorOnly, LEOGeneratorFinetune)
