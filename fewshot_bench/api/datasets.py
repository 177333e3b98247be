"""The dataset contract: what a dataset plugin registers (:class:`DatasetSpec`) and what its loader returns
(:class:`FeatureDataset` of :class:`FeatureSplit` s, or of generated :class:`~fewshot_bench.api.EpisodeSource` s).

Classification: each split is a :class:`FeatureSplit`, rows of features sorted by class
(:meth:`FeatureSplit.from_labelled` sorts them), which the harness draws N-way K-shot
episodes from. Regression (``kind="regression"``): each split is an episode source that
generates its problems (see :mod:`fewshot_bench.api.episodes`), one function per episode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fewshot_bench.api.episodes import EpisodeSampler, EpisodeSource
from fewshot_bench.errors import DataError

SPLITS = ("train", "val", "test")
# Leading feature columns of every row that enter a split's content digest.
DIGEST_COLUMNS = 16


@dataclass
class FeatureSplit:
    """One split: rows sorted by class, so class ``c`` is ``features[offsets[c]:offsets[c + 1]]``."""

    name: str
    features: Tensor  # [R, D] float32
    offsets: np.ndarray  # [C + 1] int64
    class_names: Sequence[str]
    dataset: str = ""
    keys: Sequence[str] | None = None  # per-row provenance (image file), when known

    @property
    def counts(self) -> np.ndarray:
        """Rows per class, [C]."""
        return np.diff(self.offsets)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.class_names)

    @property
    def feature_dim(self) -> int:
        """Feature dimension D."""
        return int(self.features.shape[1])

    @property
    def labels(self) -> np.ndarray:
        """Class id of every row, [R]."""
        return np.repeat(np.arange(self.num_classes), self.counts)

    @cached_property
    def content_digest(self) -> int:
        """A 64-bit digest of the whole split: the class sizes and the first features of every row.

        It salts the evaluation's query order (:func:`fewshot_bench.api.noise.query_order`):
        a learner sees only its episodes' rows, never the whole split, so it cannot recompute
        that order from the episode ids it is given. A few columns of every row suffice and
        cost milliseconds even for tieredImageNet's test split.
        """
        h = hashlib.blake2b(np.ascontiguousarray(self.offsets, dtype=np.int64).tobytes(), digest_size=8)
        h.update(np.ascontiguousarray(self.features[:, :DIGEST_COLUMNS].detach().cpu().numpy()).tobytes())
        return int.from_bytes(h.digest(), "little")

    def sampler(self, n_way: int, k_shot: int, n_query: int, seed: int, stream: str | None = None) -> EpisodeSampler:
        """The seeded N-way K-shot sampler of this split (every split is an episode source)."""
        return EpisodeSampler(self, n_way, k_shot, n_query, seed, stream=stream)

    def default_query(self, k_shot: int) -> int:
        """Queries per class at evaluation: all remaining rows (min rows per class - K), the paper's protocol."""
        return int(self.counts.min()) - k_shot

    @classmethod
    def from_labelled(
        cls,
        name: str,
        features: np.ndarray | Tensor,
        labels: np.ndarray,
        class_names: Sequence[str],
        dataset: str = "",
        normalize: bool = True,
        keys: Sequence[str] | None = None,
    ) -> FeatureSplit:
        """Build a split from unsorted rows and integer labels (rows are regrouped by class)."""
        labels = np.asarray(labels, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=len(class_names))
        x = torch.as_tensor(np.asarray(features)[order] if not isinstance(features, Tensor)
                            else features[torch.from_numpy(order)])
        x = x.to(torch.float32).contiguous()
        if normalize:
            x = l2_normalize(x)
        return cls(
            name=name,
            features=x,
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            class_names=list(class_names),
            dataset=dataset,
            keys=None if keys is None else [keys[i] for i in order],
        )


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale each row to unit L2 norm (rows of zeros stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


@dataclass
class FeatureDataset:
    """A named feature dataset: its splits (train/val/test) and the task kind it poses."""

    name: str
    # "train", "val" and "test": class-sorted FeatureSplits (classification) or generated EpisodeSources (regression).
    splits: Mapping[str, FeatureSplit | EpisodeSource]
    kind: str = "classification"
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> FeatureSplit | EpisodeSource:
        """The split called ``name``, or a clear error listing those that exist."""
        try:
            return self.splits[name]
        except KeyError:
            raise DataError(f"dataset {self.name!r} has no split {name!r} (it has {', '.join(self.splits)})") from None

    @property
    def feature_dim(self) -> int:
        """Feature dimension D shared by all splits."""
        return next(iter(self.splits.values())).feature_dim

    def to(self, device: torch.device | str) -> FeatureDataset:
        """This dataset with every class-sorted split's features on ``device`` (generated splits draw on the fly)."""
        splits = {
            name: replace(s, features=s.features.to(device)) if isinstance(s, FeatureSplit) else s
            for name, s in self.splits.items()
        }
        return replace(self, splits=splits)


@dataclass(frozen=True)
class DataRequest:
    """What a run asks a dataset's ``load`` and ``identify`` for: where the data is, which crop, which splits."""

    # --data-dir, else $FEWSHOT_BENCH_DATA, else None: a dataset that needs files refuses None with a DataError.
    data_dir: Path | None = None
    # One of DatasetSpec.crops (--crop); "center" unless the user names another.
    crop: str = "center"
    # Whether to L2-normalise the rows (the harness always asks True; FeatureSplit.from_labelled honours it).
    normalize: bool = True
    # Free-form settings for a dataset's own use (the harness passes none).
    options: Mapping[str, str] = field(default_factory=dict)
    # The splits wanted (None: all). A search's trials never read the test split, not even to identify it.
    splits: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its name, aliases, a one-line description and its loader.

    ``load(request)`` returns a :class:`FeatureDataset` with the splits ``train``, ``val`` and
    ``test`` (those in ``request.splits`` suffice) of the task kind ``kind``; it raises a
    one-line :class:`~fewshot_bench.errors.DataError` for missing or malformed data.
    """

    # Unique among installed datasets (with the aliases, compared case-insensitively): what --dataset names.
    name: str
    load: Callable[[DataRequest], FeatureDataset]
    # One line for `fewshot-bench datasets`.
    description: str = ""
    # Other names --dataset accepts (e.g. "miniImageNet" for "mini").
    aliases: tuple[str, ...] = ()
    # "classification" (FeatureSplits) or "regression" (generated EpisodeSources): which learners can run on it.
    kind: str = "classification"
    # Informational: True when load reads files under request.data_dir.
    needs_files: bool = False
    # The dataset's usual shot when the user names none (None: the CLI's default, 1).
    default_shot: int | None = None
    # The feature crops it offers (--crop); a run names one of them, so a typo never makes a new run.
    crops: tuple[str, ...] = ("center",)
    # The content digest of each split for a request, without loading it (data/identity.py): what
    # makes the data part of a run's identity cheaply. None: the loaded splits' contents are hashed.
    identify: Callable[[DataRequest], Mapping[str, str]] | None = None
