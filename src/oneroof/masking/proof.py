"""The proof `clone verify` shows: no masked column of the clone holds a production value."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oneroof import connect
from oneroof.connect import CloneSession, ProductionSession
from oneroof.masking.expressions import as_text, hash_stream_query, literal


@dataclass
class ColumnProof:
    column: str
    rule: str
    clone_values: int = 0
    production_values: int = 0
    shared: int = 0
    checked: bool = True
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "rule": self.rule,
            "clone_values": self.clone_values,
            "production_values": self.production_values,
            "shared": self.shared,
            "checked": self.checked,
            "note": self.note,
        }


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *complete, rest = rest.split(b"\n")
        for line in complete:
            yield line.decode()
    if rest:
        yield rest.decode()


def shared_values(left: Iterable[str], right: Iterable[str]) -> tuple[int, int, int]:
    """(values on the left, on the right, in both) of two sorted, distinct streams, merged in
    constant memory."""
    a, b = iter(left), iter(right)
    x, y = next(a, None), next(b, None)
    on_left, on_right, shared = int(x is not None), int(y is not None), 0
    while x is not None and y is not None:
        step_left, step_right = x <= y, y <= x
        shared += x == y
        if step_left:
            x = next(a, None)
            on_left += x is not None
        if step_right:
            y = next(b, None)
            on_right += y is not None
    on_left += sum(1 for _ in a)
    on_right += sum(1 for _ in b)
    return on_left, on_right, shared


def prove(
    production: ProductionSession,
    clone: CloneSession,
    columns: Sequence[Mapping[str, Any]],
    budget_rows: int | None,
) -> list[ColumnProof]:
    """For each masked column, how many distinct clone values equal a production value.

    Both sides hash every distinct value with the same fresh random key and stream them
    sorted; the merge needs constant memory. Production's side stays within the scan budget:
    above it (estimated rows) the column is not checked, and its proof says so.
    """
    seed = secrets.token_hex(16)
    proofs: list[ColumnProof] = []
    estimates: dict[str, int] = {}
    with production.transaction():
        tables = sorted({str(c["column"]).rsplit(".", 1)[0] for c in columns}) or [""]
        for schema, table, rows in production.execute(
            "select n.nspname::text, c.relname::text, greatest(c.reltuples, 0)::bigint"
            " from pg_catalog.pg_class c join pg_catalog.pg_namespace n"
            " on n.oid = c.relnamespace where c.relkind = 'r'"
            f" and n.nspname || '.' || c.relname = any({as_text(literal(tables))}::text[])"
        ):
            estimates[f"{schema}.{table}"] = int(rows)
        for setting in connect.FORMAT_SETTINGS:
            production.internal(setting)
        with clone.transaction(consistent=True):
            for setting in connect.FORMAT_SETTINGS:
                clone.internal(setting)
            spent = 0
            for entry in columns:
                key, rule = str(entry["column"]), str(entry["rule"])
                proof = ColumnProof(key, rule)
                proofs.append(proof)
                table_key, column = key.rsplit(".", 1)
                schema, table = table_key.split(".", 1)
                if rule == "shuffle":
                    proof.checked = False
                    proof.note = "shuffled: production's values, on other rows"
                    continue
                estimated = estimates.get(table_key, 0)
                if budget_rows is not None and spent + estimated > budget_rows:
                    proof.checked = False
                    proof.note = f"not checked: about {estimated} rows exceed the scan budget"
                    continue
                spent += estimated
                statement = as_text(hash_stream_query(schema, table, column, seed))
                counts = shared_values(
                    _lines(clone.copy_out(statement)), _lines(production.copy_out(statement))
                )
                proof.clone_values, proof.production_values, proof.shared = counts
    return proofs
