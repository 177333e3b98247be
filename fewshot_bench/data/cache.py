"""A memory-mapped cache of parsed split files, keyed by the source file's size and mtime.

The first load of a split file parses and validates it, groups its rows by class,
L2-normalises them (when asked) and writes, per source file and variant (``l2`` or
``raw``; ``<split>.l2`` or ``<split>.raw`` for each split of a file holding several):

- ``<file>.<variant>.features.npy``: float32 [R, D], rows grouped by class;
- ``<file>.<variant>.keys.npy``: the rows' keys as UTF-8 bytes, same order;
- ``<file>.<variant>.index.json``: source size and mtime, shapes, class names, offsets,
  a fingerprint (SHA-256 of 64 evenly spaced rows) and the content digest (SHA-256 of
  every row's features and key, in file order: what the data's identity in a run key is made of,
  so a file is hashed once, when it is first read, never per run).

Later loads memory-map the ``.npy`` files, so a warm load is a pure ``mmap``: the
normalised array is cached, and nothing is computed or copied. The features are mapped
copy-on-write (``mmap_mode="c"``): numpy reports them writable, so ``torch.from_numpy``
shares them without a warning or a copy, and an accidental in-place write changes only
the process's private pages, never the cache file.

A cache is used only if its index parses, names the same source size and mtime and the
same format version, its arrays have the recorded shapes and exact file sizes, and the
fingerprint matches; otherwise it is rebuilt (never trusted). The index is written last,
so a crash mid-build leaves no cache that looks complete. All files appear atomically.

Where: ``$FEWSHOT_BENCH_CACHE/<hash of the source path>/`` when that variable is set;
else ``.fewshot-cache/`` beside the source file when it can be written; else
``$XDG_CACHE_HOME/fewshot-bench`` (default ``~/.cache/fewshot-bench``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from fewshot_bench.atomic import replacing
from fewshot_bench.data.base import l2_normalize
from fewshot_bench.data.files import what_is
from fewshot_bench.errors import WriteError

log = logging.getLogger(__name__)

CACHE_ENV = "FEWSHOT_BENCH_CACHE"
FORMAT = 2  # bump when the cached layout or its meaning changes (2: the content digest)
BESIDE = ".fewshot-cache"
_FINGERPRINT_ROWS = 64
_CHUNK_ROWS = 1 << 15


@dataclass
class GroupedRows:
    """What a reader hands the cache: source rows, their class, and per-file facts."""

    features: np.ndarray  # [n, D] float32, file order
    row_class: np.ndarray  # [n] int64 index into class_names
    class_names: list[str]
    keys: Sequence[str]  # file order
    info: dict[str, Any]  # small JSON-able facts recorded in the index (e.g. key type)


@dataclass
class CachedSplit:
    """A loaded split: class-grouped features (memory-mapped) and its index."""

    features: np.ndarray  # [R, D] float32 memmap (copy-on-write)
    keys: Sequence[str]  # a KeyList when cached
    offsets: np.ndarray  # [C + 1] int64
    class_names: list[str]
    info: dict[str, Any]
    status: str  # "hit" or "built"
    directory: Path
    content_digest: str  # SHA-256 of the source rows' features and keys (content_digest())


class KeyList(Sequence[str]):
    """Row keys backed by a memory-mapped bytes array, decoded on access."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = raw

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, (slice, list, np.ndarray, torch.Tensor)):  # several rows: a list of keys
            index = i.cpu().numpy() if isinstance(i, torch.Tensor) else i
            return [b.decode("utf-8") for b in self.raw[index].tolist()]
        return bytes(self.raw[i]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), _CHUNK_ROWS):
            yield from (b.decode("utf-8") for b in self.raw[start : start + _CHUNK_ROWS].tolist())


def cache_root() -> Path:
    """The per-user cache directory: ``$FEWSHOT_BENCH_CACHE`` or ``$XDG_CACHE_HOME/fewshot-bench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fewshot-bench"


def candidate_dirs(source: Path) -> list[Path]:
    """Cache directories for ``source`` in order of preference."""
    tag = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    per_user = cache_root() / f"{tag}-{source.parent.name}"
    if os.environ.get(CACHE_ENV):
        return [per_user]
    return [source.parent / BESIDE, per_user]


def _names(source: Path, variant: str) -> dict[str, str]:
    stem = f"{source.name}.{variant}"  # variant: [<part>.]l2 or [<part>.]raw
    return {"index": f"{stem}.index.json", "features": f"{stem}.features.npy", "keys": f"{stem}.keys.npy"}


def _source_id(source: Path) -> dict[str, int]:
    st = source.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _fingerprint(x: np.ndarray) -> str:
    """SHA-256 of 64 evenly spaced rows: cheap on a memmap, catches a swapped or damaged cache."""
    rows = np.unique(np.linspace(0, x.shape[0] - 1, _FINGERPRINT_ROWS).astype(np.int64))
    return hashlib.sha256(np.ascontiguousarray(x[rows]).tobytes()).hexdigest()


def content_digest(rows: GroupedRows) -> str:
    """SHA-256 (hex) of a split's content: every row's float32 features, then every row's key, in file order.

    The keys name the classes, so this covers the features and the labels; not the file's
    bytes, which change when the same rows are written again (a zip's timestamps).
    """
    h = hashlib.sha256(json.dumps(list(rows.features.shape)).encode())
    for start in range(0, rows.features.shape[0], _CHUNK_ROWS):
        h.update(np.ascontiguousarray(rows.features[start : start + _CHUNK_ROWS], dtype=np.float32).tobytes())
    for key in rows.keys:
        h.update(key.encode("utf-8") + b"\0")
    return h.hexdigest()


def _open_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, mode: str) -> np.ndarray:
    """Memory-map a .npy, checking shape, dtype and exact file size; ValueError if they differ."""
    arr = np.load(path, mmap_mode=mode, allow_pickle=False)
    if arr.shape != shape or arr.dtype != dtype:
        raise ValueError(f"{path.name} holds {arr.shape} {arr.dtype}, the index says {shape} {dtype}")
    if isinstance(arr, np.memmap) and arr.offset + arr.nbytes != path.stat().st_size:
        raise ValueError(f"{path.name} has {path.stat().st_size} bytes, expected {arr.offset + arr.nbytes}")
    return arr


def _try_open(directory: Path, source: Path, variant: str) -> CachedSplit | None:
    """The cached split in ``directory`` if it is complete and fresh; None (with the reason logged) if not."""
    names = _names(source, variant)
    index_path = directory / names["index"]
    if not index_path.exists():
        return None
    try:
        for name in names.values():  # before opening any: a FIFO or device by that name would never end a read
            if not (directory / name).is_file():
                raise ValueError(f"{name} is not a regular file ({what_is(directory / name) or 'missing'})")
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT or index.get("variant") != variant:
            raise ValueError("it was written by another version")
        if index.get("source") != _source_id(source):
            raise ValueError("the source file changed since it was built")
        rows, dim = int(index["rows"]), int(index["dim"])
        offsets = np.asarray(index["offsets"], dtype=np.int64)
        class_names = list(index["class_names"])
        if (
            len(offsets) != len(class_names) + 1
            or offsets[0] != 0
            or offsets[-1] != rows
            or np.any(np.diff(offsets) < 1)
        ):
            raise ValueError("its class offsets are inconsistent")
        features = _open_npy(directory / names["features"], (rows, dim), np.dtype(np.float32), "c")
        keys = _open_npy(directory / names["keys"], (rows,), np.dtype(f"S{index['key_bytes']}"), "r")
        if _fingerprint(features) != index["fingerprint"]:
            raise ValueError("its contents do not match its fingerprint")
        digest = index["content_sha256"]
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError("its content digest is malformed")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("rebuilding the cache of %s: %s", source, exc)
        return None
    return CachedSplit(features, KeyList(keys), offsets, class_names, index.get("info", {}), "hit", directory, digest)


def _build(directory: Path, source: Path, variant: str, rows: GroupedRows, source_id: dict[str, int]) -> None:
    """Write the cache files for ``rows`` into ``directory`` (OSError or WriteError if it is not writable)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = _names(source, variant)
    n, d = rows.features.shape
    order = np.argsort(rows.row_class, kind="stable")
    counts = np.bincount(rows.row_class, minlength=len(rows.class_names))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    encoded = [rows.keys[i].encode("utf-8") for i in order.tolist()]
    key_bytes = max(1, max(len(k) for k in encoded))
    index_path = directory / names["index"]
    # The files are renamed into place as the blocks end, innermost first: the index goes
    # last, so until it is in place no reader takes the new arrays as a cache.
    with (
        replacing(index_path, "cache index") as index_tmp,
        replacing(directory / names["features"], "cached features") as feats_tmp,
        replacing(directory / names["keys"], "cached keys") as keys_tmp,
    ):
        # Gather, normalise and append in bounded chunks with plain writes: writing through a
        # shared memmap would map every page of the new file into this process (1 GB of
        # resident memory for tieredImageNet's train split, on top of the source rows).
        with open(feats_tmp, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                      "shape": (n, d)}
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, n, _CHUNK_ROWS):
                chunk = np.ascontiguousarray(rows.features[order[start : start + _CHUNK_ROWS]], dtype=np.float32)
                if variant.endswith("l2"):  # "l2" or "<part>.l2"
                    chunk = l2_normalize(torch.from_numpy(chunk)).numpy()
                f.write(memoryview(chunk).cast("B"))
        fingerprint = _fingerprint(np.load(feats_tmp, mmap_mode="r"))
        with open(keys_tmp, "wb") as f:
            np.save(f, np.array(encoded, dtype=f"S{key_bytes}"), allow_pickle=False)
        index = {
            "format": FORMAT,
            "variant": variant,
            "source": source_id,
            "source_path": str(source.resolve()),
            "rows": n,
            "dim": d,
            "key_bytes": key_bytes,
            "class_names": rows.class_names,
            "offsets": offsets.tolist(),
            "fingerprint": fingerprint,
            "content_sha256": content_digest(rows),
            "info": rows.info,
        }
        index_tmp.write_text(json.dumps(index))
        index_path.unlink(missing_ok=True)


def load_split(
    source: Path, normalize: bool, read: Callable[[Path], GroupedRows], part: str | None = None
) -> CachedSplit:
    """The split in ``source``: from a fresh cache, or read with ``read`` and cached first.

    ``part`` names the split when ``source`` holds several (a features file: data/bundle.py);
    each part is cached on its own.
    """
    source = Path(source)
    variant = ("l2" if normalize else "raw") if part is None else f"{part}.{'l2' if normalize else 'raw'}"
    dirs = candidate_dirs(source)
    for directory in dirs:
        hit = _try_open(directory, source, variant)
        if hit is not None:
            return hit
    source_id = _source_id(source)  # taken before reading: a file changed meanwhile is re-read next time
    rows = read(source)
    errors = []
    for directory in dirs:
        try:
            _build(directory, source, variant, rows, source_id)
        except (OSError, WriteError) as exc:  # not writable here: try the next place
            errors.append(f"{directory}: {exc}")
            continue
        built = _try_open(directory, source, variant)
        if built is not None:
            built.status = "built"
            return built
    log.warning("could not cache %s (%s); using it uncached", source, "; ".join(errors))
    return _uncached(rows, normalize)


def _uncached(rows: GroupedRows, normalize: bool) -> CachedSplit:
    """The grouped split held in memory, for when no cache directory can be written."""
    order = np.argsort(rows.row_class, kind="stable")
    counts = np.bincount(rows.row_class, minlength=len(rows.class_names))
    x = torch.from_numpy(np.ascontiguousarray(rows.features[order]))
    x = l2_normalize(x) if normalize else x
    keys = [rows.keys[i] for i in order.tolist()]
    return CachedSplit(
        x.numpy(),
        keys,
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        rows.class_names,
        rows.info,
        "uncached",
        Path(),
        content_digest(rows),
    )
