"""The results store: one SQLite file (WAL mode), one row per completed run.

A run is written in a single transaction together with its per-episode accuracies, only
once it has finished, so a run killed at any moment leaves no row at all; its checkpoint
lets the same command resume it.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fewshot_bench.errors import StoreError

DEFAULT_STORE = "fewshot-results.db"
APPLICATION_ID = 0x46534231  # "FSB1": marks the file as a fewshot-bench store
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
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
CREATE INDEX IF NOT EXISTS runs_key ON runs (run_key);
CREATE INDEX IF NOT EXISTS runs_cell ON runs (learner, dataset, way, shot, seed);
CREATE TABLE IF NOT EXISTS episode_results (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    dtype TEXT NOT NULL,
    values_blob BLOB NOT NULL
);
"""

JSON_COLUMNS = ("config", "options", "summary", "versions", "hardware", "timings")


@dataclass
class RunRecord:
    """A completed run as stored: identity, headline numbers and provenance."""

    run_id: str
    run_key: str
    learner: str
    dataset: str
    way: int
    shot: int
    seed: int
    status: str
    accuracy: float | None
    ci95: float | None
    episodes: int | None
    config: dict
    options: dict
    summary: dict
    versions: dict
    hardware: dict
    timings: dict
    created_at: str

    @property
    def metric(self) -> str:
        """Name of the main metric held in ``accuracy``: ``accuracy``, or ``mse`` for regression runs."""
        return self.summary.get("metric", "accuracy")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of this record."""
        return dict(self.__dict__)


class ResultStore:
    """Read and write runs in a fewshot-bench SQLite store."""

    def __init__(self, path: str | Path = DEFAULT_STORE, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise StoreError(f"no results store at {self.path}; run `fewshot-bench run` first or pass --store PATH")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._check_and_init()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a fewshot-bench results store ({exc}); pass another --store PATH") from None

    def _check_and_init(self) -> None:
        c = self.conn
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != APPLICATION_ID and tables:
            raise StoreError(
                f"{self.path} is an SQLite database but not a fewshot-bench results store; pass another --store PATH"
            )
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if tables and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer fewshot-bench (schema {version}); upgrade fewshot-bench")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA foreign_keys=ON")
        if not tables:
            c.execute("BEGIN IMMEDIATE")
            c.execute(f"PRAGMA application_id={APPLICATION_ID}")
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for statement in filter(str.strip, SCHEMA.split(";")):  # executescript would commit early
                c.execute(statement)
            c.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------

    def add_run(self, record: dict[str, Any], episode_values: np.ndarray, if_absent: bool = False) -> str:
        """Insert a completed run and its per-episode values in one transaction; returns its id.

        With ``if_absent``, a run whose ``run_key`` is already complete is left alone and the
        existing id is returned; the check and the insert share one write transaction, so
        concurrent writers cannot both insert the same run.
        """
        run_id = record.get("run_id") or uuid.uuid4().hex[:12]
        row = dict(record, run_id=run_id, created_at=record.get("created_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"))
        for col in JSON_COLUMNS:
            row[col] = json.dumps(row.get(col, {}), sort_keys=True, default=str)
        cols = ["run_id", "run_key", "learner", "dataset", "way", "shot", "seed", "status", "accuracy", "ci95", "episodes", *JSON_COLUMNS, "created_at"]
        values = np.ascontiguousarray(episode_values, dtype=np.float32)
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if if_absent:
                existing = c.execute(
                    "SELECT run_id FROM runs WHERE run_key = ? AND status = 'complete' LIMIT 1", (row["run_key"],)
                ).fetchone()
                if existing is not None:
                    c.execute("ROLLBACK")
                    return existing[0]
            c.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", [row[k] for k in cols])
            c.execute("INSERT INTO episode_results VALUES (?, ?, ?)", (run_id, "float32", values.tobytes()))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return run_id

    def delete_run(self, run_id: str) -> None:
        """Delete a run and its episode values."""
        self.conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    # --- reading -------------------------------------------------------------------------

    def _records(self, sql: str, params: tuple = ()) -> Iterator[RunRecord]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        for r in cur:
            row = dict(zip(names, r))
            for col in JSON_COLUMNS:
                row[col] = json.loads(row[col])
            yield RunRecord(**row)

    def runs(self, **where: Any) -> list[RunRecord]:
        """Completed runs matching column=value filters, oldest first."""
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        return list(self._records(f"SELECT * FROM runs WHERE {clause} ORDER BY created_at, rowid", tuple(where.values())))

    def run(self, run_id: str) -> RunRecord:
        """The run with this id (a unique prefix is enough)."""
        found = list(self._records("SELECT * FROM runs WHERE run_id LIKE ? ORDER BY rowid", (run_id + "%",)))
        if len(found) != 1:
            raise StoreError(f"{'no' if not found else 'more than one'} run with id {run_id!r} in {self.path}")
        return found[0]

    def find_complete(self, run_key: str) -> RunRecord | None:
        """The latest completed run with this identity key, if any."""
        found = list(self._records("SELECT * FROM runs WHERE run_key = ? AND status = 'complete' ORDER BY rowid DESC LIMIT 1", (run_key,)))
        return found[0] if found else None

    def episode_values(self, run_id: str) -> np.ndarray:
        """The per-episode values (accuracies, or MSE for regression) of a run."""
        row = self.conn.execute("SELECT dtype, values_blob FROM episode_results WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"run {run_id!r} has no episode results in {self.path}")
        return np.frombuffer(row[1], dtype=row[0]).copy()
