"""The one grammar of the text users write: statements, directive comments, durations, values.

Statements are split with the real PostgreSQL parser; a directive's trailing comment, a
duration (`500ms`, `5s`, `2min`) and a value's text form have one definition each, shared
by checks, scenarios, artifacts, gates and reports.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

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


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|min|h)$", re.IGNORECASE)
_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
MAX_TIMEOUT_MS = 2_147_483_647  # PostgreSQL's limit for statement_timeout


def duration_ms(text: str) -> int:
    """Milliseconds of a duration like `500ms`, `5s`, `2min` or `1h`; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration like 500ms, 5s or 2min: {text!r}")
    milliseconds = Decimal(match.group(1)) * _UNITS_MS[match.group(2).lower()]
    if milliseconds < 1:
        raise ValueError(f"a timeout must be at least 1ms: {text!r}")
    if milliseconds > MAX_TIMEOUT_MS:
        raise ValueError(f"a timeout must be under 24 days: {text!r}")
    return int(milliseconds)


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|min|h|d)$", re.IGNORECASE)
_UNITS_S = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def age_seconds(text: str) -> float:
    """Seconds of an age like `90min`, `24h` or `7d`; ValueError otherwise."""
    match = _AGE.match(text.strip())
    if not match or Decimal(match.group(1)) <= 0:
        raise ValueError(f"not an age like 90min, 24h or 7d: {text!r}")
    return float(Decimal(match.group(1)) * _UNITS_S[match.group(2).lower()])


def setting_ms(text: str) -> int:
    """A duration setting as PostgreSQL reads it: a duration, or bare milliseconds."""
    value = text.strip()
    if value.isdigit() and int(value) > 0:
        return min(int(value), MAX_TIMEOUT_MS)
    return duration_ms(value)


def value_text(value: Any) -> str:
    """A value as oneroof shows it everywhere: NULL, true/false, JSON, \\x-hex bytes, text."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def json_value(value: Any) -> Any:
    """A value read from PostgreSQL as JSON keeps it: integral numerics as int, dates ISO."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return value
    return value_text(value)


# A quoted span counts only at the start of a word (an apostrophe as in `Bob's` opens
# nothing) and only when closed, SQL style ('it''s', "My ""Table"""); a comment starts at a
# `--` that begins the text or follows white space.
_QUOTED_OR_COMMENT = re.compile(
    r"""(?<![^\s=(,])(?:'(?:[^']|'')*'|"(?:[^"]|"")*")|(?:^|(?<=\s))--"""
)


def strip_comment(value: str) -> str:
    """A directive's value without its trailing `-- comment`; quoted `--` stays the value's."""
    for match in _QUOTED_OR_COMMENT.finditer(value):
        if match.group() == "--":
            return value[: match.start()].strip()
    return value.strip()
