"""What data a run read, as content digests: one per split, combined into the dataset's data id.

A run's identity (its run key) covers the content of every split of its dataset (a superset
of those it reads, so that every learner's runs on one dataset share one id), so the same
data in another folder reuses a run and different data never does. A split read from a
file is identified by the SHA-256 of its rows' features and keys (the keys name the
classes), computed when the file is first read and kept in its parse cache's index
(:mod:`fewshot_bench.data.cache`: beside the file, trusted only while the file's size and
modification time are those recorded), so a 1 GB tieredImageNet file is hashed once, not
per run. A generated split (the synthetic default, sines-lines) is identified by what
generates it; any other split by the bytes of its loaded features, class sizes and names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np


def generated_digest(dataset: str, split: str, **definition: object) -> str:
    """The digest of a generated split: of its dataset, split and everything that defines the generator."""
    blob = json.dumps({"dataset": dataset, "split": split, **definition}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def loaded_digest(split: object) -> str:
    """The digest of a loaded split: features, class sizes and names of a class-sorted split; else what generates it."""
    features = getattr(split, "features", None)
    offsets = getattr(split, "offsets", None)
    if features is None or offsets is None:  # a generated family: its class and name (it reads no data)
        content_id = getattr(split, "content_id", None)
        return content_id or generated_digest(getattr(split, "dataset", ""), str(getattr(split, "name", "")),
                                              generator=f"{type(split).__module__}.{type(split).__qualname__}")
    h = hashlib.sha256(np.ascontiguousarray(offsets, dtype=np.int64).tobytes())
    h.update(json.dumps(list(split.class_names)).encode())
    h.update(features.detach().cpu().contiguous().numpy())  # hashed through the buffer: no copy of the rows
    return h.hexdigest()


def data_id(digests: Mapping[str, str]) -> str:
    """The data id of a dataset: a hash of its splits' digests (24 hex digits)."""
    return hashlib.sha256(json.dumps(dict(digests), sort_keys=True).encode()).hexdigest()[:24]
