"""The production ledger of applied artifacts, and the advisory locks that serialise appliers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql as pgsql

from oneroof.config import Config
from oneroof.connect import Session
from oneroof.rollout.artifact import Counts
from oneroof.sqltext import setting_ms

LEDGER_SCHEMA = "oneroof"  # the default of `[rollout] ledger_schema`
LEDGER_TABLE = "rollout_ledger"


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
    """The transaction-level advisory lock; waits up to the statement timeout, not the lock one."""
    writer.apply("SET LOCAL lock_timeout = 0", step="lock", **audit)
    writer.apply(f"select pg_catalog.pg_advisory_xact_lock({int(key)})", step="lock", **audit)
    # a blocked lock request queues the application sessions behind it: never wait long
    configured = setting_ms(cfg.rollout.lock_timeout)  # validated with the config
    writer.apply(f"SET LOCAL lock_timeout = '{configured}ms'", step="lock", **audit)
    if writer.identity.server_version_num >= 140000:
        # A client that dies mid-artifact is noticed within a second, even in a long
        # statement: its transaction is rolled back and the lock freed for the rerun.
        writer.apply("SET LOCAL client_connection_check_interval = '1s'", step="lock", **audit)


def _ensure_ledger(writer: Session, cfg: Config, reader: str | None) -> None:
    schema = cfg.rollout.ledger_schema
    if _ledger_exists(writer, schema):
        return
    with writer.write_transaction():
        _take_lock(writer, cfg, _lock_key(ledger_name(schema)), target="ledger")
        if _ledger_exists(writer, schema):
            return
        for statement in ledger_ddl(schema, reader):
            writer.apply(statement, step="ledger")


def applied_artifacts(session: Session, *, schema: str) -> set[str]:
    """Every artifact the ledger of this database records, as `plan/artifact`."""
    if not _ledger_exists(session, schema):
        return set()
    rows = session.execute(f"select plan, artifact from {ledger_name(schema)}")
    return {f"{plan}/{artifact}" for plan, artifact in rows}
