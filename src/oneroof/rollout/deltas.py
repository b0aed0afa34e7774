"""One artifact's run: its row deltas as PostgreSQL counts them, checked against the declared."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pglast
import psycopg
from pglast import ast
from psycopg import sql as pgsql

from oneroof import connect
from oneroof.connect import Session
from oneroof.errors import BadInput
from oneroof.gates import GateResult
from oneroof.rollout.artifact import ALL_ROWS, KINDS, SIGNS, Artifact, Counts
from oneroof.sqltext import json_value

SHOWN_ROWS = 10


@dataclass
class ArtifactRun:
    """What happened to one artifact in a rehearsal or an apply."""

    id: str
    checksum: str
    file: str
    auto: bool
    status: str = "not reached"
    gates: list[GateResult] = field(default_factory=list)
    deltas: Counts = field(default_factory=dict)
    expected: Counts = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    stops: list[GateResult] = field(default_factory=list)
    reason: str | None = None
    sqlstate: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    seconds: float = 0.0

    OK_STATES = ("ok", "applied", "skipped", "already applied", "would apply")

    @classmethod
    def of(cls, artifact: Artifact, status: str = "not reached") -> ArtifactRun:
        return cls(artifact.id, artifact.checksum, str(artifact.file), artifact.auto, status)

    @property
    def ok(self) -> bool:
        return self.status in self.OK_STATES

    @property
    def gates_hold(self) -> bool:
        return all(g.holds for g in self.gates)

    @property
    def stopped(self) -> bool:
        return any(s.holds for s in self.stops)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "checksum": self.checksum,
            "file": self.file,
            "auto": self.auto,
            "status": self.status,
            "ok": self.ok,
            "gates": [g.to_dict() for g in self.gates],
            "gates_hold": self.gates_hold,
            "deltas": self.deltas,
            "expected": self.expected,
            "mismatches": self.mismatches,
            "stops": [s.to_dict() for s in self.stops],
            "stopped": self.stopped,
            "reason": self.reason,
            "error": self.reason if self.sqlstate else None,
            "sqlstate": self.sqlstate,
            "columns": self.columns,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }


class _Halt(Exception):
    """Raised inside an artifact's transaction or savepoint: roll it back and halt the plan."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _psycopg_reason(exc: psycopg.Error) -> str:
    message = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
    first = message.splitlines()[0] if message else type(exc).__name__
    return f"PostgreSQL error: {first}" + (f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else "")


@contextlib.contextmanager
def settled(run: ArtifactRun, failure: str) -> Iterator[None]:
    """Run an artifact's work: a halt or a PostgreSQL error gives `run` the status `failure`
    and the reason, and `run.seconds` is its time whatever happened."""
    started = time.monotonic()
    try:
        yield
    except _Halt as halt:
        run.status, run.reason = failure, halt.reason
    except psycopg.Error as exc:
        run.status, run.reason, run.sqlstate = failure, _psycopg_reason(exc), exc.sqlstate
    finally:
        run.seconds = time.monotonic() - started


def _xact_stats(session: Session, ledger_schema: str) -> dict[str, tuple[int, int, int]]:
    rows = session.internal(connect.XACT_TABLE_STATS)
    return {
        f"{schema}.{name}": (int(ins), int(upd), int(dele))
        for schema, name, ins, upd, dele in rows
        if schema != ledger_schema  # the ledger row is the apply's own bookkeeping
    }


def measure_deltas(
    before: Mapping[str, tuple[int, int, int]], after: Mapping[str, tuple[int, int, int]]
) -> Counts:
    """The rows inserted, updated and deleted per table between two readings (non-zero only)."""
    result: Counts = {}
    for table in sorted(set(before) | set(after)):
        old = before.get(table, (0, 0, 0))
        new = after.get(table, (0, 0, 0))
        delta = {kind: new[i] - old[i] for i, kind in enumerate(KINDS)}
        if any(delta.values()):
            result[table] = delta
    return result


def compare_deltas(
    measured: Counts, expected: Counts, ancestors: Mapping[str, list[str]] | None = None
) -> list[str]:
    """Every difference between measured and declared deltas (exact; undeclared must be 0).

    A partition's rows count towards every partitioned table above it (`ancestors`): a
    delta declared on the parent sums its partitions at any depth.
    """
    problems: list[str] = []
    zero = dict.fromkeys(KINDS, 0)
    above = ancestors or {}
    rolled: Counts = {table: dict(counts) for table, counts in measured.items()}
    covered = set()
    for table, counts in measured.items():
        for parent in above.get(table, []):
            if parent in expected:
                covered.add(table)
                total = rolled.setdefault(parent, dict(zero))
                for kind in KINDS:
                    total[kind] = total.get(kind, 0) + counts.get(kind, 0)
    for table in sorted((set(measured) - covered) | set(expected)):
        got = rolled.get(table, zero)
        want = expected.get(table)
        if want is None:
            shown = " ".join(f"{s}{got[k]}" for s, k in SIGNS.items() if got.get(k))
            problems.append(f"{table}: {shown} but no expect-delta declares this table")
            continue
        for sign, kind in SIGNS.items():
            if got.get(kind, 0) != want.get(kind, 0):
                problems.append(
                    f"{table} {sign}: {got.get(kind, 0)} {kind}, expected {want.get(kind, 0)}"
                )
    return problems


class DeltaMeter:
    """An artifact's exact deltas in its own transaction, read from the transaction's own
    statistics: TRUNCATE counted from the rows before and after it, partitions summed into
    the partitioned tables declared above them, at any depth."""

    def __init__(
        self, session: Session, artifact: Artifact, expected: Counts, *, ledger_schema: str
    ) -> None:
        self.session = session
        self.ledger_schema = ledger_schema
        self.truncated = _truncated(artifact)
        counted = set(self.truncated) | {
            table for table, kinds in expected.items() if kinds.get("deleted") == ALL_ROWS
        }
        self.rows_before = {table: _count(session, table) for table in sorted(counted)}
        self.before = _xact_stats(session, ledger_schema)

    def finish(self, expected: Counts) -> tuple[Counts, list[str]]:
        """The measured deltas and every difference from `expected` (exact)."""
        deltas = measure_deltas(self.before, _xact_stats(self.session, self.ledger_schema))
        for table in self.truncated:
            # the statistics do not count TRUNCATE: the rows before and after it do
            after = _count(self.session, table)
            deltas[table] = {"inserted": after, "updated": 0, "deleted": self.rows_before[table]}
        wanted = {
            table: {
                kind: self.rows_before.get(table, 0) if amount == ALL_ROWS else amount
                for kind, amount in kinds.items()
            }
            for table, kinds in expected.items()
        }
        ancestors = {
            table: [
                str(row[0]) for row in self.session.internal(connect.PARTITION_ANCESTORS, (table,))
            ]
            for table in deltas
            if table not in wanted and table not in self.truncated
        }
        return deltas, compare_deltas(deltas, wanted, ancestors)


def require_tables(session: Session, artifacts: Iterable[Artifact]) -> None:
    """Refuse (`BadInput`, naming file and line) an expect-delta table the database lacks."""
    declared = [(a, d) for a in artifacts for d in a.deltas]
    if not declared:
        return
    names = sorted({d.table for _, d in declared})
    quoted = [pgsql.Identifier(*t.split(".", 1)).as_string(None) for t in names]
    statement = pgsql.SQL(
        "select t, pg_catalog.to_regclass(t) is not null from pg_catalog.unnest({}::text[]) t"
    ).format(pgsql.Literal(quoted))
    rows = session.execute(statement.as_string(None))
    exists = dict(zip(names, (bool(r[1]) for r in rows), strict=True))
    for artifact, delta in declared:
        if not exists[delta.table]:
            raise BadInput(
                f"expect-delta {delta.text}: no table {delta.table} in "
                f"{session.identity.database} (a misspelled name?)",
                file=artifact.file,
                line=delta.line,
            )


def _truncated(artifact: Artifact) -> list[str]:
    """The tables the artifact's TRUNCATE statements name, as `schema.table`."""
    found: list[str] = []
    for statement in artifact.statements:
        try:
            nodes = pglast.parse_sql(statement.sql)
        except pglast.parser.ParseError:
            continue
        for raw in nodes:
            node = raw.stmt
            if isinstance(node, ast.TruncateStmt):
                for relation in node.relations or ():
                    schema = relation.schemaname or "public"
                    found.append(f"{schema}.{relation.relname}")
    return sorted(set(found))


def _count(session: Session, table: str) -> int:
    schema, _, name = table.partition(".")
    statement = pgsql.SQL("select count(*) from {}").format(pgsql.Identifier(schema, name))
    return int(session.scalar(statement.as_string(None)))


def _keep_rows(run: ArtifactRun, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if columns:
        run.columns = list(columns)
        run.rows = [[json_value(v) for v in row] for row in rows[:SHOWN_ROWS]]


def _verdict(run: ArtifactRun) -> str | None:
    if run.mismatches:
        return "delta mismatch: " + "; ".join(run.mismatches)
    fired = [s.describe() for s in run.stops if s.holds]
    if fired:
        return "stop: " + "; ".join(fired)
    return None
