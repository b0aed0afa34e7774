"""The definition of a view in one form for every PostgreSQL major version.

`pg_get_viewdef` deparses a view from its stored query tree, and the text changes between
majors for one and the same view: up to 15 every column is qualified by its relation
(`SELECT a.id FROM t a`), from 16 on the columns of a query over a single relation are not
(`SELECT id FROM t a`) — 16 dropped the hidden OLD/NEW entries from a view's range table, so
the deparser no longer sees two relations there. The canonical form parses the text, drops
that qualification exactly where 16 and later drop it (the outermost query, when its range
table holds one entry), and prints it again in one layout.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# The node attributes of a SELECT that belong to its own level: its FROM items, CTEs and
# set-operation arms are other queries, whose columns keep their qualification.
_SAME_LEVEL = (
    "distinctClause",
    "targetList",
    "whereClause",
    "groupClause",
    "havingClause",
    "windowClause",
    "sortClause",
    "limitOffset",
    "limitCount",
)


def _only_relation(select: Any) -> str | None:
    """The name the single relation of a plain SELECT is known by, else None."""
    from pglast import ast, enums

    if select.op != enums.SetOperation.SETOP_NONE or select.valuesLists:
        return None
    items: tuple[Any, ...] = tuple(select.fromClause or ())
    if len(items) != 1:
        return None
    item = items[0]
    if isinstance(item, ast.RangeVar):
        return str(item.alias.aliasname if item.alias is not None else item.relname)
    if isinstance(item, (ast.RangeSubselect, ast.RangeFunction)) and item.alias is not None:
        return str(item.alias.aliasname)
    return None


def _unqualify(node: Any, relation: str) -> None:
    """Drop `relation.` from the column references of this query level, in place."""
    from pglast import ast

    if isinstance(node, (tuple, list)):
        for child in node:
            _unqualify(child, relation)
        return
    if not isinstance(node, ast.Node):
        return
    if isinstance(node, ast.ColumnRef):
        fields = node.fields or ()
        if (
            len(fields) == 2
            and isinstance(fields[0], ast.String)
            and isinstance(fields[1], ast.String)
            and fields[0].sval == relation
        ):
            node.fields = (fields[1],)
        return
    if isinstance(node, ast.SubLink):  # `x IN (…)`: x is of this level, the subquery is not
        _unqualify(node.testexpr, relation)
        return
    if isinstance(node, (ast.SelectStmt, ast.RangeSubselect)):
        return  # a subquery: another level, qualified on every major
    for name in node:
        _unqualify(getattr(node, name), relation)


@lru_cache(maxsize=4096)
def canonical_view(definition: str) -> str:
    """The definition as the same text whatever major version deparsed it.

    Text that does not parse is returned unchanged (then only an identical text matches).
    """
    from pglast import ast, parse_sql
    from pglast.parser import ParseError
    from pglast.stream import RawStream

    try:
        statements = parse_sql(definition)
    except ParseError:
        return definition
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        return definition
    select = statements[0].stmt
    relation = _only_relation(select)
    if relation is not None:
        for name in _SAME_LEVEL:
            _unqualify(getattr(select, name), relation)
    return str(RawStream()(select))
