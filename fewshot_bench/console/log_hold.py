"""Holding log records while a command checks its arguments, so that a user error is one line.

The CLI attaches :data:`LOG_HOLD` to the root logger's handlers around a command; a command
calls :func:`hold_logs` before its checks and :func:`release_logs` once they pass. Notes logged
in between (e.g. a preset's fallback) are printed then, or dropped with a user error.
"""

from __future__ import annotations

import logging


class LogHold:
    """Holds log records while ``holding``; :meth:`release` prints them in order, :meth:`drop` forgets them."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self.handlers: list[logging.Handler] = []

    def attach(self) -> None:
        """Filter every handler of the root logger through this hold."""
        self.handlers = list(logging.getLogger().handlers)
        for handler in self.handlers:
            handler.addFilter(_HeldBy(self, handler))

    def detach(self) -> None:
        """Remove this hold's filters and forget its state."""
        for handler in self.handlers:
            for f in [f for f in handler.filters if isinstance(f, _HeldBy) and f.hold is self]:
                handler.removeFilter(f)
        self.handlers, self.held, self.holding = [], [], False

    def release(self) -> None:
        """Stop holding and print what was held; later records pass straight through."""
        self.holding = False
        held, self.held = self.held, []
        for handler, record in held:
            handler.handle(record)

    def drop(self) -> None:
        """Stop holding and forget what was held (a user error is one line)."""
        self.held.clear()
        self.release()


class _HeldBy(logging.Filter):
    """One handler's filter: keeps the record in the hold while it is holding."""

    def __init__(self, hold: LogHold, handler: logging.Handler) -> None:
        super().__init__()
        self.hold, self.handler = hold, handler

    def filter(self, record: logging.LogRecord) -> bool:
        if self.hold.holding:
            self.hold.held.append((self.handler, record))
            return False
        return True


LOG_HOLD = LogHold()


def hold_logs() -> None:
    """Hold log messages until :func:`release_logs` (dropped if the command fails with a user error first)."""
    LOG_HOLD.holding = True


def release_logs() -> None:
    """Print the held log messages: the command's arguments checked out."""
    LOG_HOLD.release()
