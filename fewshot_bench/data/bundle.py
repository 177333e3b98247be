"""One file holding every split: read, validated, and written out as a ``features`` folder.

A *features file* (``.npz``, ``.pkl`` or ``.pt``) holds, for each split ``train``, ``val`` and
``test``, the features as an array named after the split (``[n, D]``; also accepted:
``<split>_embeddings``, ``<split>_features``) and the classes of its rows as keys
(``<split>_keys``) or integer labels (``<split>_y`` or ``<split>_labels``), or both. A pickle or
torch file may instead map each split to a dict of ``embeddings`` (or ``features``), ``keys``
and ``labels`` (or ``y``).

Keys become the ``features`` layout's ``<prefix>-<class>-<class>_<file>`` keys (docs/data.md):

- keys already in that form are kept;
- path-like keys ``<a>/<b>/<file>`` name the class ``a.b`` (every part but the last) and
  become ``<row>-a.b-a.b_<file>``, as docs/tuning.md's recipe for the shared Omniglot
  features wrote them, so an imported file and that recipe give the same data (and run keys);
- with labels only, the class of label ``L`` in split ``s`` is ``s`` followed by ``L``
  (zero-padded, so classes sort as their labels), and the row's file its row number.

``fewshot-bench data import FILE --out DIR`` writes the three split files (:func:`write_folder`);
``--dataset features --data-dir FILE`` reads the file directly (data/leo_datasets.py).
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fewshot_bench.atomic import rename_durably, write_error
from fewshot_bench.checkpoints import load_torch_file
from fewshot_bench.data.base import SPLITS, check_splits_together
from fewshot_bench.data.files import open_regular, what_is
from fewshot_bench.data.leo import Embeddings, _load_npz, parse_key, restricted_load, validate, write_embeddings
from fewshot_bench.errors import DataError

SUFFIXES = (".npz", ".pkl", ".pt")
FEATURE_NAMES = ("", "_embeddings", "_features")  # after the split's name
LABEL_NAMES = ("_y", "_labels")
NESTED_FEATURES, NESTED_LABELS = ("embeddings", "features"), ("labels", "y")
LAYOUT = (
    "a features file holds train, val and test arrays [n, D] with train_keys/val_keys/test_keys "
    "or train_y/val_y/test_y (docs/data.md, 'One file holding every split')"
)


def is_features_file(path: Path) -> bool:
    """Whether ``path`` names a features file rather than a folder: a suffix this module reads, and not a folder."""
    return Path(path).suffix in SUFFIXES and not Path(path).is_dir()


def _read_file(path: Path) -> dict[str, Any]:
    """The named arrays of a features file, as numpy arrays or lists (nothing in the file is run)."""
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown features file type {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    if path.suffix == ".npz":
        obj: Any = _load_npz(path)
    elif path.suffix == ".pkl":
        obj = restricted_load(path)
    else:
        open_regular(path).close()  # a FIFO or device by that name is refused before torch opens it
        obj = load_torch_file(path, "cpu", "features file", "write it with torch.save of a dict of tensors")
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not named arrays; {LAYOUT}")
    return _array(obj)


def _name(key: Any) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


def _array(value: Any) -> Any:
    """A tensor as a numpy array, a dict with its names decoded; anything else as it is."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor (torch is not imported here)
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {_name(k): _array(v) for k, v in value.items()}
    return value


def _pick(found: dict[str, Any], names: list[str], where: str) -> tuple[str, Any]:
    """The first of ``names`` present in ``found`` (as the file names it, after ``where``) and its value; the first
    name and None when none is."""
    name = next((n for n in names if n in found), names[0])
    return where + name, found.get(name)


def _split_arrays(path: Path, arrays: dict[str, Any], split: str) -> dict[str, tuple[str, Any]]:
    """The features, labels and keys of ``split`` (labels or keys may be None), each with the name the file gives it."""
    nested = arrays.get(split)
    if isinstance(nested, dict):
        where = f"{split}."
        found = {"x": _pick(nested, list(NESTED_FEATURES), where), "labels": _pick(nested, list(NESTED_LABELS), where),
                 "keys": _pick(nested, ["keys"], where)}
    else:
        found = {"x": _pick(arrays, [split + suffix for suffix in FEATURE_NAMES], ""),
                 "labels": _pick(arrays, [split + suffix for suffix in LABEL_NAMES], ""),
                 "keys": _pick(arrays, [f"{split}_keys"], "")}
    if found["x"][1] is None:
        held = ", ".join(sorted(nested if isinstance(nested, dict) else arrays)) or "nothing"
        raise DataError(f"{path} has no array {found['x'][0]!r} (the {split} split's features); it holds {held}; "
                        f"{LAYOUT}")
    if found["labels"][1] is None and found["keys"][1] is None:
        raise DataError(f"{path} has neither {found['keys'][0]!r} nor {found['labels'][0]!r} for split {split!r}: "
                        "give each row's class as a key or an integer label")
    return found


def _check_shapes(path: Path, split: str, found: dict[str, tuple[str, Any]]) -> np.ndarray:
    """The features as float32 [n, D] once their shape and the labels' and keys' lengths are right."""
    name, x = found["x"]
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind not in "fiu" or 0 in x.shape:
        raise DataError(f"{path}: {name!r} is {x.dtype} {x.shape}; expected the {split} split's features, "
                        "numbers [n, D]")
    n = x.shape[0]
    for name, value in (found["labels"], found["keys"]):
        if value is None:
            continue
        length = len(value) if isinstance(value, (list, tuple)) else (np.asarray(value).shape or (None,))[0]
        if np.ndim(value) != 1 or length != n:
            raise DataError(f"{path}: {name!r} has shape {np.shape(value)}; expected one per row of {split!r}, "
                            f"shape ({n},)")
    name, labels = found["labels"]
    if labels is not None and np.asarray(labels).dtype.kind not in "iu":
        raise DataError(f"{path}: {name!r} has dtype {np.asarray(labels).dtype}; expected integer labels")
    return np.ascontiguousarray(x, dtype=np.float32)


def _text_keys(path: Path, name: str, keys: Any) -> list[str]:
    values = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}: {name}[{i}] {v!r} is not valid UTF-8") from None
        if not isinstance(v, str):
            raise DataError(f"{path}: {name}[{i}] {v!r} is not a string")
        out.append(v)
    return out


def layout_keys(path: Path, split: str, found: dict[str, tuple[str, Any]]) -> list[str]:
    """The rows' keys in the ``features`` layout (``<prefix>-<class>-<class>_<file>``), from keys or labels."""
    (label_name, labels), (key_name, keys) = found["labels"], found["keys"]
    if keys is None:
        lab = np.asarray(labels).astype(np.int64)
        if lab.min() < 0:
            raise DataError(f"{path}: {label_name!r} holds the negative label {int(lab.min())}; labels are 0, 1, 2, "
                            "...")
        width = len(str(int(lab.max())))
        return [f"{i}-{split}{c:0{width}d}-{split}{c:0{width}d}_{i}" for i, c in enumerate(lab.tolist())]
    text = _text_keys(path, key_name, keys)
    try:
        for key in text:
            parse_key(key, numeric_prefix=False)
        return text
    except ValueError:
        pass
    out = []
    for i, key in enumerate(text):
        parts = key.split("/")
        cls = ".".join(parts[:-1])
        if len(parts) < 2 or not all(parts) or "-" in cls:
            raise DataError(
                f"{path}: {key_name}[{i}] {key!r} is neither <prefix>-<class>-<file> nor a path <class>/<file> "
                "whose class has no '-'; rename the keys, or give integer labels instead of keys"
            )
        out.append(f"{i}-{cls}-{cls}_{parts[-1]}")
    return out


def read_split(path: Path, split: str, arrays: dict[str, Any] | None = None) -> Embeddings:
    """One split of a features file, validated as a split file is (rows in file order, classes from the keys)."""
    path = Path(path)
    arrays = _read_file(path) if arrays is None else arrays
    found = _split_arrays(path, arrays, split)
    x = _check_shapes(path, split, found)
    text = layout_keys(path, split, found)
    labels = found["labels"][1]
    lab = None if labels is None else np.asarray(labels).astype(np.int64)
    return validate(Path(f"{path}[{split}]"), x, lab, text, numeric_prefix=False)


def read_all(path: Path) -> dict[str, Embeddings]:
    """Every split of a features file, checked together: one dimension, no class in two splits."""
    path = Path(path)
    arrays = _read_file(path)
    splits = {split: read_split(path, split, arrays) for split in SPLITS}
    check_splits_together({s: e.class_names for s, e in splits.items()}, {s: e.dim for s, e in splits.items()},
                          str(path), {s: f"{path}[{s}]" for s in SPLITS})
    return splits


def write_folder(path: Path, out: Path) -> dict[str, Embeddings]:
    """Write ``path``'s splits as ``out/{train,val,test}_embeddings.npz``: all of them, or nothing.

    ``out`` must not exist or be an empty folder. Everything is read and validated first,
    then written into a new hidden folder beside ``out`` that is renamed into place, so
    ``out`` never holds some of the files.
    """
    out = Path(out)
    kind = what_is(out)
    if kind is not None and (kind != "a directory" or any(out.iterdir())):
        problem = "is not empty" if kind == "a directory" else f"is {kind}"
        raise DataError(f"--out {out} {problem}; import writes a new features folder: name one that does not exist")
    splits = read_all(path)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.mkdir(parents=True)
        for split, e in splits.items():
            write_embeddings(tmp / f"{split}_embeddings.npz", e.embeddings, e.labels, e.keys)
        rename_durably(tmp, out)  # replaces an empty folder; atomic on one file system
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(out, exc, "features folder") from None
        raise
    return splits


def describe(splits: dict[str, Embeddings]) -> list[dict[str, Any]]:
    """One row per split: classes, rows, rows per class and dimension (what ``data import`` prints)."""
    rows = []
    for split, e in splits.items():
        counts = e.counts
        per_class = str(int(counts[0])) if counts.min() == counts.max() else f"{int(counts.min())}-{int(counts.max())}"
        rows.append({"split": split, "classes": len(e.class_names), "rows": e.rows, "rows_per_class": per_class,
                     "dim": e.dim})
    return rows

