"""Saying a note once per command: a log message repeated word for word is printed the first time only.

A command that prepares and runs several runs (the seeds of ``run --seeds``, a sweep's cells)
resolves each run's config more than once (to check it, then to run it), and every
resolution logs the same notes (a preset's fallback, the threads chosen): the same line
six times for three seeds says nothing the first did not. The CLI attaches :data:`LOG_ONCE`
to the root logger's handlers around a command; debug records (``-v``) and errors pass always.
"""

from __future__ import annotations

import logging


class LogOnce(logging.Filter):
    """Passes an info or warning record unless one with the same logger, level and text already passed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, int, str], logging.LogRecord] = {}  # each text's first record
        self.handlers: list[logging.Handler] = []

    def attach(self) -> None:
        """Filter every handler of the root logger."""
        self.seen.clear()
        self.handlers = list(logging.getLogger().handlers)
        for handler in self.handlers:
            handler.addFilter(self)

    def detach(self) -> None:
        """Remove this filter and forget what was said."""
        for handler in self.handlers:
            handler.removeFilter(self)
        self.handlers, self.seen = [], {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not logging.INFO <= record.levelno < logging.ERROR:
            return True
        # The first record of a text passes every handler (and again when a hold releases it); a repeat none.
        return self.seen.setdefault((record.name, record.levelno, record.getMessage()), record) is record


LOG_ONCE = LogOnce()
