"""What the guard knows of a server: which names may lead a read into code that is not built in.

A statement's text names functions, operators, types and relations; the server may run user
code behind any of them — a function's body, an operator's function, a domain's CHECK, a
type's input, output or comparison function, a cast, a view's query, a row security policy,
an index's operator class, a foreign table's server. The guard allows a name only when
nothing behind it is user code that `[guard]` does not trust, whatever the code declares
about itself (volatility, SECURITY DEFINER, …).

Built in means created by initdb (OID below 16384) in one of the languages PostgreSQL ships
its own functions in (internal, C, SQL): nobody can give a function such an OID afterwards,
and a built-in replaced with `CREATE OR REPLACE` in another language is no longer built in.

The catalog is read once per production session by the exact queries of this module and
turned into a `Catalog` by `Catalog.build`, a pure function over the fetched rows.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

FIRST_NORMAL_OID = 16384  # PostgreSQL's FirstNormalObjectId: everything below comes from initdb
BUILTIN_LANGUAGES = (12, 13, 14)  # internal, c, sql

# Built-in functions with effects no read-only transaction stops, or that we never want a
# read to call (matched on the unqualified, lower-cased name, in every schema).
SIDE_EFFECT_FUNCTIONS = re.compile(
    r"""^(
        nextval | setval | currval | lastval | setseed
      | pg_notify | set_config | pg_terminate_backend | pg_cancel_backend
      | pg_(try_)?advisory_.*lock.* | pg_advisory.*
      | lo_.* | loread | lowrite | dblink.* | pg_file_.* | pg_logdir_ls
      | pg_read_file | pg_read_binary_file | pg_ls_.* | pg_stat_file
      | pg_switch_wal | pg_switch_xlog | pg_create_restore_point | pg_(start|stop)_backup
      | pg_backup_(start|stop) | pg_promote | pg_wal_replay_(pause|resume)
      | pg_create_.*_replication_slot | pg_drop_replication_slot | pg_copy_.*_replication_slot
      | pg_replication_slot_advance | pg_logical_slot_(get|peek)_.* | pg_logical_emit_message
      | pg_replication_origin_.* | pg_reload_conf | pg_rotate_logfile.*
      | pg_log_backend_memory_contexts | pg_stat_reset.* | pg_stat_clear_snapshot
      | pg_sleep.* | txid_current | pg_current_xact_id | pg_import_system_collations
      | pg_sequence_last_value | pg_nextoid | pg_catalog_.*
      | pg_truncate_visibility_map | pg_prewarm | pg_wal_summary_.* | binary_upgrade_.*
      | pg_restore_.*_stats | pg_clear_.*_stats | pg_sync_replication_slots
    )$""",
    re.VERBOSE,
)

# Functions that run SQL (or a type's input function) named by a text argument: whatever
# the guard reads in the statement, they run something else. Refused as a class.
SQL_TEXT_FUNCTIONS = re.compile(
    r"""^(
        query_to_xml.* | query_to_xmlschema | cursor_to_xml.* | table_to_xml.*
      | schema_to_xml.* | database_to_xml.* | xpath_table | ts_stat | ts_rewrite
      | crosstab.* | connectby | normal_rand | pg_input_is_valid | pg_input_error_info
    )$""",
    re.VERBOSE,
)

# Volatile by catalog, harmless by nature: no state of the database or the session changes.
VOLATILE_ALLOWED = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "statement_timestamp",
        "pg_current_wal_lsn",
        "pg_current_wal_insert_lsn",
        "pg_current_wal_flush_lsn",
        "pg_last_wal_receive_lsn",
        "pg_last_wal_replay_lsn",
        "pg_is_in_recovery",
        "pg_export_snapshot",
        "pg_control_system",
        "pg_control_checkpoint",
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_database_size",
        "pg_tablespace_size",
        "pg_column_size",
        "txid_current_snapshot",
        "pg_current_snapshot",
        "pg_current_xact_id_if_assigned",
        "txid_current_if_assigned",
        # TABLESAMPLE's built-in methods: handlers that SQL cannot call (internal argument)
        "system",
        "bernoulli",
    }
)

# Catalog tables and views whose rows are secrets: a read of them is a disclosure.
SECRET_RELATIONS = {
    "pg_authid": "holds password hashes",
    "pg_shadow": "holds password hashes",
    "pg_user_mapping": "holds foreign-server passwords",
    "pg_user_mappings": "holds foreign-server passwords",
    "pg_subscription": "holds replication connection strings",
}

# Built-ins that run code the catalog picks at run time rather than the statement.
TEXT_SEARCH_FUNCTIONS = frozenset(
    {
        "to_tsvector",
        "to_tsquery",
        "plainto_tsquery",
        "phraseto_tsquery",
        "websearch_to_tsquery",
        "json_to_tsvector",
        "jsonb_to_tsvector",
        "ts_headline",
        "ts_lexize",
        "ts_parse",
        "ts_token_type",
        "ts_debug",
        "@@",
        "@@@",
    }
)
CONVERSION_FUNCTIONS = frozenset({"convert", "convert_from", "convert_to"})
TYPMOD_FUNCTIONS = frozenset({"to_regtypemod", "format_type"})

_SORT_METHODS = ("btree", "hash")
# record, "any", anyelement, anynonarray, anycompatible, anycompatiblenonarray: a whole row
# binds to them, so `x.f` may call f(x)
_ROW_PSEUDO_TYPES = frozenset(
    {2249, 2276, 2283, 2776, 5077, 5079}
)  # the access methods whose default classes run implicitly


class Taint(NamedTuple):
    """Why a name may run code that is not trusted: the code, what kind it is, the way there."""

    culprit: str
    kind: str = "user-code"  # user-code | side-effect | foreign-table | secret | row-lock
    path: tuple[str, ...] = ()

    def via(self, step: str) -> Taint:
        return Taint(self.culprit, self.kind, (step, *self.path))

    def describe(self) -> str:
        if not self.path:
            return self.culprit
        return f"{self.culprit} (through {' → '.join(self.path)})"


@dataclass(frozen=True)
class Trust:
    """What `[guard]` trusts beyond the built-ins: functions, extensions, foreign tables."""

    functions: tuple[str, ...] = ()
    extensions: frozenset[str] = frozenset()
    foreign_tables: tuple[str, ...] = ()

    def function(self, schema: str, name: str, extension: str | None) -> bool:
        if extension is not None and extension in self.extensions:
            return True
        return _matches(self.functions, schema, name)

    def foreign_table(self, schema: str, name: str) -> bool:
        return _matches(self.foreign_tables, schema, name)

    def describe(self) -> list[str]:
        """The trust, one line per item, for doctor and the report."""
        lines = [f"function {item}" for item in self.functions]
        lines += [f"extension {item}" for item in sorted(self.extensions)]
        lines += [f"foreign table {item}" for item in self.foreign_tables]
        return lines


def _matches(patterns: Iterable[str], schema: str, name: str) -> bool:
    qualified = f"{schema}.{name}"
    for pattern in patterns:
        target = qualified if "." in pattern else name
        if fnmatch.fnmatchcase(target, pattern):
            return True
    return False


# -- rows -------------------------------------------------------------------------------------


class FunctionRow(NamedTuple):
    oid: int
    schema: str
    name: str
    volatility: str
    builtin: bool
    argtypes: tuple[int, ...] = ()
    rettype: int = 0
    support: int = 0
    extension: str | None = None
    parts: tuple[int, ...] = ()  # an aggregate's support functions
    defaults: int = 0
    variadic: bool = False


class OperatorRow(NamedTuple):
    oid: int
    schema: str
    name: str
    left: int
    right: int
    code: int
    estimators: tuple[int, ...] = ()


class TypeRow(NamedTuple):
    oid: int
    schema: str
    name: str
    kind: str  # typtype: b c d e p r m
    io: tuple[int, ...] = ()  # input, output, receive, send, typmod in/out, subscript
    base: int = 0
    element: int = 0
    relid: int = 0
    range_subtype: int = 0
    range_functions: tuple[int, ...] = ()
    range_opclass: int = 0
    multirange_of: int = 0
    typmod_io: tuple[int, ...] = ()


class DependencyRow(NamedTuple):
    """An object (a domain, a relation) that runs or reads another: how, and what."""

    owner: int
    via: str  # check | view | policy | column | index | partkey | child | lock
    refclass: str  # pg_proc | pg_operator | pg_type | pg_class | pg_opclass | -
    ref: int


class OpclassRow(NamedTuple):
    oid: int
    name: str
    intype: int
    default: bool
    method: str
    procs: tuple[int, ...]
    operators: tuple[int, ...]


class CastRow(NamedTuple):
    source: int
    target: int
    function: int
    implicit: bool = False


class RelationRow(NamedTuple):
    oid: int
    schema: str
    name: str
    kind: str
    rowtype: int
    arraytype: int = 0


class CodeRow(NamedTuple):
    """Code the server picks by catalog: a text search parser or template, a conversion."""

    kind: str  # text search | conversion | default conversion
    name: str
    functions: tuple[int, ...]


@dataclass
class CatalogRows:
    """Everything the catalog queries return, as typed rows."""

    search_path: tuple[str, ...] = ("pg_catalog", "public")
    functions: list[FunctionRow] = field(default_factory=list)
    operators: list[OperatorRow] = field(default_factory=list)
    types: list[TypeRow] = field(default_factory=list)
    type_dependencies: list[DependencyRow] = field(default_factory=list)
    opclasses: list[OpclassRow] = field(default_factory=list)
    casts: list[CastRow] = field(default_factory=list)
    relations: list[RelationRow] = field(default_factory=list)
    relation_dependencies: list[DependencyRow] = field(default_factory=list)
    code: list[CodeRow] = field(default_factory=list)


# -- the catalog ------------------------------------------------------------------------------


Candidates = Mapping[str, Sequence[tuple[str, Taint | None]]]


class Overload(NamedTuple):
    """One tainted function or operator of a name, and which arguments could reach it.

    `reachable[i]` says whether a value a guarded read can produce — of a clean type, or
    coercible to one implicitly — may bind parameter i. A parameter that none can bind is
    reached only by an untyped literal (`'…'`, NULL) in that place.
    """

    schema: str
    taint: Taint
    reachable: tuple[bool, ...]
    required: int  # parameters without a default
    variadic: bool = False

    def matches(self, count: int, unknown: Sequence[bool]) -> bool:
        """True when a call of `count` arguments (`unknown[i]`: untyped) may pick it."""
        total = len(self.reachable)
        if not (self.required <= count <= total or (self.variadic and count >= total - 1)):
            return False
        for index in range(count):
            position = min(index, total - 1)
            if position < 0:
                return False
            literal = index < len(unknown) and unknown[index]
            if not (self.reachable[position] or literal):
                return False
        return True


Overloads = Mapping[str, Sequence[Overload]]


@dataclass(frozen=True)
class Catalog:
    """Per name, the schemas that define it and what, if anything, it may run untrusted.

    `functions` and `operators` list every definition (a clean one with `None`); `types` and
    `relations` list only tainted ones; an unqualified name counts every definition on the
    session's search path, since the guard cannot resolve overloads without types.
    `everywhere` taints every read (a cast or operator class installed on built-in types).
    """

    search_path: tuple[str, ...] = ("pg_catalog", "public")
    function_names: frozenset[tuple[str, str]] = frozenset()  # (schema, name)
    functions: Overloads = field(default_factory=dict)
    field_functions: Candidates = field(default_factory=dict)
    operator_names: frozenset[tuple[str, str]] = frozenset()
    operators: Overloads = field(default_factory=dict)
    types: Candidates = field(default_factory=dict)
    relations: Candidates = field(default_factory=dict)
    conditional: Mapping[str, Taint] = field(default_factory=dict)
    everywhere: Taint | None = None
    trust: Trust = Trust()

    @classmethod
    def build(cls, rows: CatalogRows, trust: Trust = Trust()) -> Catalog:
        return _Builder(rows, trust).catalog()

    # -- lookups used by the guard ------------------------------------------------------------

    def _schemas(self, parts: Sequence[str]) -> Sequence[str]:
        return parts[-2:-1] if len(parts) > 1 else self.search_path

    def _visible(self, table: Mapping[str, Sequence[Any]], parts: Sequence[str]) -> list[Any]:
        schemas = self._schemas(parts)
        return [entry for entry in table.get(parts[-1], ()) if entry[0] in schemas]

    def knows_function(self, parts: Sequence[str]) -> bool:
        """True when a function of that name is visible (on the search path, or in its schema)."""
        return any((schema, parts[-1]) in self.function_names for schema in self._schemas(parts))

    def function(
        self, parts: Sequence[str], count: int | None = None, unknown: Sequence[bool] = ()
    ) -> Taint | None:
        """What a call of the name may run untrusted: any overload the call could pick.

        `count` is the number of arguments (None: any); `unknown[i]` marks an untyped literal.
        """
        condition = self.conditional.get(parts[-1]) if parts else None
        if condition is not None:
            return condition
        for overload in self._visible(self.functions, parts):
            if count is None or overload.matches(count, unknown):
                return overload.taint  # type: ignore[no-any-return]
        return None

    def field_function(self, name: str) -> Taint | None:
        """A tainted function that `x.name` may call in field notation."""
        return _first_taint(self._visible(self.field_functions, [name]) or [])

    def knows_operator(self, parts: Sequence[str]) -> bool:
        return any((schema, parts[-1]) in self.operator_names for schema in self._schemas(parts))

    def operator(
        self, parts: Sequence[str], unknown: tuple[bool, bool] | None = None, prefix: bool = False
    ) -> Taint | None:
        """What an operator may run untrusted; `unknown` marks untyped literal operands."""
        condition = self.conditional.get(parts[-1]) if parts else None
        if condition is not None:
            return condition
        for overload in self._visible(self.operators, parts):
            if unknown is None:
                return overload.taint  # type: ignore[no-any-return]
            if prefix != (len(overload.reachable) == 1):
                continue
            if overload.matches(len(overload.reachable), unknown[-len(overload.reachable) :]):
                return overload.taint  # type: ignore[no-any-return]
        return None

    def type(self, parts: Sequence[str]) -> Taint | None:
        found = self._visible(self.types, parts)
        if not found and parts and parts[-1].startswith("_"):  # an array type by its name
            found = self._visible(self.types, [*parts[:-1], parts[-1][1:]]) or []
        return _first_taint(found)

    def relation(self, parts: Sequence[str]) -> Taint | None:
        return _first_taint(self._visible(self.relations, parts))


def _first_taint(entries: Iterable[tuple[str, Taint | None]]) -> Taint | None:
    for _, taint in entries:
        if taint is not None:
            return taint
    return None


def _q(schema: str, name: str) -> str:
    return f"{schema}.{name}"


class _Builder:
    """Taint propagation over the fetched rows: memoised, cycle-safe."""

    def __init__(self, rows: CatalogRows, trust: Trust) -> None:
        self.rows = rows
        self.trust = trust
        self.functions = {f.oid: f for f in rows.functions}
        self.operators = {o.oid: o for o in rows.operators}
        self.types = {t.oid: t for t in rows.types}
        self.relations = {r.oid: r for r in rows.relations}
        self.rowtypes = {r.rowtype: r.oid for r in rows.relations if r.rowtype}
        self.rowtypes.update({r.arraytype: r.oid for r in rows.relations if r.arraytype})
        self.opclasses = {c.oid: c for c in rows.opclasses}
        self.type_deps: dict[int, list[DependencyRow]] = defaultdict(list)
        for dep in rows.type_dependencies:
            self.type_deps[dep.owner].append(dep)
        self.rel_deps: dict[int, list[DependencyRow]] = defaultdict(list)
        for dep in rows.relation_dependencies:
            self.rel_deps[dep.owner].append(dep)
        self.casts: dict[int, list[CastRow]] = defaultdict(list)
        self.implicit_into: dict[int, list[int]] = defaultdict(list)
        for cast in rows.casts:
            self.casts[cast.source].append(cast)
            if cast.target != cast.source:
                self.casts[cast.target].append(cast)
            if cast.implicit:
                self.implicit_into[cast.target].append(cast.source)
        self.default_classes: dict[int, list[OpclassRow]] = defaultdict(list)
        for opclass in rows.opclasses:
            if opclass.default and opclass.method in _SORT_METHODS:
                self.default_classes[opclass.intype].append(opclass)
        self.memo: dict[tuple[str, int], Taint | None] = {}
        self.busy: set[tuple[str, int]] = set()
        self.reach: dict[tuple[str, int], bool] = {}

    def _cached(self, kind: str, oid: int, compute: Callable[[], Taint | None]) -> Taint | None:
        key = (kind, oid)
        if key in self.memo:
            return self.memo[key]
        if key in self.busy:
            return None  # a cycle: the other way round finds the taint, if any
        self.busy.add(key)
        try:
            result = compute()
        finally:
            self.busy.discard(key)
        self.memo[key] = result
        return result

    # -- functions ------------------------------------------------------------------------

    def function(self, oid: int) -> Taint | None:
        if oid == 0:
            return None
        return self._cached("f", oid, lambda: self._function(oid))

    def _function(self, oid: int) -> Taint | None:
        row = self.functions.get(oid)
        if row is None:
            return Taint(f"function #{oid}, which the catalog does not list")
        name = _q(row.schema, row.name)
        lowered = row.name.lower()
        if SIDE_EFFECT_FUNCTIONS.match(lowered):
            return Taint(f"{name}(), which has side effects", "side-effect")
        if SQL_TEXT_FUNCTIONS.match(lowered):
            return Taint(f"{name}(), which runs SQL or code named by its text argument")
        trusted = self.trust.function(row.schema, row.name, row.extension)
        if row.builtin:
            if row.volatility == "v" and lowered not in VOLATILE_ALLOWED and not trusted:
                return Taint(
                    f"{name}(), a volatile built-in that is not on the guard's safe list",
                    "side-effect",
                )
            return None
        if not trusted:
            return Taint(
                f"{name}(), a user-defined function the guard does not trust"
                f' ([guard] allow_functions = ["{name}"] trusts it)'
            )
        for part in (*row.parts, row.support):
            if part and part != oid:
                taint = self.function(part)
                if taint is not None:
                    return taint.via(f"trusted {name}()")
        for type_oid in (*row.argtypes, row.rettype):
            taint = self.type(type_oid)
            if taint is not None:
                return taint.via(f"a parameter or result of trusted {name}()")
        return None

    # -- operators, operator classes, casts -----------------------------------------------

    def operator(self, oid: int) -> Taint | None:
        return self._cached("o", oid, lambda: self._operator(oid))

    def _operator(self, oid: int) -> Taint | None:
        row = self.operators.get(oid)
        if row is None:
            return None
        label = f"operator {row.schema}.{row.name}"
        for function in (row.code, *row.estimators):
            taint = self.function(function)
            if taint is not None:
                return taint.via(label)
        for operand in (row.left, row.right):
            taint = self.type(operand)
            if taint is not None:
                return taint.via(f"an operand of {label}")
        return None

    def opclass(self, oid: int) -> Taint | None:
        return self._cached("c", oid, lambda: self._opclass(oid))

    def _opclass(self, oid: int) -> Taint | None:
        row = self.opclasses.get(oid)
        if row is None:
            return None
        label = f"operator class {row.name} ({row.method})"
        for function in row.procs:
            taint = self.function(function)
            if taint is not None:
                return taint.via(label)
        for operator in row.operators:
            found = self.operators.get(operator)
            if found is not None:
                for function in (found.code, *found.estimators):
                    taint = self.function(function)
                    if taint is not None:
                        return taint.via(label)
        return None

    # -- types ----------------------------------------------------------------------------

    def type(self, oid: int) -> Taint | None:
        if oid == 0:
            return None
        return self._cached("t", oid, lambda: self._type(oid))

    def _type(self, oid: int) -> Taint | None:
        row = self.types.get(oid)
        if row is None:
            relation = self.rowtypes.get(oid)
            if relation is not None:
                return self.relation(relation)
            return self._around(oid, f"type #{oid}")
        label = f"type {row.schema}.{row.name}"
        for function in (*row.io, *row.typmod_io):
            taint = self.function(function)
            if taint is not None:
                return taint.via(f"{label} (its input, output or subscript function)")
        if row.kind == "d":
            taint = self.type(row.base)
            if taint is not None:
                return taint.via(f"domain {row.schema}.{row.name} (its base type)")
            for dep in self.type_deps.get(oid, ()):
                taint = self._reference(dep, skip=oid)
                if taint is not None:
                    return taint.via(f"domain {row.schema}.{row.name} (its CHECK)")
        if row.relid:
            for dep in self.rel_deps.get(row.relid, ()):
                if dep.via == "column":
                    taint = self.type(dep.ref)
                    if taint is not None:
                        return taint.via(f"{label} (an attribute)")
        if row.element:
            taint = self.type(row.element)
            if taint is not None:
                return taint.via(f"{label} (its element type)")
        if row.kind == "r":
            for function in row.range_functions:
                taint = self.function(function)
                if taint is not None:
                    return taint.via(f"range {label} (canonical or subtype_diff)")
            for taint in (self.type(row.range_subtype), self.opclass(row.range_opclass)):
                if taint is not None:
                    return taint.via(f"range {label} (its subtype)")
        if row.kind == "m" and row.multirange_of:
            taint = self.type(row.multirange_of)
            if taint is not None:
                return taint.via(f"multirange {label}")
        return self._around(oid, label)

    def reachable(self, oid: int) -> bool:
        """Whether a guarded read can produce a value that binds a parameter of this type.

        Clean types can, and so can types a clean one coerces to implicitly: a domain over
        one, an implicit cast's target, an array of one, a composite (from a ROW constructor).
        """
        if oid == 0 or self.type(oid) is None:
            return True
        return bool(self._cached_bool("reach", oid, lambda: self._reachable(oid)))

    def _cached_bool(self, kind: str, oid: int, compute: Callable[[], bool]) -> bool:
        key = (kind, oid)
        if key in self.reach:
            return self.reach[key]
        self.reach[key] = False  # a cycle reaches nothing new
        self.reach[key] = compute()
        return self.reach[key]

    def _reachable(self, oid: int) -> bool:
        row = self.types.get(oid)
        if row is None:
            return oid in self.rowtypes  # a table's row type, from a ROW constructor
        if row.kind in ("c", "p"):
            return True
        if row.kind == "d" and self.reachable(row.base):
            return True
        if row.element and self.reachable(row.element):
            return True
        return any(self.reachable(source) for source in self.implicit_into.get(oid, ()))

    def _around(self, oid: int, label: str) -> Taint | None:
        """What a type's default operator classes and its casts run."""
        for opclass in self.default_classes.get(oid, ()):
            taint = self.opclass(opclass.oid)
            if taint is not None:
                return taint.via(f"{label} (sorting, grouping or hashing it)")
        for cast in self.casts.get(oid, ()):
            if oid < FIRST_NORMAL_OID and max(cast.source, cast.target) >= FIRST_NORMAL_OID:
                continue  # a cast to or from a user type taints that type, not the built-in
            taint = self.function(cast.function)
            if taint is not None:
                return taint.via(f"a cast to or from {label}")
        return None

    def _reference(self, dep: DependencyRow, skip: int = 0) -> Taint | None:
        if dep.ref == skip:
            return None
        if dep.refclass == "pg_proc":
            return self.function(dep.ref)
        if dep.refclass == "pg_operator":
            return self.operator(dep.ref)
        if dep.refclass == "pg_type":
            return self.type(dep.ref)
        if dep.refclass == "pg_class":
            return self.relation(dep.ref)
        if dep.refclass == "pg_opclass":
            return self.opclass(dep.ref)
        return None

    # -- relations ------------------------------------------------------------------------

    def relation(self, oid: int) -> Taint | None:
        return self._cached("r", oid, lambda: self._relation(oid))

    def _relation(self, oid: int) -> Taint | None:
        row = self.relations.get(oid)
        if row is None:
            return None
        name = _q(row.schema, row.name)
        if row.kind == "f" and not self.trust.foreign_table(row.schema, row.name):
            return Taint(
                f"foreign table {name}, which reads another server"
                f' ([guard] allow_foreign_tables = ["{name}"] trusts it)',
                "foreign-table",
            )
        steps = {
            "view": f"view {name}",
            "policy": f"a row security policy of {name}",
            "column": f"a column of {name}",
            "index": f"an index of {name}",
            "partkey": f"the partition key of {name}",
            "child": f"a partition or child of {name}",
        }
        for dep in self.rel_deps.get(oid, ()):
            if dep.via == "lock":
                return Taint(f"row locks (view {name} selects FOR UPDATE/SHARE)", "row-lock")
            taint = self._reference(dep, skip=oid)
            if taint is not None:
                return taint.via(steps.get(dep.via, name))
        return None

    # -- the result -----------------------------------------------------------------------

    def catalog(self) -> Catalog:
        rows = self.rows
        functions: dict[str, list[Overload]] = defaultdict(list)
        field_functions: dict[str, list[tuple[str, Taint | None]]] = defaultdict(list)
        for row in rows.functions:
            taint = self.function(row.oid)
            if taint is None:
                continue
            reachable = tuple(self.reachable(t) for t in row.argtypes)
            required = len(row.argtypes) - row.defaults
            functions[row.name].append(
                Overload(row.schema, taint, reachable, required, row.variadic)
            )
            if len(row.argtypes) == 1 and self._row_like(row.argtypes[0]):
                field_functions[row.name].append((row.schema, taint))
        operators: dict[str, list[Overload]] = defaultdict(list)
        for op in rows.operators:
            taint = self.operator(op.oid)
            if taint is None:
                continue
            operands = tuple(self.reachable(t) for t in (op.left, op.right) if t)
            operators[op.name].append(Overload(op.schema, taint, operands, len(operands)))
        types: dict[str, list[tuple[str, Taint | None]]] = defaultdict(list)
        everywhere: Taint | None = None
        for t in rows.types:
            taint = self.type(t.oid)
            if taint is not None:
                types[t.name].append((t.schema, taint))
        relations: dict[str, list[tuple[str, Taint | None]]] = defaultdict(list)
        for r in rows.relations:
            taint = self.relation(r.oid)
            if taint is not None:
                relations[r.name].append((r.schema, taint))
                types[r.name].append((r.schema, taint.via(f"the row type of {r.schema}.{r.name}")))
        for relname, why in SECRET_RELATIONS.items():
            secret = Taint(f"pg_catalog.{relname}, which {why}", "secret")
            relations[relname].append(("pg_catalog", secret))
        builtin_types = {c.source for c in rows.casts} | {c.target for c in rows.casts}
        builtin_types |= set(self.default_classes)
        for oid in sorted(builtin_types):
            if oid < FIRST_NORMAL_OID:
                taint = self.type(oid)
                if taint is not None:
                    everywhere = taint.via("a built-in type, which any read may use")
                    break
        conditional: dict[str, Taint] = {}
        for code in rows.code:
            for function in code.functions:
                taint = self.function(function)
                if taint is None:
                    continue
                taint = taint.via(f"{code.kind} {code.name}")
                if code.kind == "default conversion" and everywhere is None:
                    everywhere = taint.via("the client encoding conversion")
                names = (
                    TEXT_SEARCH_FUNCTIONS if code.kind == "text search" else CONVERSION_FUNCTIONS
                )
                for name in names:
                    conditional.setdefault(name, taint)
        for t in rows.types:
            for function in t.typmod_io:
                taint = self.function(function)
                if taint is not None:
                    for name in TYPMOD_FUNCTIONS:
                        conditional.setdefault(
                            name, taint.via(f"the typmod of {t.schema}.{t.name}")
                        )
        return Catalog(
            search_path=rows.search_path,
            function_names=frozenset((f.schema, f.name) for f in rows.functions),
            functions=dict(functions),
            field_functions=dict(field_functions),
            operator_names=frozenset((o.schema, o.name) for o in rows.operators),
            operators=dict(operators),
            types=dict(types),
            relations=dict(relations),
            conditional=conditional,
            everywhere=everywhere,
            trust=self.trust,
        )

    def _row_like(self, oid: int) -> bool:
        """A parameter type `x.f` can bind in field notation: a row, composite or pseudo type."""
        if oid in self.rowtypes or oid in _ROW_PSEUDO_TYPES:
            return True
        row = self.types.get(oid)
        return row is not None and row.kind in ("c", "p")


# -- the queries --------------------------------------------------------------------------------

_PROC = "'pg_catalog.pg_proc'::pg_catalog.regclass"
_CLASS = "'pg_catalog.pg_class'::pg_catalog.regclass"
_REFCLASS = (
    "case d.refclassid when 'pg_catalog.pg_proc'::pg_catalog.regclass then 'pg_proc'"
    " when 'pg_catalog.pg_operator'::pg_catalog.regclass then 'pg_operator'"
    " when 'pg_catalog.pg_type'::pg_catalog.regclass then 'pg_type'"
    " when 'pg_catalog.pg_class'::pg_catalog.regclass then 'pg_class' else '-' end"
)

QUERY_SEARCH_PATH = "select pg_catalog.current_schemas(true)::text[]"
QUERY_FUNCTIONS = f"""select p.oid::int8, n.nspname::text, p.proname::text, p.provolatile::text,
    p.pronargdefaults::int8, p.provariadic <> 0,
    p.oid < {FIRST_NORMAL_OID} and p.prolang in (12, 13, 14),
    p.proargtypes::pg_catalog.oid[]::int8[], p.prorettype::int8, p.prosupport::pg_catalog.oid::int8,
    x.extname,
    case when a.aggfnoid is not null then array[a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
        a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn,
        a.aggmfinalfn]::pg_catalog.oid[]::int8[] end
from pg_catalog.pg_proc p
join pg_catalog.pg_namespace n on n.oid = p.pronamespace
left join pg_catalog.pg_aggregate a on a.aggfnoid = p.oid
left join (select d.objid, e.extname::text as extname from pg_catalog.pg_depend d
    join pg_catalog.pg_extension e on e.oid = d.refobjid
    where d.classid = {_PROC} and d.deptype = 'e'
      and d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass) x on x.objid = p.oid"""
QUERY_OPERATORS = """select o.oid::int8, n.nspname::text, o.oprname::text, o.oprleft::int8,
    o.oprright::int8, o.oprcode::pg_catalog.oid::int8,
    array[o.oprrest, o.oprjoin]::pg_catalog.oid[]::int8[]
from pg_catalog.pg_operator o join pg_catalog.pg_namespace n on n.oid = o.oprnamespace"""
# Types of users, leaving out the row types of tables and views (and their arrays): their
# taint is their relation's.
_QUERY_TYPES = f"""select t.oid::int8, n.nspname::text, t.typname::text, t.typtype::text,
    array[t.typinput, t.typoutput, t.typreceive, t.typsend,
        {{subscript}}]::pg_catalog.oid[]::int8[],
    t.typbasetype::int8, t.typelem::int8, t.typrelid::int8,
    coalesce(r.rngsubtype, 0)::int8,
    array[coalesce(r.rngcanonical, 0), coalesce(r.rngsubdiff, 0)]::pg_catalog.oid[]::int8[],
    coalesce(r.rngsubopc, 0)::int8, {{multirange}},
    array[t.typmodin, t.typmodout]::pg_catalog.oid[]::int8[]
from pg_catalog.pg_type t
join pg_catalog.pg_namespace n on n.oid = t.typnamespace
left join pg_catalog.pg_range r on r.rngtypid = t.oid
where t.oid >= {FIRST_NORMAL_OID}
  and not exists (select from pg_catalog.pg_class c where c.oid = t.typrelid and c.relkind <> 'c')
  and not exists (select from pg_catalog.pg_type e join pg_catalog.pg_class c on c.oid = e.typrelid
      where e.oid = t.typelem and c.relkind <> 'c')"""
_MULTIRANGE_14 = (
    "coalesce((select m.rngtypid from pg_catalog.pg_range m"
    " where m.rngmultitypid = t.oid), 0)::int8"
)
QUERY_TYPE_DEPENDENCIES = f"""select c.contypid::int8, 'check', {_REFCLASS}, d.refobjid::int8
from pg_catalog.pg_constraint c
join pg_catalog.pg_depend d
    on d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass and d.objid = c.oid
where c.contypid >= {FIRST_NORMAL_OID} and d.refobjid <> c.contypid"""
# Operator classes that are not built in, or whose family gained members that are not.
QUERY_OPCLASSES = f"""select c.oid::int8, c.opcname::text, c.opcintype::int8, c.opcdefault,
    m.amname::text,
    array(select p.amproc::pg_catalog.oid::int8 from pg_catalog.pg_amproc p
        where p.amprocfamily = c.opcfamily),
    array(select o.amopopr::int8 from pg_catalog.pg_amop o where o.amopfamily = c.opcfamily)
from pg_catalog.pg_opclass c join pg_catalog.pg_am m on m.oid = c.opcmethod
where c.oid >= {FIRST_NORMAL_OID}
   or exists (select from pg_catalog.pg_amproc p where p.amprocfamily = c.opcfamily
              and (p.oid >= {FIRST_NORMAL_OID} or p.amproc::pg_catalog.oid >= {FIRST_NORMAL_OID}))
   or exists (select from pg_catalog.pg_amop o where o.amopfamily = c.opcfamily
              and o.oid >= {FIRST_NORMAL_OID})"""
QUERY_CASTS = f"""select c.castsource::int8, c.casttarget::int8, c.castfunc::int8,
    c.castcontext = 'i'
from pg_catalog.pg_cast c where c.oid >= {FIRST_NORMAL_OID}"""
QUERY_RELATIONS = f"""select c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text,
    c.reltype::int8, coalesce(t.typarray, 0)::int8
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
left join pg_catalog.pg_type t on t.oid = c.reltype
where c.oid >= {FIRST_NORMAL_OID} and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c')"""
QUERY_RELATION_DEPENDENCIES = f"""select w.ev_class::int8, 'view', {_REFCLASS}, d.refobjid::int8
from pg_catalog.pg_rewrite w
join pg_catalog.pg_depend d
    on d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass and d.objid = w.oid
where w.ev_class >= {FIRST_NORMAL_OID} and w.ev_type = '1' and d.refobjid <> w.ev_class
union all
select w.ev_class::int8, 'lock', '-', 0 from pg_catalog.pg_rewrite w
where w.ev_class >= {FIRST_NORMAL_OID} and w.ev_type = '1'
  and w.ev_action::text like '%:rowMarks ({{%'
union all
select p.polrelid::int8, 'policy', {_REFCLASS}, d.refobjid::int8
from pg_catalog.pg_policy p
join pg_catalog.pg_class r on r.oid = p.polrelid and r.relrowsecurity
join pg_catalog.pg_depend d
    on d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass and d.objid = p.oid
where d.refobjid <> p.polrelid
union all
select a.attrelid::int8, 'column', 'pg_type', a.atttypid::int8
from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid
where c.oid >= {FIRST_NORMAL_OID} and c.relkind in ('r', 'p', 'v', 'm', 'f', 'c')
  and a.attnum > 0 and not a.attisdropped and a.atttypid >= {FIRST_NORMAL_OID}
union all
select i.indrelid::int8, 'index', 'pg_opclass', k.opc::int8
from pg_catalog.pg_index i cross join lateral pg_catalog.unnest(i.indclass::pg_catalog.oid[]) k(opc)
where i.indrelid >= {FIRST_NORMAL_OID} and k.opc >= {FIRST_NORMAL_OID}
union all
select p.partrelid::int8, 'partkey', 'pg_opclass', k.opc::int8
from pg_catalog.pg_partitioned_table p
cross join lateral pg_catalog.unnest(p.partclass::pg_catalog.oid[]) k(opc)
where k.opc >= {FIRST_NORMAL_OID}
union all
select i.inhparent::int8, 'child', 'pg_class', i.inhrelid::int8 from pg_catalog.pg_inherits i
where i.inhparent >= {FIRST_NORMAL_OID}"""
QUERY_CODE = f"""select 'text search', p.prsname::text, array[p.prsstart, p.prstoken, p.prsend,
    p.prsheadline, p.prslextype]::pg_catalog.oid[]::int8[]
from pg_catalog.pg_ts_parser p where p.oid >= {FIRST_NORMAL_OID}
union all
select 'text search', t.tmplname::text,
    array[t.tmplinit, t.tmpllexize]::pg_catalog.oid[]::int8[]
from pg_catalog.pg_ts_template t where t.oid >= {FIRST_NORMAL_OID}
union all
select case when c.condefault then 'default conversion' else 'conversion' end, c.conname::text,
    array[c.conproc]::pg_catalog.oid[]::int8[]
from pg_catalog.pg_conversion c where c.oid >= {FIRST_NORMAL_OID}"""


def query_types(server_version_num: int) -> str:
    """The types query for a server (multiranges and subscript handlers exist from 14)."""
    since_14 = server_version_num >= 140000
    multirange = _MULTIRANGE_14 if since_14 else "0::int8"
    subscript = "t.typsubscript" if since_14 else "0::pg_catalog.oid"
    return _QUERY_TYPES.replace("{multirange}", multirange).replace("{subscript}", subscript)


def queries(server_version_num: int) -> tuple[str, ...]:
    """Every query `read` sends, in order: the exact internal shapes of a production session."""
    return (
        QUERY_SEARCH_PATH,
        QUERY_FUNCTIONS,
        QUERY_OPERATORS,
        query_types(server_version_num),
        QUERY_TYPE_DEPENDENCIES,
        QUERY_OPCLASSES,
        QUERY_CASTS,
        QUERY_RELATIONS,
        QUERY_RELATION_DEPENDENCIES,
        QUERY_CODE,
    )


def all_query_shapes() -> frozenset[str]:
    """Every catalog query of every supported server version."""
    return frozenset(q for version in (130000, 140000) for q in queries(version))


def rows_from_results(results: Sequence[Sequence[tuple[Any, ...]]]) -> CatalogRows:
    """Typed rows from the results of `queries(…)`, in the same order."""
    (path, functions, operators, types, type_deps, opclasses, casts, relations, rel_deps, code) = (
        results
    )

    def ints(value: Any) -> tuple[int, ...]:
        return tuple(int(v) for v in value or () if v)

    return CatalogRows(
        search_path=tuple(str(s) for s in (path[0][0] if path else ())),
        functions=[
            FunctionRow(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                bool(r[6]),
                tuple(int(v) for v in r[7] or ()),
                int(r[8] or 0),
                int(r[9] or 0),
                r[10],
                ints(r[11]),
                int(r[4] or 0),
                bool(r[5]),
            )
            for r in functions
        ],
        operators=[
            OperatorRow(
                int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5]), ints(r[6])
            )
            for r in operators
        ],
        types=[
            TypeRow(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                ints(r[4]),
                int(r[5]),
                int(r[6]),
                int(r[7]),
                int(r[8]),
                ints(r[9]),
                int(r[10]),
                int(r[11]),
                ints(r[12]),
            )
            for r in types
        ],
        type_dependencies=[
            DependencyRow(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in type_deps
        ],
        opclasses=[
            OpclassRow(
                int(r[0]), str(r[1]), int(r[2]), bool(r[3]), str(r[4]), ints(r[5]), ints(r[6])
            )
            for r in opclasses
        ],
        casts=[CastRow(int(r[0]), int(r[1]), int(r[2]), bool(r[3])) for r in casts],
        relations=[
            RelationRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]))
            for r in relations
        ],
        relation_dependencies=[
            DependencyRow(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rel_deps
        ],
        code=[CodeRow(str(r[0]), str(r[1]), ints(r[2])) for r in code],
    )
