"""What every part of the clone shares: progress steps, timestamps, the target name, SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from oneroof import connect
from oneroof.config import Config
from oneroof.connect import CloneSession, ServerSession

Step = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _target(cfg: Config, name: str | None) -> str:
    """The clone name: an explicit one as given (even empty: the guard judges it), else the
    configured or derived one."""
    return name if name is not None else connect.clone_name(cfg)


def _sql(
    session: CloneSession | ServerSession,
    statement: str | sql.Composable,
    params: Sequence[Any] | None = None,
) -> list[tuple[Any, ...]]:
    """Run one statement on a server or clone session (never production) and fetch its rows."""
    cursor = session.raw_for_clone.execute(statement, params)  # type: ignore[arg-type]
    return cursor.fetchall() if cursor.description is not None else []


def _ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)
