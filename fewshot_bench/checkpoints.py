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
    refused = _refused_by_weights_only(text)
    if refused:
        return f"{refused}: refused, nothing in it was run"
    try:  # torch's reader reports some truncated files as OSError (EINVAL): blame the file only if it reads
        with path.open("rb") as f:
            f.read(1)
        size = path.stat().st_size
    except OSError as own:
        return f"cannot be read ({type(own).__name__}: {own.strerror or own})"
    if size == 0:
        return "is empty"
    if not zipfile.is_zipfile(path):
        return "is corrupt or not a torch file (truncated, or not written by torch.save)"
    first = (text.splitlines() or [type(exc).__name__])[0].split(". ")[0]
    return f"is corrupt ({type(exc).__name__}: {first[:100]})"


def _refused_by_weights_only(text: str) -> str | None:
    """What ``weights_only`` loading refused to create, from torch's message (None: no object was refused)."""
    # torch says "Unsupported global: GLOBAL x.y", or for a blocked module (os, subprocess, ...) "unsupported GLOBAL
    # x.y whose module x is blocked" (torch >= 2.6).
    unsafe = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", text, re.IGNORECASE)
    if unsafe:
        return f"holds a Python object ({unsafe.group(1)}) that is not a tensor or plain data"
    return None


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


# --- what a loaded state must look like before anything of it is loaded ----------------------------


def _described(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def tensor_problem(value: Any, like: torch.Tensor, what: str, strides: bool = False) -> str | None:
    """Why ``value`` cannot stand in for tensor ``like`` (None: it can): not a tensor, another shape, dtype or
    layout (with ``strides``, another memory layout), or NaN or infinite values where ``like`` has none."""
    if not torch.is_tensor(value):
        return f"{what} is {type(value).__name__}, not a tensor"
    if value.layout != like.layout or value.dtype != like.dtype or value.shape != like.shape:
        return f"{what} is a {_described(value)} tensor, not {_described(like)}"
    if strides and value.stride() != like.stride():  # fused Adam pairs elements by memory position
        return f"{what} has strides {value.stride()}, not {like.stride()}"
    if (value.is_floating_point() or value.is_complex()) and not bool(value.isfinite().all()) \
            and bool(like.isfinite().all()):
        return f"{what} holds NaN or infinite values"
    return None


def state_dict_problem(state: Any, reference: dict[str, Any], what: str) -> str | None:
    """Why ``state`` cannot be loaded where ``reference`` came from (None if it fits: the same keys, and
    :func:`tensor_problem` finds nothing wrong with any tensor)."""
    if not isinstance(state, dict):
        return f"{what} is {type(state).__name__}, not a state dict"
    missing, unexpected = sorted(set(reference) - set(state)), sorted(set(state) - set(reference), key=repr)
    if missing or unexpected:
        return f"{what} does not fit this learner (missing {missing[:3]}, unexpected {unexpected[:3]})"
    for key, ref in reference.items():
        value, where = state[key], f"{what}[{key!r}]"
        if torch.is_tensor(ref):
            problem = tensor_problem(value, ref, where)
        elif type(value) is not type(ref):
            problem = f"{where} is {type(value).__name__}, not {type(ref).__name__}"
        else:
            problem = None
        if problem:
            return problem
    return None


# Adam group settings a checkpoint written by an older torch may lack (torch's Adam.__setstate__ fills them in).
_ADAM_DEFAULTED = frozenset({"amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused",
                             "decoupled_weight_decay"})
# Group settings that say how the optimizer runs on its device, not what it computes: they follow the device.
ADAM_DEVICE_SETTINGS = frozenset({"capturable"})


def _same_setting(value: Any, ref: Any) -> bool:
    """Equal in type and value (``True`` is not ``1``; ``nan`` is nothing's)."""
    if isinstance(ref, (tuple, list)):
        return type(value) is type(ref) and len(value) == len(ref) and all(map(_same_setting, value, ref))
    return type(value) is type(ref) and value == ref


def _group_problem(group: Any, ref: dict[str, Any], what: str) -> str | None:
    """Why an Adam parameter group differs from ``ref``, the resuming optimizer's (None: it is the same)."""
    if not isinstance(group, dict):
        return f"{what} is {type(group).__name__}, not a dict"
    unexpected = sorted(set(group) - set(ref), key=repr)
    missing = sorted(set(ref) - set(group) - _ADAM_DEFAULTED)
    if unexpected or missing:
        return f"{what} has settings missing {missing[:3]} or unexpected {unexpected[:3]}"
    for key, value in group.items():
        if key in ADAM_DEVICE_SETTINGS:
            ok = isinstance(value, bool)
        else:
            ok = _same_setting(value, ref[key])
        if not ok:
            return f"{what}[{key!r}] is {value!r:.40}, not this run's {ref[key]!r:.40}"
    return None


def _adam_param_problem(entry: Any, param: torch.Tensor, keys: set[str], max_step: int, what: str) -> str | None:
    """Why one parameter's Adam state does not fit ``param`` after at most ``max_step`` steps (None: it fits)."""
    if not isinstance(entry, dict) or set(entry) != keys:
        shown = sorted(entry, key=repr) if isinstance(entry, dict) else type(entry).__name__
        return f"{what} is {shown!r:.60}, not {sorted(keys)}"
    step = entry["step"]
    if not (torch.is_tensor(step) and step.dim() == 0 and step.is_floating_point()):
        return f"{what}['step'] is {step!r:.40}, not a scalar float tensor"
    count = float(step)
    if not (count.is_integer() and 0 <= count <= max_step):  # NaN fails both
        return f"{what}['step'] is {count!r}, not a count of at most {max_step} steps"
    for key in sorted(keys - {"step"}):
        problem = tensor_problem(entry[key], param.detach(), f"{what}[{key!r}]", strides=True)
        if problem is None and key != "exp_avg" and bool((entry[key] < 0).any()):
            problem = f"{what}[{key!r}] holds negative values"  # second moments are squares
        if problem:
            return problem
    return None


def adam_state_problem(state: Any, optimizer: torch.optim.Adam, max_step: int, what: str) -> str | None:
    """Why ``state`` cannot be loaded into ``optimizer`` (a fresh Adam of the same parameters and settings) after
    at most ``max_step`` steps (None if it fits): every group setting, every parameter's state, shape and value."""
    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        return f"{what} is not an optimizer state (a dict of 'state' and 'param_groups')"
    mine, groups = optimizer.state_dict()["param_groups"], state["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(mine):
        return f"{what} does not have this run's {len(mine)} parameter group(s)"
    for i, (group, ref) in enumerate(zip(groups, mine)):
        problem = _group_problem(group, ref, f"{what} group {i}")
        if problem:
            return problem
    params = [p for g in optimizer.param_groups for p in g["params"]]
    per_param = state["state"]
    if not isinstance(per_param, dict):
        return f"{what}['state'] is {type(per_param).__name__}, not a dict"
    if per_param and set(per_param) != set(range(len(params))):  # Adam steps every parameter, or none yet
        return f"{what} has state for parameters {sorted(per_param, key=repr)[:6]}, not for all {len(params)}"
    keys = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if any(g["amsgrad"] for g in mine) else set())
    for i in sorted(per_param):
        problem = _adam_param_problem(per_param[i], params[i], keys, max_step, f"{what} state {i}")
        if problem:
            return problem
    return None
