"""The plan: production's catalog, and which columns are masked how (carried across keys)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from oneroof import connect
from oneroof.config import Config
from oneroof.connect import Session
from oneroof.errors import BadInput, ForbiddenAction
from oneroof.masking.expressions import as_text, export_query, literal
from oneroof.masking.rules import (
    EMAIL_LENGTH,
    FORMAT_RULES,
    HASH_TYPES,
    TEXT_TYPES,
    UNIQUE_HASH_LENGTH,
    Configured,
    Rule,
    configured,
    resolve_key,
)

USER_SCHEMAS = (
    "n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
    " and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'"
)
_RELATIONS_QUERY = f"""
    select n.nspname::text, c.relname::text, c.relkind::text,
           greatest(c.reltuples, 0)::bigint, c.relpages::bigint,
           coalesce((select jsonb_agg(jsonb_build_array(pn.nspname::text || '.'
                                                        || p.relname::text))
                     from pg_catalog.pg_inherits i
                     join pg_catalog.pg_class p on p.oid = i.inhparent
                     join pg_catalog.pg_namespace pn on pn.oid = p.relnamespace
                     where i.inhrelid = c.oid), '[]'::jsonb)::text,
           coalesce((select jsonb_agg(jsonb_build_array(a.attname::text,
                       pg_catalog.format_type(a.atttypid, a.atttypmod),
                       coalesce(bt.typname, t.typname)::text,
                       case when coalesce(bt.typname, t.typname) in ('varchar', 'bpchar')
                            and coalesce(nullif(a.atttypmod, -1), t.typtypmod) > 4
                            then coalesce(nullif(a.atttypmod, -1), t.typtypmod) - 4 end,
                       a.attnotnull, a.attgenerated <> '')
                       order by a.attnum)
                     from pg_catalog.pg_attribute a
                     join pg_catalog.pg_type t on t.oid = a.atttypid
                     left join pg_catalog.pg_type bt on bt.oid = t.typbasetype and t.typtype = 'd'
                     where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped),
                    '[]'::jsonb)::text
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'f', 'm') and {USER_SCHEMAS}
"""
_UNIQUE_QUERY = """
    select n.nspname::text || '.' || c.relname::text, x.relname::text,
           case when i.indisprimary then 'primary key' else 'unique' end,
           array(select a.attname::text from unnest(i.indkey::int2[]) with ordinality u(k, o)
                 join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = u.k
                 order by u.o),
           i.indexprs is not null, {nulls_not_distinct}
    from pg_catalog.pg_index i
    join pg_catalog.pg_class c on c.oid = i.indrelid
    join pg_catalog.pg_class x on x.oid = i.indexrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where i.indisunique and n.nspname = any({schemas})
"""
_CONSTRAINTS_QUERY = """
    select k.conname::text, k.contype::text,
           cn.nspname::text || '.' || c.relname::text,
           array(select a.attname::text from unnest(k.conkey) with ordinality u(k, o)
                 join pg_catalog.pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.k
                 order by u.o),
           fn.nspname::text || '.' || f.relname::text,
           array(select a.attname::text from unnest(k.confkey) with ordinality u(k, o)
                 join pg_catalog.pg_attribute a on a.attrelid = k.confrelid and a.attnum = u.k
                 order by u.o),
           k.confmatchtype::text
    from pg_catalog.pg_constraint k
    join pg_catalog.pg_class c on c.oid = k.conrelid
    join pg_catalog.pg_namespace cn on cn.oid = c.relnamespace
    left join pg_catalog.pg_class f on f.oid = k.confrelid
    left join pg_catalog.pg_namespace fn on fn.oid = f.relnamespace
    where k.contype in ('f', 'x')
"""


@dataclass(frozen=True)
class Column:
    """A column as masking needs it: its type (base type of a domain) and constraints."""

    name: str
    type: str
    base: str
    length: int | None
    not_null: bool
    generated: bool


@dataclass
class Relation:
    schema: str
    name: str
    kind: str
    estimated_rows: int
    parents: list[str]
    columns: dict[str, Column]
    children: list[str] = field(default_factory=list)
    pages: int = 0

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class UniqueKey:
    table: str
    name: str
    kind: str  # primary key | unique | exclusion
    columns: tuple[str, ...]
    expression: bool = False
    nulls_not_distinct: bool = False

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({', '.join(self.columns)}) of {self.table}"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: str
    child_columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    match_full: bool

    def describe(self) -> str:
        return (
            f"foreign key {self.name} ({self.child} ({', '.join(self.child_columns)}) → "
            f"{self.parent} ({', '.join(self.parent_columns)}))"
        )


@dataclass
class Catalog:
    """What `plan()` reads of production: relations, unique keys and foreign keys."""

    relations: dict[str, Relation]
    uniques: list[UniqueKey]
    foreign_keys: list[ForeignKey]

    @classmethod
    def read(cls, session: Session) -> Catalog:
        """Read it through the guarded session, in one transaction (one snapshot)."""
        if not session.in_transaction:
            with session.transaction():
                return cls.read(session)
        relations: dict[str, Relation] = {}

        for schema, name, kind, estimate, pages, parents, columns in session.execute(
            _RELATIONS_QUERY
        ):
            parsed = {
                str(c[0]): Column(str(c[0]), str(c[1]), str(c[2]), c[3], bool(c[4]), bool(c[5]))
                for c in json.loads(columns)
            }
            relation = Relation(
                schema,
                name,
                kind,
                int(estimate),
                [str(p[0]) for p in json.loads(parents)],
                parsed,
                pages=int(pages),
            )
            relations[relation.key] = relation
        for relation in relations.values():
            for parent in relation.parents:
                if parent in relations:
                    relations[parent].children.append(relation.key)
        schemas = sorted({r.schema for r in relations.values()})
        version = session.identity.server_version_num
        # the guard reads statement text: constants go in as literals, not as parameters
        query = _UNIQUE_QUERY.format(
            nulls_not_distinct="i.indnullsnotdistinct" if version >= 150000 else "false",
            schemas=as_text(literal(schemas or [""])) + "::text[]",
        )
        uniques = [
            UniqueKey(table, index, kind, tuple(columns), bool(expression), bool(distinct))
            for table, index, kind, columns, expression, distinct in session.execute(query)
        ]
        foreign_keys = []
        for name, kind, table, columns, parent, parent_columns, match in session.execute(
            _CONSTRAINTS_QUERY
        ):
            if kind == "x":
                uniques.append(UniqueKey(table, name, "exclusion", tuple(columns)))
            else:
                foreign_keys.append(
                    ForeignKey(
                        name, table, tuple(columns), parent, tuple(parent_columns), match == "f"
                    )
                )
        return cls(relations, uniques, foreign_keys)

    def descendants(self, key: str) -> list[str]:
        """Every partition and inheritance child below a relation, at any depth."""
        found: list[str] = []
        stack = list(self.relations[key].children)
        while stack:
            child = stack.pop()
            if child not in found:
                found.append(child)
                stack.extend(self.relations[child].children)
        return found


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Masked:
    """One masked column of the plan: its rule and why it is masked."""

    table: str
    column: str
    rule: Rule
    origin: str  # "[masking]", or what carried the rule here
    line: int | None = None
    # the columns (`schema.table.column`, tables with rows) whose values must mask alike:
    # linked by foreign keys and partitioning. A format-keeping mask that is a production
    # value of one of them is masked once more.
    group: tuple[tuple[str, str, str], ...] = ()  # (schema, table, column)

    @property
    def key(self) -> str:
        return f"{self.table}.{self.column}"

    def as_dict(self) -> dict[str, Any]:
        return {"column": self.key, "rule": str(self.rule), "origin": self.origin}


@dataclass
class TablePlan:
    """A table whose data is read masked: its columns in order and its masked ones."""

    schema: str
    name: str
    columns: tuple[Column, ...]  # the columns COPY writes (not the generated ones)
    generated: tuple[str, ...]
    masked: dict[str, Masked]
    estimated_rows: int
    pages: int = 0

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def derived(self) -> tuple[str, ...]:
        """Columns whose clone content legitimately differs: masked and generated ones."""
        return (*self.masked, *self.generated)


@dataclass
class Plan:
    """Which tables are read masked, and how each masked column is masked."""

    tables: dict[str, TablePlan]
    rules: list[Masked]  # every masked column, partitioned parents included
    file: Path | None = None

    @property
    def columns(self) -> list[Masked]:
        """The masked columns of the tables that hold rows."""
        return [m for table in self.tables.values() for m in table.masked.values()]

    @property
    def needs_key(self) -> bool:
        return any(m.rule.deterministic for m in self.columns)

    def exclude_patterns(self) -> list[str]:
        """pg_dump patterns naming each masked table exactly (quoted: no wildcards)."""
        return [f"{_pattern(t.schema)}.{_pattern(t.name)}" for t in self.tables.values()]

    def to_marker(self) -> dict[str, Any]:
        return {
            "columns": [m.as_dict() for m in self.columns],
            "tables": {key: {"masked": list(t.masked)} for key, t in self.tables.items()},
        }

    def describe(self) -> list[str]:
        return [f"{m.key} = {m.rule}  ({m.origin})" for m in self.columns]


def _pattern(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan(cfg: Config, session: Session, catalog: Catalog | None = None) -> Plan | None:
    """The masking plan of `[masking]` on production, or None without rules.

    `BadInput` (exit 2) names the rule's line and what it would break: a missing table or
    column, a type the rule cannot mask, NOT NULL, a unique key or exclusion constraint, a
    foreign key whose two sides would no longer match. The guard judges each table's
    masking statement here already: one it refuses (an `sql:` rule calling what is not a
    plain built-in read) is `ForbiddenAction` (exit 3), audited, before anything is made.
    """
    written = configured(cfg)
    if not written:
        return None
    if any(c.rule.deterministic for c in written):
        resolve_key(cfg)  # refuse a missing or short key before anything is made
    catalog = catalog or Catalog.read(session)
    found = build(cfg, written, catalog)
    if session.role == connect.PRODUCTION:
        from oneroof import guard

        for table in found.tables.values():
            statement = as_text(export_query(table))
            verdict = guard.classify(statement, session.catalog)
            if not verdict.allowed:
                if session.evidence is not None:
                    session.evidence.audit(
                        connect.PRODUCTION,
                        verdict.kind,
                        statement,
                        "refused",
                        reason=verdict.reason,
                    )
                rules = ", ".join(f"{c} = {m.rule}" for c, m in table.masked.items())
                lines = sorted(
                    c.line for c in written if c.table_key == table.key and c.line is not None
                )
                where = f"{cfg.file}:{lines[0]}: " if lines else ""
                raise ForbiddenAction(
                    f"{where}refused on production: the masking of {table.key} ({rules}): "
                    f"{verdict.reason} (nothing was sent)",
                    sql=statement,
                    reason=verdict.reason,
                )
    return found


def build(cfg: Config, written: Sequence[Configured], catalog: Catalog) -> Plan:
    """The plan from parsed rules and a catalog (pure: tested without a database)."""
    masked: dict[tuple[str, str], Masked] = {}
    linked: dict[tuple[str, str], tuple[str, str]] = {}  # union-find over masked columns

    def root(spot: tuple[str, str]) -> tuple[str, str]:
        while linked.get(spot, spot) != spot:
            spot = linked[spot]
        return spot

    def link(a: tuple[str, str], b: tuple[str, str]) -> None:
        linked[root(a)] = root(b)

    def fail(message: str, line: int | None) -> BadInput:
        return BadInput(f"[masking] {message}", file=cfg.file, line=line)

    def add(entry: Masked) -> bool:
        spot = (entry.table, entry.column)
        present = masked.get(spot)
        if present is None:
            masked[spot] = entry
            return True
        if present.rule != entry.rule:
            raise fail(
                f"{entry.key} is masked by {present.rule} ({present.origin}) and by "
                f"{entry.rule} ({entry.origin}): one column, one rule",
                entry.line or present.line,
            )
        return False

    for rule in written:
        relation = catalog.relations.get(rule.table_key)
        if relation is None:
            raise fail(f"{rule.key}: production has no table {rule.table_key}", rule.line)
        if relation.kind not in ("r", "p"):
            what = {"f": "a foreign table", "m": "a materialized view"}.get(relation.kind, "")
            raise fail(
                f"{rule.key}: {rule.table_key} is {what}; mask the tables it reads instead",
                rule.line,
            )
        column = relation.columns.get(rule.column)
        if column is None:
            raise fail(f"{rule.key}: {rule.table_key} has no column {rule.column}", rule.line)
        if column.generated:
            raise fail(
                f"{rule.key}: {rule.column} is a generated column: mask the columns it is "
                "computed from; the clone computes it again",
                rule.line,
            )
        add(Masked(rule.table_key, rule.column, rule.rule, "[masking]", rule.line))

    changed = True
    while changed:
        changed = False
        for entry in list(masked.values()):
            # a rule on a parent masks its partitions and inheritance children too
            for below in catalog.descendants(entry.table):
                if entry.column in catalog.relations[below].columns:
                    origin = f"partition or child of {entry.table}"
                    changed |= add(Masked(below, entry.column, entry.rule, origin, entry.line))
                    link((below, entry.column), (entry.table, entry.column))
        for key in catalog.foreign_keys:
            for child_column, parent_column in zip(
                key.child_columns, key.parent_columns, strict=True
            ):
                child = masked.get((key.child, child_column))
                parent = masked.get((key.parent, parent_column))
                if child is None and parent is None:
                    continue
                if child is not None and child.rule.kind == "null":
                    if key.match_full and not all(
                        (key.child, c) in masked and masked[(key.child, c)].rule.kind == "null"
                        for c in key.child_columns
                    ):
                        raise fail(
                            f"{child.key}: rule null would break {key.describe()} (MATCH "
                            "FULL: null them all or none)",
                            child.line,
                        )
                    continue  # a NULL reference references nothing
                if (
                    child is not None
                    and parent is None
                    and child.rule.kind == "shuffle"
                    and len(key.child_columns) == 1
                ):
                    continue  # the same keys, on other rows: every one still has its parent
                source = child or parent
                assert source is not None
                if child is not None and parent is not None:
                    if child.rule == parent.rule and child.rule.deterministic:
                        link((key.child, child_column), (key.parent, parent_column))
                        continue
                    raise fail(
                        f"{child.key} ({child.rule}) and {parent.key} ({parent.rule}) would "
                        f"no longer match: {key.describe()} needs one deterministic rule on "
                        "both sides (email, name, phone, digits or hash)",
                        child.line or parent.line,
                    )
                if not source.rule.deterministic:
                    raise fail(
                        f"{source.key}: rule {source.rule} would break {key.describe()}: a key "
                        "column needs a deterministic rule (email, name, phone, digits or "
                        "hash), which oneroof then carries to the other side",
                        source.line,
                    )
                if child is None:
                    spot, other = key.child, child_column
                else:
                    spot, other = key.parent, parent_column
                origin = f"{key.name} carries {source.key}"
                changed |= add(Masked(spot, other, source.rule, origin, source.line))
                link((spot, other), (source.table, source.column))

    for entry in masked.values():
        _check_fit(catalog, entry, fail)
    groups: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for place, entry in masked.items():
        relation = catalog.relations[entry.table]
        if relation.kind == "r":
            groups.setdefault(root(place), []).append(
                (relation.schema, relation.name, entry.column)
            )
    for place, entry in masked.items():
        if entry.rule.kind in FORMAT_RULES:
            masked[place] = replace(entry, group=tuple(sorted(groups.get(root(place), []))))

    tables: dict[str, TablePlan] = {}
    for (table, name), entry in sorted(masked.items()):
        relation = catalog.relations[table]
        if relation.kind != "r":
            continue  # a partitioned table holds no rows: its partitions are masked
        if table not in tables:
            tables[table] = TablePlan(
                relation.schema,
                relation.name,
                tuple(c for c in relation.columns.values() if not c.generated),
                tuple(c.name for c in relation.columns.values() if c.generated),
                {},
                relation.estimated_rows,
                relation.pages,
            )
        tables[table].masked[name] = entry
    return Plan(tables, sorted(masked.values(), key=lambda m: m.key), cfg.file)


def _check_fit(
    catalog: Catalog, entry: Masked, fail: Callable[[str, int | None], BadInput]
) -> None:
    """Refuse a rule the column's type, NOT NULL, unique keys or exclusions would not hold."""
    column = catalog.relations[entry.table].columns[entry.column]
    kind = entry.rule.kind
    where = f"{entry.key} ({column.type})"
    if entry.origin != "[masking]":
        where += f", masked because {entry.origin}"
    if kind in ("email", "name", "phone", "digits") and column.base not in TEXT_TYPES:
        raise fail(
            f"{where}: rule {kind} masks text columns; use hash, null, fixed or sql", entry.line
        )
    if kind == "hash" and column.base not in HASH_TYPES:
        raise fail(
            f"{where}: rule hash masks text, uuid, integer and bytea columns; use null, fixed "
            "or sql",
            entry.line,
        )
    if kind == "email" and column.length is not None and column.length < EMAIL_LENGTH:
        raise fail(
            f"{where}: a masked e-mail has {EMAIL_LENGTH} characters; the column holds "
            f"{column.length} (use hash)",
            entry.line,
        )
    if kind == "null" and column.not_null:
        raise fail(f"{where}: rule null would break its NOT NULL", entry.line)
    for key in catalog.uniques:
        if key.table != entry.table or entry.column not in key.columns:
            continue
        if key.kind == "exclusion":
            if kind != "sql":
                raise fail(f"{where}: rule {kind} would break {key.describe()}", entry.line)
            continue
        if kind in ("email", "sql"):
            continue
        if kind == "hash":
            short = column.base in ("int4", "int2") or (
                column.length is not None and column.length < UNIQUE_HASH_LENGTH
            )
            if short:
                raise fail(
                    f"{where}: a hash that fits the column is too short to stay unique: it "
                    f"would break {key.describe()}",
                    entry.line,
                )
            continue
        if kind == "shuffle" and len(key.columns) == 1:
            continue
        if kind == "null" and not key.nulls_not_distinct and key.kind != "primary key":
            continue
        why = {
            "name": "format-keeping values are not one-to-one",
            "phone": "format-keeping values are not one-to-one",
            "digits": "format-keeping values are not one-to-one",
            "fixed": "every row gets the same value",
            "null": "NULLs are not distinct there",
            "shuffle": "shuffling one column of a composite key can repeat a combination",
        }[kind]
        raise fail(
            f"{where}: rule {kind} would break {key.describe()}: {why}; use email or hash",
            entry.line,
        )
