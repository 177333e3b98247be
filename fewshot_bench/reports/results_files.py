"""The stored runs as a file to take elsewhere: CSV, Parquet (the ``parquet`` extra) or JSON, written atomically.

``fewshot-bench results --csv|--parquet|--json FILE`` writes what ``fewshot_bench.results()``
returns (one row per run: its settings, protocol id, data id, metric and value; JSON: every
run with its full provenance, as ``--json`` prints it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fewshot_bench.atomic import replacing, write_text
from fewshot_bench.errors import ConfigError

PARQUET_EXTRA = "python -m pip install 'fewshot-bench[parquet]' (or 'pyarrow>=14')"


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as CSV at ``path`` (UTF-8, no index); returns ``path``."""
    return write_text(path, frame.to_csv(index=False), "CSV file")


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as Parquet at ``path`` (pyarrow; a one-line error naming the extra without it); returns ``path``."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--parquet needs pyarrow ({exc}); {PARQUET_EXTRA}") from None
    with replacing(path, "Parquet file") as tmp:
        frame.to_parquet(tmp, engine="pyarrow", index=False)
    return Path(path)


def write_json(rows: list[dict[str, Any]], path: Path) -> Path:
    """``rows`` as one JSON array at ``path``; returns ``path``."""
    return write_text(path, json.dumps(rows, default=str) + "\n", "JSON file")
