"""Latent Embedding Optimization (Rusu et al., ICLR 2019) over pretrained features.

One class, :class:`LatentEmbeddingOptimization`, whose small methods follow the paper's
steps and name its equations: ``encoder`` and ``relation_network`` (Eq. 3), ``decoder``
(Eq. 4), ``support_loss_grad`` (the gradient of Eq. 5), ``leo_inner_loop`` (Algorithm 1,
lines 10-14), ``finetuning_inner_loop`` (section 4.2.3), ``meta_loss`` (Eq. 6) and
``regularisation`` (Eq. 7). Details the paper leaves open follow the authors' reference
code (REFERENCE.md section 1); where the two differ, a config switch picks either (see
docs/learners.md).

Every method computes a whole meta-batch at once. Shapes: B episodes, N classes, K support
examples per class, D feature dims, Z latent dims, C weight samples per class (C = K when
latents are kept per example, as in the reference code; C = 1 per class).

The inner-loop gradients are written out analytically (a linear softmax classifier and a
linear decoder have closed-form gradients). They are built from differentiable tensor
operations, so in training the meta-gradient flows through every inner step exactly as
with ``torch.autograd.grad(..., create_graph=True)`` (full second order), with a much
smaller graph; at evaluation nothing is recorded at all.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import torch
from torch import Tensor, nn

from fewshot_bench.api import (
    CLASSIFICATION,
    Adaptation,
    ConfigError,
    EpisodeBatch,
    Learner,
    LearnerConfig,
    LossOutput,
    PredictionBatch,
    TaskSpec,
    flat,
    linear_logits,
    onehot_labels,
    support_loss_grad,
)
from fewshot_bench_leo.hparams import DEFAULT_PRESET, PRESETS, SEARCH_SPACE, tuned_values

STDDEV_FLOOR = 1e-10  # reference code: tf.maximum(stddev, 1e-10)
NAN_FALLBACK_SCALE = 1e-4  # reference code: the NaN step's loss is 1e-4 / lambda1 * L2 penalty

_MINI_1 = PRESETS["paper"][("mini", 1)]


@dataclass
class LEOConfig(LearnerConfig):
    """LEO hyperparameters; the defaults are the paper's Table 6 for miniImageNet 1-shot."""

    outer_lr: float = _MINI_1["outer_lr"]
    meta_batch_size: int = 12
    grad_clip_value: float | None = 0.1
    grad_clip_norm: float | None = 0.1
    latent_dim: int = 64
    latent_steps: int = 5
    finetune_steps: int = 5
    inner_lr_init: float = 1.0
    finetune_lr_init: float = 1e-3
    kl_weight: float = _MINI_1["kl_weight"]
    encoder_penalty_weight: float = _MINI_1["encoder_penalty_weight"]
    l2_penalty_weight: float = _MINI_1["l2_penalty_weight"]
    orthogonality_penalty_weight: float = _MINI_1["orthogonality_penalty_weight"]
    dropout_rate: float = _MINI_1["dropout_rate"]
    # Sample latents and weights in training (False: the "deterministic" ablation).
    stochastic: bool = True
    # Where the initial latents come from: the encoder + relation network, or the prior N(0, I).
    prior: Literal["encoder", "random"] = "encoder"
    # per-example: the class latent tiled over K and sampled per copy, logits averaged over
    # the K decoded weights (reference code); per-class: one latent per class (Eq. 3-4).
    latent_copies: Literal["per-example", "per-class"] = "per-example"
    # reference: the reference code's reductions (MC KL and squared error averaged over
    # elements, l2_loss = sum/2, mean orthogonality error), under which Table 6 was tuned;
    # equations: Eq. 6-7 read literally (analytic KL and squared norms summed over Z, episode
    # terms summed over the meta-batch, sum of squares, squared Frobenius norm).
    objective: Literal["reference", "equations"] = "reference"


@dataclass
class Decoded:
    """One draw of classifier weights from the decoder (Eq. 4), kept for the latent gradient."""

    weights: Tensor  # [B, N, D]: the mean of each class's C weight samples (all the logits need)
    exp_raw: Tensor | None  # [B, N, C, D] exp(raw stddev); None when means are used
    excess: Tensor | None  # [B, N, C, D] the stddev minus its floor (0 where floored)
    noise: Tensor | None  # [B, N, C, D] standard-normal draws


@dataclass
class InnerLoops:
    """What the inner loops produced for a batch of episodes."""

    z_init: Tensor  # [B, N, C', Z] latents from the encoder (or the prior); C' = held_copies(K)
    z_adapted: Tensor  # [B, N, C', Z] after the latent inner loop
    kl: Tensor  # scalar KL term (0 without sampling)
    decoded_weights: Tensor  # [B, N, D] decoded from z_adapted, before fine-tuning
    weights: Tensor  # [B, N, D] after fine-tuning: the final classifier


def glorot_uniform(fan_in: int, fan_out: int, dtype: torch.dtype) -> nn.Parameter:
    """An input-major [fan_in, fan_out] weight drawn Glorot-uniform, as the reference code initialises."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return nn.Parameter(torch.empty(fan_in, fan_out, dtype=dtype).uniform_(-limit, limit))


def stddev(raw: Tensor, offset: float) -> Tensor:
    """``exp(raw) - (1 - offset)`` floored at 1e-10: never the raw output, which can go negative."""
    return stddev_excess(raw.exp(), offset) + STDDEV_FLOOR


def stddev_excess(exp_raw: Tensor, offset: float) -> Tensor:
    """How far the stddev lies above its floor: ``relu(exp(raw) - (1 - offset) - floor)``.

    ``floor + relu(s - floor)`` is ``max(s, floor)``; written with relu because the CPU
    kernels of ``clamp``'s and ``where``'s backward are many times slower than relu's.
    """
    return torch.relu(exp_raw - (1.0 - offset + STDDEV_FLOOR))


def mean_over_copies(t: Tensor) -> Tensor:
    """[B, N, C, D] -> [B, N, D], the mean over the C copies (a view when C = 1)."""
    return t.squeeze(2) if t.shape[2] == 1 else t.mean(dim=2)


def orthogonality_penalty(weight: Tensor, reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """Error of the rows' correlation matrix from I: mean (or sum) of (C - I)^2, C = W W^T / (|w_i| |w_j|)."""
    norms = weight.norm(dim=1, keepdim=True) + 1e-32
    corr = (weight @ weight.T) / (norms @ norms.T)
    err = (corr - torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)).pow(2)
    return err.mean() if reduction == "mean" else err.sum()


class LatentEmbeddingOptimization(Learner):
    """LEO: encode the support set into per-class latents, adapt them by gradient descent, decode weights."""

    name: ClassVar[str] = ""  # the registered subclasses in learners.py name themselves
    Config: ClassVar[type] = LEOConfig
    tuned_settings = (("mini", 1), ("mini", 5), ("tiered", 1), ("tiered", 5))
    presets = tuple(PRESETS)  # --hparams paper|reference (fewshot-bench learners leo lists their values)
    search_space = SEARCH_SPACE  # Table 6's six hyperparameters (hparams.py); the ablations drop what they lack

    def __init__(self, config: LEOConfig, task: TaskSpec) -> None:
        super().__init__(config, task)
        self._check(config)
        dtype = getattr(torch, config.dtype)
        d, z = task.feature_dim, config.latent_dim
        if config.prior == "encoder":
            self.encoder_weight = glorot_uniform(d, z, dtype)
            self.relation_weights = nn.ParameterList([glorot_uniform(2 * z, 2 * z, dtype) for _ in range(3)])
        # Input-major [Z, 2D] (as the reference stores it): the orthogonality penalty is over its rows.
        self.decoder_weight = glorot_uniform(z, 2 * d, dtype)
        if config.latent_steps > 0:
            self.inner_lr = nn.Parameter(torch.full((z,), config.inner_lr_init, dtype=dtype))
        if config.finetune_steps > 0:
            self.finetune_lr = nn.Parameter(torch.full((d,), config.finetune_lr_init, dtype=dtype))
        # A Glorot-like floor on the weights' stddev: sqrt(2 / (fan_in + fan_out)).
        self.weight_stddev_offset = math.sqrt(2.0 / (d + task.n_way))

    @classmethod
    def default_config(cls, dataset: str, k_shot: int, preset: str | None = None) -> LEOConfig:
        """The preset's tuned values (paper Table 6, the default, or the reference README) for (dataset, shot)."""
        return cls.Config(**tuned_values(dataset, k_shot, preset or DEFAULT_PRESET))

    @staticmethod
    def _check(config: LEOConfig) -> None:
        if config.latent_dim < 1:
            raise ConfigError(f"latent_dim must be at least 1, got {config.latent_dim}")
        if config.latent_steps < 0 or config.finetune_steps < 0:
            raise ConfigError("latent_steps and finetune_steps must be 0 or more")
        if not 0.0 <= config.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {config.dropout_rate}")
        hints = typing.get_type_hints(LEOConfig)
        for key in ("prior", "latent_copies", "objective"):
            allowed = typing.get_args(hints[key])
            if getattr(config, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(config, key)!r}")

    # --- small pieces ---------------------------------------------------------------------

    @property
    def sampling(self) -> bool:
        """Whether latents and weights are sampled: in meta-training only, and not when deterministic."""
        return self.training and self.config.stochastic

    def dropout(self, x: Tensor) -> Tensor:
        """Dropout on features (encoder and classifier inputs), in meta-training only; a fresh mask per call.

        The mask is drawn from the learner's counter-based noise (``self.noise``), like every
        random number of a meta-training step: the same distribution as ``torch.nn.functional.dropout``.
        """
        rate = self.config.dropout_rate
        if not self.training or rate == 0.0:
            return x
        return self.noise.dropout(x, rate)

    def network_weights(self) -> list[Tensor]:
        """The encoder, relation and decoder weight matrices: what the L2 penalty covers (not learning rates)."""
        weights: list[Tensor] = [self.decoder_weight]
        if self.config.prior == "encoder":
            weights = [self.encoder_weight, *self.relation_weights, *weights]
        return weights

    # --- Eq. 3: the encoder, the relation network and the latent distribution ----------------

    def encoder(self, support: Tensor) -> Tensor:
        """Linear codes of the (dropped-out) support features: [B, N, K, D] -> [B, N, K, Z]."""
        return self.dropout(support) @ self.encoder_weight

    def relation_network(self, codes: Tensor) -> Tensor:
        """All (NK)^2 ordered pairs [h_i, h_j] through a 3-layer ReLU MLP, averaged over j: -> [B, N, K, 2Z].

        The first layer on a concatenated pair is split into its left and right halves,
        ``[h_i, h_j] W1 = h_i W1[:Z] + h_j W1[Z:]``: the same numbers without building the pairs.
        """
        b, n, k, z = codes.shape
        h = codes.reshape(b, n * k, z)
        w1, w2, w3 = self.relation_weights
        pairs = (h @ w1[:z]).unsqueeze(2) + (h @ w1[z:]).unsqueeze(1)  # [B, i, j, 2Z]
        # The last layer is linear, so it is applied after the mean over j: (NK)^2 rows become NK.
        hidden = torch.relu(torch.relu(pairs) @ w2).mean(dim=2)
        return (hidden @ w3).reshape(b, n, k, 2 * z)

    def average_codes_per_class(self, params: Tensor) -> Tensor:
        """Mean over the K examples of each class, then one copy per distinct latent: -> [B, N, C', 2Z]."""
        copies = self.held_copies(params.shape[2])
        return params.mean(dim=2, keepdim=True).expand(-1, -1, copies, -1)

    def copies(self, k_shot: int) -> int:
        """C, the latents (and weight samples) per class."""
        return k_shot if self.config.latent_copies == "per-example" else 1

    def held_copies(self, k_shot: int) -> int:
        """C', the latent copies actually computed: C when sampling, else 1.

        Without sampling a class's C copies start equal and receive equal gradients
        (``g / C`` each), so they stay equal: one copy, moved by ``g / C`` per step, gives
        exactly the same weights at C times less work (evaluation, the deterministic ablation).
        """
        return self.copies(k_shot) if self.sampling else 1

    def sample_latents(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Latents from (mean, raw stddev): a reparameterised sample in training, else the mean; and the KL."""
        mean, raw = params.chunk(2, dim=-1)
        if not self.sampling:
            return mean, mean.new_zeros(())
        std = stddev(raw, offset=0.0)
        noise = self.noise.randn_like(mean)
        z = mean + std * noise
        return z, self.kl_divergence(z, noise, mean, std)

    def kl_divergence(self, z: Tensor, noise: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """KL(q(z | D_tr) || N(0, I)) of Eq. 6: a Monte-Carlo estimate (reference) or the closed form (equations).

        The Monte-Carlo term is ``log q(z) - log N(z; 0, I)`` at the sampled z, averaged over
        elements; ``(z - mean) / std`` is exactly the drawn noise, which keeps it finite even
        when the stddev sits at its floor.
        """
        if self.config.objective == "reference":
            return (0.5 * z.pow(2) - 0.5 * noise.pow(2) - std.log()).mean()
        per_dim = 0.5 * (mean.pow(2) + std.pow(2) - 1.0) - std.log()
        return per_dim.sum(-1).mean()

    def encode(self, support: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 3: support [B, N, K, D] -> initial latents [B, N, C, Z] and their KL term."""
        params = self.average_codes_per_class(self.relation_network(self.encoder(support)))
        return self.sample_latents(params)

    def random_prior(self, support: Tensor) -> tuple[Tensor, Tensor]:
        """The "random prior" ablation: latents from p(z) = N(0, I) (its mean, 0, at evaluation); KL 0."""
        b, n, k, _ = support.shape
        shape = (b, n, self.held_copies(k), self.config.latent_dim)
        if not self.sampling:
            return support.new_zeros(shape), support.new_zeros(())
        return self.noise.randn(shape, like=support), support.new_zeros(())

    # --- Eq. 4: the decoder ----------------------------------------------------------------

    def decoder(self, z: Tensor) -> Decoded:
        """Classifier weights from latents [B, N, C, Z]: sampled in training, the means otherwise."""
        # Two products with the weight's halves rather than slicing the [.., 2D] output: no
        # stddev half is computed when means are used, and no zero-filled gradient is built.
        d = self.task.feature_dim
        mean = z @ self.decoder_weight[:, :d]
        if not self.sampling:
            return Decoded(mean_over_copies(mean), None, None, None)
        noise = self.noise.randn_like(mean)
        exp_raw = (z @ self.decoder_weight[:, d:]).exp()  # kept: the latent gradient needs it too
        excess = stddev_excess(exp_raw, self.weight_stddev_offset)
        w = torch.addcmul(mean, excess + STDDEV_FLOOR, noise)
        return Decoded(mean_over_copies(w), exp_raw, excess, noise)

    def latent_gradient(self, decoded: Decoded, grad_weights: Tensor, copies: int) -> Tensor:
        """dL/dz [B, N, C, Z] from dL/dw [B, N, D] of the averaged class weights (chain rule through Eq. 4).

        Each of a class's C weight samples enters the logits with weight 1/C; a sample is
        ``mean + stddev(raw) * noise``, and the floor of the stddev passes no gradient.
        """
        d = self.task.feature_dim
        g = grad_weights.unsqueeze(2)  # [B, N, 1, D]: the same for every sample
        if copies != 1:
            g = g / copies
        grad_z = g @ self.decoder_weight[:, :d].T
        if decoded.noise is None or decoded.exp_raw is None or decoded.excess is None:  # all three or none
            return grad_z
        # d stddev / d raw is exp(raw) above the floor, 0 on it; sign() of the excess is that mask.
        noise_slope = decoded.noise * decoded.exp_raw * decoded.excess.detach().sign()
        return grad_z + (g * noise_slope) @ self.decoder_weight[:, d:].T

    # --- Eq. 5 and the inner loops -----------------------------------------------------------

    def support_loss_grad(self, support: Tensor, onehot: Tensor, weights: Tensor) -> Tensor:
        """Gradient of Eq. 5 (support cross-entropy summed over examples) w.r.t. the class weights, with fresh
        dropout."""
        return support_loss_grad(self.dropout(support), onehot, weights)

    def leo_inner_loop(self, support: Tensor, onehot: Tensor, z: Tensor, copies: int | None = None) -> Tensor:
        """Algorithm 1, lines 10-14: ``z <- z - alpha * dL_train/dz``, weights re-decoded (re-sampled) each step.

        ``copies`` is C, the latent copies per class of the model (default: those held in z).
        """
        copies = copies or z.shape[2]
        for _ in range(self.config.latent_steps):
            decoded = self.decoder(z)
            grad_w = self.support_loss_grad(support, onehot, decoded.weights)
            z = torch.addcmul(z, self.inner_lr, self.latent_gradient(decoded, grad_w, copies), value=-1.0)
        return z

    def finetuning_inner_loop(self, support: Tensor, onehot: Tensor, weights: Tensor, copies: int) -> Tensor:
        """Section 4.2.3: ``w <- w - beta * dL_train/dw`` on the decoded weights, beta per feature dim.

        Every one of a class's C samples moves by ``beta * g / C``, so their mean (all the
        logits use) moves by the same amount.
        """
        for _ in range(self.config.finetune_steps):
            grad = self.support_loss_grad(support, onehot, weights)
            weights = torch.addcmul(weights, self.finetune_lr, grad, value=-1.0 / copies)
        return weights

    def adapt(self, batch: PredictionBatch) -> InnerLoops:
        """Encode (or draw from the prior), adapt in latent space, decode, fine-tune: the whole inner loop."""
        support = flat(batch.support)
        onehot = onehot_labels(batch.support_labels, batch.n_way, support.dtype)
        if self.config.prior == "encoder":
            z_init, kl = self.encode(batch.support)
        else:
            z_init, kl = self.random_prior(batch.support)
        copies = self.copies(batch.k_shot)
        z = self.leo_inner_loop(support, onehot, z_init, copies)
        decoded = self.decoder(z).weights
        weights = self.finetuning_inner_loop(support, onehot, decoded, copies)
        return InnerLoops(z_init, z, kl, decoded, weights)

    def classifier_logits(self, x: Tensor, weights: Tensor) -> Tensor:
        """Logits of the linear softmax classifier on (dropped-out) features x [B, M, D]."""
        return linear_logits(self.dropout(x), weights)

    # --- the learner contract ----------------------------------------------------------------

    def predict(self, batch: PredictionBatch) -> Tensor:
        """Query logits [B, M, N]; at evaluation (means, no dropout) nothing is recorded for autograd."""
        return self.classifier_logits(batch.query, self.adapt(batch).weights)

    def linear_readout(self, batch: PredictionBatch) -> tuple[Tensor, None]:
        """The adapted classifier weights [B, N, D] (no bias): ``predict`` at evaluation is ``query @ w^T``."""
        return self.adapt(batch).weights, None

    def adaptation(self, batch: PredictionBatch) -> Adaptation:
        """Latents before and after the latent steps, weights decoded from each, the fine-tuned weights, the decoder.

        ``initial`` is decoded from the initial latents, ``decoded`` from the adapted ones.
        """
        loops = self.adapt(batch)
        return Adaptation(
            initial=self.decoder(loops.z_init).weights,
            adapted=loops.weights,
            latent_initial=loops.z_init,
            latent_adapted=loops.z_adapted,
            decoded=loops.decoded_weights,
            decoder=self.decoder_weight[:, : self.task.feature_dim],
        )

    def encoder_penalty(self, adaptation: InnerLoops) -> Tensor:
        """Eq. 6's third term: squared distance of the initial latents to the (stop-gradient) adapted ones."""
        err = (adaptation.z_adapted.detach() - adaptation.z_init).pow(2)
        return err.mean() if self.config.objective == "reference" else err.sum(-1).mean()

    def l2_penalty(self) -> Tensor:
        """Sum of ``sum(w^2) / 2`` (TensorFlow's l2_loss) over the network weights."""
        return cast(Tensor, sum(0.5 * w.pow(2).sum() for w in self.network_weights()))

    def regularisation(self) -> tuple[Tensor, Tensor]:
        """Eq. 7's two terms, unweighted: the L2 penalty and the decoder's orthogonality penalty."""
        if self.config.objective == "reference":
            return self.l2_penalty(), orthogonality_penalty(self.decoder_weight, "mean")
        return 2.0 * self.l2_penalty(), orthogonality_penalty(self.decoder_weight, "sum")

    def meta_loss(self, batch: EpisodeBatch) -> LossOutput:
        """Eq. 6 + Eq. 7: query cross-entropy + beta KL + gamma encoder penalty per episode,
        over the meta-batch, + R."""
        cfg = self.config
        adaptation = self.adapt(batch)
        logits = self.classifier_logits(batch.query, adaptation.weights)
        query_loss = CLASSIFICATION.loss(logits, batch.query_labels)
        enc_penalty = self.encoder_penalty(adaptation)
        l2, ortho = self.regularisation()
        # The reference code averages the episode terms over the meta-batch; Eq. 6 and
        # Algorithm 1 (line 17) sum them over the tasks.
        episodes = 1.0 if cfg.objective == "reference" else float(batch.batch_size)
        loss = (
            episodes * (query_loss + cfg.kl_weight * adaptation.kl + cfg.encoder_penalty_weight * enc_penalty)
            + cfg.l2_penalty_weight * l2
            + cfg.orthogonality_penalty_weight * ortho
        )
        accuracy = (logits.argmax(-1) == batch.query_labels).to(logits.dtype).mean()
        metrics = {
            "query_loss": query_loss,
            "kl": adaptation.kl,
            "encoder_penalty": enc_penalty,
            "l2_penalty": l2,
            "orthogonality_penalty": ortho,
            "train_accuracy": accuracy,
        }
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})

    def nan_fallback_loss(self) -> Tensor:
        """``1e-4 / lambda1 * (lambda1 * L2)``: its gradient ``1e-4 * w`` pulls the weights back on a NaN step."""
        return NAN_FALLBACK_SCALE * self.l2_penalty()
