"""The Optuna study file beside a results store, checked before Optuna opens it, and the lock of a study beside it.

Optuna opens whatever SQLite file it is given: it adds its tables to a foreign database, and a
damaged or altered study file fails deep inside SQLAlchemy. So the file is read first, with
sqlite3 and without writing: a regular file, an SQLite database that passes SQLite's quick
check, holding exactly Optuna's tables at the schema version this Optuna writes, every
complete trial with its value. Anything else is one line saying what the file is and what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from fewshot_bench.data.files import what_is
from fewshot_bench.errors import ConfigError
from fewshot_bench.records.store import APPLICATION_ID

SQLITE_MAGIC = b"SQLite format 3\x00"
RESULTS_TABLES = {"runs", "episode_results"}  # what marks a fewshot-bench results store besides its application id
MOVE_AWAY = "move it away or pass another --store"
RESTORE = "restore it from a backup, or move it away (its finished trials stay runs in the results store)"


def lock_path(study_file: Path, study: str) -> Path:
    """The lock file of ``study`` beside its study file: ``r.tune.db`` -> ``r.tune.db.STUDY.lock``.

    Beside the study, not in a checkpoint folder: every driver of the study finds the same lock,
    whatever ``--checkpoint-dir`` it was given.
    """
    return study_file.with_name(f"{study_file.name}.{study}.lock")


@contextlib.contextmanager
def study_lock(path: Path) -> Iterator[None]:
    """Hold the lock file ``path``; a second live driver of the same study gets a one-line error.

    The lock is the OS's (``flock``): a killed driver releases it, so its rerun proceeds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another `fewshot-bench tune` is running this study (lock {path}); "
                              "wait for it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.cache
def optuna_schema() -> tuple[frozenset[str], str, tuple[str, ...]]:
    """The tables, schema version and known older versions of the study files this Optuna writes (asked of an
    in-memory storage it makes, so they follow the installed Optuna)."""
    import optuna
    import sqlalchemy

    fresh = optuna.storages.RDBStorage("sqlite://")
    tables = frozenset(sqlalchemy.inspect(fresh.engine).get_table_names())
    return tables, fresh.get_head_version(), tuple(fresh.get_all_versions())


def check_study_file(path: Path) -> None:
    """A one-line :class:`ConfigError` unless ``path`` is absent, empty or an intact Optuna study file of this
    Optuna's schema; nothing is written to it."""
    kind = what_is(path)
    if kind is None or kind == "an empty file":  # Optuna makes its tables
        return
    if kind != "a file":
        raise ConfigError(f"study file {path} is {kind}, not a file; move it away or pass another --store")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigError(f"study file {path} cannot be read ({exc.strerror or exc}); {MOVE_AWAY}") from None
    if magic != SQLITE_MAGIC:
        raise ConfigError(f"study file {path} is not an SQLite database (not written by Optuna); {MOVE_AWAY}")
    try:
        # mode=rw: never creates the file; a hot journal a killed driver left is rolled back, as Optuna would
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=60)
    except sqlite3.Error as exc:
        raise ConfigError(f"study file {path} cannot be opened ({exc}); {MOVE_AWAY}") from None
    try:
        _check_contents(conn, path)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"study file {path} is damaged ({exc}); {RESTORE}") from None
    finally:
        conn.close()


def _check_contents(conn: sqlite3.Connection, path: Path) -> None:
    """The checks of :func:`check_study_file` that read the database (a damaged one raises sqlite3's error)."""
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(problems[0])
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app_id == APPLICATION_ID or RESULTS_TABLES <= tables:
        raise ConfigError(f"study file {path} is a fewshot-bench results store, not an Optuna study file; "
                          "move it away or pass another --store")
    if not tables and app_id == 0:  # an empty database: Optuna makes its tables
        return
    expected, head, known = optuna_schema()
    if app_id != 0 or "alembic_version" not in tables or not tables & (expected - {"alembic_version"}):
        raise ConfigError(f"study file {path} is an SQLite database but not an Optuna study file "
                          f"(tables: {', '.join(sorted(tables)) or 'none'}); {MOVE_AWAY}")
    _check_version(conn, path, head, known)
    if tables != expected:
        missing, foreign = sorted(expected - tables), sorted(tables - expected)
        what = "; ".join(filter(None, [missing and f"lacks Optuna's tables {', '.join(missing)}",
                                       foreign and f"holds tables not Optuna's: {', '.join(foreign)}"]))
        raise ConfigError(f"study file {path} {what} (altered or damaged); {RESTORE}")
    _check_values(conn, path)


def _check_version(conn: sqlite3.Connection, path: Path, head: str, known: tuple[str, ...]) -> None:
    """The file's Optuna schema version is the one this Optuna writes."""
    import optuna

    versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    if versions == [head]:
        return
    if len(versions) == 1 and versions[0] in known:
        raise ConfigError(f"study file {path} has the schema of an older Optuna ({versions[0]}; Optuna "
                          f"{optuna.__version__} writes {head}): upgrade it (`optuna storage upgrade --storage "
                          f"sqlite:///{path.resolve()}`), or {MOVE_AWAY}")
    found = ", ".join(map(repr, versions)) or "none"
    raise ConfigError(f"study file {path} has an Optuna schema version Optuna {optuna.__version__} does not know "
                      f"({found}; it writes {head}): a newer Optuna wrote it (upgrade Optuna), or it was altered: "
                      f"{RESTORE}")


def _check_values(conn: sqlite3.Connection, path: Path) -> None:
    """Every complete trial has its value (else Optuna would silently rank a later trial best)."""
    lacking = conn.execute(
        "SELECT s.study_name, t.number FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "WHERE t.state = 'COMPLETE' AND NOT EXISTS (SELECT 1 FROM trial_values v WHERE v.trial_id = t.trial_id) "
        "ORDER BY s.study_name, t.number"
    ).fetchall()
    if lacking:
        study, number = lacking[0]
        raise ConfigError(f"study file {path} is damaged: {len(lacking)} complete trial(s) have no value (first: "
                          f"trial {number} of {study}); {RESTORE}")
