"""What every tracking backend does for one tracked run: parameters, scalars at a step, files, and its end."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Scalar = str | int | float | bool


class RunTracker(ABC):
    """One run as a tracking backend shows it (a TensorBoard run folder, an MLflow run)."""

    #: Where a person finds this run (a folder, or an MLflow run id with its tracking URI), for the terminal.
    where: str = ""

    @abstractmethod
    def params(self, values: Mapping[str, Scalar]) -> None:
        """Record parameters (names not recorded before; a backend may refuse to change a recorded one)."""

    @abstractmethod
    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Record scalar values at meta-training step ``step``."""

    @abstractmethod
    def artifact(self, path: Path) -> None:
        """Attach a file the command wrote (a figure)."""

    @abstractmethod
    def flush(self) -> None:
        """Make what was recorded visible to a reader now (live viewing); buffered backends write here."""

    @abstractmethod
    def close(self, failed: bool = False) -> None:
        """End the run (``failed``: it stopped on an error)."""


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """``values`` as one level of named scalars: nested mappings become ``outer.inner``, sequences and None JSON text.

    Both backends take only scalars as parameters (MLflow only text), so a tuple of hidden sizes reads ``[128, 128]``.
    """
    out: dict[str, Scalar] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out
