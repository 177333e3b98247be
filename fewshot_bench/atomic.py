"""Writing a file so that no reader ever sees it half-written, and a failed write leaves nothing behind.

Every file the harness writes that a later run reads (checkpoints, saved models, embeddings
files, caches, manifests, figures) goes through :func:`replacing`: the content is written to a
new temporary file beside the target, flushed to disk, renamed over the target (atomic on one
file system), and the folder's entry is flushed too. Any error removes the temporary file; an
``OSError`` (or another failure of the writing library) is a one-line :class:`WriteError`
saying what could not be written and why.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fewshot_bench.errors import FewshotBenchError, WriteError

FIX = "write it to a writable place with free space"
TEMP_SUFFIX = ".tmp"  # every temporary file is ``.<target name>.<random>.tmp`` beside its target


@contextmanager
def replacing(path: Path, what: str, fix: str = FIX) -> Iterator[Path]:
    """A new, empty temporary file beside ``path`` to write; renamed over ``path`` when the block ends without error.

    ``what`` names the file in an error (``"checkpoint"``, ``"embeddings file"``); ``fix`` says
    what the user can do. Missing folders are created. A :class:`FewshotBenchError` raised in
    the block passes through unchanged (after the temporary file is removed).
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temporary(path)
        yield tmp
        rename_durably(tmp, path)
        tmp = None
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, FewshotBenchError):
            raise write_error(path, exc, what, fix) from None
        raise


def write_text(path: Path, text: str, what: str, fix: str = FIX) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`replacing`); returns ``path``."""
    with replacing(path, what, fix) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure(fig: Any, path: Path, **savefig: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically, in the format its suffix names (PNG without one) unless
    ``format`` is given among the ``savefig`` options."""
    path = Path(path)
    with replacing(path, "figure") as tmp:  # the temporary name ends in .tmp: say the format
        fig.savefig(tmp, **{"format": path.suffix[1:] or "png", **savefig})
    return path


def rename_durably(src: Path, dest: Path) -> None:
    """Flush the finished file ``src`` to disk, rename it over ``dest``, then flush the folder's entry."""
    _fsync(src)
    os.replace(src, dest)
    try:
        _fsync(Path(dest).parent)
    except OSError:  # some file systems cannot sync a folder; the rename itself is done
        pass


def _new_temporary(path: Path) -> Path:
    """Create a new empty file ``.<name>.<random>.tmp`` beside ``path``, with the mode ``open`` would give it."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            if not path.parent.is_dir():  # a part of the folder is a file: no name will do
                raise
            continue  # another writer's temporary file has that name: draw another


def _fsync(path: Path) -> None:
    """Flush ``path``'s data (a file) or entries (a folder) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_error(path: Path, exc: BaseException, what: str, fix: str = FIX) -> WriteError:
    """A one-line :class:`WriteError` saying why ``path`` (the ``what``) could not be written: the real cause."""
    cannot = f"cannot write {what} {path}"
    full_disk = f"{cannot}: the disk is full; free some space and run the same command again"
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return WriteError(f"{cannot}: it is a directory; remove it or {fix}")
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        return WriteError(f"{cannot}: a part of its folder {path.parent} is a file, not a folder; {fix}")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return WriteError(full_disk)
    if isinstance(exc, OSError):
        return WriteError(f"{cannot}: {exc.strerror or exc}; {fix}")
    # Writing libraries report a failed write in their own way (torch.save: a RuntimeError of its
    # stream writer): name the real cause if it is space.
    try:
        full = shutil.disk_usage(next(p for p in (path.parent, *path.parents) if p.exists())).free < 1 << 20
    except (OSError, StopIteration):
        full = False
    if full:
        return WriteError(full_disk)
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return WriteError(f"{cannot}: {type(exc).__name__}: {first[:160]}; {fix}")
