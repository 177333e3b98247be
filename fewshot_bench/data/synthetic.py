"""The embedded default dataset: deterministic 640-d features with a class hierarchy.

The generator (a fixed seed: every machine gets the same numbers up to float rounding of
about 1e-7, as ``torch.randn`` and the products take CPU-specific kernels; see
docs/architecture.md, "What depends on the CPU") draws, in this order:

1. 10 super-classes: centres ``m_s ~ N(0, I_32)`` in a 32-d latent space;
2. 100 classes, 10 per super-class: ``mu_c = m_s + 0.8 * N(0, I_32)``; classes are dealt
   to the splits round-robin within each super-class, so train/val/test have 64/16/20
   disjoint classes that share super-classes (like miniImageNet);
3. 600 rows per class: a latent ``h = mu_c + 2.0 * N(0, I_32)``, a class-independent
   nuisance ("style") factor ``t ~ N(0, I_16)``, and the feature
   ``x = relu(A h + 2.0 * B t + 0.5 * eps + 0.2)`` with fixed random mixing matrices
   ``A`` [640, 32], ``B`` [640, 16] and isotropic noise ``eps ~ N(0, I_640)``.

The features are non-negative and sparse like post-ReLU CNN embeddings. The nuisance
factor is large and shared by all classes, so a fixed metric (nearest centroid) is misled
by it while a meta-learner can learn to discount it: there is room to meta-learn.
Nearest centroid scores 48.05 ± 0.04% (5-way 1-shot, 2,000 test episodes, seeds 0-2)
and LEO about 64%: there is a clear gap for meta-learning to show (docs/learners.md).
"""

from __future__ import annotations

import numpy as np
import torch

from fewshot_bench.data.base import DataRequest, FeatureDataset, FeatureSplit, l2_normalize
from fewshot_bench.data.identity import generated_digest

SEED = 20190506  # ICLR 2019
FEATURE_DIM = 640
LATENT_DIM = 32
STYLE_DIM = 16
SUPER_CLASSES = 10
CLASSES_PER_SUPER = 10
ROWS_PER_CLASS = 600
SPLIT_SIZES = {"train": 64, "val": 16, "test": 20}


def split_assignment() -> dict[str, list[int]]:
    """Class ids of each split: dealt round-robin within super-classes (64/16/20)."""
    order = [s * CLASSES_PER_SUPER + j for j in range(CLASSES_PER_SUPER) for s in range(SUPER_CLASSES)]
    out, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        out[name] = sorted(order[start : start + size])
        start += size
    return out


def generate(rows_per_class: int = ROWS_PER_CLASS, normalize: bool = True) -> FeatureDataset:
    """Generate the synthetic dataset (about a second on one CPU core)."""
    g = torch.Generator().manual_seed(SEED)
    n_classes = SUPER_CLASSES * CLASSES_PER_SUPER
    supers = torch.randn(SUPER_CLASSES, LATENT_DIM, generator=g)
    super_of = torch.arange(n_classes) // CLASSES_PER_SUPER
    centres = supers[super_of] + 0.8 * torch.randn(n_classes, LATENT_DIM, generator=g)
    mix = torch.randn(FEATURE_DIM, LATENT_DIM, generator=g) / LATENT_DIM**0.5
    style = torch.randn(FEATURE_DIM, STYLE_DIM, generator=g) / STYLE_DIM**0.5

    feats = torch.empty(n_classes, rows_per_class, FEATURE_DIM)
    for c in range(n_classes):  # class by class keeps the draw order independent of sizes
        h = centres[c] + 2.0 * torch.randn(rows_per_class, LATENT_DIM, generator=g)
        t = torch.randn(rows_per_class, STYLE_DIM, generator=g)
        eps = torch.randn(rows_per_class, FEATURE_DIM, generator=g)
        feats[c] = torch.relu(h @ mix.T + 2.0 * (t @ style.T) + 0.5 * eps + 0.2)

    splits = {}
    for name, ids in split_assignment().items():
        x = feats[ids].reshape(-1, FEATURE_DIM)
        splits[name] = FeatureSplit(
            name=name,
            features=l2_normalize(x) if normalize else x.contiguous(),
            offsets=np.arange(len(ids) + 1, dtype=np.int64) * rows_per_class,
            class_names=[f"s{c // CLASSES_PER_SUPER:02d}/c{c:03d}" for c in ids],
            dataset="synthetic",
        )
    return FeatureDataset("synthetic", splits, info={"generator_seed": SEED})


def load(request: DataRequest) -> FeatureDataset:
    """Loader for the registry: the request's directory and crop are ignored."""
    return generate(normalize=request.normalize)


# The generator's version: bump it when generate() would give other features (runs on the old ones are not reused).
GENERATOR = 1


def identify(request: DataRequest) -> dict[str, str]:
    """Each split's digest: of what generates it (the features follow from it, up to each CPU's float rounding)."""
    definition = {"generator": GENERATOR, "seed": SEED, "rows_per_class": ROWS_PER_CLASS,
                  "normalize": request.normalize}
    return {split: generated_digest("synthetic", split, **definition) for split in SPLIT_SIZES}
