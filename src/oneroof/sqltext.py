"""SQL text of the files users write: split into statements with the real PostgreSQL parser."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pglast


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a file and the line it starts on."""

    sql: str
    line: int


class SqlSyntaxError(ValueError):
    """The parser cannot read the text; `line` is where it stopped, as near as it says."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def split(text: str, first_line: int = 1) -> list[Statement]:
    """The statements of `text` (never a naive split on `;`), each with its starting line.

    `first_line` is the file line `text` starts on. Raises `SqlSyntaxError`.
    """
    try:
        slices = list(pglast.split(text, with_parser=True, only_slices=True))
    except Exception as exc:  # pglast raises ParseError, and a few others on odd input
        message = str(exc.args[0]) if exc.args else type(exc).__name__
        index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        if index is None:
            found = re.search(r"at index (\d+)", message)
            index = int(found.group(1)) if found else None
        message = re.sub(r",? at index \d+", "", message.splitlines()[0] if message else "")
        if index is not None:
            line = first_line + text.count("\n", 0, index)
        else:
            line = first_line + len(text.rstrip().split("\n")) - 1
        raise SqlSyntaxError(message or "syntax error", line) from None
    statements = []
    for part in slices:
        sql = text[part].strip()
        if sql:
            statements.append(Statement(sql, first_line + text.count("\n", 0, part.start or 0)))
    return statements
