"""The guard: classify every statement with the real PostgreSQL parser before it is sent.

On the production role only plain reads pass: one `SELECT` (or `VALUES`/`TABLE`), `SHOW`,
`EXPLAIN` of such a read, or `COPY (read) TO STDOUT`, with no row locks, no `INTO`, no
data-modifying CTE, and no call of a function or operator that is volatile unless it is on
the short allow-list of side-effect-free volatile functions. Everything else — including
SQL the parser cannot read, and functions the catalog does not know — is refused.

The classification is a pure function of the SQL text and a `Catalog` of function and
operator volatility read once per session; it never talks to the server itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pglast
from pglast import ast

from oneroof.errors import ForbiddenAction


class Kind(StrEnum):
    """What a statement is, as far as the guard is concerned."""

    READ = "read"
    INTERNAL = "internal"
    WRITE = "write"
    DDL = "ddl"
    UTILITY = "utility"
    TRANSACTION = "transaction"
    SESSION = "session"
    SIDE_EFFECT = "side-effect"
    MULTI = "multi-statement"
    UNPARSEABLE = "unparseable"


@dataclass(frozen=True)
class Verdict:
    """The guard's decision on one SQL string."""

    allowed: bool
    kind: Kind
    reason: str

    def raise_if_refused(self, sql: str, role: str = "production") -> None:
        if not self.allowed:
            raise ForbiddenAction(
                f"refused on {role}: {self.reason} (nothing was sent)", sql=sql, reason=self.reason
            )


# Functions with side effects that no read-only transaction stops, or that we never want a
# read to call. Matched on the unqualified, lower-cased name.
_DENIED_FUNCTIONS = re.compile(
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
      | pg_restore_.*_stats | pg_clear_.*_stats
      | query_to_xml.* | query_to_xmlschema | cursor_to_xml.* | table_to_xml.* | xpath_table
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
    }
)

_READ_STATEMENTS = (ast.SelectStmt, ast.VariableShowStmt, ast.ExplainStmt, ast.CopyStmt)
_WRITE_NODES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_TRANSACTION_NODES = (ast.TransactionStmt,)
_SESSION_NODES = (
    ast.VariableSetStmt,
    ast.DiscardStmt,
    ast.ListenStmt,
    ast.UnlistenStmt,
    ast.NotifyStmt,
    ast.PrepareStmt,
    ast.ExecuteStmt,
    ast.DeallocateStmt,
    ast.DeclareCursorStmt,
    ast.FetchStmt,
    ast.ClosePortalStmt,
    ast.LoadStmt,
)
_UTILITY_NODES = (
    ast.VacuumStmt,
    ast.ClusterStmt,
    ast.ReindexStmt,
    ast.RefreshMatViewStmt,
    ast.LockStmt,
    ast.CheckPointStmt,
    ast.CallStmt,
    ast.DoStmt,
    ast.CopyStmt,
)


@dataclass(frozen=True)
class Catalog:
    """What the guard needs to know about a server's functions, operators, relations and types.

    Names are spelled as the server's catalog spells them (an unquoted identifier is lower
    case, a quoted one keeps its case), because that is how the parser hands them over.

    `functions` maps a name — bare (`count`) and schema-qualified (`pg_catalog.count`) — to
    the most volatile class among its overloads: `i`, `s` or `v`; an aggregate counts as
    volatile when one of its support functions is. `operators` does the same for operator
    symbols via the function behind them. `user_volatile` holds the names of volatile
    functions outside `pg_catalog`: such a function shadows a built-in of the allow-list when
    the search path puts its schema first. `relations` maps a relation whose read runs a
    volatile function (the query of a view, a row security policy; through other views too)
    to those functions (or to `FOR UPDATE/SHARE` for a view that locks rows); `types` does
    the same for a type whose coercion runs one (a domain CHECK, a cast function).
    """

    functions: Mapping[str, str] = field(default_factory=dict)
    operators: Mapping[str, str] = field(default_factory=dict)
    allowed_functions: frozenset[str] = frozenset()
    user_volatile: frozenset[str] = frozenset()
    relations: Mapping[str, frozenset[str]] = field(default_factory=dict)
    types: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_rows(
        cls,
        function_rows: list[tuple[str, str, str]],
        operator_rows: list[tuple[str, str, str]],
        allowed_functions: frozenset[str] = frozenset(),
    ) -> Catalog:
        """Build from rows of (schema, name, class) as `CATALOG_QUERY_*` return them.

        The class is a volatility (`i`, `s`, `v`) for a function or an operator;
        `reads:<function>` for a relation and `coerces:<function>` for a type name the
        volatile function that reading or coercing runs. Anything else counts as volatile.
        """
        rank = {"i": 0, "s": 1, "v": 2}
        functions: dict[str, str] = {}
        operators: dict[str, str] = {}
        user_volatile: set[str] = set()
        relations: dict[str, set[str]] = {}
        types: dict[str, set[str]] = {}

        def fold(target: dict[str, str], schema: str, name: str, volatility: str) -> None:
            volatility = volatility if volatility in rank else "v"
            for key in (name, f"{schema}.{name}"):
                old = target.get(key)
                if old is None or rank[volatility] > rank[old]:
                    target[key] = volatility

        for schema, name, kind in function_rows:
            for prefix, target in (("reads:", relations), ("coerces:", types)):
                if kind.startswith(prefix):
                    for key in (name, f"{schema}.{name}"):
                        target.setdefault(key, set()).add(kind[len(prefix) :])
                    break
            else:
                fold(functions, schema, name, kind)
                if functions[f"{schema}.{name}"] == "v" and schema != "pg_catalog":
                    user_volatile.add(name)
        for schema, name, kind in operator_rows:
            fold(operators, schema, name, kind)
        return cls(
            functions,
            operators,
            allowed_functions,
            frozenset(user_volatile),
            {key: frozenset(value) for key, value in relations.items()},
            {key: frozenset(value) for key, value in types.items()},
        )


# The exact queries that read a Catalog; they are internal shapes of the connect module.
CATALOG_QUERY_FUNCTIONS = """with recursive
fn as (
    select p.oid, n.nspname::text as nsp, p.proname::text as name,
        case when p.provolatile = 'v' or exists (
            select from pg_catalog.pg_aggregate a
            join pg_catalog.pg_proc s on s.oid in (a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
                a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn)
            where a.aggfnoid = p.oid and s.provolatile = 'v')
        then 'v' else p.provolatile::text end as volatility
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
),
vol as (
    select oid, nsp || '.' || name as name from fn where volatility = 'v'
),
expr as (
    select w.ev_class as rel, d.refclassid, d.refobjid
    from pg_catalog.pg_rewrite w
    join pg_catalog.pg_class v on v.oid = w.ev_class and v.relkind = 'v'
    join pg_catalog.pg_depend d
        on d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass and d.objid = w.oid
    where w.ev_type = '1'
        and v.relnamespace not in ('pg_catalog'::pg_catalog.regnamespace,
            'information_schema'::pg_catalog.regnamespace)
    union all
    select p.polrelid, d.refclassid, d.refobjid
    from pg_catalog.pg_policy p join pg_catalog.pg_depend d
        on d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass and d.objid = p.oid
),
direct as (
    select e.rel, v.name from expr e join vol v
        on e.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass and v.oid = e.refobjid
    union
    select e.rel, v.name from expr e join pg_catalog.pg_operator o
        on e.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass and o.oid = e.refobjid
        join vol v on v.oid = o.oprcode
    union
    select w.ev_class, 'FOR UPDATE/SHARE' from pg_catalog.pg_rewrite w
    join pg_catalog.pg_class v on v.oid = w.ev_class and v.relkind = 'v'
    where w.ev_type = '1' and w.ev_action::text like '%:rowMarks ({%'
),
reach (rel, used) as (
    select e.rel, e.refobjid from expr e
    where e.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and e.refobjid <> e.rel
    union
    select r.rel, e.refobjid from reach r join expr e on e.rel = r.used
    where e.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
),
flagged as (
    select rel, name from direct
    union
    select r.rel, d.name from reach r join direct d on d.rel = r.used
),
dom (typ, name) as (
    select c.contypid, v.name from pg_catalog.pg_constraint c
    join pg_catalog.pg_depend d
        on d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass and d.objid = c.oid
    join vol v on d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass and v.oid = d.refobjid
    where c.contypid <> 0
    union
    select c.castsource, v.name from pg_catalog.pg_cast c join vol v on v.oid = c.castfunc
    union
    select c.casttarget, v.name from pg_catalog.pg_cast c join vol v on v.oid = c.castfunc
    union
    select t.oid, dom.name from dom join pg_catalog.pg_type t on t.typbasetype = dom.typ
)
select nsp, name, volatility from fn
union all
select n.nspname::text, c.relname::text, 'reads:' || f.name
from flagged f join pg_catalog.pg_class c on c.oid = f.rel
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
union all
select n.nspname::text, t.typname::text, 'coerces:' || dom.name
from dom join pg_catalog.pg_type t on t.oid = dom.typ
join pg_catalog.pg_namespace n on n.oid = t.typnamespace"""
CATALOG_QUERY_OPERATORS = (
    "select n.nspname::text, o.oprname::text, p.provolatile::text"
    " from pg_catalog.pg_operator o"
    " join pg_catalog.pg_namespace n on n.oid = o.oprnamespace"
    " join pg_catalog.pg_proc p on p.oid = o.oprcode"
)


def _walk(node: Any) -> Iterator[ast.Node]:
    """Every AST node below `node`, depth first, including `node` itself."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Node):
            yield current
            for name in getattr(type(current), "__slots__", ()):
                value = getattr(current, name, None)
                if isinstance(value, ast.Node | tuple | list):
                    stack.append(value)
        elif isinstance(current, tuple | list):
            stack.extend(current)


def _names(parts: Any) -> list[str]:
    """The name parts as the parser folded them: exactly how the catalog spells them."""
    return [p.sval or "" for p in parts or () if isinstance(p, ast.String)]


def _ambiguous_literal(sql: str) -> bool:
    """True when a string literal ends elsewhere if `standard_conforming_strings` is off.

    The parser reads `'…'` with standard conforming strings; a server (or database, or role)
    configured with them off reads a backslash as an escape. Where an odd run of backslashes
    stands before a quote, the literal ends at another place there, and text the guard took
    for the inside of a string would run as SQL (or the reverse). Such SQL is refused.
    """
    if "\\" not in sql:
        return False
    try:
        tokens = pglast.parser.scan(sql)
    except Exception:  # the parser accepted it; a scanner failure is no reason to guess
        return True
    for token in tokens:
        if token.name not in ("SCONST", "USCONST"):
            continue
        text = sql[token.start : token.end + 1]
        if not text.startswith(("'", "U&", "u&")):
            continue  # E'…' and $$…$$ read the same either way
        for run in re.finditer(r"\\+(?=')", text):
            if len(run.group()) % 2 == 1:
                return True
    return False


def classify(sql: str, catalog: Catalog | None = None) -> Verdict:
    """Classify one SQL string for the production role: `allowed` only for a plain read.

    Without a catalog every function call is refused except those known immutable to the
    guard itself; production sessions always pass the catalog of their server.
    """
    if "\x00" in sql:
        return Verdict(False, Kind.UNPARSEABLE, "the SQL contains a NUL byte")
    try:
        statements = pglast.parse_sql(sql)
    except Exception as exc:  # pglast raises ParseError and a few others on bad input
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Verdict(False, Kind.UNPARSEABLE, f"the PostgreSQL parser cannot read it: {message}")
    if len(statements) == 0:
        return Verdict(False, Kind.UNPARSEABLE, "no statement")
    if len(statements) > 1:
        return Verdict(False, Kind.MULTI, f"{len(statements)} statements in one string")
    statement = statements[0].stmt
    if statement is None:
        return Verdict(False, Kind.UNPARSEABLE, "no statement")
    if _ambiguous_literal(sql):
        return Verdict(
            False,
            Kind.UNPARSEABLE,
            "a backslash before a quote in a string literal: the server reads it differently "
            "when standard_conforming_strings is off (use E'…' or $$…$$)",
        )
    return _classify_statement(statement, catalog)


def _refused(kind: Kind, reason: str) -> Verdict:
    return Verdict(False, kind, reason)


_STATEMENT_NAMES = {
    "VacuumStmt": "VACUUM/ANALYZE",
    "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW",
    "ClosePortalStmt": "CLOSE",
    "DeclareCursorStmt": "DECLARE CURSOR",
    "CheckPointStmt": "CHECKPOINT",
}


def _statement_name(node: ast.Node) -> str:
    name = type(node).__name__
    if name in _STATEMENT_NAMES:
        return _STATEMENT_NAMES[name]
    return re.sub(r"Stmt$", "", name).upper()


def _classify_statement(node: ast.Node, catalog: Catalog | None) -> Verdict:
    if isinstance(node, ast.VariableShowStmt):
        return Verdict(True, Kind.READ, "SHOW")
    if isinstance(node, ast.ExplainStmt):
        query = node.query
        if query is None:
            return _refused(Kind.UNPARSEABLE, "EXPLAIN of nothing")
        for option in node.options or ():
            analyze = (
                isinstance(option, ast.DefElem) and (option.defname or "").lower() == "analyze"
            )
            if analyze and _option_true(option):
                inner = _classify_statement(query, catalog)
                if not inner.allowed:
                    return _refused(inner.kind, f"EXPLAIN ANALYZE executes it: {inner.reason}")
        if not isinstance(query, ast.SelectStmt):
            inner = _classify_statement(query, catalog)
            if not inner.allowed:
                return inner
        return _check_read(query, catalog, "EXPLAIN")
    if isinstance(node, ast.CopyStmt):
        if node.is_from:
            return _refused(Kind.WRITE, "COPY … FROM writes rows")
        if node.filename is not None or node.is_program:
            return _refused(Kind.SIDE_EFFECT, "COPY … TO a file or program writes on the server")
        if node.query is not None:
            return _check_read(node.query, catalog, "COPY TO STDOUT")
        if node.relation is not None:
            refusal = _check_relation(node.relation, catalog)
            if refusal is not None:
                return refusal
        return Verdict(True, Kind.READ, "COPY TO STDOUT")
    if isinstance(node, ast.SelectStmt):
        return _check_read(node, catalog, "SELECT")
    if isinstance(node, _WRITE_NODES):
        return _refused(Kind.WRITE, f"{_statement_name(node)} writes rows")
    if isinstance(node, _TRANSACTION_NODES):
        return _refused(Kind.TRANSACTION, "transaction control belongs to oneroof, not to the SQL")
    if isinstance(node, ast.VariableSetStmt):
        name = (node.name or "").lower()
        if name.startswith("transaction") or name == "session_characteristics":
            return _refused(Kind.TRANSACTION, "SET TRANSACTION is transaction control")
        verb = "RESET" if "RESET" in str(node.kind) else "SET"
        return _refused(Kind.SESSION, f"{verb} {name or 'ALL'} changes session state")
    if isinstance(node, _SESSION_NODES):
        return _refused(Kind.SESSION, f"{_statement_name(node)} changes session state")
    if isinstance(node, _UTILITY_NODES):
        return _refused(Kind.UTILITY, f"{_statement_name(node)} is not a read")
    return _refused(Kind.DDL, f"{_statement_name(node)} is not a read")


def _option_true(option: ast.DefElem) -> bool:
    arg = option.arg
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.String):
        return (arg.sval or "").lower() not in ("false", "off", "0", "no")
    if isinstance(arg, ast.Integer):
        return bool(arg.ival)
    return True


_BETWEEN_KINDS = {
    "AEXPR_BETWEEN",
    "AEXPR_NOT_BETWEEN",
    "AEXPR_BETWEEN_SYM",
    "AEXPR_NOT_BETWEEN_SYM",
}


def _check_read(node: ast.Node, catalog: Catalog | None, label: str) -> Verdict:
    for inner in _walk(node):
        refusal: Verdict | None = None
        if isinstance(inner, _WRITE_NODES):
            return _refused(Kind.WRITE, f"data-modifying {_statement_name(inner)} inside a read")
        if isinstance(inner, ast.SelectStmt):
            if inner.intoClause is not None:
                return _refused(Kind.DDL, "SELECT … INTO creates a table")
            if inner.lockingClause:
                return _refused(Kind.WRITE, "SELECT … FOR UPDATE/SHARE takes row locks")
        elif isinstance(inner, ast.FuncCall):
            refusal = _check_function(_names(inner.funcname), catalog)
        elif isinstance(inner, ast.A_Expr):
            if getattr(inner.kind, "name", "") in _BETWEEN_KINDS:
                # BETWEEN runs the comparison operators of its operand types
                refusal = _check_operators([["<"], ["<="], [">"], [">="]], catalog)
            else:
                refusal = _check_operator(_names(inner.name), catalog)
        elif isinstance(inner, ast.SubLink):
            # `x op ANY (select …)`, `x IN (select …)`, `(a, b) op (select …)`
            refusal = _check_operator(_names(inner.operName) or ["="], catalog)
        elif isinstance(inner, ast.SortBy):
            if inner.useOp:
                refusal = _check_operator(_names(inner.useOp), catalog)
        elif isinstance(inner, ast.CaseExpr):
            if inner.arg is not None:  # CASE x WHEN y compares with =
                refusal = _check_operator(["="], catalog)
        elif isinstance(inner, ast.JoinExpr):
            if inner.usingClause or inner.isNatural:  # USING and NATURAL compare with =
                refusal = _check_operator(["="], catalog)
        elif isinstance(inner, ast.ColumnRef):
            fields = inner.fields or ()
            if len(fields) > 1 and isinstance(fields[-1], ast.String):
                refusal = _check_field(fields[-1].sval or "", catalog)
        elif isinstance(inner, ast.A_Indirection):
            for part in inner.indirection or ():
                if isinstance(part, ast.String):
                    refusal = refusal or _check_field(part.sval or "", catalog)
        elif isinstance(inner, ast.RangeVar):
            refusal = _check_relation(inner, catalog)
        elif isinstance(inner, ast.TypeName):
            refusal = _check_type(_names(inner.names), catalog)
        elif not isinstance(inner, _ALLOWED_INNER):
            return _refused(Kind.UTILITY, f"{type(inner).__name__} inside a read")
        if refusal is not None:
            return refusal
    return Verdict(True, Kind.READ, label)


def _volatile_allowed(name: str, schema: str | None, catalog: Catalog) -> bool:
    """A volatile function the allow-lists vouch for.

    The built-in list holds `pg_catalog` functions only: an unqualified call is allowed
    only when no volatile function of that name outside `pg_catalog` could be meant.
    """
    allowed = catalog.allowed_functions
    if name.lower() in allowed or (schema and f"{schema}.{name}".lower() in allowed):
        return True
    if name not in VOLATILE_ALLOWED:
        return False
    return schema == "pg_catalog" or (schema is None and name not in catalog.user_volatile)


def _check_function(parts: list[str], catalog: Catalog | None) -> Verdict | None:
    if not parts:
        return _refused(Kind.SIDE_EFFECT, "a function call the guard cannot name")
    name = parts[-1]
    schema = parts[-2] if len(parts) > 1 else None
    qualified = ".".join(parts[-2:])
    if _DENIED_FUNCTIONS.match(name.lower()):
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() has side effects")
    if catalog is None:
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() cannot be judged without a catalog")
    volatility = catalog.functions.get(qualified)
    if volatility is None:
        return _refused(
            Kind.SIDE_EFFECT, f"{qualified}() is unknown to the server's catalog: cannot judge it"
        )
    if volatility == "v" and not _volatile_allowed(name, schema, catalog):
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() is volatile and not on the allow-list")
    return None


def _check_field(name: str, catalog: Catalog | None) -> Verdict | None:
    """`t.f` and `(t).f` call a function `f(t)` when `t` has no column `f`."""
    if catalog is None or name not in catalog.functions:
        return None
    denied = _DENIED_FUNCTIONS.match(name.lower()) is not None
    if denied or (name in catalog.user_volatile and not _volatile_allowed(name, None, catalog)):
        return _refused(
            Kind.SIDE_EFFECT, f".{name} may call the volatile function {name}() (field notation)"
        )
    return None


def _check_relation(node: ast.RangeVar, catalog: Catalog | None) -> Verdict | None:
    if catalog is None or not catalog.relations:
        return None
    name = node.relname or ""
    key = f"{node.schemaname}.{name}" if node.schemaname else name
    return _check_runs(f"reading {key}", catalog.relations.get(key), catalog)


def _check_type(parts: list[str], catalog: Catalog | None) -> Verdict | None:
    if catalog is None or not catalog.types or not parts:
        return None
    key = ".".join(parts[-2:])
    return _check_runs(f"a coercion to or from {key}", catalog.types.get(key), catalog)


def _check_runs(what: str, functions: frozenset[str] | None, catalog: Catalog) -> Verdict | None:
    for function in sorted(functions or ()):
        schema, _, name = function.rpartition(".")
        if not schema:
            return _refused(Kind.WRITE, f"{what} takes row locks ({function} in a view)")
        if _DENIED_FUNCTIONS.match(name.lower()) or not _volatile_allowed(name, schema, catalog):
            return _refused(Kind.SIDE_EFFECT, f"{what} runs the volatile function {function}()")
    return None


def _check_operators(symbols: list[list[str]], catalog: Catalog | None) -> Verdict | None:
    for parts in symbols:
        refusal = _check_operator(parts, catalog)
        if refusal is not None:
            return refusal
    return None


def _check_operator(parts: list[str], catalog: Catalog | None) -> Verdict | None:
    if not parts or catalog is None:
        return None
    symbol = ".".join(parts[-2:])
    volatility = catalog.operators.get(symbol)
    if volatility is None and len(parts) > 1:
        return _refused(Kind.SIDE_EFFECT, f"operator {symbol} is unknown to the server's catalog")
    if volatility == "v":
        return _refused(Kind.SIDE_EFFECT, f"operator {symbol} calls a volatile function")
    return None


# Nodes that may appear inside a read. Anything else (a nested utility statement, say)
# is refused rather than guessed about.
_ALLOWED_INNER: tuple[type, ...] = tuple(
    getattr(ast, name)
    for name in [
        "A_ArrayExpr",
        "A_Const",
        "A_Expr",
        "A_Indices",
        "A_Indirection",
        "A_Star",
        "Alias",
        "BitString",
        "Boolean",
        "BoolExpr",
        "BooleanTest",
        "CaseExpr",
        "CaseWhen",
        "CoalesceExpr",
        "CollateClause",
        "ColumnDef",
        "ColumnRef",
        "CommonTableExpr",
        "CTECycleClause",
        "CTESearchClause",
        "CurrentOfExpr",
        "DefElem",
        "Float",
        "FuncCall",
        "GroupingFunc",
        "GroupingSet",
        "Integer",
        "IntoClause",
        "JoinExpr",
        "JsonAggConstructor",
        "JsonArrayAgg",
        "JsonArrayConstructor",
        "JsonArrayQueryConstructor",
        "JsonFormat",
        "JsonFuncExpr",
        "JsonIsPredicate",
        "JsonKeyValue",
        "JsonObjectAgg",
        "JsonObjectConstructor",
        "JsonOutput",
        "JsonParseExpr",
        "JsonReturning",
        "JsonScalarExpr",
        "JsonSerializeExpr",
        "JsonTable",
        "JsonTableColumn",
        "JsonTablePathSpec",
        "JsonValueExpr",
        "JsonArgument",
        "JsonBehavior",
        "LockingClause",
        "MinMaxExpr",
        "MultiAssignRef",
        "NamedArgExpr",
        "NullTest",
        "ParamRef",
        "RangeFunction",
        "RangeSubselect",
        "RangeTableFunc",
        "RangeTableFuncCol",
        "RangeTableSample",
        "RangeVar",
        "ResTarget",
        "RowExpr",
        "SelectStmt",
        "SetToDefault",
        "SortBy",
        "SQLValueFunction",
        "String",
        "SubLink",
        "TypeCast",
        "TypeName",
        "WindowDef",
        "WithClause",
        "XmlExpr",
        "XmlSerialize",
        "RawStmt",
        "ExplainStmt",
        "VariableShowStmt",
        "CopyStmt",
        "MergeSupportFunc",
    ]
    if hasattr(ast, name)
)


def require_read(sql: str, catalog: Catalog | None, role: str = "production") -> Verdict:
    """Classify `sql` and raise `ForbiddenAction` unless it is a plain read."""
    verdict = classify(sql, catalog)
    verdict.raise_if_refused(sql, role)
    return verdict
