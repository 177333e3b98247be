"""The feature-dataset interface: splits of class-sorted, L2-normalised feature rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fewshot_bench.episodes import EpisodeSampler
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
    class_names: list[str]
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


def check_splits_together(
    classes: Mapping[str, Sequence[str]], dims: Mapping[str, int], where: str, names: Mapping[str, str]
) -> None:
    """The splits of one dataset (``classes`` and feature ``dims`` per split) have one dimension and share no
    class; ``where`` names the data, ``names`` where each split was read (a one-line DataError otherwise)."""
    if len(set(dims.values())) > 1:
        raise DataError(f"the splits in {where} have different dimensions {sorted(set(dims.values()))}; "
                        "export them together")
    order = [s for s in SPLITS if s in classes]
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            shared = sorted(set(classes[a]) & set(classes[b]))
            if shared:
                raise DataError(
                    f"class {shared[0]!r} is in both {names[a]} and {names[b]} ({len(shared)} shared); "
                    "few-shot splits must have disjoint classes"
                )


def merge_splits(name: str, *splits: FeatureSplit) -> FeatureSplit:
    """One split holding the classes of all given splits (e.g. train + val for stage 3)."""
    if not all(isinstance(s, FeatureSplit) for s in splits):
        raise DataError(f"{name}: only class-sorted feature splits can be merged; "
                        "this dataset generates its episodes (drop --train-on-val)")
    offsets = [np.zeros(1, dtype=np.int64)]
    total = 0
    for s in splits:
        offsets.append(s.offsets[1:] + total)
        total += int(s.offsets[-1])
    keys = None
    if all(s.keys is not None for s in splits):
        keys = [k for s in splits for k in s.keys]
    return FeatureSplit(
        name=name,
        features=torch.cat([s.features for s in splits]),
        offsets=np.concatenate(offsets),
        class_names=[f"{s.name}/{c}" for s in splits for c in s.class_names],
        dataset=splits[0].dataset,
        keys=keys,
    )


@dataclass
class FeatureDataset:
    """A named feature dataset: its splits (train/val/test) and the task kind it poses."""

    name: str
    splits: Mapping[str, FeatureSplit]
    kind: str = "classification"
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> FeatureSplit:
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
    """What the user asked for when loading a dataset (directory, crop, normalisation)."""

    data_dir: Path | None = None
    crop: str = "center"
    normalize: bool = True
    options: Mapping[str, str] = field(default_factory=dict)
    # The splits wanted (None: all). A search's trials never read the test split, not even to identify it.
    splits: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its name, aliases, a one-line description and its loader."""

    name: str
    load: Callable[[DataRequest], FeatureDataset]
    description: str = ""
    aliases: tuple[str, ...] = ()
    kind: str = "classification"
    needs_files: bool = False
    # The dataset's usual shot when the user names none (None: the CLI's default, 1).
    default_shot: int | None = None
    # The feature crops it offers (--crop); a run names one of them, so a typo never makes a new run.
    crops: tuple[str, ...] = ("center",)
    # The content digest of each split for a request, without loading it (data/identity.py): what
    # makes the data part of a run's identity cheaply. None: the loaded splits' contents are hashed.
    identify: Callable[[DataRequest], Mapping[str, str]] | None = None
