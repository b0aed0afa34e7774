"""Fingerprints: prove a database unchanged, section by section, from one snapshot.

A fingerprint is canonical JSON hashed with SHA-256 (short id: the first 8 hex digits). Its
sections — `schema`, `counts`, `content`, `sequences`, `counters` — each have their own
digest, so two databases can be compared section by section (a clone's content equals its
source while its disabled triggers differ). The WAL insert position is recorded beside the
id, not in it: equal entry and exit positions mean the server wrote nothing in between.

Everything is read inside one REPEATABLE READ READ ONLY transaction; with `jobs > 1` the
tables are hashed by more sessions that import the same snapshot, as `pg_dump -j` does.
All SQL goes through the session, so on production every statement is guarded and audited.
Past `[production] max_snapshot_seconds` the snapshot is ended and each remaining table is
read in a snapshot of its own (the notes say so). On a hot standby the fingerprint records
the replay position and the primary's position at that moment (`standby`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql as pgsql

from oneroof.config import Config
from oneroof.connect import FORMAT_SETTINGS, Session, lsn_value
from oneroof.errors import BadInput
from oneroof.evidence import Evidence, canonical_json
from oneroof.viewtext import canonical_view

if TYPE_CHECKING:
    from oneroof.workspace import Workspace

MODES = ("catalog", "counts", "full")
ID_SECTIONS = ("schema", "counts", "content", "sequences", "counters")
# How row content is hashed: comparable only between fingerprints hashed the same way.
RECORD_HASH = "record"  # hash_record_extended: PostgreSQL 14 and later
TEXT_HASH = "text"  # the row's text form: every major, for a production on 13
CONTENT_HASHES = (RECORD_HASH, TEXT_HASH)

# Types whose hash function tells apart every two values that differ in bytes. Every other
# column is hashed in its text form, under the fixed output settings of the transaction:
# numeric 1.0 vs 1.00, interval '1 day' vs '24 hours', jsonb, floats, citext, enums (whose
# hash is their OID, which differs between databases), arrays and composites of those.
EXACT_HASH_TYPES = frozenset(
    {
        "bigint",
        "integer",
        "smallint",
        "boolean",
        "text",
        "character varying",
        "bytea",
        "date",
        "timestamp without time zone",
        "timestamp with time zone",
        "time without time zone",
        "uuid",
        "oid",
        '"char"',
        "name",
    }
)

_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"
_USER_NAMESPACE = (
    f"n.nspname not in {_SYSTEM_SCHEMAS} and n.nspname not like 'pg\\_temp\\_%'"
    " and n.nspname not like 'pg\\_toast\\_temp\\_%'"
)


@dataclass(frozen=True)
class Difference:
    """One object or table that differs between two fingerprints."""

    section: str
    key: str
    change: str  # added | removed | changed
    before: Any = None
    after: Any = None

    def describe(self) -> str:
        if self.change == "changed":
            return (
                f"{self.section}: {self.key} changed: {_short(self.before)} → {_short(self.after)}"
            )
        value = self.after if self.change == "added" else self.before
        return f"{self.section}: {self.key} {self.change} ({_short(value)})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "key": self.key,
            "change": self.change,
            "before": self.before,
            "after": self.after,
        }


def _short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Fingerprint:
    """A database's state at one snapshot, as canonical sections and their digests."""

    mode: str
    sections: dict[str, Any]
    digests: dict[str, str]
    id: str
    wal: str | None = None
    taken_at: str = ""
    database: str = ""
    identity: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    content_hash: str = RECORD_HASH
    # read on a hot standby: its address, replay position and the primary's position then
    standby: dict[str, Any] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.id[:8]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "short": self.short,
            "mode": self.mode,
            "digests": self.digests,
            "wal": self.wal,
            "taken_at": self.taken_at,
            "database": self.database,
            "identity": self.identity,
            "notes": list(self.notes),
            "content_hash": self.content_hash,
            "standby": self.standby,
            "sections": self.sections,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        sections = dict(data["sections"])
        return cls(
            mode=str(data["mode"]),
            sections=sections,
            digests=dict(data.get("digests") or _digests(sections)),
            id=str(data["id"]),
            wal=data.get("wal"),
            taken_at=str(data.get("taken_at", "")),
            database=str(data.get("database", "")),
            identity=dict(data.get("identity") or {}),
            notes=tuple(data.get("notes") or ()),
            content_hash=str(data.get("content_hash") or RECORD_HASH),
            standby=dict(data.get("standby") or {}),
        )

    def table_content(self, table: str) -> str | None:
        """The content digest of one table (`schema.table`), if this fingerprint has it."""
        value = self.sections.get("content", {}).get(table)
        return str(value) if value is not None else None


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _digests(sections: Mapping[str, Any]) -> dict[str, str]:
    return {name: _digest(value) for name, value in sections.items()}


def fingerprint_id(digests: Mapping[str, str]) -> str:
    """The id over the digests of the sections present (the WAL position is not one)."""
    return _digest({name: digests[name] for name in ID_SECTIONS if name in digests})


def inconsistent(fp: Fingerprint) -> list[str]:
    """The sections whose digest no longer matches their content, and `id` when the id no
    longer matches the digests: what an edited fingerprint record shows."""
    digests = _digests(fp.sections)
    wrong = [name for name, digest in digests.items() if fp.digests.get(name) != digest]
    return wrong + (["id"] if fingerprint_id(fp.digests) != fp.id else [])


# -- schema -----------------------------------------------------------------------------------

# Each query returns (key, definition) rows; keys never contain OIDs or the database name.
_SCHEMA_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "schemas",
        f"""select 'schema ' || n.nspname,
                   jsonb_build_object('owner', pg_get_userbyid(n.nspowner),
                     'acl', (select coalesce(jsonb_agg(a::text order by a::text), '[]')
                             from unnest(n.nspacl) a),
                     'comment', obj_description(n.oid, 'pg_namespace'))::text
            from pg_namespace n where {_USER_NAMESPACE}""",
    ),
    (
        "relations",
        f"""select 'relation ' || n.nspname || '.' || c.relname,
                   jsonb_build_object('kind', c.relkind::text,
                     'owner', pg_get_userbyid(c.relowner),
                     'persistence', c.relpersistence::text,
                     'acl', (select coalesce(jsonb_agg(a::text order by a::text), '[]')
                             from unnest(c.relacl) a),
                     'rls', c.relrowsecurity, 'force_rls', c.relforcerowsecurity,
                     'options', (select coalesce(jsonb_agg(o order by o), '[]')
                                 from unnest(c.reloptions) o),
                     'replica_identity', c.relreplident::text,
                     'partition_key', case when c.relkind = 'p'
                                      then pg_get_partkeydef(c.oid) end,
                     'partition_bound', pg_get_expr(c.relpartbound, c.oid),
                     'inherits', (select coalesce(jsonb_agg(pn.nspname || '.' || p.relname
                                    order by i.inhseqno), '[]')
                                  from pg_inherits i join pg_class p on p.oid = i.inhparent
                                  join pg_namespace pn on pn.oid = p.relnamespace
                                  where i.inhrelid = c.oid),
                     'view', case when c.relkind in ('v', 'm')
                             then pg_get_viewdef(c.oid, true) end,
                     'populated', case when c.relkind = 'm' then c.relispopulated end,
                     'comment', obj_description(c.oid, 'pg_class'))::text
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') and {_USER_NAMESPACE}""",
    ),
    (
        "columns",
        f"""select 'column ' || n.nspname || '.' || c.relname || '.' || a.attname,
                   (jsonb_build_object(
                     'position', row_number() over (partition by c.oid order by a.attnum),
                     'type', format_type(a.atttypid, a.atttypmod),
                     'not_null', a.attnotnull,
                     'default', pg_get_expr(d.adbin, d.adrelid),
                     'identity', a.attidentity::text, 'generated', a.attgenerated::text,
                     'collation', (select co.collname from pg_collation co
                                   where co.oid = a.attcollation
                                   and a.attcollation <> t.typcollation),
                     'acl', (select coalesce(jsonb_agg(x::text order by x::text), '[]')
                             from unnest(a.attacl) x),
                     'comment', col_description(c.oid, a.attnum))
                   -- 18 records NOT NULL as a constraint too: only what 'not_null' cannot say
                   || coalesce((select jsonb_build_object('not_null_constraint',
                                  jsonb_build_object('validated', k.convalidated,
                                                     'no_inherit', k.connoinherit))
                                from pg_constraint k
                                where k.conrelid = c.oid and k.contype = 'n'
                                  and k.conkey = array[a.attnum]
                                  and (not k.convalidated or k.connoinherit)
                                limit 1), '{{}}'))::text
            from pg_attribute a join pg_class c on c.oid = a.attrelid
            join pg_namespace n on n.oid = c.relnamespace
            join pg_type t on t.oid = a.atttypid
            left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
            where a.attnum > 0 and not a.attisdropped
              and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c') and {_USER_NAMESPACE}""",
    ),
    (
        "constraints",
        f"""select 'constraint ' || n.nspname || '.'
                     || coalesce(c.relname, t.typname) || '.' || k.conname,
                   jsonb_build_object('type', k.contype::text,
                     'definition', pg_get_constraintdef(k.oid, true),
                     'deferrable', k.condeferrable, 'deferred', k.condeferred,
                     'validated', k.convalidated)::text
            from pg_constraint k join pg_namespace n on n.oid = k.connamespace
            left join pg_class c on c.oid = k.conrelid
            left join pg_type t on t.oid = k.contypid
            -- NOT NULL is the column's (and the domain's) 'not_null' on every major
            where k.contype <> 'n' and {_USER_NAMESPACE}""",
    ),
    (
        "indexes",
        f"""select 'index ' || n.nspname || '.' || c.relname,
                   jsonb_build_object('definition', pg_get_indexdef(c.oid),
                     'valid', i.indisvalid, 'clustered', i.indisclustered)::text
            from pg_index i join pg_class c on c.oid = i.indexrelid
            join pg_namespace n on n.oid = c.relnamespace
            where {_USER_NAMESPACE}""",
    ),
    (
        "functions",
        f"""select 'function ' || n.nspname || '.' || p.proname
                     || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                   jsonb_build_object('kind', p.prokind::text,
                     'owner', pg_get_userbyid(p.proowner),
                     'acl', (select coalesce(jsonb_agg(a::text order by a::text), '[]')
                             from unnest(p.proacl) a),
                     'definition', case when p.prokind in ('f', 'p')
                                   then pg_get_functiondef(p.oid) end,
                     'result', pg_get_function_result(p.oid),
                     'language', l.lanname, 'source', p.prosrc,
                     'volatility', p.provolatile::text, 'security_definer', p.prosecdef,
                     'config', p.proconfig::text,
                     'comment', obj_description(p.oid, 'pg_proc'))::text
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            join pg_language l on l.oid = p.prolang
            where {_USER_NAMESPACE}
              and not exists (select from pg_depend dep
                              where dep.classid = 'pg_proc'::regclass and dep.objid = p.oid
                                and dep.deptype = 'e')""",
    ),
    (
        "triggers",
        f"""select 'trigger ' || n.nspname || '.' || c.relname || '.' || g.tgname,
                   jsonb_build_object('definition', pg_get_triggerdef(g.oid, true),
                     'enabled', g.tgenabled::text)::text
            from pg_trigger g join pg_class c on c.oid = g.tgrelid
            join pg_namespace n on n.oid = c.relnamespace
            where not g.tgisinternal and {_USER_NAMESPACE}""",
    ),
    (
        "rules",
        f"""select 'rule ' || r.schemaname || '.' || r.tablename || '.' || r.rulename,
                   r.definition
            from pg_rules r join pg_namespace n on n.nspname = r.schemaname
            where {_USER_NAMESPACE}""",
    ),
    (
        "sequences",
        f"""select 'sequence ' || n.nspname || '.' || c.relname,
                   jsonb_build_object('type', format_type(s.seqtypid, null),
                     'start', s.seqstart, 'increment', s.seqincrement, 'max', s.seqmax,
                     'min', s.seqmin, 'cache', s.seqcache, 'cycle', s.seqcycle,
                     'owned_by', (select tn.nspname || '.' || tc.relname || '.' || ta.attname
                                  from pg_depend d join pg_class tc on tc.oid = d.refobjid
                                  join pg_namespace tn on tn.oid = tc.relnamespace
                                  join pg_attribute ta on ta.attrelid = d.refobjid
                                   and ta.attnum = d.refobjsubid
                                  where d.classid = 'pg_class'::regclass and d.objid = c.oid
                                    and d.deptype in ('a', 'i') limit 1))::text
            from pg_sequence s join pg_class c on c.oid = s.seqrelid
            join pg_namespace n on n.oid = c.relnamespace where {_USER_NAMESPACE}""",
    ),
    (
        "types",
        f"""select 'type ' || n.nspname || '.' || t.typname,
                   jsonb_build_object('kind', t.typtype::text,
                     'owner', pg_get_userbyid(t.typowner),
                     'acl', (select coalesce(jsonb_agg(a::text order by a::text), '[]')
                             from unnest(t.typacl) a),
                     'base', case when t.typtype = 'd'
                             then format_type(t.typbasetype, t.typtypmod) end,
                     'not_null', t.typnotnull,
                     'default', t.typdefault,
                     'labels', (select jsonb_agg(e.enumlabel order by e.enumsortorder)
                                from pg_enum e where e.enumtypid = t.oid),
                     'attributes', (select jsonb_agg(a.attname || ' '
                                      || format_type(a.atttypid, a.atttypmod)
                                      order by a.attnum)
                                    from pg_attribute a
                                    where a.attrelid = t.typrelid and a.attnum > 0
                                      and not a.attisdropped),
                     'range', (select format_type(r.rngsubtype, null) from pg_range r
                               where r.rngtypid = t.oid))::text
            from pg_type t join pg_namespace n on n.oid = t.typnamespace
            left join pg_class c on c.oid = t.typrelid
            where t.typtype in ('e', 'd', 'c', 'r', 'm') and (c.oid is null or c.relkind = 'c')
              and {_USER_NAMESPACE}
              and not exists (select from pg_depend dep
                              where dep.classid = 'pg_type'::regclass and dep.objid = t.oid
                                and dep.deptype = 'e')""",
    ),
    (
        "extensions",
        """select 'extension ' || e.extname,
                  jsonb_build_object('version', e.extversion,
                    'schema', n.nspname)::text
           from pg_extension e join pg_namespace n on n.oid = e.extnamespace""",
    ),
    (
        "policies",
        """select 'policy ' || p.schemaname || '.' || p.tablename || '.' || p.policyname,
                  jsonb_build_object('permissive', p.permissive, 'roles', p.roles::text,
                    'command', p.cmd, 'using', p.qual, 'check', p.with_check)::text
           from pg_policies p""",
    ),
    (
        "publications",
        """select 'publication ' || p.pubname,
                  jsonb_build_object('owner', pg_get_userbyid(p.pubowner),
                    'all_tables', p.puballtables, 'insert', p.pubinsert,
                    'update', p.pubupdate, 'delete', p.pubdelete)::text
           from pg_publication p""",
    ),
    (
        "event_triggers",
        """select 'event trigger ' || e.evtname,
                  jsonb_build_object('event', e.evtevent, 'enabled', e.evtenabled::text,
                    'tags', e.evttags::text, 'function', e.evtfoid::regproc::text)::text
           from pg_event_trigger e""",
    ),
)

_TABLES_QUERY = f"""
    select n.nspname::text, c.relname::text, c.relkind::text,
           greatest(c.reltuples, 0)::bigint,
           coalesce((select jsonb_agg(jsonb_build_array(a.attname::text,
                       format_type(a.atttypid, a.atttypmod),
                       coalesce(tb.typname::text, ''),
                       exists (select from pg_collation co where co.oid = a.attcollation
                               and not co.collisdeterministic))
                       order by a.attnum)
                     from pg_attribute a
                     join pg_type t on t.oid = a.atttypid
                     left join pg_type tb on tb.oid = t.typbasetype
                     where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped),
                    '[]'::jsonb)::text
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'm') and {_USER_NAMESPACE}
    order by 1, 2
"""

_SEQUENCES_QUERY = f"""
    select n.nspname::text, c.relname::text
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'S' and {_USER_NAMESPACE}
    order by 1, 2
"""


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str
    kind: str
    estimated_rows: int
    columns: tuple[tuple[str, str, str, bool], ...]

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"


def _schema_of(key: str) -> str:
    """The schema a schema-section key belongs to: `relation s.t` → s, `schema s` → s."""
    kind, _, name = key.partition(" ")
    if kind == "event":  # "event trigger name": database-wide
        return ""
    return name.split(".", 1)[0]


def _read_schema(session: Session) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    for _, query in _SCHEMA_QUERIES:
        for key, definition in session.execute(query):
            try:
                objects[str(key)] = json.loads(definition)
            except (TypeError, json.JSONDecodeError):
                objects[str(key)] = definition
    version = session.identity.server_version_num
    for key, value in objects.items():
        if not (key.startswith("relation ") and isinstance(value, dict)):
            continue
        if value.get("view"):
            value["view"] = canonical_view(value["view"])
        if value.get("acl"):
            value["acl"] = [_acl_item(a, str(value.get("kind")), version) for a in value["acl"]]
    return objects


_ACL_ITEM = re.compile(r"^(?P<grantee>.*)=(?P<privileges>[a-zA-Z*]*)/(?P<grantor>.*)$")


def _acl_item(item: str, kind: str, server_version_num: int) -> str:
    """An ACL item with every privilege of its major written `ALL`.

    17 added MAINTAIN (`m`) to tables, so `GRANT ALL` reads `arwdDxt` up to 16 and
    `arwdDxtm` from 17: one logical grant, one fingerprint.
    """
    match = _ACL_ITEM.match(item)
    if match is None:
        return item
    privileges = match.group("privileges")
    everything = "rwU" if kind == "S" else "arwdDxt" + ("m" if server_version_num >= 170000 else "")
    letters = privileges.replace("*", "")
    if sorted(letters) != sorted(everything):
        return item
    grant_option = "*" if privileges.count("*") == len(letters) else ""
    return f"{match.group('grantee')}=ALL{grant_option}/{match.group('grantor')}"


def _read_tables(session: Session) -> list[_Table]:
    tables = []
    for schema, name, kind, estimate, columns in session.execute(_TABLES_QUERY):
        parsed = tuple((str(c[0]), str(c[1]), str(c[2]), bool(c[3])) for c in json.loads(columns))
        tables.append(_Table(schema, name, kind, int(estimate), parsed))
    return tables


# Cheaper byte-exact forms than text for a few common types: numeric equality ignores only
# the display scale; the binary send form of floats and intervals keeps every bit.
_EXACT_FORMS = {
    "numeric": "{c}, scale({c})",
    "double precision": "float8send({c})",
    "real": "float4send({c})",
    "interval": "interval_send({c})",
}


# Columns of these types are hashed one by one with their own extended hash function and
# chained into the row hash: that costs far less than building a composite row for them.
_DIRECT_HASHES = {
    "bigint": "hashint8extended({c}, {s})",
    "integer": "hashint4extended({c}, {s})",
    "smallint": "hashint2extended({c}, {s})",
    "boolean": "hashint4extended({c}::integer, {s})",
    "text": "hashtextextended({c}, {s})",
    "character varying": "hashtextextended({c}, {s})",
    "uuid": "uuid_hash_extended({c}, {s})",
}
_TYPMOD = re.compile(r"\(\d+(,\d+)?\)")


def _base_type(type_name: str) -> str:
    return _TYPMOD.sub("", type_name)


def _column_expression(name: str, type_name: str, nondeterministic: bool) -> pgsql.Composable:
    column = pgsql.Identifier(name)
    base = _base_type(type_name)
    if base in EXACT_HASH_TYPES and not nondeterministic:
        return column
    if base in _EXACT_FORMS:
        return pgsql.SQL(_EXACT_FORMS[base].replace("{c}", "{0}")).format(column)
    # The text form is byte-exact where equality hashing is not; "C" makes it bytewise.
    return pgsql.SQL('({}::text COLLATE "C")').format(column)


def _row_hash(table: _Table, seed: int, method: str = RECORD_HASH) -> pgsql.Composable:
    """A 64-bit hash of one row, seeded: direct column hashes chained onto a composite
    hash of the remaining columns. NULL is a distinct value per position.

    The composite is hashed by `hash_record_extended` (14 and later), or, by the `text`
    method that 13 can run, as its text form (slower, the same on every major)."""
    direct = [c for c in table.columns if _base_type(c[1]) in _DIRECT_HASHES and not c[3]]
    rest = [c for c in table.columns if c not in direct]
    if rest:
        row = pgsql.SQL(", ").join(_column_expression(c[0], c[1], c[3]) for c in rest)
        composite = (
            "hash_record_extended(row({}), {})"
            if method == RECORD_HASH
            else "hashtextextended(row({})::text, {})"
        )
        accumulated: pgsql.Composable = pgsql.SQL(composite).format(row, pgsql.Literal(seed))
    else:
        accumulated = pgsql.SQL("{}::bigint").format(pgsql.Literal(seed))
    for position, column in enumerate(direct, start=1):
        template = _DIRECT_HASHES[_base_type(column[1])].replace("{c}", "{0}")
        value = pgsql.SQL(template.replace("{s}", "{1}")).format(
            pgsql.Identifier(column[0]), pgsql.Literal(seed)
        )
        accumulated = pgsql.SQL("hashint8extended({} # coalesce({}, {}), {})").format(
            accumulated, value, pgsql.Literal(-position), pgsql.Literal(seed)
        )
    return accumulated


def content_query(table: _Table, method: str = RECORD_HASH) -> pgsql.Composed:
    """The query that hashes one table: its row count and two seeded sums of row hashes."""
    relation = pgsql.Identifier(table.schema, table.name)
    if not table.columns:
        return pgsql.SQL("select count(*), 0::numeric, 0::numeric from only {}").format(relation)
    return pgsql.SQL(
        "select count(*), coalesce(sum({first}), 0), coalesce(sum({second}), 0)"
        " from only {relation}"
    ).format(
        first=_row_hash(table, 0, method), second=_row_hash(table, 7, method), relation=relation
    )


def count_query(table: _Table) -> pgsql.Composed:
    return pgsql.SQL("select count(*) from only {}").format(
        pgsql.Identifier(table.schema, table.name)
    )


def _as_text(statement: pgsql.Composable) -> str:
    # Identifiers quote the same on every connection; no connection is needed to render.
    return statement.as_string(None)


def _measure_table(
    session: Session, table: _Table, mode: str, method: str
) -> tuple[int, str | None]:
    if mode == "full":
        count, first, second = session.execute(_as_text(content_query(table, method)))[0]
        digest = hashlib.sha256(f"{count}:{first}:{second}".encode()).hexdigest()
        return int(count), digest
    (count,) = session.execute(_as_text(count_query(table)))[0]
    return int(count), None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def read_counters(
    session: Session,
    counters: Mapping[str, str],
    origin: tuple[Path, Mapping[str, int | None]] | None = None,
) -> dict[str, Any]:
    """The value of each named counter (one scalar each), read through the session.

    `origin` (the config file and each counter's line) lets a bad counter's error name them.
    """
    from oneroof.gates import read_counter

    file, lines = origin if origin is not None else (None, {})
    values: dict[str, Any] = {}
    for name, query in sorted(counters.items()):
        values[name] = _jsonable(read_counter(session, name, query, file, lines.get(name)))
    return values


def wal_position(session: Session) -> str | None:
    """The server's WAL insert position, or None when it cannot be read."""
    import psycopg

    try:
        with session.savepoint() if session.in_transaction else contextlib.nullcontext():
            value = session.scalar(
                "select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()"
                " else pg_current_wal_insert_lsn() end::text"
            )
    except psycopg.Error:
        return None
    return str(value) if value is not None else None


def wal_unchanged(session: Session, entry_wal: str | None) -> bool:
    """The constant-time exit proof: True when the WAL insert position is still `entry_wal`.

    Equal positions mean the server wrote nothing at all in between — to any database.
    Unequal positions prove nothing either way; the full fingerprint then decides.
    """
    return entry_wal is not None and wal_position(session) == entry_wal


def take(
    session: Session,
    *,
    mode: str = "full",
    counters: Mapping[str, str] | None = None,
    jobs: int = 1,
    open_session: Callable[[], Session] | None = None,
    progress: Callable[[int, int], None] | None = None,
    scan_budget_rows: int | None = None,
    tables: Iterable[str] | None = None,
    skip_schemas: Iterable[str] = (),
    matview_content: bool = False,
    content_hash: str | None = None,
    primary_lsn: Callable[[], str | None] | None = None,
    counter_origin: tuple[Path, Mapping[str, int | None]] | None = None,
) -> Fingerprint:
    """Fingerprint the session's database from one snapshot.

    `tables` (keys `schema.table`) limits counts and content to those tables;
    `skip_schemas` leaves whole schemas out (oneroof's own ledger schema). A materialized
    view is derived data: its definition and whether it is populated are part of the schema
    section; its rows count only with `matview_content`. `content_hash` is how rows are
    hashed (`CONTENT_HASHES`): by default `record` where the server has it (14 and later),
    else `text`; a clone is hashed the way its source was, whatever major it runs.

    Uses the open transaction when the session is in one (the caller chose the snapshot),
    else opens a consistent read-only one. `jobs > 1` needs `open_session` to open more
    sessions of the same role, which import the snapshot. Above `scan_budget_rows`
    (estimated) a full fingerprint falls back to counts, and says so in `notes`.

    When it opens the transaction itself and the session has `max_snapshot_seconds`, a
    snapshot older than that is ended before the next table, and every table after it is
    read in its own snapshot (`notes` says from when). `primary_lsn` reads the primary's
    WAL position: a fingerprint on a standby records it beside its replay position.
    """
    if mode not in MODES:
        raise BadInput(f"unknown fingerprint mode {mode!r}; use one of {', '.join(MODES)}")
    only = frozenset(tables) if tables is not None else None
    skip = frozenset(skip_schemas)
    method = content_hash or (
        RECORD_HASH if session.identity.server_version_num >= 140000 else TEXT_HASH
    )
    if method not in CONTENT_HASHES:
        raise BadInput(f"unknown content hash {method!r}; use one of {', '.join(CONTENT_HASHES)}")
    if method == RECORD_HASH and session.identity.server_version_num < 140000:
        raise BadInput(
            f"{session.identity.database}: PostgreSQL {session.identity.server_version} has no "
            "hash_record_extended, so its rows cannot be hashed like a fingerprint taken on 14 "
            "or later; compare with a server of 14 or later"
        )
    arguments = (
        mode,
        counters or {},
        jobs,
        open_session,
        progress,
        scan_budget_rows,
        only,
        skip,
        matview_content,
        method,
        primary_lsn,
    )
    if session.in_transaction:
        return _take(session, *arguments, renew=False, counter_origin=counter_origin)
    renew = session.max_snapshot_seconds is not None
    # held, not cut off at a statement past the limit: the fingerprint ends its snapshot
    # itself, between tables, and the schema is read whole in the first one
    with session.transaction(consistent=True, hold_snapshot=renew):
        return _take(session, *arguments, renew=renew, counter_origin=counter_origin)


def _take(
    session: Session,
    mode: str,
    counters: Mapping[str, str],
    jobs: int,
    open_session: Callable[[], Session] | None,
    progress: Callable[[int, int], None] | None,
    scan_budget_rows: int | None,
    only: frozenset[str] | None,
    skip: frozenset[str],
    matview_content: bool,
    method: str,
    primary_lsn: Callable[[], str | None] | None,
    *,
    renew: bool,
    counter_origin: tuple[Path, Mapping[str, int | None]] | None = None,
) -> Fingerprint:
    taken_at = datetime.now(UTC).isoformat(timespec="seconds")
    for setting in FORMAT_SETTINGS:
        session.internal(setting)
    wal = wal_position(session)
    standby: dict[str, Any] = {}
    if getattr(session, "standby", False):
        primary = primary_lsn() if primary_lsn is not None else None
        standby = {
            "host": session.identity.host,
            "port": session.identity.port,
            "replay_lsn": wal,
            "primary_lsn": primary,
            "behind_bytes": lsn_distance(primary, wal),
        }
    schema = _read_schema(session)
    sections: dict[str, Any] = {
        "schema": {k: v for k, v in schema.items() if _schema_of(k) not in skip}
    }
    notes: list[str] = []
    if mode != "catalog":
        tables = [
            t
            for t in _read_tables(session)
            if (only is None or t.key in only)
            and t.schema not in skip
            and (matview_content or t.kind != "m")
        ]
        estimated = sum(t.estimated_rows for t in tables)
        if mode == "full" and scan_budget_rows is not None and estimated > scan_budget_rows:
            notes.append(
                f"full content skipped: about {estimated} rows exceed the scan budget of "
                f"{scan_budget_rows}; counts and the WAL position stand instead"
            )
            mode = "counts"
        split = _Split(renew, session.snapshot_age)
        counts, content = _measure_tables(
            session, tables, mode, jobs, open_session, progress, method, split
        )
        sections["counts"] = counts
        if mode == "full":
            sections["content"] = content
        if split.after is not None:
            notes.append(split.note(session.max_snapshot_seconds, len(tables)))
        if renew and session.snapshot_due():
            _renew(session)
        sections["sequences"] = {
            k: v for k, v in _read_sequences(session).items() if k.split(".", 1)[0] not in skip
        }
    if counters:
        sections["counters"] = read_counters(session, counters, counter_origin)
    digests = _digests(sections)
    return Fingerprint(
        mode=mode,
        sections=sections,
        digests=digests,
        id=fingerprint_id(digests),
        wal=wal,
        taken_at=taken_at,
        database=session.identity.database,
        identity=session.identity.as_dict(),
        notes=tuple(notes),
        content_hash=method,
        standby=standby,
    )


def lsn_distance(ahead: str | None, behind: str | None) -> int | None:
    """Bytes of WAL from `behind` to `ahead` (two LSNs as text), or None if one is unknown."""
    if ahead is None or behind is None:
        return None
    return lsn_value(ahead) - lsn_value(behind)


class _Split:
    """Whether a fingerprint has ended its snapshot for its age, from when, and how often."""

    def __init__(self, allowed: bool, age: Callable[[], float]) -> None:
        self.allowed = allowed
        self.age = age
        self.after: float | None = None  # the snapshot's age when it was first ended
        self.tables = 0  # tables read in a snapshot of their own
        self.lock = threading.Lock()

    def due(self, session: Session) -> bool:
        """True when the next table needs a snapshot of its own (and notes the first time)."""
        if not self.allowed:
            return False
        with self.lock:
            if self.after is None and session.snapshot_due():
                self.after = self.age()
            if self.after is None:
                return False
            self.tables += 1
            return True

    def note(self, limit: float | None, total: int) -> str:
        return (
            f"one snapshot per table after {self.after:.1f}s: [production] "
            f"max_snapshot_seconds = {limit:g} ended the fingerprint's snapshot, and "
            f"{self.tables} of {total} table(s) were read each in a snapshot of its own "
            "(the fingerprint is not of one instant)"
        )


def _renew(session: Session) -> None:
    """A new snapshot for the session's open transaction, under the fixed output settings."""
    session.renew_snapshot()
    for setting in FORMAT_SETTINGS:
        session.internal(setting)


def _read_sequences(session: Session) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for schema, name in session.execute(_SEQUENCES_QUERY):
        statement = pgsql.SQL("select last_value, is_called from {}").format(
            pgsql.Identifier(schema, name)
        )
        last_value, is_called = session.execute(_as_text(statement))[0]
        values[f"{schema}.{name}"] = [_jsonable(last_value), bool(is_called)]
    return values


def _measure_tables(
    session: Session,
    tables: list[_Table],
    mode: str,
    jobs: int,
    open_session: Callable[[], Session] | None,
    progress: Callable[[int, int], None] | None,
    method: str,
    split: _Split,
) -> tuple[dict[str, int], dict[str, str]]:
    counts: dict[str, int] = {}
    content: dict[str, str] = {}
    total = len(tables)
    done = 0
    lock = threading.Lock()

    def record(table: _Table, count: int, digest: str | None) -> None:
        nonlocal done
        with lock:
            counts[table.key] = count
            if digest is not None:
                content[table.key] = digest
            done += 1
            if progress is not None:
                progress(done, total)

    if jobs <= 1 or open_session is None or total < 2:
        for table in tables:
            if split.due(session):
                _renew(session)
            record(table, *_measure_table(session, table, mode, method))
        return counts, content

    snapshot = str(session.scalar("select pg_export_snapshot()"))
    # Largest first, so one big table does not start last and finish alone.
    queue = sorted(tables, key=lambda t: t.estimated_rows, reverse=True)
    queue_lock = threading.Lock()

    def worker(own: Session | None) -> None:
        target = own or session
        while True:
            with queue_lock:
                if not queue:
                    break
                table = queue.pop(0)
            if split.due(session):
                _renew(target)
            record(table, *_measure_table(target, table, mode, method))
        if split.allowed and target.snapshot_due():
            # out of tables while the others finish theirs: an old snapshot is not held idle
            if own is not None:
                own.close()
            else:
                _renew(session)

    helpers = [open_session() for _ in range(min(jobs, total) - 1)]
    try:
        for helper in helpers:
            helper_begin(helper, snapshot)
        with ThreadPoolExecutor(max_workers=len(helpers) + 1) as pool:
            futures = [pool.submit(worker, None)] + [pool.submit(worker, h) for h in helpers]
            for future in futures:
                future.result()
    finally:
        for helper in helpers:
            helper.close()
    return counts, content


def helper_begin(helper: Session, snapshot: str) -> None:
    """Open a transaction on a helper session that sees exactly `snapshot`."""
    context = helper.transaction(snapshot=snapshot)
    context.__enter__()
    # Held by the session until it closes: a collected context closes its generator, which
    # rolls the transaction back, and the helper's reads would each take a new snapshot.
    vars(helper)["_snapshot_transaction"] = context
    for setting in FORMAT_SETTINGS:
        helper.internal(setting)


def diff(a: Fingerprint, b: Fingerprint, sections: Iterable[str] | None = None) -> list[Difference]:
    """Every object, table, sequence or counter that differs between `a` and `b`."""
    names = list(sections) if sections is not None else list(ID_SECTIONS)
    found: list[Difference] = []
    for name in names:
        left = a.sections.get(name)
        right = b.sections.get(name)
        if left is None and right is None:
            continue
        if left is None or right is None:
            found.append(Difference(name, "(section)", "added" if left is None else "removed"))
            continue
        if name == "content" and a.content_hash != b.content_hash:
            # digests of different hash methods never match: one difference, not every table
            found.append(Difference(name, "(hash)", "changed", a.content_hash, b.content_hash))
            continue
        for key in sorted(set(left) | set(right)):
            if key not in left:
                found.append(Difference(name, key, "added", None, right[key]))
            elif key not in right:
                found.append(Difference(name, key, "removed", left[key], None))
            elif canonical_json(left[key]) != canonical_json(right[key]):
                before, after = _narrow(left[key], right[key])
                found.append(Difference(name, key, "changed", before, after))
    return found


def _narrow(before: Any, after: Any) -> tuple[Any, Any]:
    """Only the fields that differ, when both sides are objects."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}
    return before, after


def save(evidence: Evidence, fingerprint: Fingerprint, *, label: str = "") -> None:
    """Store a fingerprint in the evidence store (kind `fingerprint`)."""
    evidence.append("fingerprint", {"label": label, **fingerprint.to_dict()})


def find(evidence: Evidence, reference: str) -> Fingerprint | None:
    """A saved fingerprint by id or id prefix (newest first)."""
    for record in reversed(evidence.records("fingerprint")):
        if str(record.payload.get("id", "")).startswith(reference):
            return Fingerprint.from_dict(record.payload)
    return None


def find_labelled(evidence: Evidence, label: str) -> Fingerprint | None:
    """The newest saved fingerprint with this label (`entry`, `exit`, …)."""
    for record in reversed(evidence.records("fingerprint")):
        if record.payload.get("label") == label:
            return Fingerprint.from_dict(record.payload)
    return None


def load_reference(evidence: Evidence, reference: str) -> Fingerprint:
    """A fingerprint from a JSON file path, a saved id (prefix), or the newest of a label
    (`entry` and `exit`: the newest campaign's)."""
    path = Path(reference)
    if path.suffix == ".json" or path.exists():
        try:
            data = json.loads(path.read_text())
            return Fingerprint.from_dict(data)
        except FileNotFoundError:
            raise BadInput("no such fingerprint file", file=path) from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadInput(f"not a fingerprint JSON document: {exc}", file=path) from None
    found = find(evidence, reference) or find_labelled(evidence, reference)
    if found is None:
        raise BadInput(
            f"no saved fingerprint with id or label {reference!r} (use --save, a JSON file, "
            "or entry / exit after `oneroof run`)"
        )
    return found


_TABLE_OBJECTS = ("relation", "column", "constraint", "trigger", "rule", "policy")


def objects_of(schema: Mapping[str, Any], tables: Iterable[str]) -> dict[str, Any]:
    """The schema objects of a schema section that belong to `tables` (`schema.table` keys):
    the relation, its columns, constraints, triggers, rules, policies and indexes."""
    wanted = set(tables)
    found: dict[str, Any] = {}
    for key, definition in schema.items():
        kind, _, name = key.partition(" ")
        if kind in _TABLE_OBJECTS:
            table = name if kind == "relation" else name.rsplit(".", 1)[0]
            if table in wanted:
                found[key] = definition
        elif kind == "index" and isinstance(definition, Mapping):
            text = str(definition.get("definition", ""))
            match = re.search(r" ON (?:ONLY )?(\S+) USING ", text)
            if match and match.group(1).replace('"', "") in wanted:
                found[key] = definition
    return found


def scope(cfg: Config) -> dict[str, Any]:
    """What a workspace's fingerprints leave out or take in: its ledger schema, matviews."""
    return {
        "skip_schemas": (cfg.rollout.ledger_schema,),
        "matview_content": cfg.fingerprint.matview_content,
        "counter_origin": (cfg.file, {n: cfg.line_of("counters", n) for n in cfg.counters}),
    }


def of_production(ws: Workspace, *, mode: str = "full", **options: Any) -> Fingerprint:
    """A fingerprint of production where its heavy reads go (`ws.reader()`: the standby,
    caught up, when there is one), with the workspace's counters, scan budget and scope;
    `options` go to `take` (`jobs`, `open_session`, `progress`)."""
    cfg = ws.cfg
    with ws.reader() as session:
        return take(
            session,
            mode=mode,
            counters=cfg.counters,
            scan_budget_rows=cfg.production.scan_budget_rows,
            primary_lsn=ws.primary_lsn if session.standby else None,
            **scope(cfg),
            **options,
        )


def partial_content(
    session: Session, tables: Mapping[str, Iterable[str]], method: str = RECORD_HASH
) -> dict[str, tuple[int, str]]:
    """Count and content digest of each table (`schema.table`) over all but the named columns.

    Masking compares production and a masked clone on the columns it left as they were (both
    sides with the same `method`). Uses the open transaction when there is one, under the
    fixed output settings.
    """
    if not session.in_transaction:
        with session.transaction(consistent=True):
            return partial_content(session, tables, method)
    for setting in FORMAT_SETTINGS:
        session.internal(setting)
    leave = {key: frozenset(columns) for key, columns in tables.items()}
    found: dict[str, tuple[int, str]] = {}
    for table in _read_tables(session):
        if table.key not in leave:
            continue
        kept = tuple(c for c in table.columns if c[0] not in leave[table.key])
        count, digest = _measure_table(session, replace(table, columns=kept), "full", method)
        found[table.key] = (count, digest or "")
    return found
