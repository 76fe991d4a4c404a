"""Every table the command line prints, through one helper that keeps words whole.

:func:`print_table` lays a table out for the console's width (``COLUMNS`` when set; 120 columns
for pipes and logs, so they are not squeezed):

1. every column at its natural width when the table fits;
2. otherwise the columns with the most room to give are narrowed and their cells *folded at
   separators* (spaces, ``.``, ``/``, ``,``, ``=``, ``:``, ``_``, ``-``, which stay at the end of
   the line they close) — never inside a word, so ``model.hidden_channels`` may become
   ``model.hidden_`` / ``channels`` and ``FINISHED`` stays ``FINISHED``;
3. when even the longest unbreakable piece of every column does not fit side by side, each row is
   printed as a vertical record (``column  value`` lines under a rule).

Cells are strings with rich markup (``[red]VIOLATION[/]``); widths count terminal cells, not
markup. rich is imported lazily (``modelcycle --help`` stays light).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Column", "console", "fold", "layout", "print_table", "render_table"]

#: A fold may follow any of these (they stay at the end of the line they close).
SEPARATORS = " ./,=:_-"
_PIECE = re.compile(r"[^ ./,=:_-]*[ ./,=:_-]*")
_WORD = re.compile(r"[^ ]*[ ]*")  # folds at spaces only: tried before any other separator
_BORDERS = 4  # a table's outer borders and the padding beside them
_BETWEEN = 3  # the rule and padding between two columns
PIPE_WIDTH = 120


@dataclass(frozen=True)
class Column:
    """A column: its header and how its cells are justified (``left``/``right``/``center``)."""

    header: str
    justify: str = "left"


def console(width: int | None = None) -> Any:
    """A rich console: ``width`` if given, else ``COLUMNS`` or the terminal's, else
    :data:`PIPE_WIDTH` when writing to a pipe or file (no squeezing of logs)."""
    from rich.console import Console

    if width is not None:
        return Console(width=width)
    found = Console()
    if not found.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        return Console(width=PIPE_WIDTH)
    return found


def _pieces(text: Any, pattern: re.Pattern[str] = _PIECE) -> list[Any]:
    """``text`` (a rich Text) cut after each run of separators: the units a fold keeps whole."""
    plain = text.plain
    cuts, position = [], 0
    for match in pattern.finditer(plain):
        if match.end() > position:
            cuts.append((position, match.end()))
            position = match.end()
    return [text[start:end] for start, end in cuts] or [text]


def _longest_piece(text: Any, pattern: re.Pattern[str] = _PIECE) -> int:
    return max((len(piece.plain.rstrip()) for piece in _pieces(text, pattern)), default=0)


def fold(text: Any, width: int) -> Any:
    """``text`` (a rich Text, possibly of several lines) folded into lines of at most ``width``
    cells at separators; a piece longer than ``width`` gets a line of its own, whole."""
    from rich.text import Text

    lines: list[Any] = []
    for source in text.split("\n"):
        line = Text()
        for piece in _pieces(source):
            if line.plain and len(line.plain.rstrip()) + len(piece.plain.rstrip()) > width:
                line.rstrip()
                lines.append(line)
                line = Text()
            line.append_text(piece)
        line.rstrip()
        lines.append(line)
    return Text("\n").join(lines)


def _natural(text: Any) -> int:
    return max((len(line) for line in text.plain.split("\n")), default=0)


def layout(headers: Sequence[Any], rows: Sequence[Sequence[Any]], width: int) -> list[int] | None:
    """Column widths that fit ``width`` cells without breaking a word, or ``None`` when the table
    cannot fit side by side (print records instead). ``headers`` and ``rows`` hold rich Texts."""
    columns = list(zip(headers, *rows))
    natural = [max(_natural(cell) for cell in column) for column in columns]
    def longest(pattern: re.Pattern[str]) -> list[int]:
        return [max(max(_longest_piece(line, pattern) for line in cell.split("\n")) for cell in column)
                for column in columns]

    room = width - _BORDERS - _BETWEEN * (len(columns) - 1)
    minimum = longest(_PIECE)
    if sum(minimum) > room:
        return None
    widths = list(natural)
    # first fold at spaces only ("2026-12-01 22:05:13" → date / time), then at any separator
    for floor in ([max(a, b) for a, b in zip(longest(_WORD), minimum)], minimum):
        while sum(widths) > room:  # narrow the column with the most room to give, one cell at a time
            slack, index = max((w - f, i) for i, (w, f) in enumerate(zip(widths, floor)))
            if slack <= 0:
                break
            widths[index] -= 1
    return widths


def render_table(title: str | None, columns: Sequence[Column | str], rows: Sequence[Sequence[Any]],
                 caption: str | None = None, width: int = 80) -> list[Any]:
    """The renderables of the table (one rich Table, or a title plus one record per row) laid out
    for ``width`` cells; see the module docstring."""
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    specs = [c if isinstance(c, Column) else Column(c) for c in columns]
    headers = [Text(c.header) for c in specs]
    cells = [[c if isinstance(c, Text) else Text.from_markup(str(c)) for c in row] for row in rows]
    widths = layout(headers, cells, width)
    if widths is not None:
        table = Table(title=title, caption=caption)
        for spec, column_width in zip(specs, widths):
            table.add_column(spec.header if _natural(Text(spec.header)) <= column_width else fold(Text(spec.header), column_width),
                             justify=spec.justify, no_wrap=True, width=column_width)  # type: ignore[arg-type]
        for row in cells:
            table.add_row(*(fold(cell, w) for cell, w in zip(row, widths)))
        return [table]
    name_width = max(len(c.header) for c in specs)
    value_width = max(width - name_width - 2, 1)
    out: list[Any] = [Text(title, style="bold")] if title else []
    for number, row in enumerate(cells, 1):
        out.append(Rule(f"{number} of {len(cells)}", align="left", characters="─"))
        for spec, cell in zip(specs, row):
            value = fold(cell, value_width)
            label = Text(spec.header.ljust(name_width) + "  ", style="bold")
            indent = "\n" + " " * (name_width + 2)
            out.append(label + Text(indent).join(value.split("\n")))
    if caption:
        out.append(Text(caption, style="dim"))
    return out


def print_table(title: str | None, columns: Sequence[Column | str], rows: Sequence[Sequence[Any]],
                caption: str | None = None, out: Any = None) -> None:
    """Print a table on ``out`` (a rich console; default :func:`console`) keeping every word whole
    at the console's width: side by side, folded at separators, or one record per row."""
    target = out if out is not None else console()
    for renderable in render_table(title, columns, rows, caption=caption, width=target.width):
        target.print(renderable)
