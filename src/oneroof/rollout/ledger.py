"""The production ledger of applied artifacts, and the advisory locks that serialise appliers."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql as pgsql

from oneroof.config import Config
from oneroof.connect import PRODUCTION, Session, statement_timeout_ms
from oneroof.errors import DatabaseError, ForbiddenAction
from oneroof.evidence import Evidence
from oneroof.rollout.artifact import Artifact, Counts
from oneroof.rollout.deltas import ArtifactRun, _Halt
from oneroof.sqltext import setting_ms

LEDGER_SCHEMA = "oneroof"  # the default of `[rollout] ledger_schema`
LEDGER_TABLE = "rollout_ledger"
LOCK_NOT_AVAILABLE = "55P03"  # the SQLSTATE of a lock not granted within lock_timeout


def ledger_name(schema: str) -> str:
    """The ledger table of `schema`, qualified (the schema is a plain name, checked by config)."""
    return f"{schema}.{LEDGER_TABLE}"


@dataclass(frozen=True)
class LedgerRow:
    """One applied artifact, as the production ledger records it."""

    plan: str
    artifact: str
    checksum: str
    applied_at: str
    applied_by: str
    deltas: Counts
    digest: str | None = None  # the plan digest the approvals signed (oneroof.approvals)
    signers: list[dict[str, Any]] = field(default_factory=list)  # {signer, level, signed_at}
    forecast: dict[str, Any] | None = None  # the rehearsal's forecast (oneroof.rollout.forecast)
    duration_ms: float | None = None  # observed at apply: the body's wall time
    wal_bytes: int | None = None  # observed at apply: production's WAL position moved by

    def forecast_text(self) -> str:
        """Forecast against actual: `forecast 14 ms, 61 kB WAL; actual 12 ms, 70 kB WAL`."""
        from oneroof.rollout.forecast import actual_text

        return actual_text(self.forecast, self.duration_ms, self.wal_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "artifact": self.artifact,
            "checksum": self.checksum,
            "applied_at": self.applied_at,
            "applied_by": self.applied_by,
            "deltas": self.deltas,
            "digest": self.digest,
            "signers": self.signers,
            "forecast": self.forecast,
            "duration_ms": self.duration_ms,
            "wal_bytes": self.wal_bytes,
        }


def ledger_ddl(schema: str, reader: str | None = None) -> tuple[str, ...]:
    """The statements the first apply runs to make the ledger in `schema`, readable by
    `reader` (the production reader's role, on any major: 13 has no pg_read_all_data)."""
    ledger = ledger_name(schema)
    grants: tuple[str, ...] = ()
    if reader:
        role = pgsql.Identifier(reader).as_string(None)
        grants = (
            f"grant usage on schema {schema} to {role}",
            f"grant select on {ledger} to {role}",
        )
    return (
        f"create schema if not exists {schema}",
        f"""create table if not exists {ledger} (
    id bigint generated always as identity primary key,
    plan text not null,
    artifact text not null,
    checksum text not null check (checksum ~ '^[0-9a-f]{{64}}$'),
    file text not null,
    applied_at timestamptz not null default now(),
    applied_by text not null default current_user,
    application text not null default current_setting('application_name'),
    client_addr inet default inet_client_addr(),
    deltas jsonb not null,
    gates jsonb not null,
    stops jsonb not null,
    rehearsal text,
    digest text check (digest ~ '^[0-9a-f]{{64}}$'),
    signers jsonb not null default '[]',
    forecast jsonb,
    duration_ms double precision,
    wal_bytes bigint,
    unique (plan, artifact)
)""",
        f"comment on table {ledger} is 'oneroof rollout ledger: one row per artifact applied, "
        "written in the artifact''s own transaction'",
        *grants,
    )


def _literal(value: Any) -> str:
    return pgsql.Literal(value).as_string(None)


def _ledger_exists(session: Session, schema: str) -> bool:
    ledger = _literal(ledger_name(schema))
    return bool(session.scalar(f"select to_regclass({ledger}) is not null"))


def read_ledger(session: Session, plan_name: str, *, schema: str) -> dict[str, LedgerRow]:
    """The ledger rows of a plan (empty when no apply ever created the ledger)."""
    if not _ledger_exists(session, schema):
        return {}
    rows = session.execute(
        "select artifact, checksum, applied_at::text, applied_by, deltas::text,"
        # through to_jsonb: a ledger made before digest and signers existed reads as well
        " to_jsonb(l) ->> 'digest', coalesce(to_jsonb(l) -> 'signers', '[]')::text,"
        " (to_jsonb(l) -> 'forecast')::text, to_jsonb(l) ->> 'duration_ms',"
        " to_jsonb(l) ->> 'wal_bytes'"
        f" from {ledger_name(schema)} l where plan = {_literal(plan_name)} order by id"
    )
    return {
        str(artifact): LedgerRow(
            plan_name,
            str(artifact),
            str(checksum),
            str(at),
            str(by),
            json.loads(deltas),
            str(digest) if digest else None,
            json.loads(signers),
            json.loads(forecast) if forecast else None,
            float(duration) if duration is not None else None,
            int(wal) if wal is not None else None,
        )
        for artifact, checksum, at, by, deltas, digest, signers, forecast, duration, wal in rows
    }


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"oneroof.rollout:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _take_lock(writer: Session, cfg: Config, key: int, **audit: Any) -> None:
    """The plan's advisory lock, held by the transaction."""
    _lock(writer, cfg, key, False, audit)


def _hold_lock(writer: Session, cfg: Config, key: int, **audit: Any) -> None:
    """The plan's advisory lock, held by the session until `_release_lock`: for an artifact
    that runs in no transaction. A dead client frees it either way."""
    _lock(writer, cfg, key, True, audit)


def _lock(writer: Session, cfg: Config, key: int, session: bool, audit: dict[str, Any]) -> None:
    """Take the lock within the statement timeout, not the lock one; then set the lock
    timeout the artifact's statements run under.

    It is tried, not waited for: a statement that waits holds a snapshot, and another
    applier's `CREATE INDEX CONCURRENTLY`, holding this lock, waits for every older snapshot
    before it finishes — each would wait for the other (a deadlock PostgreSQL breaks by
    cancelling one of them).
    """
    scope, lock = (
        ("", "pg_try_advisory_lock") if session else ("LOCAL ", "pg_try_advisory_xact_lock")
    )
    deadline = time.monotonic() + statement_timeout_ms(cfg) / 1000
    pause = 0.05
    while True:
        _, rows = writer.apply(f"select pg_catalog.{lock}({int(key)})", step="lock", **audit)
        if rows and rows[0][0]:
            break
        if time.monotonic() >= deadline:
            raise _Halt(
                "another applier of this plan held its lock longer than [production] "
                f"statement_timeout ({cfg.production.statement_timeout}); run it again"
            )
        time.sleep(pause)
        pause = min(1.0, pause * 2)
    # a blocked lock request queues the application sessions behind it: never wait long
    configured = setting_ms(cfg.rollout.lock_timeout)  # validated with the config
    writer.apply(f"SET {scope}lock_timeout = '{configured}ms'", step="lock", **audit)
    if writer.identity.server_version_num >= 140000:
        # A client that dies mid-artifact is noticed within a second, even in a long
        # statement: its transaction is rolled back (its build ended) and the lock freed.
        writer.apply(f"SET {scope}client_connection_check_interval = '1s'", step="lock", **audit)


def _release_lock(writer: Session, key: int, **audit: Any) -> None:
    """Undo `_hold_lock`: the lock and the session's settings."""
    writer.apply(f"select pg_catalog.pg_advisory_unlock({int(key)})", step="lock", **audit)
    writer.apply("RESET lock_timeout", step="lock", **audit)
    if writer.identity.server_version_num >= 140000:
        writer.apply("RESET client_connection_check_interval", step="lock", **audit)


def recheck(writer: Session, cfg: Config, plan: str, artifact: Artifact, run: ArtifactRun) -> bool:
    """Under the plan's lock, what another applier committed meanwhile is visible: True when
    the ledger has the artifact already (`run` is then skipped); its requirements must be."""
    ledger = read_ledger(writer, plan, schema=cfg.rollout.ledger_schema)
    row = ledger.get(artifact.id)
    if row is not None:
        if row.checksum != artifact.checksum:
            raise ForbiddenAction(f"refused: the ledger holds {artifact.id} with another checksum")
        run.status, run.reason = "skipped", f"applied meanwhile at {row.applied_at}"
        return True
    missing = [r for r in artifact.requires if r not in ledger]
    if missing:
        raise _Halt(f"requires {', '.join(missing)}, not in the ledger")
    return False


def lock_retry(
    evidence: Evidence,
    cfg: Config,
    plan: str,
    artifact: str,
    attempt: int,
    reason: str | None,
    say: Callable[[str], None],
) -> bool:
    """A lock waited `[rollout] lock_timeout` for: audit the attempt, and back off before the
    next one; False when `[rollout] lock_retries` are spent."""
    attempts = 1 + cfg.rollout.lock_retries
    again = attempt < attempts
    evidence.audit(
        PRODUCTION,
        "internal",
        f"-- {artifact}: lock timeout, attempt {attempt} of {attempts}",
        "retry" if again else "halted",
        plan=plan,
        artifact=artifact,
        reason=reason,
    )
    if again:
        pause = min(5.0, 0.25 * 2 ** (attempt - 1))
        say(
            f"{artifact}: lock not available within {cfg.rollout.lock_timeout}; retry in {pause:g}s"
        )
        time.sleep(pause)
    return again


def _ensure_ledger(writer: Session, cfg: Config, reader: str | None) -> None:
    schema = cfg.rollout.ledger_schema
    if _ledger_exists(writer, schema):
        return
    try:
        with writer.write_transaction():
            _take_lock(writer, cfg, _lock_key(ledger_name(schema)), target="ledger")
            if _ledger_exists(writer, schema):
                return
            for statement in ledger_ddl(schema, reader):
                writer.apply(statement, step="ledger")
    except _Halt as halt:
        raise DatabaseError(f"the ledger could not be made: {halt.reason}") from None


# columns later versions added, each added to an older ledger by the next apply
LATER_COLUMNS = {
    "digest": "text check (digest ~ '^[0-9a-f]{{64}}$')",
    "signers": "jsonb not null default '[]'",
    "forecast": "jsonb",
    "duration_ms": "double precision",
    "wal_bytes": "bigint",
}


def _ensure_columns(writer: Session, schema: str) -> None:
    """Add what `LATER_COLUMNS` names to a ledger made before them."""
    names = pgsql.SQL(", ").join(pgsql.Literal(name) for name in LATER_COLUMNS)
    present = writer.scalar(
        pgsql.SQL(
            "select count(*) from pg_catalog.pg_attribute where attrelid = to_regclass({})"
            " and attname in ({}) and not attisdropped"
        )
        .format(pgsql.Literal(ledger_name(schema)), names)
        .as_string(None)
    )
    if int(present) == len(LATER_COLUMNS):
        return
    columns = pgsql.SQL(", ").join(
        pgsql.SQL("add column if not exists {} " + kind).format(pgsql.Identifier(name))
        for name, kind in LATER_COLUMNS.items()
    )
    with writer.write_transaction():
        writer.apply(
            pgsql.SQL("alter table {} {}")
            .format(pgsql.Identifier(schema, LEDGER_TABLE), columns)
            .as_string(None),
            step="ledger",
        )


def applied_artifacts(session: Session, *, schema: str) -> set[str]:
    """Every artifact the ledger of this database records, as `plan/artifact`."""
    if not _ledger_exists(session, schema):
        return set()
    rows = session.execute(f"select plan, artifact from {ledger_name(schema)}")
    return {f"{plan}/{artifact}" for plan, artifact in rows}
