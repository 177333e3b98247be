"""Datasets ``mini`` and ``tiered`` (the LEO authors' embeddings) and ``features`` (a directory of split files).

Layouts under the data root (``--data-dir`` or ``$FEWSHOT_BENCH_DATA``):

- ``mini``/``tiered``: ``<root>/<miniImageNet|tieredImageNet>/<crop>/<split>_embeddings.{npz,pkl}``,
  also found under ``<root>/embeddings/...`` (where ``fewshot-bench data download leo``
  unpacks the authors' archive). Features are 640-d; keys need a numeric first field.
- ``features``: ``<root>/<split>_embeddings.{npz,pkl}`` directly; any dimension; the first
  field of a key may be any text without ``-`` (exports need not invent numbers). Or
  ``--data-dir FILE`` naming one features file that holds every split (data/bundle.py).

When both suffixes exist for a split, ``.npz`` is read (it needs no unpickling). Classes
come from the keys of each file, sorted by name; splits must not share classes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fewshot_bench.api.hooks import RegisterDataset, hookimpl
from fewshot_bench.data import bundle, cache
from fewshot_bench.data.base import (
    SPLITS,
    DataRequest,
    DatasetSpec,
    FeatureDataset,
    FeatureSplit,
    check_splits_together,
)
from fewshot_bench.data.files import directory_problem, open_regular
from fewshot_bench.data.leo import LEO_FEATURE_DIM, SUFFIXES, Embeddings, read_embeddings
from fewshot_bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CROPS = ("center", "multiview")
DOWNLOAD_HINT = "fewshot-bench data download leo --data-dir DIR"
# What to do when one's own features are missing: the LEO download would not help.
FEATURES_HINT = (
    "export them with `fewshot-bench embed --checkpoint CKPT --out DIR` or "
    "fewshot_bench.data.leo.write_embeddings (docs/data.md)"
)


def _hint(dataset: str) -> str:
    """How to get the files of ``dataset``: the LEO download for mini/tiered, an export for features."""
    return f"get the LEO embeddings with `{DOWNLOAD_HINT}`" if dataset in LEO else FEATURES_HINT


@dataclass(frozen=True)
class LeoLayout:
    """Where one LEO dataset lives under the root, which crops it has, and its published size."""

    folder: str
    crops: tuple[str, ...]
    published: dict[str, tuple[int, int]]  # split -> (classes, rows), REFERENCE.md §3


LEO = {
    "mini": LeoLayout("miniImageNet", ("center", "multiview"),
                      {"train": (64, 38_400), "val": (16, 9_600), "test": (20, 12_000)}),
    "tiered": LeoLayout("tieredImageNet", ("center",),
                        {"train": (351, 448_695), "val": (97, 124_261), "test": (160, 206_209)}),
}


def split_file(directory: Path, split: str) -> Path | None:
    """The file holding ``split`` in ``directory`` (``.npz`` preferred), or None.

    A directory (or other non-file) by that name is returned too: reading it is an error
    saying what it is, never "missing".
    """
    for suffix in SUFFIXES:
        path = directory / f"{split}_embeddings{suffix}"
        if path.is_file():
            return path
    for suffix in SUFFIXES:
        path = directory / f"{split}_embeddings{suffix}"
        if path.exists():  # reading it says what it is (a directory, ...)
            return path
    return None


def leo_directory(root: Path, dataset: str, crop: str) -> Path:
    """The crop directory of a LEO dataset: ``root/<folder>/<crop>`` or ``root/embeddings/<folder>/<crop>``."""
    folder = LEO[dataset].folder
    candidates = [root / folder / crop, root / "embeddings" / folder / crop]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def published_note(dataset: str, split: str, classes: int, rows: int) -> str:
    """An empty string when a split has the published size, else a short note saying how it differs."""
    if dataset not in LEO:
        return ""
    want = LEO[dataset].published[split]
    if (classes, rows) == want:
        return ""
    return f"published: {want[0]} classes, {want[1]:,} rows"


def _require_root(request: DataRequest, dataset: str, example: str) -> Path:
    if request.data_dir is None:
        raise DataError(
            f"dataset {dataset!r} needs embedding files: pass --data-dir DIR or set FEWSHOT_BENCH_DATA "
            f"(expected DIR/{example}); {_hint(dataset)}"
        )
    root = Path(request.data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data directory {root} {directory_problem(root)} (from --data-dir or FEWSHOT_BENCH_DATA); "
            f"expected {root / example}; {_hint(dataset)}"
        )
    return root


def _missing(directory: Path, split: str, dataset: str = "mini") -> DataError:
    return DataError(
        f"missing {directory / f'{split}_embeddings.pkl'} (or .npz); point --data-dir or "
        f"FEWSHOT_BENCH_DATA at the folder holding it, or {_hint(dataset)}"
    )


def _grouped(e: Embeddings) -> cache.GroupedRows:
    """A validated split as the cache takes it."""
    return cache.GroupedRows(e.embeddings, e.row_class, e.class_names, e.keys, {"key_type": e.key_type})


def _read_grouped(path: Path, dim: int | None, numeric_prefix: bool) -> cache.GroupedRows:
    """Read and validate one file for the cache (classes from its keys)."""
    return _grouped(read_embeddings(path, dim=dim, numeric_prefix=numeric_prefix))


def _read_file_split(path: Path, split: str) -> cache.GroupedRows:
    """Read and validate one split of a features file for the cache."""
    return _grouped(bundle.read_split(path, split))


def _feature_split(cached: cache.CachedSplit, split: str, dataset: str) -> FeatureSplit:
    """A cached split as a class-grouped :class:`FeatureSplit`."""
    return FeatureSplit(
        name=split,
        features=torch.from_numpy(cached.features),  # shares the copy-on-write memmap: no copy
        offsets=cached.offsets,
        class_names=cached.class_names,
        dataset=dataset,
        keys=cached.keys,
    )


def load_split_file(
    path: Path,
    split: str,
    dataset: str,
    *,
    dim: int | None,
    numeric_prefix: bool,
    normalize: bool = True,
) -> tuple[FeatureSplit, cache.CachedSplit]:
    """One split file as a class-grouped :class:`FeatureSplit` (through the cache)."""
    cached = cache.load_split(path, normalize, partial(_read_grouped, dim=dim, numeric_prefix=numeric_prefix))
    return _feature_split(cached, split, dataset), cached


def shared_classes(a: list[str], b: list[str]) -> list[str]:
    """The class names two splits share, sorted (few-shot splits must share none)."""
    return sorted(set(a) & set(b))


def file_format(dataset: str) -> dict[str, Any]:
    """How ``dataset``'s split files are read: ``mini``/``tiered`` are 640-d with numeric key prefixes,
    ``features`` any."""
    if dataset in LEO:
        return {"dim": LEO_FEATURE_DIM, "numeric_prefix": True}
    return {"dim": None, "numeric_prefix": False}


def split_paths(directory: Path, dataset: str) -> dict[str, Path]:
    """The file of each split in ``directory`` (a one-line error naming the first that is missing)."""
    paths = {}
    for split in SPLITS:
        path = split_file(directory, split)
        if path is None:
            raise _missing(directory, split, dataset)
        paths[split] = path
    return paths


def _load_dir(
    directory: Path, dataset: str, request: DataRequest, dim: int | None, numeric_prefix: bool
) -> FeatureDataset:
    """All three splits of one directory, checked for class overlap."""
    paths = split_paths(directory, dataset)
    splits, status = {}, {}
    for split, path in paths.items():
        splits[split], cached = load_split_file(
            path, split, dataset, dim=dim, numeric_prefix=numeric_prefix, normalize=request.normalize
        )
        status[split] = cached.status
        log.debug("%s %s: %s (%s cache in %s)", dataset, split, path, cached.status, cached.directory)
    check_splits_together({k: v.class_names for k, v in splits.items()}, {k: v.feature_dim for k, v in splits.items()},
                          str(directory), {k: str(v) for k, v in paths.items()})
    info = {"directory": str(directory), "files": {k: str(v) for k, v in paths.items()}, "cache": status}
    return FeatureDataset(dataset, splits, info=info)


def leo_crop_directory(dataset: str, request: DataRequest) -> Path:
    """The folder of ``mini``'s or ``tiered``'s split files for the request's root and crop (checked)."""
    layout = LEO[dataset]
    crop = request.crop or "center"
    if crop not in CROPS:
        raise ConfigError(f"unknown --crop {crop!r}; choose one of {', '.join(CROPS)}")
    if crop not in layout.crops:
        raise ConfigError(f"{layout.folder} has only {', '.join(layout.crops)} embeddings; drop --crop {crop}")
    root = _require_root(request, dataset, f"{layout.folder}/{crop}/train_embeddings.pkl")
    return leo_directory(root, dataset, crop)


def load_leo(dataset: str, request: DataRequest) -> FeatureDataset:
    """Load ``mini`` or ``tiered`` for the request's root and crop."""
    ds = _load_dir(leo_crop_directory(dataset, request), dataset, request, **file_format(dataset))
    ds.info["crop"] = request.crop or "center"
    return ds


def features_directory(request: DataRequest) -> Path:
    """Where the ``features`` dataset is: the data directory of its split files (checked), or one features file."""
    if (request.crop or "center") != "center":
        raise ConfigError(f"dataset 'features' has no crops; drop --crop {request.crop}")
    if request.data_dir is not None and bundle.is_features_file(Path(request.data_dir).expanduser()):
        path = Path(request.data_dir).expanduser()
        open_regular(path).close()  # missing, a FIFO, a device: one line saying so, before the cache stats it
        return path
    return _require_root(request, "features", "train_embeddings.npz")


def _file_splits(path: Path, request: DataRequest) -> dict[str, cache.CachedSplit]:
    """Each split of a features file, through the cache (one entry per split)."""
    return {split: cache.load_split(path, request.normalize, partial(_read_file_split, split=split), part=split)
            for split in SPLITS}


def load_features(request: DataRequest) -> FeatureDataset:
    """Load the ``features`` dataset: split files directly in the data directory, or one features file."""
    source = features_directory(request)
    if not bundle.is_features_file(source):
        return _load_dir(source, "features", request, **file_format("features"))
    cached = _file_splits(source, request)
    splits = {split: _feature_split(c, split, "features") for split, c in cached.items()}
    check_splits_together({k: v.class_names for k, v in splits.items()}, {k: v.feature_dim for k, v in splits.items()},
                          str(source), {split: f"{source}[{split}]" for split in SPLITS})
    info = {"file": str(source), "cache": {split: c.status for split, c in cached.items()}}
    return FeatureDataset("features", splits, info=info)


def identify_features(request: DataRequest) -> dict[str, str]:
    """The content digest of each split of the ``features`` dataset, from its folder's files or its one file."""
    source = features_directory(request)
    if not bundle.is_features_file(source):
        return identify_files(features_directory, "features", request)
    return {split: c.content_digest for split, c in _file_splits(source, request).items()
            if request.splits is None or split in request.splits}


def identify_files(directory: Callable[[DataRequest], Path], dataset: str, request: DataRequest) -> dict[str, str]:
    """The content digest of each split's file, from its parse cache (the file is read and hashed once, then mapped)."""
    reader = partial(_read_grouped, **file_format(dataset))
    return {split: cache.load_split(path, request.normalize, reader).content_digest
            for split, path in split_paths(directory(request), dataset).items()
            if request.splits is None or split in request.splits}


@hookimpl
def fewshot_bench_register_datasets(register: RegisterDataset) -> None:
    """Register ``mini``, ``tiered`` and ``features``."""
    register(
        DatasetSpec(
            name="mini",
            load=partial(load_leo, "mini"),
            identify=partial(identify_files, partial(leo_crop_directory, "mini"), "mini"),
            description="LEO's miniImageNet WRN-28-10 embeddings (640-d; --crop center|multiview; --data-dir)",
            aliases=("miniImageNet", "miniimagenet"),
            needs_files=True,
            crops=LEO["mini"].crops,
        )
    )
    register(
        DatasetSpec(
            name="tiered",
            load=partial(load_leo, "tiered"),
            identify=partial(identify_files, partial(leo_crop_directory, "tiered"), "tiered"),
            description="LEO's tieredImageNet WRN-28-10 embeddings (640-d, center crop; --data-dir)",
            aliases=("tieredImageNet",),
            needs_files=True,
        )
    )
    register(
        DatasetSpec(
            name="features",
            load=load_features,
            identify=identify_features,
            description="your own {train,val,test}_embeddings.{npz,pkl} in --data-dir, or one features file "
            "(--data-dir FILE.npz|.pkl|.pt; any dimension)",
            needs_files=True,
        )
    )
