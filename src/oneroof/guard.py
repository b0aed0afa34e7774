"""The guard: classify every statement with the real PostgreSQL parser before it is sent.

On the production role only plain reads pass: one `SELECT` (or `VALUES`/`TABLE`), `SHOW`,
`EXPLAIN` of such a read, or `COPY (read) TO STDOUT`, with no row locks, no `INTO`, no
data-modifying CTE, and no name — function, operator, type, relation, sampling method —
behind which the server may run code that is not built in and not trusted (see
`oneroof.catalog`), or a built-in with side effects. Everything else — including SQL the
parser cannot read, and functions the catalog does not know — is refused.

The classification is a pure function of the SQL text and the session's `Catalog`; it
never talks to the server itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pglast
from pglast import ast

from oneroof.catalog import SIDE_EFFECT_FUNCTIONS, SQL_TEXT_FUNCTIONS, Catalog, Taint
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
    USER_CODE = "user-code"
    FOREIGN = "foreign-table"
    SECRET = "secret"
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


def walk(node: Any) -> Iterator[ast.Node]:
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
    if catalog is not None and catalog.everywhere is not None:
        return _tainted("every read", catalog.everywhere)
    for inner in walk(node):
        refusal: Verdict | None = None
        if isinstance(inner, _WRITE_NODES):
            return _refused(Kind.WRITE, f"data-modifying {_statement_name(inner)} inside a read")
        if isinstance(inner, ast.SelectStmt):
            if inner.intoClause is not None:
                return _refused(Kind.DDL, "SELECT … INTO creates a table")
            if inner.lockingClause:
                return _refused(Kind.WRITE, "SELECT … FOR UPDATE/SHARE takes row locks")
        elif isinstance(inner, ast.FuncCall):
            refusal = _check_function(_names(inner.funcname), catalog, _call_shape(inner))
        elif isinstance(inner, ast.A_Expr):
            operands = (_untyped(inner.lexpr), _untyped(inner.rexpr))
            prefix = inner.lexpr is None
            if getattr(inner.kind, "name", "") in _BETWEEN_KINDS:
                # BETWEEN runs the comparison operators of its operand types
                symbols = [["<"], ["<="], [">"], [">="]]
                refusal = _check_operators(symbols, catalog, operands)
            else:
                refusal = _check_operator(_names(inner.name), catalog, operands, prefix)
        elif isinstance(inner, ast.SubLink):
            # `x op ANY (select …)`, `x IN (select …)`, `(a, b) op (select …)`
            operands = (_untyped(inner.testexpr), False)
            refusal = _check_operator(_names(inner.operName) or ["="], catalog, operands)
        elif isinstance(inner, ast.SortBy):
            if inner.useOp:
                refusal = _check_operator(_names(inner.useOp), catalog, (False, False))
        elif isinstance(inner, ast.CaseExpr):
            if inner.arg is not None:  # CASE x WHEN y compares with =
                whens = [w.expr for w in inner.args or () if isinstance(w, ast.CaseWhen)]
                operands = (_untyped(inner.arg), _untyped(whens))
                refusal = _check_operator(["="], catalog, operands)
        elif isinstance(inner, ast.JoinExpr):
            if inner.usingClause or inner.isNatural:  # USING and NATURAL compare with =
                refusal = _check_operator(["="], catalog, (False, False))
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
        elif isinstance(inner, ast.RangeTableSample):
            # the sampling method is a handler function named like the method
            refusal = _check_function(_names(inner.method), catalog)
        elif not isinstance(inner, _ALLOWED_INNER):
            return _refused(Kind.UTILITY, f"{type(inner).__name__} inside a read")
        if refusal is not None:
            return refusal
    return Verdict(True, Kind.READ, label)


def _tainted(subject: str, taint: Taint) -> Verdict:
    kinds = {
        "side-effect": Kind.SIDE_EFFECT,
        "foreign-table": Kind.FOREIGN,
        "secret": Kind.SECRET,
        "row-lock": Kind.WRITE,
    }
    return _refused(kinds.get(taint.kind, Kind.USER_CODE), f"{subject} may run {taint.describe()}")


def _untyped(node: Any) -> bool:
    """True when `node` may be an untyped literal: the server then picks its type."""
    if isinstance(node, tuple | list):
        return any(_untyped(item) for item in node)
    if isinstance(node, ast.A_Const):
        return bool(node.isnull) or isinstance(node.val, ast.String)
    return isinstance(node, ast.ParamRef)


def _call_shape(node: ast.FuncCall) -> tuple[int | None, tuple[bool, ...]]:
    """How many arguments a call passes, and which may be untyped; None: any overload."""
    args = tuple(node.args or ())
    if node.func_variadic or any(isinstance(a, ast.NamedArgExpr) for a in args):
        return None, ()
    return len(args), tuple(_untyped(a) for a in args)


def _check_function(
    parts: list[str],
    catalog: Catalog | None,
    shape: tuple[int | None, tuple[bool, ...]] = (None, ()),
) -> Verdict | None:
    if not parts:
        return _refused(Kind.SIDE_EFFECT, "a function call the guard cannot name")
    name = parts[-1]
    qualified = ".".join(parts[-2:])
    if SIDE_EFFECT_FUNCTIONS.match(name.lower()):
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() has side effects")
    if SQL_TEXT_FUNCTIONS.match(name.lower()):
        return _refused(
            Kind.USER_CODE, f"{qualified}() runs SQL or code named by its text argument"
        )
    if catalog is None:
        return _refused(Kind.SIDE_EFFECT, f"{qualified}() cannot be judged without a catalog")
    if not catalog.knows_function(parts):
        return _refused(
            Kind.USER_CODE, f"{qualified}() is unknown to the server's catalog: cannot judge it"
        )
    taint = catalog.function(parts, *shape)
    return None if taint is None else _tainted(f"{qualified}()", taint)


def _check_field(name: str, catalog: Catalog | None) -> Verdict | None:
    """`t.f` and `(t).f` call a function `f(t)` when `t` has no column `f`."""
    if SIDE_EFFECT_FUNCTIONS.match(name.lower()):
        return _refused(Kind.SIDE_EFFECT, f".{name} may call {name}() (field notation)")
    if catalog is None:
        return None
    taint = catalog.field_function(name)
    return None if taint is None else _tainted(f".{name} (field notation of {name}())", taint)


def _check_relation(node: ast.RangeVar, catalog: Catalog | None) -> Verdict | None:
    if catalog is None:
        return None
    name = node.relname or ""
    parts = [node.schemaname, name] if node.schemaname else [name]
    taint = catalog.relation(parts)
    return None if taint is None else _tainted(f"reading {'.'.join(parts)}", taint)


def _check_type(parts: list[str], catalog: Catalog | None) -> Verdict | None:
    if catalog is None or not parts:
        return None
    taint = catalog.type(parts)
    if taint is None:
        return None
    return _tainted(f"a value of type {'.'.join(parts[-2:])}", taint)


def _check_operators(
    symbols: list[list[str]], catalog: Catalog | None, operands: tuple[bool, bool]
) -> Verdict | None:
    for parts in symbols:
        refusal = _check_operator(parts, catalog, operands)
        if refusal is not None:
            return refusal
    return None


def _check_operator(
    parts: list[str],
    catalog: Catalog | None,
    operands: tuple[bool, bool] = (True, True),
    prefix: bool = False,
) -> Verdict | None:
    if not parts or catalog is None:
        return None
    symbol = ".".join(parts[-2:])
    if not catalog.knows_operator(parts):
        if len(parts) > 1:
            return _refused(Kind.USER_CODE, f"operator {symbol} is unknown to the server's catalog")
        return None  # the server reports an unknown operator itself
    taint = catalog.operator(parts, operands, prefix)
    return None if taint is None else _tainted(f"operator {symbol}", taint)


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
