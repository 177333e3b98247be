"""LEO for few-shot regression (paper §4.1, appendix A.2): one latent code generates a whole MLP.

The model ``f_theta`` is the shared 1-40-40-1 ReLU MLP (:mod:`fewshot_bench.api.mlp`, 1,761
parameters). Per episode:

1. the **encoder** (3-layer ReLU MLP, 32 units, no biases) maps each support point with its
   noisy target, ``[x, y]``, to a code ``h_k`` ([B, K, 32] -> [B, K, 16]);
2. the **relation network** (3-layer ReLU MLP, 32 units, no biases) sees all K^2 ordered
   pairs ``[h_i, h_j]`` and its outputs are averaged over the pairs: the mean and raw
   stddev of **one** latent code ``z`` (nz = 16) for the whole problem;
3. the **decoder** (3-layer ReLU MLP, 32 units, no biases) maps ``z`` to the mean and raw
   stddev of the whole parameter vector ``theta`` (2 x 1,761 outputs);
4. LEO's inner loop: ``z <- z - alpha * dL_train/dz`` (alpha learned per latent dimension,
   initialised to 1), ``theta`` re-sampled at every step; optional fine-tuning steps in
   ``theta`` (0 by default: the paper describes none for regression).

Latents and parameters are **sampled in training and in evaluation** (appendix A.2): the
spread of the sampled models is how LEO shows its uncertainty (Figure 3). Stddevs are
``exp(raw) - 1`` floored at 1e-10, the KL is the reference code's Monte-Carlo estimate and
the meta-loss is query MSE + beta KL + gamma encoder penalty + lambda1 L2, as for
classification (REFERENCE.md §1). ``L_train`` is the support MSE (mean over the K points).
The paper gives no regression hyperparameters beyond the architecture; the defaults below
were chosen on the validation stream (docs/regression.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from fewshot_bench.api import (
    MLP,
    REGRESSION,
    ConfigError,
    EpisodeBatch,
    Learner,
    LearnerConfig,
    LossOutput,
    PredictionBatch,
    TaskSpec,
    episode_normal,
    support_mse,
    support_points,
)
from fewshot_bench_leo.model import NAN_FALLBACK_SCALE, stddev


@dataclass
class LEORegressionConfig(LearnerConfig):
    """LEO for regression: appendix A.2's architecture; the loss weights are ours (the paper gives none)."""

    outer_lr: float = 3e-4
    meta_batch_size: int = 12
    latent_dim: int = 16
    hidden: int = 32  # width of the encoder, relation network and decoder
    model_hidden: tuple[int, ...] = (40, 40)  # the generated MLP's hidden layers
    latent_steps: int = 5
    finetune_steps: int = 0
    # 0.3, not classification's 1.0: with a squared loss, steps of 1.0 overshoot early in training.
    inner_lr_init: float = 0.3
    finetune_lr_init: float = 1e-3
    kl_weight: float = 1e-4
    encoder_penalty_weight: float = 1e-9
    l2_penalty_weight: float = 1e-8
    # Each problem's latent gradient is scaled down to at most this L2 norm (None: never).
    # Not in the paper: without it the latent steps diverge on steep lines (the decoded MLP's
    # output is a high-degree polynomial in z), and a single diverged problem is a NaN MSE.
    latent_grad_clip: float | None = 1.0
    # Sample latents and parameters (False: means only, no KL).
    stochastic: bool = True
    # Appendix A.2: sampling also at evaluation (classification LEO uses the means there).
    sample_at_eval: bool = True


@dataclass
class RegressionAdaptation:
    """What LEO's inner loop produced for a batch of problems."""

    z_init: Tensor  # [B, Z] from the encoder and relation network (sampled)
    z_adapted: Tensor  # [B, Z] after the latent steps
    kl: Tensor  # scalar KL term (0 without sampling)
    theta: Tensor  # [B, P] the final (sampled, fine-tuned) MLP parameters


def mlp_no_bias(sizes: tuple[int, ...], out_gain: float = 1.0) -> nn.Sequential:
    """A ReLU MLP without biases (the paper's encoder, relation network and decoder).

    Hidden layers get He initialisation, which keeps activations at the input's scale
    through ReLUs; the last layer's is multiplied by ``out_gain``. Without biases these
    networks are positively homogeneous, so the scale at initialisation is all there is:
    PyTorch's default (about 0.6x per layer) leaves a decoded MLP of near-zero weights,
    whose gradients vanish and meta-training never starts.
    """
    layers: list[nn.Module] = []
    for n, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(i, o, bias=False)
        last = n == len(sizes) - 2
        nn.init.normal_(linear.weight, std=(out_gain if last else math.sqrt(2.0)) / math.sqrt(i))
        layers.append(linear)
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def gradient(fn: Callable[[Tensor], Tensor], at: Tensor, create_graph: bool) -> Tensor:
    """d fn(at).sum() / d at, differentiable with ``create_graph``, computed even under no_grad otherwise."""
    with torch.enable_grad():
        if not (create_graph and at.requires_grad):
            at = at.detach().requires_grad_()
        (grad,) = torch.autograd.grad(fn(at).sum(), at, create_graph=create_graph)
    return grad if create_graph else grad.detach()


class LEORegression(Learner):
    """LEO generating all parameters of the regression MLP from one latent code (the ``leo`` learner on regression
    tasks)."""

    name = "leo"
    description = "LEO for regression: one 16-d latent generates the whole 1-40-40-1 MLP (appendix A.2)"
    Config = LEORegressionConfig
    kinds = ("regression",)
    presets = ("paper",)  # accepted so `--hparams paper` means LEO's defaults on every task kind
    figures = (3,)  # the paper's sampled models on sines and lines

    def __init__(self, config: LEORegressionConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        self._eval_ids: Tensor | None = None  # ids of the episodes being predicted (see noise_like)
        self._draws = 0
        if config.latent_dim < 1 or config.hidden < 1:
            raise ConfigError("latent_dim and hidden must be at least 1")
        if config.latent_steps < 0 or config.finetune_steps < 0:
            raise ConfigError("latent_steps and finetune_steps must be 0 or more")
        z, h = config.latent_dim, config.hidden
        self.mlp = MLP((task.feature_dim, *config.model_hidden, 1))
        # Output gains chosen so that at initialisation latents are O(1) and decoded weights O(0.3).
        self.encoder = mlp_no_bias((task.feature_dim + 1, h, h, z), out_gain=0.1)
        self.relation_network = mlp_no_bias((2 * z, h, h, 2 * z), out_gain=1.0)
        self.decoder = mlp_no_bias((z, h, h, 2 * self.mlp.n_params), out_gain=0.3)
        # Stddevs start near 0 (raw ~ 0): sampling noise as large as the weights would drown the signal.
        with torch.no_grad():
            cast(nn.Linear, self.relation_network[-1]).weight[z:].mul_(0.03)
            cast(nn.Linear, self.decoder[-1]).weight[self.mlp.n_params :].mul_(0.03)
        self.inner_lr = nn.Parameter(torch.full((z,), config.inner_lr_init))
        if config.finetune_steps > 0:
            self.finetune_lr = nn.Parameter(torch.full((self.mlp.n_params,), config.finetune_lr_init))

    @classmethod
    def default_config(cls, dataset: str, k_shot: int, preset: str | None = None) -> LEORegressionConfig:
        """The regression defaults (the paper's Table 6 presets are for classification only)."""
        if preset not in (None, "paper"):
            raise ConfigError(f"LEO has no {preset!r} hyperparameters for regression; drop --hparams {preset}")
        return cls.Config()

    @property
    def sampling(self) -> bool:
        """Whether latents and parameters are sampled now: in training, and at evaluation unless disabled."""
        return self.config.stochastic and (self.training or self.config.sample_at_eval)

    # --- the generator ----------------------------------------------------------------------

    def encode(self, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
        """Support points [B, K, D] and targets [B, K, 1] -> one latent [B, Z] per problem and its KL."""
        h = self.encoder(torch.cat([xs, ys], dim=-1))  # [B, K, Z]
        k, z = h.shape[1], h.shape[2]
        pairs = torch.cat([h.unsqueeze(2).expand(-1, -1, k, -1), h.unsqueeze(1).expand(-1, k, -1, -1)], dim=-1)
        mean, raw = self.relation_network(pairs).mean(dim=(1, 2)).split(z, dim=-1)
        if not self.sampling:
            return mean, mean.new_zeros(())
        std = stddev(raw, offset=0.0)
        noise = self.noise_like(mean)
        latent = mean + std * noise
        # Monte-Carlo KL(q || N(0, I)) at the sample, averaged over elements; (z - mean) / std is the noise.
        kl = (0.5 * latent.pow(2) - 0.5 * noise.pow(2) - std.log()).mean()
        return latent, kl

    def decode(self, z: Tensor) -> Tensor:
        """Latents [B, Z] -> MLP parameters [B, P]: a sample when sampling, else the mean."""
        mean, raw = self.decoder(z).split(self.mlp.n_params, dim=-1)
        if not self.sampling:
            return mean
        return mean + stddev(raw, offset=0.0) * self.noise_like(mean)

    def noise_like(self, mean: Tensor) -> Tensor:
        """Standard normals like ``mean``: in training from the learner's noise (a pure function of the
        run's seed and step); at evaluation a pure function of each episode's id and the draw's index,
        so a problem's sampled model does not depend on its batch."""
        if self.training or self._eval_ids is None:
            return self.noise.randn_like(mean)
        self._draws += 1
        return episode_normal(self._eval_ids, self._draws, tuple(mean.shape[1:]), mean)

    def network_weights(self) -> list[Tensor]:
        """The encoder, relation network and decoder weights: what the L2 penalty covers."""
        return [m.weight for net in (self.encoder, self.relation_network, self.decoder) for m in net
                if isinstance(m, nn.Linear)]

    # --- the inner loops ----------------------------------------------------------------------

    def adapt(self, xs: Tensor, ys: Tensor) -> RegressionAdaptation:
        """Encode, take the latent steps (re-sampling theta each step), decode, fine-tune."""
        create_graph = self.training and torch.is_grad_enabled()
        z_init, kl = self.encode(xs, ys)
        z = z_init
        for _ in range(self.config.latent_steps):
            grad = gradient(lambda zz: support_mse(self.mlp, self.decode(zz), xs, ys), z, create_graph)
            if self.config.latent_grad_clip is not None:
                norm = grad.norm(dim=-1, keepdim=True)
                grad = grad * (self.config.latent_grad_clip / norm.clamp_min(1e-12)).clamp(max=1.0)
            z = z - self.inner_lr * grad
        theta = self.decode(z)
        for _ in range(self.config.finetune_steps):
            grad = gradient(lambda t: support_mse(self.mlp, t, xs, ys), theta, create_graph)
            theta = theta - self.finetune_lr * grad
        return RegressionAdaptation(z_init, z, kl, theta)

    # --- the learner contract -----------------------------------------------------------------

    def predict(self, batch: PredictionBatch) -> Tensor:
        """Query outputs [B, M, 1] of one sampled model per problem (all of them: call again for more)."""
        self._eval_ids, self._draws = batch.episode_ids, 0
        return self.mlp.forward(self.adapt(*support_points(batch)).theta, batch.query)

    def l2_penalty(self) -> Tensor:
        """Sum of ``sum(w^2) / 2`` over the generator's weights (not the learning rates)."""
        return cast(Tensor, sum(0.5 * w.pow(2).sum() for w in self.network_weights()))

    def meta_loss(self, batch: EpisodeBatch) -> LossOutput:
        """Query MSE + beta KL + gamma encoder penalty (averaged over problems) + lambda1 L2."""
        cfg = self.config
        adaptation = self.adapt(*support_points(batch))
        query_mse = REGRESSION.loss(self.mlp.forward(adaptation.theta, batch.query), batch.query_labels)
        enc_penalty = (adaptation.z_adapted.detach() - adaptation.z_init).pow(2).mean()
        l2 = self.l2_penalty()
        loss = (query_mse + cfg.kl_weight * adaptation.kl + cfg.encoder_penalty_weight * enc_penalty
                + cfg.l2_penalty_weight * l2)
        metrics = {"query_mse": query_mse, "kl": adaptation.kl, "encoder_penalty": enc_penalty, "l2_penalty": l2}
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})

    def nan_fallback_loss(self) -> Tensor:
        """Gradients ``1e-4 * w`` pull the weights back on a step whose loss or gradients are not finite."""
        return NAN_FALLBACK_SCALE * self.l2_penalty()
