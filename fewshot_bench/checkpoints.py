"""Torch files the harness writes and reads back: saved atomically, loaded with ``weights_only=True``.

Run checkpoints, saved models and pretraining checkpoints all go through here: a file is
never half-written (:func:`fewshot_bench.atomic.replacing`), holds tensors and plain data
only, and a file that cannot be loaded is a one-line :class:`CheckpointError` saying why.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewshot_bench.atomic import FIX, replacing
from fewshot_bench.errors import CheckpointError

CHECKPOINT_FIX = f"{FIX} (run, sweep: --checkpoint-dir DIR)"


def save_atomic(obj: object, path: Path, what: str = "checkpoint") -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`fewshot_bench.atomic.replacing`: never half-written).

    Save tensors and plain data only (dicts, lists, tuples, str, int, float, bool, None):
    every reader loads with :func:`load_torch_file`, which refuses anything else. A write
    that fails (a full disk, a read-only place, ``path`` a directory) removes the temporary
    file and is a one-line :class:`WriteError`: the harness's problem, not the learner's.
    """
    with replacing(path, what, CHECKPOINT_FIX) as tmp:
        torch.save(obj, tmp)


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a few words (never torch's advice to
    retry with ``weights_only=False``)."""
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return (f"holds a Python object ({unsafe.group(1)}) that is not a tensor or plain data: "
                "refused, nothing in it was run")
    if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile):
        return f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})"
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return "is empty"
    if not zipfile.is_zipfile(path):
        return "is corrupt or not a torch file (truncated, or not written by torch.save)"
    first = (text.splitlines() or [type(exc).__name__])[0].split(". ")[0]
    return f"is corrupt ({type(exc).__name__}: {first[:100]})"


def load_torch_file(path: Path, map_location: Any, what: str, way_out: str) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data, never code to run.

    Any failure (unreadable, empty, truncated, foreign, or holding other Python objects) is a
    one-line :class:`CheckpointError` naming the file, ``what`` it should be and ``way_out``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on pickle protocols of foreign files
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # weights_only: whatever the file holds, nothing in it runs
        raise CheckpointError(f"{what} {path} {unreadable_reason(path, exc)}; {way_out}") from None


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays made Python numbers and lists: what ``weights_only`` loads."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj
