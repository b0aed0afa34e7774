"""One artifact's run: its row deltas as PostgreSQL counts them, checked against the declared."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from oneroof import connect
from oneroof.connect import Session
from oneroof.gates import GateResult
from oneroof.rollout.artifact import KINDS, SIGNS, Artifact, Counts
from oneroof.rollout.ledger import LEDGER_SCHEMA
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


def _xact_stats(session: Session) -> dict[str, tuple[int, int, int]]:
    rows = session.internal(connect.XACT_TABLE_STATS)
    return {
        f"{schema}.{name}": (int(ins), int(upd), int(dele))
        for schema, name, ins, upd, dele in rows
        if schema != LEDGER_SCHEMA
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


def compare_deltas(measured: Counts, expected: Counts) -> list[str]:
    """Every difference between measured and declared deltas (exact; undeclared must be 0)."""
    problems: list[str] = []
    zero = dict.fromkeys(KINDS, 0)
    for table in sorted(set(measured) | set(expected)):
        got = measured.get(table, zero)
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
