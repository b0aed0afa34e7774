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
    """Volatility of the functions and operators a server knows, by name.

    `functions` maps a lower-cased name — bare (`count`) and schema-qualified
    (`pg_catalog.count`) — to the most volatile class among its overloads: `i`, `s` or `v`.
    `operators` does the same for operator symbols via the function behind them.
    """

    functions: Mapping[str, str] = field(default_factory=dict)
    operators: Mapping[str, str] = field(default_factory=dict)
    allowed_functions: frozenset[str] = frozenset()

    @classmethod
    def from_rows(
        cls,
        function_rows: list[tuple[str, str, str]],
        operator_rows: list[tuple[str, str, str]],
        allowed_functions: frozenset[str] = frozenset(),
    ) -> Catalog:
        """Build from rows of (schema, name, volatility) as `CATALOG_QUERY_*` return them."""
        rank = {"i": 0, "s": 1, "v": 2}

        def fold(rows: list[tuple[str, str, str]]) -> dict[str, str]:
            folded: dict[str, str] = {}
            for schema, name, volatility in rows:
                for key in (name, f"{schema}.{name}"):
                    old = folded.get(key)
                    if old is None or rank[volatility] > rank[old]:
                        folded[key] = volatility
            return folded

        return cls(fold(function_rows), fold(operator_rows), allowed_functions)


# The exact queries that read a Catalog; they are internal shapes of the connect module.
CATALOG_QUERY_FUNCTIONS = (
    "select n.nspname::text, p.proname::text, p.provolatile::text"
    " from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace"
)
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
    return [(p.sval or "").lower() for p in parts or () if isinstance(p, ast.String)]


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


def _check_read(node: ast.Node, catalog: Catalog | None, label: str) -> Verdict:
    for inner in _walk(node):
        if isinstance(inner, _WRITE_NODES):
            return _refused(Kind.WRITE, f"data-modifying {_statement_name(inner)} inside a read")
        if isinstance(inner, ast.SelectStmt):
            if inner.intoClause is not None:
                return _refused(Kind.DDL, "SELECT … INTO creates a table")
            if inner.lockingClause:
                return _refused(Kind.WRITE, "SELECT … FOR UPDATE/SHARE takes row locks")
        elif isinstance(inner, ast.FuncCall):
            refusal = _check_function(_names(inner.funcname), catalog)
            if refusal:
                return refusal
        elif isinstance(inner, ast.A_Expr):
            refusal = _check_operator(_names(inner.name), catalog)
            if refusal:
                return refusal
        elif not isinstance(inner, _ALLOWED_INNER):
            return _refused(Kind.UTILITY, f"{type(inner).__name__} inside a read")
    return Verdict(True, Kind.READ, label)


def _check_function(parts: list[str], catalog: Catalog | None) -> Verdict | None:
    if not parts:
        return _refused(Kind.SIDE_EFFECT, "a function call the guard cannot name")
    name = parts[-1]
    qualified = ".".join(parts[-2:])
    if _DENIED_FUNCTIONS.match(name):
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() has side effects")
    if catalog is None:
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() cannot be judged without a catalog")
    volatility = catalog.functions.get(qualified)
    if volatility is None:
        return _refused(
            Kind.SIDE_EFFECT, f"{qualified}() is unknown to the server's catalog: cannot judge it"
        )
    allowed = name in VOLATILE_ALLOWED or qualified in catalog.allowed_functions
    allowed = allowed or name in catalog.allowed_functions
    if volatility == "v" and not allowed:
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() is volatile and not on the allow-list")
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
