"""Data files opened safely: only regular files are ever opened, and a path that is something else is named.

Opening a FIFO for reading blocks until some other process writes to it, forever if none
does; a character device can stream without end. A data file is therefore opened with
``O_NONBLOCK`` (which makes opening a FIFO return at once) and checked with ``fstat``
on the open descriptor, so what is read is the file that was checked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from fewshot_bench.errors import DataError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def kind_of(st: os.stat_result) -> str:
    """What a stat result describes, in words: ``a directory``, ``a FIFO (named pipe)``, ``an empty file``, ..."""
    for test, words in _KINDS:
        if test(st.st_mode):
            return words
    if stat.S_ISREG(st.st_mode):
        return "an empty file" if st.st_size == 0 else "a file"
    return "not a file, directory, FIFO, socket or device"


def what_is(path: Path) -> str | None:
    """What ``path`` is (following symbolic links), in words; None when nothing is there."""
    try:
        return kind_of(os.stat(path))
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else None
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"


def directory_problem(path: Path) -> str:
    """Why ``path`` is no directory: ``does not exist``, or ``is a FIFO (named pipe), not a directory``."""
    kind = what_is(path)
    return "does not exist" if kind is None else f"is {kind}, not a directory"


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; a one-line :class:`DataError` otherwise.

    Never blocks: a FIFO, socket or device by that name is refused without being read.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:  # where a directory cannot be opened at all (Windows)
        raise DataError(f"cannot read {path}: it is a directory, not a regular file") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"cannot read {path}: it is {kind_of(st)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # reads of a regular file never block anyway; restore the usual mode
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise

