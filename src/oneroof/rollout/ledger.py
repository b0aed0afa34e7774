"""The production ledger of applied artifacts, and the advisory locks that serialise appliers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from psycopg import sql as pgsql

from oneroof.config import Config
from oneroof.connect import Session
from oneroof.rollout.artifact import Counts
from oneroof.sqltext import setting_ms

LEDGER_SCHEMA = "oneroof"
LEDGER_TABLE = "rollout_ledger"
LEDGER = f"{LEDGER_SCHEMA}.{LEDGER_TABLE}"


@dataclass(frozen=True)
class LedgerRow:
    """One applied artifact, as the production ledger records it."""

    plan: str
    artifact: str
    checksum: str
    applied_at: str
    applied_by: str
    deltas: Counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "artifact": self.artifact,
            "checksum": self.checksum,
            "applied_at": self.applied_at,
            "applied_by": self.applied_by,
            "deltas": self.deltas,
        }


LEDGER_DDL = (
    f"create schema if not exists {LEDGER_SCHEMA}",
    f"""create table if not exists {LEDGER} (
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
    unique (plan, artifact)
)""",
    f"comment on table {LEDGER} is 'oneroof rollout ledger: one row per artifact applied, "
    "written in the artifact''s own transaction'",
)


def _literal(value: Any) -> str:
    return pgsql.Literal(value).as_string(None)


def _ledger_exists(session: Session) -> bool:
    return bool(session.scalar(f"select to_regclass({_literal(LEDGER)}) is not null"))


def read_ledger(session: Session, plan_name: str) -> dict[str, LedgerRow]:
    """The ledger rows of a plan (empty when no apply ever created the ledger)."""
    if not _ledger_exists(session):
        return {}
    rows = session.execute(
        "select artifact, checksum, applied_at::text, applied_by, deltas::text"
        f" from {LEDGER} where plan = {_literal(plan_name)} order by id"
    )
    return {
        str(artifact): LedgerRow(
            plan_name, str(artifact), str(checksum), str(at), str(by), json.loads(deltas)
        )
        for artifact, checksum, at, by, deltas in rows
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


def _ensure_ledger(writer: Session, cfg: Config) -> None:
    if _ledger_exists(writer):
        return
    with writer.write_transaction():
        _take_lock(writer, cfg, _lock_key(LEDGER), target="ledger")
        if _ledger_exists(writer):
            return
        for statement in LEDGER_DDL:
            writer.apply(statement, step="ledger")
