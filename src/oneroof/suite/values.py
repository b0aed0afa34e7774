"""How values and rows read in a result, and how `value=X` compares with what came back."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from oneroof.sqltext import value_text


def _count(rows: int) -> str:
    return f"{rows} row{'' if rows == 1 else 's'}"


def _value_text(value: Any) -> str:
    return f"value {value_text(value)}"


def _rows_text(rows: Sequence[Sequence[Any]], limit: int = 3) -> str:
    shown = "; ".join("(" + ", ".join(value_text(v) for v in row) + ")" for row in rows[:limit])
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
    return value_text(value) == expected
