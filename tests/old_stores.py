"""Results stores as older fewshot-bench versions wrote them (schemas 1 and 2), built with sqlite3 alone."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

APPLICATION_ID = 0x46534231
# The runs table and indexes of schemas 1 and 2: the main metric in ``accuracy`` (MSE for
# regression runs), its name only in the summary's JSON. Schema 2 added runs_key_complete.
OLD_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    run_key TEXT NOT NULL,
    learner TEXT NOT NULL,
    dataset TEXT NOT NULL,
    way INTEGER NOT NULL,
    shot INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    accuracy REAL,
    ci95 REAL,
    episodes INTEGER,
    config TEXT NOT NULL,
    options TEXT NOT NULL,
    summary TEXT NOT NULL,
    versions TEXT NOT NULL,
    hardware TEXT NOT NULL,
    timings TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX runs_key ON runs (run_key);
CREATE INDEX runs_cell ON runs (learner, dataset, way, shot, seed);
CREATE TABLE episode_results (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    dtype TEXT NOT NULL,
    values_blob BLOB NOT NULL
);
"""
UNIQUE_COMPLETE = "CREATE UNIQUE INDEX runs_key_complete ON runs (run_key) WHERE status = 'complete'"
JSON_COLUMNS = ("config", "options", "summary", "versions", "hardware", "timings")


def write_old_store(path: Path, version: int, runs: list[tuple[dict, np.ndarray]]) -> None:
    """Write a schema-``version`` (1 or 2) store holding ``runs`` (record, per-episode values), rows in order.

    A record has the old columns: ``accuracy`` holds the mean, ``summary["metric"]`` names it.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.executescript(OLD_SCHEMA + (UNIQUE_COMPLETE + ";" if version >= 2 else ""))
    cols = ["run_id", "run_key", "learner", "dataset", "way", "shot", "seed", "status", "accuracy", "ci95",
            "episodes", *JSON_COLUMNS, "created_at"]
    for record, values in runs:
        row = {**record, **{c: json.dumps(record.get(c, {}), sort_keys=True) for c in JSON_COLUMNS}}
        row.setdefault("created_at", "2026-01-01T00:00:00+00:00")
        conn.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [row[c] for c in cols])
        blob = np.ascontiguousarray(values, dtype=np.float32).tobytes()
        conn.execute("INSERT INTO episode_results VALUES (?, ?, ?)", (record["run_id"], "float32", blob))
    conn.execute(f"PRAGMA user_version={version}")
    conn.close()
