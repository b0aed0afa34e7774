"""`oneroof sql clone`: one statement on the clone, rolled back unless the user commits it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from oneroof.connect import CloneSession
from oneroof.errors import BadInput, DatabaseError
from oneroof.evidence import Evidence

CONSOLE_KIND = "clone_sql"
# a statement PostgreSQL refuses inside a transaction block (VACUUM, CREATE DATABASE, …)
_NOT_IN_TRANSACTION = "25001"
_ASSIGNED_XID = "select pg_current_xact_id_if_assigned()::text"
_SEQUENCES = "select format('%I.%I', schemaname, sequencename), last_value::text from pg_sequences"


@dataclass
class ConsoleResult:
    """What one statement on the clone returned, and whether its writes were kept."""

    clone: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    status: str | None  # the command tag, e.g. "UPDATE 3"
    rowcount: int  # rows the statement affected (-1 when PostgreSQL gives no count)
    wrote: bool | None  # a transaction id was assigned; None when no transaction could tell
    committed: bool
    in_transaction: bool = True
    advanced: list[str] = field(default_factory=list)  # sequences moved: never rolled back

    def describe(self) -> str:
        """One line on what happened to the clone."""
        said = self._what_happened()
        if self.advanced and not (self.committed or not self.in_transaction):
            shown = ", ".join(self.advanced[:5]) + (" …" if len(self.advanced) > 5 else "")
            said += (
                f"; sequence(s) {shown} advanced and stay so (PostgreSQL never rolls a "
                "sequence back): `oneroof clone reset` returns them"
            )
        return said

    def _what_happened(self) -> str:
        changed = f"{self.rowcount} row(s) changed" if self.rowcount >= 0 else "it ran"
        if not self.in_transaction:
            return (
                f"{self.status or 'done'}: ran outside a transaction (PostgreSQL runs it in none); "
                "the clone may now differ from its golden copy: `oneroof clone reset` returns it"
            )
        if not self.wrote:
            return f"{self.status or 'done'}: nothing was written"
        if not self.committed:
            return (
                f"{self.status or 'done'}: rolled back, {changed} and none kept "
                "(give --commit to keep them)"
            )
        return (
            f"{self.status or 'done'}: committed, {changed}; the clone now differs from its "
            "golden copy: `oneroof clone reset` returns it"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "clone": self.clone,
            "columns": self.columns,
            "rows": [list(row) for row in self.rows],
            "status": self.status,
            "rowcount": self.rowcount,
            "wrote": self.wrote,
            "committed": self.committed,
            "in_transaction": self.in_transaction,
            "sequences_advanced": self.advanced,
            "summary": self.describe(),
        }


def _send(conn: psycopg.Connection[Any], statement: str) -> tuple[psycopg.Cursor[Any], list[str]]:
    cursor = conn.execute(statement)
    columns = [c.name for c in cursor.description] if cursor.description else []
    return cursor, columns


def run_statement(
    session: CloneSession,
    statement: str,
    *,
    commit: bool = False,
    evidence: Evidence | None = None,
) -> ConsoleResult:
    """Run `statement` on the clone in a transaction, rolled back unless `commit`.

    Whether it wrote is read from PostgreSQL (a transaction id was assigned), so a function
    that writes behind a SELECT counts too. A statement PostgreSQL runs in no transaction is
    refused without `commit`, since it could not be rolled back.
    """
    conn = session.raw_for_clone
    clone = conn.info.dbname
    before = dict(conn.execute(_SEQUENCES).fetchall())
    try:
        with session.transaction(force_rollback=not commit):
            cursor, columns = _send(conn, statement)
            rows = cursor.fetchall() if cursor.description else []
            status, rowcount = cursor.statusmessage, cursor.rowcount
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                raise BadInput(
                    f"{statement.strip()!r} ends a transaction: `oneroof sql clone` runs one "
                    "statement in its own transaction; give --commit to keep what it writes"
                )
            xid = conn.execute(_ASSIGNED_XID).fetchone()
            wrote = bool(xid and xid[0] is not None)
    except psycopg.Error as exc:
        if exc.sqlstate != _NOT_IN_TRANSACTION:
            raise DatabaseError.from_psycopg(exc, "clone") from None
        if not commit:
            raise BadInput(
                f"clone: {exc.diag.message_primary or exc}: it cannot be rolled back; "
                "give --commit to run it for real"
            ) from None
        try:
            cursor, columns = _send(conn, statement)
        except psycopg.Error as again:
            raise DatabaseError.from_psycopg(again, "clone") from None
        rows = cursor.fetchall() if cursor.description else []
        result = ConsoleResult(
            clone, columns, rows, cursor.statusmessage, cursor.rowcount, None, True, False
        )
    else:
        result = ConsoleResult(clone, columns, rows, status, rowcount, wrote, commit and wrote)
        after = dict(conn.execute(_SEQUENCES).fetchall())
        result.advanced = sorted(k for k, v in after.items() if before.get(k) != v)
    if evidence is not None and result.committed:
        evidence.append(CONSOLE_KIND, {**result.to_dict(), "rows": len(result.rows)}, sql=statement)
    return result
