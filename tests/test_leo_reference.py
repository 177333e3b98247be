"""The optimised LEO path against a plain reference: the same meta-gradients on a fixed batch.

The plugin's LEO is fast by construction: closed-form inner gradients, the relation
network's first layer split in halves and its last layer applied after the mean over
pairs, one latent copy held when nothing is sampled. ``reference_meta_loss`` below is the
textbook reading (REFERENCE.md section 1): explicit concatenated pairs, all K latent copies
held, inner gradients by ``torch.autograd.grad(create_graph=True)``. Both draw the same
random numbers in the same order from a ``Noise`` keyed alike, so they must agree to float
tolerance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fewshot_bench_leo.model import STDDEV_FLOOR
from helpers import tiny_batch
from test_leo import tiny_learner

from fewshot_bench.api import Noise


def dropout(leo, x):
    """Reference dropout: the mask of the noise's next dropout draw, applied with where (one draw per call)."""
    if not leo.training or leo.config.dropout_rate == 0.0:
        return x
    rate = leo.config.dropout_rate
    kept = leo.noise.dropout(torch.ones_like(x), rate) != 0
    return torch.where(kept, x / (1.0 - rate), torch.zeros_like(x))


def floored_stddev(raw, offset):
    return torch.clamp(torch.exp(raw) - (1.0 - offset), min=STDDEV_FLOOR)


def support_loss(leo, x, labels, weights):
    """Eq. 5: cross-entropy summed over the support examples, logits from the mean of the C weight copies."""
    logits = dropout(leo, x) @ weights.mean(dim=2).transpose(1, 2)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")


def reference_adapt(leo, batch):
    """Encode with explicit pairs, K latent copies, autograd inner loops: (z_init, z, kl, copies of the weights)."""
    cfg = leo.config
    b, n, k, d = batch.support.shape
    z_dim = cfg.latent_dim
    copies = k if cfg.latent_copies == "per-example" else 1
    sampling = leo.training and cfg.stochastic
    x = batch.support.reshape(b, n * k, d)
    labels = batch.support_labels.reshape(b, n * k)

    codes = dropout(leo, batch.support) @ leo.encoder_weight  # [B, N, K, Z]
    h = codes.reshape(b, n * k, z_dim)
    left = h.unsqueeze(2).expand(b, n * k, n * k, z_dim)
    right = h.unsqueeze(1).expand(b, n * k, n * k, z_dim)
    out = torch.cat([left, right], dim=-1)
    w1, w2, w3 = leo.relation_weights
    out = torch.relu(torch.relu(out @ w1) @ w2) @ w3
    params = out.mean(dim=2).reshape(b, n, k, 2 * z_dim).mean(dim=2)  # per class
    params = params.unsqueeze(2).expand(b, n, copies, 2 * z_dim)
    mean, raw = params[..., :z_dim], params[..., z_dim:]
    kl = torch.zeros((), dtype=x.dtype)
    z = mean
    if sampling:
        std = floored_stddev(raw, 0.0)
        noise = leo.noise.randn_like(mean)
        z = mean + std * noise
        # log q(z) - log N(z; 0, I) at the sample, with (z - mean) / std written as the noise
        # it is: recomputing it cancels catastrophically when the stddev is tiny.
        log_q = -0.5 * noise**2 - torch.log(std)
        log_prior = -0.5 * z**2
        kl = (log_q - log_prior).mean()
    z_init = z

    def decode(z):
        out = z @ leo.decoder_weight
        w_mean, w_raw = out[..., :d], out[..., d:]
        if not sampling:
            return w_mean
        return w_mean + floored_stddev(w_raw, leo.weight_stddev_offset) * leo.noise.randn_like(w_mean)

    for _ in range(cfg.latent_steps):
        (grad,) = torch.autograd.grad(support_loss(leo, x, labels, decode(z)), z, create_graph=True)
        z = z - leo.inner_lr * grad
    weights = decode(z)
    for _ in range(cfg.finetune_steps):
        (grad,) = torch.autograd.grad(support_loss(leo, x, labels, weights), weights, create_graph=True)
        weights = weights - leo.finetune_lr * grad
    return z_init, z, kl, weights


def reference_meta_loss(leo, batch):
    """Eq. 6 + 7 under the reference code's reductions, from ``reference_adapt``."""
    cfg = leo.config
    z_init, z, kl, weights = reference_adapt(leo, batch)
    logits = dropout(leo, batch.query) @ weights.mean(dim=2).transpose(-1, -2)
    query_loss = F.cross_entropy(logits.reshape(-1, batch.n_way), batch.query_labels.reshape(-1))
    encoder_penalty = (z.detach() - z_init).pow(2).mean()
    networks = [leo.encoder_weight, *leo.relation_weights, leo.decoder_weight]
    l2 = sum(0.5 * (w * w).sum() for w in networks)
    rows = leo.decoder_weight
    unit = rows / rows.norm(dim=1, keepdim=True)
    ortho = (unit @ unit.T - torch.eye(rows.shape[0], dtype=rows.dtype)).pow(2).mean()
    return (
        query_loss + cfg.kl_weight * kl + cfg.encoder_penalty_weight * encoder_penalty
        + cfg.l2_penalty_weight * l2 + cfg.orthogonality_penalty_weight * ortho
    )


VARIANTS = {
    "stochastic, per-example copies": ("leo", {}),
    "deterministic (one copy held)": ("leo-deterministic", {}),
    "per-class copies": ("leo", {"latent_copies": "per-class"}),
}


@pytest.mark.equivalence
@pytest.mark.parametrize("k_shot", [1, 3])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_optimised_meta_gradients_equal_the_plain_reference(variant, k_shot):
    name, changes = VARIANTS[variant]
    leo = tiny_learner(name, k=k_shot, **changes).train()
    batch = tiny_batch(k=k_shot, q=3)
    params = [p for p in leo.parameters() if p.requires_grad]
    leo.noise = Noise(7)
    fast = leo.meta_loss(batch).loss
    fast_grads = torch.autograd.grad(fast, params)
    leo.noise = Noise(7)
    plain = reference_meta_loss(leo, batch)
    plain_grads = torch.autograd.grad(plain, params)
    torch.testing.assert_close(fast, plain)
    for got, want in zip(fast_grads, plain_grads):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


@pytest.mark.equivalence
@pytest.mark.parametrize("k_shot", [1, 4])
def test_evaluation_with_one_held_copy_equals_k_explicit_copies(k_shot):
    leo = tiny_learner(k=k_shot).eval()
    batch = tiny_batch(k=k_shot, q=3)
    weights = reference_adapt(leo, batch)[3].mean(dim=2)
    expected = batch.query @ weights.transpose(-1, -2)
    torch.testing.assert_close(leo.predict(batch.inputs()), expected)
