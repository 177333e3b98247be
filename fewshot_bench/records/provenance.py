"""Provenance of a run: package versions and the hardware it ran on."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from typing import Any

import numpy as np
import torch


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def versions(plugin_distribution: str | None = None) -> dict[str, str]:
    """Versions of fewshot-bench, the learner's plugin distribution, torch, numpy and Python."""
    out = {
        "fewshot-bench": _version("fewshot-bench"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    if plugin_distribution and plugin_distribution not in out:
        out[plugin_distribution] = _version(plugin_distribution)
    return out


def hardware(device: torch.device) -> dict[str, object]:
    """The machine and device a run used."""
    info: dict[str, object] = {
        "hostname": platform.node(),  # which node of a cluster ran it
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def execution(
    device: torch.device, train_threads: int, eval_threads: int, population: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """How a run was computed, where that can change its number at rounding level but not its identity.

    The CPU's instruction set as torch's kernels use it (AVX2, AVX512, ...: MKL and ATen pick
    code paths by it), the threads of meta-training and of evaluation, the population the run
    meta-trained in (``size`` 1: alone), the device and the torch version.
    """
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {
        "isa": torch.backends.cpu.get_cpu_capability(), "train_threads": train_threads, "eval_threads": eval_threads,
        "population": population or {"size": 1}, "device": name, "torch": torch.__version__,
    }


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available) as a torch device."""
    from fewshot_bench.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or auto")
    return torch.device(name)
