"""A cache of what ``fewshot-bench learners``, ``datasets`` and ``plugins`` print, so that listing is fast.

Listing what is installed means importing every plugin, and with them torch: seconds. What a
listing prints depends only on the installed plugins and the ``FEWSHOT_BENCH_*`` settings, so
it is replayed from a cache keyed by a fingerprint of those: every entry point of the
``fewshot_bench`` group with its distribution's name and version, and the path, size and
modification time of every Python file of the packages the entry points name (located by the
import system's finders, never imported). Installing, upgrading, editing or disabling a
plugin changes the fingerprint, and the next listing is computed afresh.

The cache lives in ``$FEWSHOT_BENCH_CACHE_DIR`` (default ``$XDG_CACHE_HOME/fewshot-bench``, else
``~/.cache/fewshot-bench``); ``FEWSHOT_BENCH_CACHE_DIR=off`` turns it off. A listing that
logged a warning (a plugin failed to load, an impostor was rejected) is never cached, so
every warning is printed again until its cause is fixed. Only an entry exactly as this module
writes it is replayed (its fields, their types, a check over them, no control characters).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from importlib.machinery import ModuleSpec
from pathlib import Path

from fewshot_bench.atomic import write_text
from fewshot_bench.errors import WriteError

CACHE_ENV = "FEWSHOT_BENCH_CACHE_DIR"
GROUP = "fewshot_bench"  # the plugins' entry-point group (fewshot_bench.plugin_host.GROUP)
PREFIX = "listing-"
# Characters a listing never prints and a cache never replays: C0 controls but tab and newline, DEL, C1 (ESC, CSI).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")

log = logging.getLogger(__name__)


def cache_folder() -> Path | None:
    """Where listings are cached, or None when ``FEWSHOT_BENCH_CACHE_DIR=off``."""
    configured = os.environ.get(CACHE_ENV, "")
    if configured.lower() in ("off", "0", "false", "no"):
        return None
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fewshot-bench"


def _locate(top: str) -> ModuleSpec | None:
    """Where the import system would find top-level module ``top`` now, without importing it.

    The finders are asked directly: ``importlib.util.find_spec`` would answer with an
    already imported module's location, which is stale if the path has changed since.
    """
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        try:
            spec = find(top, None) if find else None
        except (ImportError, ValueError):
            continue
        if spec is not None:
            return spec
    return None


def _package_files(top: str) -> list[Path]:
    """The Python files of top-level module ``top``, located without importing it."""
    spec = _locate(top)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return sorted(p for root in spec.submodule_search_locations for p in Path(root).rglob("*.py"))
    return [Path(spec.origin)] if spec.origin and spec.origin not in ("built-in", "frozen") else []


def fingerprint() -> str:
    """A digest of everything a listing depends on: entry points, their distributions and files, settings."""
    h = hashlib.blake2b(digest_size=16)
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith("FEWSHOT_BENCH_") and k != CACHE_ENV)
    h.update(repr((sys.version, settings)).encode())
    tops = set()
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        dist = getattr(ep, "dist", None)
        h.update(repr((ep.name, ep.value, dist and dist.metadata["Name"], dist and dist.version)).encode())
        tops.add(ep.value.partition(":")[0].partition(".")[0])
    tops.add(__name__.partition(".")[0])  # the harness: what it prints and its built-in learners
    for top in sorted(tops):
        for path in _package_files(top):
            try:
                stat = path.stat()
            except OSError:
                continue
            h.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


class _WarningSeen(logging.Handler):
    """Notes whether anything was logged at WARNING or above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        self.seen = True


def _entry_name(key: str, digest: str) -> str:
    """The cache file of listing ``key`` under fingerprint ``digest``."""
    return f"{PREFIX}{digest}-{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}.json"


class _Captured(ExitStack):
    """A ``with`` block whose printed output is kept (``out``, ``err``) and whose warnings are noted (``warned``)."""

    def __enter__(self) -> _Captured:
        super().__enter__()
        self.out, self.err, self._watch = io.StringIO(), io.StringIO(), _WarningSeen()
        logging.getLogger().addHandler(self._watch)
        self.callback(logging.getLogger().removeHandler, self._watch)
        self.enter_context(redirect_stdout(self.out))
        self.enter_context(redirect_stderr(self.err))
        return self

    @property
    def warned(self) -> bool:
        return self._watch.seen

    def keep(self, folder: Path, name: str, key: str, code: int, digest: str) -> None:
        """Store what was printed as listing ``key`` under fingerprint ``digest``, unless it failed, warned or
        holds control characters (never cached: see the module)."""
        out, err = self.out.getvalue(), self.err.getvalue()
        if code == 0 and not self.warned and not CONTROL.search(out + err):
            _store(folder, name, _entry(key, digest, out, err))


def _entry(key: str, digest: str, stdout: str, stderr: str) -> dict[str, str]:
    """A cache entry: the listing's output, what it is of, and a check of all that (a truncated or edited file fails
    it)."""
    fields = {"key": key, "fingerprint": digest, "stdout": stdout, "stderr": stderr}
    return fields | {"check": hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=16).hexdigest()}


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} in a listing cache")


def _replay(path: Path, key: str, digest: str) -> tuple[str, str] | None:
    """The stdout and stderr of listing ``key`` cached at ``path`` under fingerprint ``digest``, or None.

    Only an entry exactly as :func:`_entry` writes it is replayed: the same fields of the same
    types, its check right, no control characters (a planted escape sequence never reaches the
    terminal); anything else is computed afresh.
    """
    try:
        entry = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or set(entry) != {"key", "fingerprint", "stdout", "stderr", "check"}:
        return None
    if not all(isinstance(value, str) for value in entry.values()) or CONTROL.search(entry["stdout"] + entry["stderr"]):
        return None
    if entry != _entry(key, digest, entry["stdout"], entry["stderr"]):
        return None
    return entry["stdout"], entry["stderr"]


def print_cached(key: str, produce: Callable[[], int]) -> int:
    """Run ``produce`` (which prints a listing and returns an exit code), or replay its cached output.

    ``key`` names the listing and its options (``learners --json``). Output is replayed only
    for the same key under the same :func:`fingerprint`; a failing or warning listing is not
    stored. A cache that cannot be read or written is ignored.
    """
    folder = cache_folder()
    if folder is None:
        return produce()
    digest = fingerprint()
    name = _entry_name(key, digest)
    cached = _replay(folder / name, key, digest)
    if cached is not None:  # only successful listings are cached
        sys.stdout.write(cached[0])
        sys.stderr.write(cached[1])
        return 0
    captured = _Captured()
    try:
        with captured:
            code = produce()
    finally:
        sys.stdout.write(captured.out.getvalue())
        sys.stderr.write(captured.err.getvalue())
    captured.keep(folder, name, key, code, digest)
    return code


def warm(listings: dict[str, Callable[[], int]]) -> None:
    """Store each listing (key -> ``produce``) not cached yet, printing nothing: for commands that loaded the plugins.

    A command that already imported torch and every plugin (``run``, ``sweep``, ...) computes
    a listing in milliseconds, so the user's next ``learners`` replays it rather than
    spending seconds on imports. The rules of :func:`print_cached` hold: nothing is stored
    from a listing that failed or warned, and a cache problem is never an error. Log records
    reach only the warning detector, not the terminal: the command has printed its own.
    """
    folder = cache_folder()
    if folder is None:
        return
    digest = fingerprint()
    root = logging.getLogger()
    handlers = root.handlers[:]
    for h in handlers:
        root.removeHandler(h)
    try:
        for key, produce in listings.items():
            name = _entry_name(key, digest)
            if (folder / name).exists():
                continue
            captured = _Captured()
            try:
                with captured:
                    code = produce()
            except Exception as exc:  # a listing that cannot be computed is simply not cached
                log.debug("listing %s not cached: %s", key, exc)
                continue
            captured.keep(folder, name, key, code, digest)
    finally:
        for h in handlers:
            root.addHandler(h)


def _store(folder: Path, name: str, entry: dict) -> None:
    """Write one cached listing and drop the listings of other fingerprints; a cache is never worth an error."""
    try:
        write_text(folder / name, json.dumps(entry), "listing cache")
        current = name[: len(PREFIX) + 32]
        for old in folder.glob(f"{PREFIX}*.json"):
            if not old.name.startswith(current):
                old.unlink(missing_ok=True)
    except (WriteError, OSError) as exc:
        log.debug("listing cache not written: %s", exc)
