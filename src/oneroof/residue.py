"""The rollback-only bracket: what a clone looked like before, put back after, and proven equal.

Check suites and rollout rehearsals both run inside transactions that are always rolled
back. Rollback undoes rows and the catalog but not sequences, so the bracket records every
sequence and a full fingerprint before the work, puts the sequences back after it, and
fingerprints again: the `Residue` names whatever still differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql as pgsql

from oneroof import fingerprint
from oneroof.connect import PRODUCTION, Session
from oneroof.errors import ForbiddenAction

SECTIONS = ("schema", "counts", "content", "sequences")

_SEQUENCES = """
    select c.oid::bigint, n.nspname::text, c.relname::text
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'S'
      and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
      and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'
    order by 2, 3
"""
_SEQUENCE_BATCH = 200


@dataclass(frozen=True)
class SequenceState:
    """A sequence's position: what `setval` needs to put it back."""

    oid: int
    last_value: int
    is_called: bool


def read_sequences(session: Session) -> dict[str, SequenceState]:
    """`last_value` and `is_called` of every sequence of the database, keyed `schema.name`."""
    found = session.execute(_SEQUENCES)
    states: dict[str, SequenceState] = {}
    for start in range(0, len(found), _SEQUENCE_BATCH):
        batch = found[start : start + _SEQUENCE_BATCH]
        query = pgsql.SQL(" union all ").join(
            pgsql.SQL("select {}::int, last_value, is_called from {}").format(
                pgsql.Literal(index), pgsql.Identifier(schema, name)
            )
            for index, (_, schema, name) in enumerate(batch)
        )
        for index, last_value, is_called in session.execute(query.as_string(None)):
            oid, schema, name = batch[index]
            states[f"{schema}.{name}"] = SequenceState(int(oid), int(last_value), bool(is_called))
    return states


def restore_sequences(session: Session, before: dict[str, SequenceState]) -> list[str]:
    """Put back every sequence that moved since `before` (clone only); the names restored."""
    if session.role == PRODUCTION:
        raise ForbiddenAction("refused: sequences are restored on a clone, never on production")
    now = read_sequences(session)
    restored = []
    for key, state in sorted(before.items()):
        current = now.get(key)
        if current is None or current.oid != state.oid:
            continue  # gone or replaced: the fingerprint names it as residue
        if (current.last_value, current.is_called) != (state.last_value, state.is_called):
            session.execute(
                "select pg_catalog.setval(%s::oid::regclass, %s, %s)",
                (state.oid, state.last_value, state.is_called),
            )
            restored.append(key)
    return restored


@dataclass
class Residue:
    """The residue proof of rollback-only work: fingerprints before and after, what differs."""

    free: bool
    differences: list[str]
    residue: list[str]  # the objects that differ
    sequences_restored: list[str]
    before: str | None
    after: str | None
    sections: tuple[str, ...] = SECTIONS
    ms: float = 0.0

    def describe(self) -> str:
        if self.free:
            return "residue-free"
        return "residue: " + (", ".join(self.residue) or "; ".join(self.differences))

    def to_dict(self) -> dict[str, Any]:
        return {
            "free": self.free,
            "verdict": self.describe(),
            "differences": self.differences,
            "residue": self.residue,
            "sequences_restored": self.sequences_restored,
            "fingerprint_before": self.before,
            "fingerprint_after": self.after,
            "sections": list(self.sections),
            "ms": round(self.ms, 3),
        }


@dataclass
class Bracket:
    """The state before rollback-only work; `close()` restores sequences and proves residue."""

    session: Session
    before: fingerprint.Fingerprint
    sequences: dict[str, SequenceState]
    ms: float = 0.0
    _started: float = field(default=0.0, repr=False)

    @classmethod
    def open(cls, session: Session) -> Bracket:
        if session.role == PRODUCTION:
            raise ForbiddenAction("refused: the rollback-only bracket is for a clone")
        started = time.perf_counter()
        sequences = read_sequences(session)
        before = fingerprint.take(session, mode="full")
        return cls(session, before, sequences, (time.perf_counter() - started) * 1000)

    def close(self) -> Residue:
        """Put the sequences back and fingerprint again: what still differs is residue."""
        started = time.perf_counter()
        if self.session.closed:
            return Residue(
                False,
                ["the residue proof could not be completed: the connection was lost"],
                [],
                [],
                self.before.id,
                None,
                ms=self.ms,
            )
        restored = restore_sequences(self.session, self.sequences)
        after = fingerprint.take(self.session, mode="full")
        differences = fingerprint.diff(self.before, after, SECTIONS)
        return Residue(
            not differences,
            [d.describe() for d in differences],
            sorted({d.key for d in differences}),
            restored,
            self.before.id,
            after.id,
            ms=self.ms + (time.perf_counter() - started) * 1000,
        )
