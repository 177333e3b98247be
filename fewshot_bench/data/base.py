"""The harness's side of feature datasets: merging splits; the dataset contract under its old import path.

The contract itself (:class:`DatasetSpec`, :class:`FeatureDataset`, :class:`FeatureSplit`,
:class:`DataRequest`) is part of the plugin API, :mod:`fewshot_bench.api.datasets`, and is
re-exported here so the harness's modules keep importing it from where they always did.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from fewshot_bench.api.datasets import (
    DIGEST_COLUMNS,
    SPLITS,
    DataRequest,
    DatasetSpec,
    FeatureDataset,
    FeatureSplit,
    l2_normalize,
)
from fewshot_bench.errors import DataError

__all__ = [
    "DIGEST_COLUMNS",
    "SPLITS",
    "DataError",
    "DataRequest",
    "DatasetSpec",
    "FeatureDataset",
    "FeatureSplit",
    "l2_normalize",
    "check_splits_together",
    "merge_splits",
]


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
