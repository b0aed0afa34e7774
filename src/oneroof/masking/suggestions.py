"""`masking suggest`: columns that look personal, by name and by a bounded sample of values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from oneroof.config import Config
from oneroof.connect import ProductionSession, Session
from oneroof.masking.expressions import as_text, literal
from oneroof.masking.planning import USER_SCHEMAS
from oneroof.masking.rules import HASH_TYPES, TEXT_TYPES, configured

_NAME_HINTS: tuple[tuple[str, str, str], ...] = (
    # (kind, regular expression over the column name, rule)
    ("e-mail", r"e_?mail", "email"),
    ("phone", r"phone|^tel$|telephone|mobile|^fax|cell", "phone"),
    ("IBAN / account", r"iban|bank_?account|account_?(no|num)", "digits"),
    ("national id", r"ssn|social_security|tax_?id|passport|national_?id|vat_?(no|id)", "hash"),
    (
        "name",
        r"(first|last|middle|given|family|full|sur|maiden|contact|display|user)_?name|"
        r"^surname$|^forename$",
        "name",
    ),
    ("address", r"address|street|^city$|^town$|zip|post_?code|postal", "name"),
    ("birth date", r"birth|^dob$|born", "null"),
    ("token or secret", r"token|secret|passw|api_?key|session_?id|salt|otp", "hash"),
    ("ip address", r"^ip$|ip_?addr|remote_addr", "null"),
)
# (kind, pattern over a value's text, rule)
_CONTENT_HINTS: tuple[tuple[str, str, str], ...] = (
    ("e-mail", r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$", "email"),
    ("IBAN", r"^[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}( ?[A-Z0-9]{1,4}){2,7}$", "digits"),
    ("phone", r"^\+?[0-9][0-9 ()./-]{5,18}[0-9]$", "phone"),
    ("token", r"^[A-Za-z0-9_+/=.-]{24,}$", "hash"),
    ("name", r"^[A-Z][a-z]+([ '-][A-Z][a-z]+)+$", "name"),
    ("address", r"^[0-9]+[a-zA-Z]? [A-Za-z]|[A-Za-z]+ [0-9]+[a-z]?$", "name"),
)
_SUGGEST_COLUMNS = f"""
    select n.nspname::text, c.relname::text, a.attname::text,
           coalesce(bt.typname, t.typname)::text, a.attnotnull,
           greatest(c.reltuples, 0)::bigint
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_class c on c.oid = a.attrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    join pg_catalog.pg_type t on t.oid = a.atttypid
    left join pg_catalog.pg_type bt on bt.oid = t.typbasetype and t.typtype = 'd'
    where a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
      and c.relkind in ('r', 'p') and not c.relispartition and {USER_SCHEMAS}
    order by 1, 2, a.attnum
"""
SAMPLE_TYPES = TEXT_TYPES


@dataclass(frozen=True)
class Suggestion:
    column: str
    kind: str
    rule: str
    reason: str
    configured: str | None = None  # the rule [masking] already has

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "rule": self.rule,
            "reason": self.reason,
            "configured": self.configured,
        }


@dataclass
class Suggestions:
    """Columns that look personal, and a `[masking]` section to start from."""

    suggestions: list[Suggestion]
    tables: int
    sample: int
    ok: bool = True

    def toml(self) -> str:
        lines = ["[masking]", 'key = "env:MASK_KEY"']
        for s in self.suggestions:
            rule = s.configured or s.rule
            lines.append(f'{_toml_key(s.column)} = "{rule}"  # {s.kind}: {s.reason}')
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tables": self.tables,
            "sample": self.sample,
            "suggestions": [s.as_dict() for s in self.suggestions],
            "toml": self.toml(),
        }


def _ident_text(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _toml_key(column: str) -> str:
    schema, table, name = column.split(".", 2)
    text = ".".join(_ident_text(p) for p in (schema, table, name))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rule_for(rule: str, base: str, not_null: bool) -> str:
    if rule == "null" and not_null:
        return "fixed:1900-01-01" if base in ("date", "timestamp", "timestamptz") else "hash"
    if rule in ("email", "name", "phone", "digits") and base not in TEXT_TYPES:
        return "hash" if base in HASH_TYPES else ("null" if not not_null else "sql:NULL")
    if rule == "hash" and base not in HASH_TYPES:
        return "null" if not not_null else "fixed:0"
    return rule


def suggest(session: ProductionSession, cfg: Config, sample: int = 200) -> Suggestions:
    """Likely personal columns, by name and by a bounded sample of each table's values.

    The patterns run on production (`~` over at most `sample` rows per table); only counts
    come back, never a value.
    """
    current = {(c.schema, c.table, c.column): str(c.rule) for c in configured(cfg)}
    by_table: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
    with session.transaction():
        for schema, table, column, base, not_null, _rows in session.execute(_SUGGEST_COLUMNS):
            by_table.setdefault((schema, table), []).append((column, base, bool(not_null)))
        found: list[Suggestion] = []
        for (schema, table), columns in by_table.items():
            by_name: dict[str, tuple[str, str]] = {}
            for column, _base, _nn in columns:
                for kind, pattern, rule in _NAME_HINTS:
                    if re.search(pattern, column, re.IGNORECASE):
                        by_name[column] = (kind, rule)
                        break
            texts = [c for c in columns if c[1] in SAMPLE_TYPES]
            by_content = _sample(session, schema, table, texts, sample) if texts else {}
            for column, base, not_null in columns:
                key = f"{schema}.{table}.{column}"
                hit = by_content.get(column)
                named = by_name.get(column)
                if hit is None and named is None:
                    continue
                if hit is not None:
                    kind, rule, share = hit
                    reason = f"{share:.0%} of the sampled values look like one"
                    if named is not None:
                        reason = f"its name, and {reason}"
                else:
                    assert named is not None
                    kind, rule = named
                    reason = "its name"
                found.append(
                    Suggestion(
                        key,
                        kind,
                        _rule_for(rule, base, not_null),
                        reason,
                        current.get((schema, table, column)),
                    )
                )
    return Suggestions(found, len(by_table), sample)


def _sample(
    session: Session,
    schema: str,
    table: str,
    columns: list[tuple[str, str, bool]],
    sample: int,
) -> dict[str, tuple[str, str, float]]:
    """For each text column, the content pattern most of a bounded sample matches."""
    selects: list[sql.Composable] = []
    for column, _base, _nn in columns:
        value = sql.SQL("({})::pg_catalog.text").format(sql.Identifier(column))
        selects.append(sql.SQL("count({})").format(value))
        for _kind, pattern, _rule in _CONTENT_HINTS:
            selects.append(
                sql.SQL("count(*) filter (where {} OPERATOR(pg_catalog.~) {})").format(
                    value, literal(pattern)
                )
            )
    statement = sql.SQL("select {} from (select * from only {} limit {}) as s").format(
        sql.SQL(", ").join(selects), sql.Identifier(schema, table), literal(sample)
    )
    try:
        with session.savepoint():
            row = session.execute(as_text(statement))[0]
    except psycopg.Error:
        return {}  # a table the reader cannot read: its names still speak
    found: dict[str, tuple[str, str, float]] = {}
    width = 1 + len(_CONTENT_HINTS)
    for index, (column, _base, _nn) in enumerate(columns):
        present = int(row[index * width] or 0)
        if not present:
            continue
        for offset, (kind, _pattern, rule) in enumerate(_CONTENT_HINTS, start=1):
            share = int(row[index * width + offset] or 0) / present
            if share >= 0.6:
                found[column] = (kind, rule, share)
                break
    return found
