"""What the applier role must be allowed to do: the privileges the plans and the ledger need.

`needs` reads each artifact's statements with the PostgreSQL parser and names, per table,
the privilege its statement needs (INSERT, UPDATE, DELETE, TRUNCATE, SELECT of what it
reads, ownership for DDL, CREATE on the schema of what it creates); `ledger_needs` adds the
ledger's. `check` asks production, in one read-only transaction of the applier's session,
which of them the applier lacks. Statements it cannot read (DO blocks, procedure calls) are
named as not checked rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast, enums

from oneroof.connect import Session
from oneroof.roles import APPLIER_PRIVILEGES_QUERY, quote_ident
from oneroof.rollout.artifact import Artifact, Plan
from oneroof.rollout.ledger import LEDGER_TABLE

OWNER = "OWNER"  # DDL on an existing relation needs its ownership (or membership of its owner)
DEFAULTS = "DEFAULTS"  # an INSERT draws from the sequences of the column defaults (serial)
SCHEMA_CREATE = "SCHEMA CREATE"  # CREATE INDEX puts the index in its table's schema


@dataclass(frozen=True)
class Need:
    """One privilege the applier needs, and where it is needed."""

    kind: str  # table | schema | database
    object: str  # a relation as the statement wrote it, or a schema's name ('' = current)
    privilege: str
    where: str  # file:line, or "ledger"
    schema: str = ""  # a table's schema as written ('' = found on the search path)

    def describe(self) -> str:
        if self.kind == "database":
            return f"{self.privilege} on the database ({self.where})"
        what = self.object or "the current schema"
        if self.privilege == OWNER:
            return f"ownership of {what} ({self.where})"
        if self.privilege == SCHEMA_CREATE:
            return f"CREATE on the schema of {what} ({self.where})"
        if self.privilege == DEFAULTS:
            return f"USAGE on the sequences of {what}'s column defaults ({self.where})"
        on = "schema " if self.kind == "schema" and self.object else ""
        return f"{self.privilege} on {on}{what} ({self.where})"


def _name(relation: ast.RangeVar) -> str:
    return ".".join(quote_ident(p) for p in (relation.schemaname, relation.relname) if p)


Wanted = tuple[str, str, str, str]  # kind, object, privilege, schema


def _on(relation: ast.RangeVar, *privileges: str) -> list[Wanted]:
    """Privileges on a relation, and USAGE on the schema it is named in."""
    schema = relation.schemaname or ""
    found = [("table", _name(relation), p, schema) for p in privileges]
    if schema:
        found.append(("schema", schema, "USAGE", ""))
    return found


def _reads(node: Any, skip: set[int]) -> list[ast.RangeVar]:
    """Every relation a statement reads, leaving out its targets."""
    found: list[ast.RangeVar] = []

    def visit(value: Any) -> None:
        if isinstance(value, tuple | list):
            for child in value:
                visit(child)
        elif isinstance(value, ast.RangeVar):
            if id(value) not in skip:
                found.append(value)
        elif isinstance(value, ast.Node):
            for attribute in value:
                visit(getattr(value, attribute))

    visit(node)
    return found


_DDL_ON_RELATION = (
    ast.AlterTableStmt,
    ast.CreateTrigStmt,
    ast.RuleStmt,
    ast.ClusterStmt,
    ast.RefreshMatViewStmt,
    ast.CreatePolicyStmt,
)
_MERGE_PRIVILEGE = {
    enums.CmdType.CMD_INSERT: "INSERT",
    enums.CmdType.CMD_UPDATE: "UPDATE",
    enums.CmdType.CMD_DELETE: "DELETE",
}


def _created(node: Any) -> ast.RangeVar | None:
    """The relation a CREATE statement makes."""
    if isinstance(node, ast.ViewStmt):
        return node.view
    if isinstance(node, ast.CreateSeqStmt):
        return node.sequence
    if isinstance(node, ast.CreateTableAsStmt):
        return node.into.rel if node.into is not None else None
    return getattr(node, "relation", None)


def _statement_needs(node: Any) -> tuple[list[Wanted], bool]:
    """What the statement needs, and whether it could be read at all."""
    wanted: list[Wanted] = []
    targets: set[int] = set()

    def target(relation: ast.RangeVar | None, *privileges: str) -> None:
        if relation is None:
            return
        targets.add(id(relation))
        wanted.extend(_on(relation, *privileges))

    if isinstance(node, ast.InsertStmt):
        conflict = node.onConflictClause
        updates = (
            conflict is not None and conflict.action == enums.OnConflictAction.ONCONFLICT_UPDATE
        )
        extra = ("UPDATE",) if updates else ()
        target(node.relation, "INSERT", DEFAULTS, *extra)
    elif isinstance(node, ast.UpdateStmt):
        target(node.relation, "UPDATE")
    elif isinstance(node, ast.DeleteStmt):
        target(node.relation, "DELETE")
    elif isinstance(node, ast.MergeStmt):
        privileges = {
            _MERGE_PRIVILEGE[clause.commandType]
            for clause in node.mergeWhenClauses or ()
            if clause.commandType in _MERGE_PRIVILEGE
        }
        if "INSERT" in privileges:
            privileges.add(DEFAULTS)
        target(node.relation, *sorted(privileges))
    elif isinstance(node, ast.TruncateStmt):
        for relation in node.relations or ():
            target(relation, "TRUNCATE", "SELECT")  # its delta counts the rows before it
    elif isinstance(node, ast.CopyStmt):
        target(node.relation, *(("INSERT", DEFAULTS) if node.is_from else ("SELECT",)))
    elif isinstance(node, ast.IndexStmt):
        target(node.relation, OWNER, SCHEMA_CREATE)
    elif isinstance(node, ast.VacuumStmt):  # VACUUM, ANALYZE: a `transaction: none` artifact
        for vacuumed in node.rels or ():
            target(vacuumed.relation, OWNER)
    elif isinstance(node, ast.ReindexStmt) and node.relation is not None:
        target(node.relation, OWNER)
    elif isinstance(node, _DDL_ON_RELATION):
        target(getattr(node, "relation", None), OWNER)
    elif isinstance(node, ast.RenameStmt | ast.AlterObjectSchemaStmt) and node.relation:
        target(node.relation, OWNER)
    elif isinstance(node, ast.DropStmt) and node.removeType in (
        enums.ObjectType.OBJECT_TABLE,
        enums.ObjectType.OBJECT_VIEW,
        enums.ObjectType.OBJECT_MATVIEW,
        enums.ObjectType.OBJECT_SEQUENCE,
        enums.ObjectType.OBJECT_INDEX,
    ):
        for names in node.objects or ():
            parts = [str(getattr(p, "sval", "")) for p in names]
            schema = parts[-2] if len(parts) > 1 else ""
            wanted.append(("table", ".".join(quote_ident(p) for p in parts), OWNER, schema))
            if schema:
                wanted.append(("schema", schema, "USAGE", ""))
    elif isinstance(
        node, ast.CreateStmt | ast.CreateSeqStmt | ast.ViewStmt | ast.CreateTableAsStmt
    ):
        created = _created(node)
        if created is not None:
            targets.add(id(created))
            wanted.append(("schema", created.schemaname or "", "CREATE", ""))
            if created.schemaname:
                wanted.append(("schema", created.schemaname, "USAGE", ""))
    elif isinstance(node, ast.DoStmt | ast.CallStmt):
        return [], False
    for relation in _reads(node, targets):
        wanted.extend(_on(relation, "SELECT"))
    return wanted, True


def needs(
    artifacts: Iterable[Artifact], counters: Mapping[str, str]
) -> tuple[list[Need], list[str]]:
    """The privileges the artifacts need, and the statements that could not be read."""
    found: dict[tuple[str, str, str], Need] = {}
    unread: list[str] = []
    for artifact in artifacts:
        where_file = artifact.file.name
        texts = [(s.sql, f"{where_file}:{s.line}") for s in artifact.statements]
        # gates, deltas and stops are read in the artifact's transaction, by the applier
        names = artifact.gate_names | artifact.stop_names | artifact.delta_names
        texts += [
            (counters[n], f"{where_file}: counter {n}") for n in sorted(names) if n in counters
        ]
        for text, where in texts:
            try:
                statements = pglast.parse_sql(text)
            except pglast.parser.ParseError:
                continue  # the plan's own parse reports it
            for raw in statements:
                wanted, readable = _statement_needs(raw.stmt)
                if not readable:
                    unread.append(f"{where} ({type(raw.stmt).__name__})")
                for kind, name, privilege, schema in wanted:
                    need = Need(kind, name, privilege, where, schema)
                    found.setdefault((kind, name, privilege), need)
    return list(found.values()), unread


def ledger_needs(schema: str) -> list[Need]:
    """What writing the ledger needs; which of them apply depends on what exists already."""
    ledger = f"{quote_ident(schema)}.{LEDGER_TABLE}"
    return [
        Need("table", ledger, "INSERT", "ledger", schema),
        Need("table", ledger, "SELECT", "ledger", schema),
        Need("schema", schema, "USAGE", "ledger"),
        Need("schema", schema, "CREATE", "ledger"),
        Need("database", "", "CREATE", "ledger"),
    ]


@dataclass
class ApplierCheck:
    """Which needs the applier lacks, with the ledger's need resolved to what exists."""

    user: str
    missing: list[Need]
    absent: list[Need]  # objects the plans name that do not exist on production
    unread: list[str]
    ledger: str  # exists | schema only | to be created

    @property
    def ok(self) -> bool:
        return not self.missing and not self.absent

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "ok": self.ok,
            "missing": [n.describe() for n in self.missing],
            "absent": [n.describe() for n in self.absent],
            "not_checked": self.unread,
            "ledger": self.ledger,
        }


def judge(
    user: str,
    rows: Iterable[tuple[Any, ...]],
    plan_needs: list[Need],
    schema: str,
    unread: list[str],
) -> ApplierCheck:
    """Decide from the query's rows (pure): the ledger needs only what its state requires."""
    granted = {(str(k), str(o), str(p)): g for k, o, p, g in rows}
    ledger = f"{quote_ident(schema)}.{LEDGER_TABLE}"
    table_state = granted.get(("table", ledger, "INSERT"))
    schema_state = granted.get(("schema", schema, "USAGE"))
    if table_state is not None:
        state, wanted = (
            "exists",
            [("table", ledger, "INSERT"), ("table", ledger, "SELECT"), ("schema", schema, "USAGE")],
        )
    elif schema_state is not None:
        state, wanted = "schema only", [("schema", schema, "USAGE"), ("schema", schema, "CREATE")]
    else:
        state, wanted = "to be created", [("database", "", "CREATE")]
    missing = [Need(k, o, p, "ledger") for k, o, p in wanted if granted.get((k, o, p)) is False]
    absent: list[Need] = []
    for need in plan_needs:
        value = granted.get((need.kind, need.object, need.privilege))
        if value is False:
            missing.append(need)
        elif value is None and need.privilege != "SELECT":  # a read of a CTE name is no table
            absent.append(need)
    return ApplierCheck(user, missing, absent, unread, state)


def check(
    writer: Session, plans: Iterable[Plan], counters: Mapping[str, str], schema: str
) -> ApplierCheck:
    """Ask production which privileges the applier's session lacks (one read-only transaction)."""
    plan_needs: list[Need] = []
    unread: list[str] = []
    for plan in plans:
        found, skipped = needs(plan.artifacts, counters)
        plan_needs += [n for n in found if n not in plan_needs]
        unread += skipped
    every = [*ledger_needs(schema), *plan_needs]
    params = (
        [n.kind for n in every],
        [n.object for n in every],
        [n.privilege for n in every],
        [n.schema for n in every],
    )
    with writer.transaction():
        rows = writer.internal(APPLIER_PRIVILEGES_QUERY, params)
    user = writer.privileges.user if writer.privileges else "?"
    return judge(user, rows, plan_needs, schema, unread)
