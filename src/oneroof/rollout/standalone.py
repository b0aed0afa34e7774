"""Artifacts that run in no transaction (`-- transaction: none`): their post-check and apply.

`CREATE INDEX CONCURRENTLY`, `REINDEX … CONCURRENTLY`, `VACUUM` and the like cannot run
inside a transaction block, so the rehearsal's one rolled-back transaction cannot hold them
and a crash cannot roll them back. Here they are applied one statement at a time under the
plan's advisory lock (held by the session, so a dead client frees it), and the ledger row is
written, in its own transaction, only after every statement succeeded. Each index a
statement builds, rebuilds or drops is checked by name before and after it, which is what
makes a rerun after a crash safe: an invalid index a killed attempt left is dropped and
rebuilt, one a previous attempt finished is kept, one already dropped is not dropped again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pglast
import psycopg
from pglast.stream import RawStream
from psycopg import sql as pgsql

from oneroof import gates
from oneroof.config import Config
from oneroof.connect import Session
from oneroof.evidence import Evidence
from oneroof.rollout import forecast
from oneroof.rollout.artifact import Artifact, Plan
from oneroof.rollout.deltas import ArtifactRun, _Halt, _keep_rows, _psycopg_reason, settled
from oneroof.rollout.ledger import (
    LOCK_NOT_AVAILABLE,
    _hold_lock,
    _lock_key,
    _release_lock,
    _take_lock,
    lock_retry,
    recheck,
)
from oneroof.sqltext import Statement

WriteLedger = Callable[[Session, ArtifactRun, dict[str, Any]], None]
Say = Callable[[str], None]


@dataclass(frozen=True)
class IndexTarget:
    """The index a statement builds, rebuilds or drops, as the statement names it."""

    action: str  # create | reindex | drop
    index: str  # unqualified
    schema: str | None  # as written, else found from the table or the search path
    table: str | None  # CREATE INDEX: the table as written

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.index}" if self.schema else self.index


def index_target(statement: str) -> IndexTarget | None:
    """The index of a CREATE INDEX, REINDEX INDEX or DROP INDEX of one index, else None."""
    try:
        node = pglast.parse_sql(statement)[0].stmt
    except pglast.parser.ParseError:
        return None
    if isinstance(node, pglast.ast.IndexStmt) and node.idxname and node.relation is not None:
        relation = node.relation
        table = ".".join(p for p in (relation.schemaname, relation.relname) if p)
        return IndexTarget("create", str(node.idxname), relation.schemaname, table)
    if (
        isinstance(node, pglast.ast.ReindexStmt)
        and node.kind == pglast.enums.ReindexObjectType.REINDEX_OBJECT_INDEX
        and node.relation is not None
    ):
        relation = node.relation
        return IndexTarget("reindex", str(relation.relname), relation.schemaname, None)
    if (
        isinstance(node, pglast.ast.DropStmt)
        and node.removeType == pglast.enums.ObjectType.OBJECT_INDEX
        and node.objects is not None
        and len(node.objects) == 1
    ):
        parts = [str(getattr(p, "sval", "")) for p in node.objects[0]]
        return IndexTarget("drop", parts[-1], parts[-2] if len(parts) > 1 else None, None)
    return None


def index_shape(statement: str) -> str | None:
    """A CREATE INDEX's definition with what does not change the index left out.

    CONCURRENTLY, IF NOT EXISTS, the table's schema (the state query resolves it) and the
    default sort order and nulls placement are dropped, so an artifact's statement and
    `pg_get_indexdef()` of the index it built give the same text.
    """
    try:
        node = pglast.parse_sql(statement)[0].stmt
    except pglast.parser.ParseError:
        return None
    if not isinstance(node, pglast.ast.IndexStmt) or node.relation is None:
        return None
    enums = pglast.enums
    node.concurrent = False
    node.if_not_exists = False
    node.relation.schemaname = None
    for param in node.indexParams or ():
        if param.ordering == enums.SortByDir.SORTBY_ASC:
            param.ordering = enums.SortByDir.SORTBY_DEFAULT
        descending = param.ordering == enums.SortByDir.SORTBY_DESC
        default_nulls = (
            enums.SortByNulls.SORTBY_NULLS_FIRST
            if descending
            else enums.SortByNulls.SORTBY_NULLS_LAST
        )
        if param.nulls_ordering == default_nulls:
            param.nulls_ordering = enums.SortByNulls.SORTBY_NULLS_DEFAULT
    return str(RawStream()(node))


def index_definitions(session: Session, target: IndexTarget) -> dict[str, str]:
    """`schema.index` → `pg_get_indexdef()`, for the target's index."""
    statement = pgsql.SQL(
        "select n.nspname::text, c.relname::text, pg_catalog.pg_get_indexdef(c.oid)"
        " from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('i', 'I') and c.relname = {} and n.nspname = {}"
    ).format(_literal(target.index), _schema_of(target))
    return {
        f"{schema}.{index}": str(d)
        for schema, index, d in session.execute(statement.as_string(None))
    }


def _literal(value: Any) -> pgsql.Composable:
    return pgsql.Literal(value)


def _schema_of(target: IndexTarget) -> pgsql.Composable:
    """SQL for the index's schema: as written, else its table's, else the search path's."""
    if target.schema:
        return _literal(target.schema)
    named = target.table if target.action == "create" else target.index
    return pgsql.SQL(
        "coalesce((select n2.nspname from pg_catalog.pg_class c2 join pg_catalog.pg_namespace n2"
        " on n2.oid = c2.relnamespace where c2.oid = pg_catalog.to_regclass({})),"
        " pg_catalog.current_schema())"
    ).format(_literal(named))


def index_state(session: Session, target: IndexTarget, *, like: bool = False) -> dict[str, bool]:
    """`schema.index` → valid, for the target's index (or, `like`, its `_ccnew` leftovers)."""
    name = (
        pgsql.SQL("pg_catalog.starts_with(c.relname, {})").format(_literal(target.index + "_ccnew"))
        if like
        else pgsql.SQL("c.relname = {}").format(_literal(target.index))
    )
    statement = pgsql.SQL(
        "select n.nspname::text, c.relname::text, i.indisvalid"
        " from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where {} and n.nspname = {}"
    ).format(name, _schema_of(target))
    return {
        f"{schema}.{index}": bool(valid)
        for schema, index, valid in session.execute(statement.as_string(None))
    }


def post_check(session: Session, target: IndexTarget) -> str | None:
    """What is wrong after the statement ran: an index left invalid, or not gone."""
    found = index_state(session, target)
    if target.action == "drop":
        return f"index {target.label} still exists after DROP INDEX" if found else None
    if not found:
        return f"index {target.label} does not exist after the statement"
    invalid = [name for name, valid in found.items() if not valid]
    if invalid:
        return f"index {', '.join(invalid)} is INVALID after the statement"
    leftovers = index_state(session, target, like=True) if target.action == "reindex" else {}
    if leftovers:
        return f"REINDEX left {', '.join(sorted(leftovers))} behind"
    return None


def _drop(writer: Session, qualified: str, **tag: Any) -> None:
    schema, _, index = qualified.partition(".")
    writer.apply(
        pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}")
        .format(pgsql.Identifier(schema, index))
        .as_string(None),
        step="post-check",
        **tag,
    )


def _prepare(
    writer: Session, target: IndexTarget, statement: str, notes: list[str], **tag: Any
) -> bool:
    """Before a statement: clear what a killed attempt left; False when it is already done."""
    found = index_state(writer, target)
    if target.action == "create":
        for qualified, valid in found.items():
            if valid:
                existing = index_definitions(writer, target).get(qualified, "")
                if index_shape(existing) != index_shape(statement):
                    # a same-named index that is not this artifact's: neither kept nor dropped
                    raise _Halt(
                        f"{qualified} exists with another definition ({existing}); the "
                        "artifact builds a different one: drop or rename one of them"
                    )
                notes.append(f"{qualified} is valid already (an earlier attempt built it)")
                return False
            _drop(writer, qualified, **tag)
            notes.append(f"dropped {qualified}, left INVALID by an earlier attempt, and rebuilt it")
    elif target.action == "reindex":
        for qualified in sorted(index_state(writer, target, like=True)):
            _drop(writer, qualified, **tag)
            notes.append(f"dropped {qualified}, left by an earlier REINDEX CONCURRENTLY")
    elif target.action == "drop" and not found:
        notes.append(f"{target.label} is gone already")
        return False
    return True


def _clean_after_failure(writer: Session, target: IndexTarget | None, **tag: Any) -> None:
    """A failed CREATE INDEX CONCURRENTLY leaves its index INVALID: drop it at once."""
    if target is None or target.action not in ("create", "reindex") or writer.closed:
        return
    try:
        left = index_state(writer, target, like=target.action == "reindex")
        for qualified, valid in left.items():
            if not valid:
                _drop(writer, qualified, **tag)
    except psycopg.Error:
        return  # the rerun's `_prepare` finds it


def _run_statement(
    writer: Session,
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    artifact: Artifact,
    statement: Statement,
    run: ArtifactRun,
    notes: list[str],
    say: Say,
) -> None:
    tag = {"plan": plan.name, "artifact": artifact.id}
    target = index_target(statement.sql)
    if target is not None and not _prepare(writer, target, statement.sql, notes, **tag):
        return
    attempt = 1
    while True:
        try:
            columns, rows = writer.apply(statement.sql, line=statement.line, **tag)
            _keep_rows(run, columns, rows)
            break
        except psycopg.Error as exc:
            _clean_after_failure(writer, target, **tag)
            if exc.sqlstate != LOCK_NOT_AVAILABLE or not lock_retry(
                evidence, cfg, plan.name, artifact.id, attempt, _psycopg_reason(exc), say
            ):
                raise
            attempt += 1
    if target is not None:
        problem = post_check(writer, target)
        if problem:
            _clean_after_failure(writer, target, **tag)
            raise _Halt(f"post-check: {problem}; the rerun rebuilds it")


def apply_standalone(
    writer: Session,
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    artifact: Artifact,
    write_ledger: WriteLedger,
    say: Say,
) -> tuple[ArtifactRun, dict[str, Any] | None]:
    """Apply a `transaction: none` artifact: each statement on its own, then its ledger row;
    the observed duration and WAL are returned for the ledger and the result."""
    run = ArtifactRun.of(artifact, "running")
    tag = {"plan": plan.name, "artifact": artifact.id}
    key = _lock_key(plan.name)
    observed: dict[str, Any] | None = None
    with settled(run, "halted"), writer.outside_transaction():
        _hold_lock(writer, cfg, key, **tag)
        try:
            if recheck(writer, cfg, plan.name, artifact, run):
                return run, None
            with writer.transaction():
                values = gates.read_values(writer, cfg, artifact.gate_names)
            run.gates = gates.evaluate_all(artifact.gates, values)
            if not run.gates_hold:
                closed = "; ".join(g.describe() for g in run.gates if not g.holds)
                raise _Halt(f"gate closed: {closed}")
            start = forecast.observe_start(writer)
            notes: list[str] = []
            for statement in artifact.statements:
                _run_statement(writer, cfg, evidence, plan, artifact, statement, run, notes, say)
            observed = forecast.observe_end(writer, start)
            with writer.write_transaction():
                _take_lock(writer, cfg, key, **tag)
                write_ledger(writer, run, observed)
            run.status = "applied"
            run.reason = "; ".join(notes) or None
        finally:
            if not writer.closed:
                _release_lock(writer, key, **tag)
    return run, observed
