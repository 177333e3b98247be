"""The harness's side of feature datasets: merging splits; the dataset contract under its old import path.

The contract itself (:class:`DatasetSpec`, :class:`FeatureDataset`, :class:`FeatureSplit`,
:class:`DataRequest`) is part of the plugin API, :mod:`fewshot_bench.api.datasets`, and is
re-exported here so the harness's modules keep importing it from where they always did.
"""

from __future__ import annotations

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
    "merge_splits",
]


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
