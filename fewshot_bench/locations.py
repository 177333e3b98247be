"""Where a run's files live: the data root and the checkpoint folder (no heavy imports: every command reads these)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "FEWSHOT_BENCH_DATA"
CHECKPOINT_FOLDER = "fewshot-checkpoints"  # beside the store, unless a checkpoint folder is given


def data_root(data_dir: str | Path | None) -> Path | None:
    """The data root: ``data_dir``, else ``$FEWSHOT_BENCH_DATA``, else None."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def checkpoint_folder(store: Path, checkpoint_dir: str | Path | None) -> Path:
    """Where in-progress checkpoints go: ``checkpoint_dir``, else ``fewshot-checkpoints`` beside the store."""
    return Path(checkpoint_dir) if checkpoint_dir is not None else store.resolve().parent / CHECKPOINT_FOLDER
