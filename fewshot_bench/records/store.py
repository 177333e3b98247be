"""The results store: one SQLite file (WAL mode), one row per completed run.

A run is written in a single transaction together with its per-episode values (accuracies,
or MSE for regression: the run's ``metric``), only once it has finished, so a run killed at
any moment leaves no row at all; its checkpoint lets the same command resume it. One run key
has at most one complete row (a partial UNIQUE index, schema 2): the same run stored twice,
even by two processes at once, is refused by the database itself.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from fewshot_bench.errors import StoreError

DEFAULT_STORE = "fewshot-results.db"
APPLICATION_ID = 0x46534231  # "FSB1": marks the file as a fewshot-bench store
# 1: the first schema. 2: at most one complete row per run_key (UNIQUE index runs_key_complete);
# a schema-1 store is migrated in place when opened for writing, in one transaction: of
# several complete rows with one run key the latest stays complete (the one tables already
# counted), the others are kept but marked status = 'duplicate' (never read as results).
# 3: the main metric's mean is the column ``mean`` (was ``accuracy``, which held MSE for
# regression) and the column ``metric`` names it (was only in the summary's JSON); an older
# store is migrated in place, in one transaction, when opened writable.
SCHEMA_VERSION = 3
LOCK_WAIT_S = 60.0  # how long to wait for another process's lock (opening, writing)

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
    metric TEXT NOT NULL,
    mean REAL,
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
CREATE UNIQUE INDEX IF NOT EXISTS runs_key_complete ON runs (run_key) WHERE status = 'complete';
CREATE INDEX IF NOT EXISTS runs_cell ON runs (learner, dataset, way, shot, seed);
CREATE TABLE IF NOT EXISTS episode_results (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    dtype TEXT NOT NULL,
    values_blob BLOB NOT NULL
);
"""

JSON_COLUMNS = ("config", "options", "summary", "versions", "hardware", "timings")
RUN_COLUMNS = ("run_id", "run_key", "learner", "dataset", "way", "shot", "seed", "status", "metric", "mean", "ci95",
               "episodes", *JSON_COLUMNS, "created_at")
# The columns of each table by schema: schemas 1 and 2 kept the mean in ``accuracy`` and had no ``metric``.
TABLE_COLUMNS = {
    "runs": {3: RUN_COLUMNS, 1: tuple("accuracy" if c == "mean" else c for c in RUN_COLUMNS if c != "metric")},
    "episode_results": {1: ("run_id", "dtype", "values_blob")},
}
TEXT_COLUMNS = ("run_id", "run_key", "learner", "dataset", "status", "metric", "created_at")
EPISODE_DTYPES = ("float32", "float64")  # what per-episode values are stored as (float32 since schema 1)
# An I/O error with less than this free beside the store is a full disk (SQLite reports some as I/O errors).
FULL_BELOW_BYTES = 1 << 20


@dataclass
class RunRecord:
    """A completed run as stored: identity, headline numbers and provenance.

    ``mean`` and ``ci95`` are of the per-episode values of ``metric``: ``accuracy`` (0..1), or
    ``mse`` for regression runs.
    """

    run_id: str
    run_key: str
    learner: str
    dataset: str
    way: int
    shot: int
    seed: int
    status: str
    metric: str
    mean: float | None
    ci95: float | None
    episodes: int | None
    config: dict
    options: dict
    summary: dict
    versions: dict
    hardware: dict
    timings: dict
    created_at: str

    @classmethod
    def new(cls, **fields: Any) -> RunRecord:
        """A record of a run about to be stored: a fresh run id and the time now, unless given."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(**{"run_id": uuid.uuid4().hex[:12], "created_at": now, **fields})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of this record."""
        return dict(self.__dict__)


# Names a run's meta-training summary had before they were metric-neutral (they hold MSE for regression).
LEGACY_TRAIN_NAMES = {"best_val_accuracy": "best_val_metric", "val_accuracy": "val_metric"}


def current_train_names(train: Any) -> Any:
    """A meta-training summary or checkpoint result with the names of older versions renamed (others as they are)."""
    if not isinstance(train, dict):
        return train
    renamed = {LEGACY_TRAIN_NAMES.get(k, k): v for k, v in train.items()}
    if isinstance(renamed.get("history"), list):
        renamed["history"] = [{LEGACY_TRAIN_NAMES.get(k, k): v for k, v in point.items()}
                              if isinstance(point, dict) else point for point in renamed["history"]]
    return renamed


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _free_bytes(folder: Path) -> int | None:
    """Bytes free for this user in ``folder``'s file system; None when that cannot be told."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _listed(names: list[str], most: int = 4) -> str:
    """``a, b, c, d and 5 more``: a list of names as a message shows it."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _columns_problem(table: str, have: tuple[str, ...] | None, version: int) -> str | None:
    """What is wrong with ``table``'s columns in a store of schema ``version``; None when they are right."""
    if have is None:
        return f"it has no {table} table"
    # The columns of the latest schema at or before ``version`` (0, unmarked, is read as the first).
    want = next(cols for since, cols in sorted(TABLE_COLUMNS[table].items(), reverse=True) if max(version, 1) >= since)
    missing, extra = [c for c in want if c not in have], [c for c in have if c not in want]
    if not missing and not extra:
        return None
    parts = ([f"lacks {_listed(missing)}"] if missing else []) + ([f"has unexpected {_listed(extra)}"] if extra else [])
    return f"its {table} table {' and '.join(parts)}"


def _json_object(text: Any, column: str) -> dict:
    """A JSON column's dict, or ValueError saying what it holds instead."""
    if not isinstance(text, str):
        raise ValueError(f"its {column} is a {type(text).__name__}, not JSON text")
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"its {column} is not valid JSON ({_shown(text)})") from None
    if not isinstance(value, dict):
        raise ValueError(f"its {column} is a JSON {type(value).__name__}, not an object")
    return value


def _shown(value: Any) -> str:
    """A value as a message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_row_types(row: dict[str, Any]) -> None:
    """Each column holds its type (SQLite keeps any value in any column); ValueError naming the first that does not."""
    for col in TEXT_COLUMNS:
        if not isinstance(row[col], str):
            raise ValueError(f"its {col} is {_shown(row[col])}, not text")
    for col in ("way", "shot", "seed", "episodes"):
        if not isinstance(row[col], int) and not (col == "episodes" and row[col] is None):
            raise ValueError(f"its {col} is {_shown(row[col])}, not an integer")
    for col in ("mean", "ci95"):
        if row[col] is not None and not isinstance(row[col], (int, float)):
            raise ValueError(f"its {col} is {_shown(row[col])}, not a number")


def _read_only_error(exc: BaseException) -> bool:
    """Whether an SQLite error means the store (or its folder) cannot be written."""
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text or "permission" in text


class _Header(NamedTuple):
    """What opening reads first: the file's marks, its tables and the columns of ours."""

    app_id: int
    tables: set[str]
    version: int
    columns: dict[str, tuple[str, ...]]


class ResultStore:
    """Read and write runs in a fewshot-bench SQLite store.

    Opening checks the file whole before anything else happens: a non-database, another
    application's database or a newer schema is refused untouched; with ``create`` (what
    every command that writes uses) the store is also created, migrated and proved
    writable, so a bad ``--store`` fails before any work, not after it. Many processes may
    open (and create) one store at once.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, create: bool = True) -> None:
        self.path = Path(path)
        self.read_only = False
        if self.path.is_dir():
            raise StoreError(f"results store {self.path} is a directory, not a file; pass --store FILE")
        if not self.path.exists():
            if not create:
                raise StoreError(f"no results store at {self.path}; run `fewshot-bench run` first or pass --store PATH")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create results store {self.path}: {exc.strerror or exc}; "
                    "pass --store PATH in a writable place"
                ) from None
        self.conn: sqlite3.Connection | None = None
        try:
            self._open(create)
        except BaseException:
            if self.conn is not None:
                self.conn.close()
            raise

    def _connect(self, uri_query: str = "") -> sqlite3.Connection:
        target: str | Path = self.path
        if uri_query:
            target = f"{self.path.resolve().as_uri()}?{uri_query}"
        return sqlite3.connect(target, timeout=LOCK_WAIT_S, isolation_level=None, uri=bool(uri_query))

    def _open(self, create: bool) -> None:
        try:
            self.conn = self._connect()
            self._check_and_init(create)
            return
        except sqlite3.DatabaseError as exc:
            if create or not _read_only_error(exc):
                raise self.error(exc) from None
        # Reading a store on a read-only mount (no -wal/-shm can be made beside it): read it as it is.
        self.conn.close()
        self.conn = self._connect("mode=ro&immutable=1")
        self.read_only = True
        try:
            self._check_and_init(False)
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from None

    def error(self, exc: BaseException, doing: str = "open") -> StoreError:
        """A one-line :class:`StoreError` saying what really went wrong with the store."""
        text = _first_line(exc)
        low = text.lower()
        if "not a database" in low or "malformed" in low:
            return StoreError(f"{self.path} is not a fewshot-bench results store ({text}); pass another --store PATH")
        full = self._disk_full(exc)
        if full is not None:
            return StoreError(
                f"cannot {doing} results store {self.path}: the disk is full ({text}{full}); free some space and "
                "run the same command again: nothing stored is lost (an interrupted run resumes from its checkpoint)"
            )
        if "locked" in low or "busy" in low:
            return StoreError(
                f"results store {self.path} stayed locked by another process for {LOCK_WAIT_S:.0f} s "
                f"({text}); try again"
            )
        if _read_only_error(exc):
            where = self.path.parent if self.path.exists() and os.access(self.path, os.W_OK) else self.path
            return StoreError(
                f"cannot {doing} results store {self.path}: it is read-only ({text}; check {where}); "
                "pass --store PATH in a writable place"
            )
        return StoreError(f"cannot {doing} results store {self.path}: {text}")

    def _disk_full(self, exc: BaseException) -> str | None:
        """None unless ``exc`` comes of a full disk; then how that is known (empty, or the free space it found).

        SQLite reports a full disk as ``SQLITE_FULL`` when a write finds no room, but as an
        I/O error when growing its shared-memory index (``SQLITE_IOERR_SHMSIZE``) or a file
        fails: an I/O error with (almost) no space left beside the store is a full disk too.
        """
        name = getattr(exc, "sqlite_errorname", "") or ""
        low = str(exc).lower()
        if name == "SQLITE_FULL" or "disk is full" in low or getattr(exc, "errno", None) == errno.ENOSPC:
            return ""
        if name.startswith("SQLITE_IOERR") or "disk i/o error" in low:
            free = _free_bytes(self.path.resolve().parent)
            if free is not None and free < FULL_BELOW_BYTES:
                return f"; {free:,} bytes free in {self.path.resolve().parent}"
        return None

    def corrupt(self, run_id: Any, what: str) -> StoreError:
        """The one-line :class:`StoreError` for a stored run that cannot be read as one: which, what, and what to do."""
        return StoreError(
            f"results store {self.path}: run {run_id} is corrupt ({what}); remove that run (sqlite3 shell: "
            f"DELETE FROM episode_results WHERE run_id = '{run_id}'; DELETE FROM runs WHERE run_id = '{run_id}';) "
            "or restore the store from a backup"
        )

    def _header(self) -> _Header:
        """The store's marks and tables, read in one transaction (one snapshot)."""
        c = self.conn
        c.execute("BEGIN")
        try:
            return self._header_in_transaction()
        finally:
            if c.in_transaction:
                c.execute("COMMIT")

    def _refuse_foreign(self, header: _Header) -> None:
        """Refuse another application's database, a newer schema, or tables whose columns are not ours."""
        app_id, tables, version = header.app_id, header.tables, header.version
        if app_id != APPLICATION_ID and (tables or app_id != 0):
            raise StoreError(
                f"{self.path} is an SQLite database but not a fewshot-bench results store; pass another --store PATH"
            )
        if tables and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer fewshot-bench (schema {version}); "
                             "upgrade fewshot-bench")
        for table in TABLE_COLUMNS if tables else ():
            problem = _columns_problem(table, header.columns.get(table), version)
            if problem:
                raise StoreError(
                    f"{self.path} is marked as a fewshot-bench results store, but {problem} (schema {version}); "
                    "it is not one, or was altered: pass another --store PATH or restore it from a backup"
                )

    def _check_and_init(self, create: bool) -> None:
        c = self.conn
        header = self._header()
        self._refuse_foreign(header)  # before anything is written: refused untouched
        tables, version = header.tables, header.version
        if self.read_only:
            if not tables:
                raise StoreError(f"{self.path} holds no fewshot-bench results")
            return
        try:
            self._set_wal()
            if not tables or version < SCHEMA_VERSION:
                self._init_or_migrate()
            if create:
                self._prove_writable()
        except sqlite3.OperationalError as exc:
            if create or not tables or not _read_only_error(exc):
                raise
            self.read_only = True  # a store we may read but not write: reading needs neither
        c.execute("PRAGMA foreign_keys=ON")

    def _set_wal(self) -> None:
        """WAL mode; switching needs a moment alone with the file, so wait while others hold it."""
        c = self.conn
        if c.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                c.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _init_or_migrate(self) -> None:
        """Create the schema, or migrate an older one, in one write transaction (all or nothing)."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            header = self._header_in_transaction()
            self._refuse_foreign(header)
            if not header.tables:
                c.execute(f"PRAGMA application_id={APPLICATION_ID}")
                for statement in filter(str.strip, SCHEMA.split(";")):  # executescript would commit early
                    c.execute(statement)
            else:
                self._migrate(header.version)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def _migrate(self, version: int) -> None:
        """Bring a store of schema ``version`` to the current one (inside the caller's write transaction)."""
        c = self.conn
        if version < 2:
            c.execute(
                "UPDATE runs SET status = 'duplicate' WHERE status = 'complete' AND rowid NOT IN "
                "(SELECT MAX(rowid) FROM runs WHERE status = 'complete' GROUP BY run_key)"
            )
            c.execute("CREATE UNIQUE INDEX IF NOT EXISTS runs_key_complete ON runs (run_key) WHERE status = 'complete'")
        if version < 3:
            c.execute("ALTER TABLE runs RENAME COLUMN accuracy TO mean")
            c.execute("ALTER TABLE runs ADD COLUMN metric TEXT NOT NULL DEFAULT 'accuracy'")
            for run_id, summary in c.execute("SELECT run_id, summary FROM runs").fetchall():
                try:
                    metric = _json_object(summary, "summary").get("metric", "accuracy")
                except ValueError as exc:
                    raise self.corrupt(run_id, str(exc)) from None
                if metric != "accuracy":
                    c.execute("UPDATE runs SET metric = ? WHERE run_id = ?", (metric, run_id))

    def _header_in_transaction(self) -> _Header:
        c = self.conn
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {t: tuple(r[1] for r in c.execute(f"PRAGMA table_info({t})")) for t in TABLE_COLUMNS if t in tables}
        return _Header(app_id, tables, c.execute("PRAGMA user_version").fetchone()[0], columns)

    def _prove_writable(self) -> None:
        """Take the write lock and write the header's own value back, then roll back: fails now on a read-only store."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        finally:
            if c.in_transaction:
                c.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------

    def add_run(
        self, record: RunRecord, episode_values: np.ndarray, if_absent: bool = False, replace: bool = False
    ) -> str:
        """Insert a completed run and its per-episode values in one transaction; returns its id.

        One run key has at most one complete row. With ``if_absent``, a run whose ``run_key``
        is already complete is left alone and the existing id is returned; with ``replace``
        the existing complete row is kept but marked ``status = 'replaced'`` and the new one
        stored (``run --rerun``); otherwise storing a run key twice is a :class:`StoreError`.
        The check and the insert share one write transaction, so concurrent writers cannot
        both insert the same run. A write that fails (a full disk, a read-only store) is a
        one-line :class:`StoreError` saying so, and leaves no row.
        """
        run_id = record.run_id
        row = record.to_json()
        for col in JSON_COLUMNS:
            row[col] = json.dumps(row[col], sort_keys=True, default=str)
        cols = RUN_COLUMNS
        values = np.ascontiguousarray(episode_values, dtype=np.float32)
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                existing = c.execute(
                    "SELECT run_id FROM runs WHERE run_key = ? AND status = 'complete' ORDER BY rowid DESC LIMIT 1",
                    (row["run_key"],),
                ).fetchone()
                if existing is not None and row["status"] == "complete":
                    if if_absent:
                        c.execute("ROLLBACK")
                        return existing[0]
                    if not replace:
                        raise StoreError(
                            f"run key {row['run_key']} is already stored in {self.path} as run {existing[0]}; "
                            "one run key has one complete run (rerun it with `fewshot-bench run ... --rerun`)"
                        )
                    c.execute("UPDATE runs SET status = 'replaced' WHERE run_key = ? AND status = 'complete'",
                              (row["run_key"],))
                c.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                          [row[k] for k in cols])
                c.execute("INSERT INTO episode_results VALUES (?, ?, ?)", (run_id, "float32", values.tobytes()))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:  # SQLite may have rolled back already (e.g. on a full disk)
                    c.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.OperationalError as exc:
            raise self.error(exc, "write to") from None
        return run_id

    def rekey(self, changes: list[tuple[str, str, dict]]) -> list[str]:
        """Give complete runs new run keys and options, ``(run_id, new_key, options)`` each, in one transaction.

        A run whose new key is already complete in the store is left as it is; returns the ids
        of the runs changed. What ``fewshot-bench rekey`` writes; all or nothing.
        """
        c = self.conn
        changed = []
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                for run_id, new_key, options in changes:
                    taken = c.execute("SELECT 1 FROM runs WHERE run_key = ? AND status = 'complete'",
                                      (new_key,)).fetchone()
                    if taken is None:
                        c.execute("UPDATE runs SET run_key = ?, options = ? WHERE run_id = ? AND status = 'complete'",
                                  (new_key, json.dumps(options, sort_keys=True, default=str), run_id))
                        changed.append(run_id)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise self.error(exc, "write to") from None
        return changed

    # --- reading -------------------------------------------------------------------------

    def _records(self, sql: str, params: tuple = ()) -> Iterator[RunRecord]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        for r in cur:
            yield self._record(dict(zip(names, r)))

    def _record(self, row: dict[str, Any]) -> RunRecord:
        """A stored row as a :class:`RunRecord`, checked: a corrupt row is a one-line :class:`StoreError` naming it."""
        try:
            for col in JSON_COLUMNS:
                row[col] = _json_object(row[col], col)
            if "train" in row["summary"]:  # stored before metric-neutral names
                row["summary"]["train"] = current_train_names(row["summary"]["train"])
            if "accuracy" in row:  # a schema-1 or -2 store read as it is (read-only): the old names
                row["mean"], row["metric"] = row.pop("accuracy"), row["summary"].get("metric", "accuracy")
            _check_row_types(row)
        except ValueError as exc:
            raise self.corrupt(row["run_id"], str(exc)) from None
        return RunRecord(**row)

    def runs(self, **where: Any) -> list[RunRecord]:
        """Completed runs matching column=value filters, oldest first."""
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        # One row per run key, even in a schema-1 store read as it is (the latest complete row).
        return list(self._records(
            f"SELECT * FROM runs WHERE status = 'complete' AND NOT EXISTS (SELECT 1 FROM runs AS later "
            f"WHERE later.run_key = runs.run_key AND later.status = 'complete' AND later.rowid > runs.rowid) "
            f"AND {clause} ORDER BY created_at, rowid",
            tuple(where.values()),
        ))

    def run(self, run_id: str) -> RunRecord:
        """The run with this id (a unique prefix is enough)."""
        found = list(self._records("SELECT * FROM runs WHERE run_id LIKE ? ORDER BY rowid", (run_id + "%",)))
        if len(found) != 1:
            raise StoreError(f"{'no' if not found else 'more than one'} run with id {run_id!r} in {self.path}")
        return found[0]

    def find_complete(self, run_key: str) -> RunRecord | None:
        """The completed run with this identity key, if any (one per key; the latest in a schema-1 store)."""
        found = list(self._records(
            "SELECT * FROM runs WHERE run_key = ? AND status = 'complete' ORDER BY rowid DESC LIMIT 1", (run_key,)))
        return found[0] if found else None

    def episode_values(self, run_id: str) -> np.ndarray:
        """The per-episode values (accuracies, or MSE for regression) of a run."""
        row = self.conn.execute(
            "SELECT dtype, values_blob, (SELECT episodes FROM runs WHERE runs.run_id = e.run_id) "
            "FROM episode_results AS e WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"run {run_id!r} has no episode results in {self.path}")
        dtype, blob, episodes = row
        if dtype not in EPISODE_DTYPES:
            raise self.corrupt(run_id, f"its per-episode values have dtype {_shown(dtype)}, not float32")
        if not isinstance(blob, bytes) or not blob or len(blob) % np.dtype(dtype).itemsize:
            size = f"{len(blob)} bytes" if isinstance(blob, bytes) else f"a {type(blob).__name__}"
            raise self.corrupt(run_id, f"its per-episode values are {size}, not whole {dtype} numbers")
        values = np.frombuffer(blob, dtype=dtype).copy()
        if isinstance(episodes, int) and values.size != episodes:
            raise self.corrupt(run_id, f"it holds {values.size} per-episode values for its {episodes} episodes")
        return values
