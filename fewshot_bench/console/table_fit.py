"""Tables that fit the terminal: long text cells wrapped, then columns split into blocks, each as wide as it allows.

``results`` lists a dozen settings per run, ``table 1`` four settings with the paper's numbers
beside ours: wider than most terminals, where each row would break across lines. On a
terminal (or wherever ``COLUMNS`` says a width: tests, a user's choice), :func:`fit_table`
wraps cells longer than :data:`CELL_WIDTH` at their spaces (formats whose rows can hold several
lines) and, if the table is still too wide, prints it as several tables one under the other,
each with the first column (the row's name) and as many of the next columns as fit, as
pandas does. Written to a file or a pipe, a table is never cut.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence

from tabulate import tabulate

CELL_WIDTH = 30  # a longer text cell is wrapped at its spaces when the table does not fit
MULTILINE_FORMATS = {"simple", "plain", "grid"}  # tabulate formats whose cells may hold several lines


def terminal_width() -> int | None:
    """``$COLUMNS`` when set, else the terminal's width when stdout is one; None (no limit) for a file or a pipe."""
    raw = os.environ.get("COLUMNS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def fit_table(rows: Sequence[Sequence[object]], headers: Sequence[str], tablefmt: str = "simple",
              width: int | None = None, numparse: bool = True,
              shorten: Callable[[list[str]], list[str]] | None = None) -> str:
    """``rows`` under ``headers`` rendered by tabulate in ``tablefmt``, at most ``width`` characters wide where
    the cells allow (None: as wide as it is). Several blocks are separated by a blank line; ``numparse`` False
    keeps number-like text as written; ``shorten`` turns a block's headers into those it shows (a header may
    lean on the one before it, which only the block knows)."""
    def render(columns: list[int], body: Sequence[Sequence[object]]) -> str:
        names = [headers[i] for i in columns]
        return tabulate([[row[i] for i in columns] for row in body], headers=shorten(names) if shorten else names,
                        tablefmt=tablefmt, disable_numparse=not numparse)

    everything = list(range(len(headers)))
    text = render(everything, rows)
    if width is None or _widest(text) <= width:
        return text
    if tablefmt in MULTILINE_FORMATS:
        rows = [[_wrap(cell) for cell in row] for row in rows]
        text = render(everything, rows)
        if _widest(text) <= width:
            return text
    blocks: list[list[int]] = []
    for i in everything[1:]:  # the first column names the row: it starts every block
        if blocks and _widest(render([0, *blocks[-1], i], rows)) <= width:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return "\n\n".join(render([0, *block], rows) for block in blocks)


def _wrap(cell: object) -> object:
    text = str(cell)
    if len(text) <= CELL_WIDTH or "\n" in text:
        return cell
    return "\n".join(textwrap.wrap(text, CELL_WIDTH, break_long_words=False, break_on_hyphens=False)) or text


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)
