"""Recording and putting back sequences, which do not roll back with the transaction."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql as pgsql

from oneroof.connect import PRODUCTION, Session
from oneroof.errors import ForbiddenAction

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
class _SequenceState:
    oid: int
    last_value: int
    is_called: bool


def read_sequences(session: Session) -> dict[str, _SequenceState]:
    """`last_value` and `is_called` of every sequence of the database, keyed `schema.name`."""
    found = session.execute(_SEQUENCES)
    states: dict[str, _SequenceState] = {}
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
            states[f"{schema}.{name}"] = _SequenceState(int(oid), int(last_value), bool(is_called))
    return states


def restore_sequences(session: Session, before: dict[str, _SequenceState]) -> list[str]:
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
