"""Shared pieces of the clone tests: the One-Roof workspace, the CLI runner, database lists."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql

from oneroof import cli
from oneroof.clone import golden_name
from oneroof.demo import load_generator

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "one-roof"

TOML = """\
[production]
dsn = "env:ONEROOF_TEST_PROD_DSN"
apply_dsn = "env:ONEROOF_TEST_APPLY_DSN"
statement_timeout = "60s"
[clone]
server_dsn = "env:ONEROOF_TEST_NONPROD_DSN"
name = "{name}"
method = "{method}"
[guard]
clone_name_pattern = "^[a-z0-9_]+_(clone|nonprod)$"
app_roles = ["app_rw", "directus"]
[isolation]
disable_triggers = ["emit_%"]
reset_sql = ["delete from ops.job_leases", "update ops.dispatch_settings set enabled = false"]
leases_counter = "leases"
[counters]
leases = "select count(*) from ops.job_leases"
objects = "select count(*) from core.objects"
"""


def generator() -> ModuleType:
    """The One-Roof data generator, loaded the way the demo loads it."""
    return load_generator(EXAMPLE)


def build_one_roof(conn: psycopg.Connection[Any], objects: int = 300) -> None:
    """A realistic production: One-Roof data, an emit_ trigger, and leases held by workers."""
    generator().build(conn, objects=objects, gap=objects // 5, seed=7)
    conn.execute(
        "insert into ops.job_leases values ('job:gap-scan', 'worker-1', now() + interval '1h'),"
        " ('dot:seed', 'runner-2', now() + interval '1h')"
    )
    conn.execute("update ops.dispatch_settings set enabled = true")


def clone_name() -> str:
    return f"c{uuid.uuid4().hex[:10]}_clone"


def ensure_login_role(server: Any, role: str) -> None:
    with server.admin() as conn, contextlib.suppress(psycopg.errors.DuplicateObject):
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(role)))


def databases(server: Any) -> dict[str, str | None]:
    """Every database of a server with its comment: a change of either shows."""
    with server.admin() as conn:
        rows = conn.execute(
            "select datname::text, shobj_description(oid, 'pg_database') from pg_database"
        ).fetchall()
    return {str(name): comment for name, comment in rows}


def remove_clone(server: Any, name: str) -> None:
    """Drop a clone and its golden copy whatever state they are in (test cleanup)."""
    with server.admin() as conn:
        for database in (name, golden_name(name)):
            exists = conn.execute(
                "select datistemplate from pg_database where datname = %s", (database,)
            ).fetchone()
            if exists is None:
                continue
            if exists[0]:
                conn.execute(
                    sql.SQL("alter database {} is_template false").format(sql.Identifier(database))
                )
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database))
            )


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err
