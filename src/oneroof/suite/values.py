"""How values and rows read in a result, and how `value=X` compares with what came back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any


def _count(rows: int) -> str:
    return f"{rows} row{'' if rows == 1 else 's'}"


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def _value_text(value: Any) -> str:
    return f"value {_text(value)}"


def _rows_text(rows: Sequence[Sequence[Any]], limit: int = 3) -> str:
    shown = "; ".join("(" + ", ".join(_text(v) for v in row) + ")" for row in rows[:limit])
    if len(rows) > limit:
        shown += "; …"
    return shown if len(shown) <= 300 else shown[:299] + "…"


def _value_matches(value: Any, expected: str) -> bool:
    """`value=X` compares like PostgreSQL's text form: numbers by value, booleans as t/true."""
    if value is None:
        return expected.lower() == "null"
    if isinstance(value, bool):
        return expected.lower() in (("true", "t") if value else ("false", "f"))
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(expected) == Decimal(str(value))
        except InvalidOperation:
            return False
    return _text(value) == expected
