"""Helpers of the rollout tests: a small production, a hand-made clone, a three-artifact plan.

The clone is made the way `oneroof clone create` makes one, by hand (so these tests do not
depend on the clone module): pg_dump | pg_restore into a database on the non-production
server, a full fingerprint of production saved as `clone-source:<name>`, and the marker in
`COMMENT ON DATABASE`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fix_pg import Server, reader_dsn
from oneroof import config, connect, fingerprint, rollout
from oneroof.embedded import bin_dir
from oneroof.evidence import Evidence

CLI = [sys.executable, "-c", "from oneroof.cli import main; main()"]

SCHEMA = """
create schema app;
create table app.items (
    id bigserial primary key,
    name text not null,
    status text not null default 'open'
);
create table app.flags (name text primary key, value int);
create table app.other (id int primary key);
create table app.exclude (name text primary key);
insert into app.flags values ('go', 0), ('halt', 0), ('nothing', null);
insert into app.items (name) values ('a'), ('b');
"""

TOML = """\
[production]
dsn = "env:ONEROOF_TEST_PROD_DSN"
apply_dsn = "env:ONEROOF_TEST_APPLY_DSN"
statement_timeout = "20s"
[clone]
server_dsn = "env:ONEROOF_TEST_NONPROD_DSN"
name = "{clone}"
[guard]
clone_name_pattern = "^[a-z0-9_]+_(clone|nonprod)$"
[counters]
go = "select value from app.flags where name = 'go'"
halt = "select value from app.flags where name = 'halt'"
nothing = "select value from app.flags where name = 'nothing'"
open_items = "select count(*) from app.items where status = 'open'"
done_items = "select count(*) from app.items where status = 'done'"
items = "select count(*) from app.items"
[[target]]
name = "go"
gate = "go >= 1"
blocker = "someone must say go"
[[target]]
name = "nothing null"
gate = "not (nothing == 1)"
"""

ARTIFACTS = {
    "01_add.sql": """\
        -- artifact: T_01_add
        -- gate: go >= 1
        -- expect-delta: app.items +3
        -- stop: items < 5
        -- auto: true
        --
        -- Three new items.
        insert into app.items (name) values ('c'), ('d'), ('e');
        """,
    "02_close.sql": """\
        -- artifact: T_02_close
        -- gate: go >= 1
        -- requires: T_01_add
        -- expect-delta: app.items ~open_items
        -- stop: open_items != 0 or halt == 1
        -- auto: true
        {extra}update app.items set status = 'done' where status = 'open';
        """,
    "03_verify.sql": """\
        -- artifact: T_03_verify
        -- gate: go >= 1
        -- requires: T_02_close
        -- expect-delta: app.items +0
        -- stop: done_items != items
        -- auto: false
        select count(*) as done from app.items where status = 'done';
        """,
}


def write_plan(directory: Path, extra: str = "", overrides: dict[str, str] | None = None) -> Path:
    """The test plan in `directory` (rewritten); `extra` goes before the body of 02."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in ARTIFACTS.items():
        body = textwrap.dedent((overrides or {}).get(name, text))
        (directory / name).write_text(body.replace("{extra}", extra))
    return directory


def make_clone(
    cfg: config.Config,
    evidence: Evidence,
    production_dsn: str,
    nonprod_admin_dsn: str,
    name: str,
) -> str:
    """A clone of production made by hand; returns the source fingerprint id."""
    with psycopg.connect(nonprod_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    clone_dsn = psycopg.conninfo.make_conninfo(nonprod_admin_dsn, dbname=name)
    with connect.open_production(cfg, evidence) as session:
        source = fingerprint.take(session, mode="full", counters=cfg.counters)
    dump = subprocess.Popen(
        [str(bin_dir() / "pg_dump"), "-Fc", "--no-owner", "-d", production_dsn],
        stdout=subprocess.PIPE,
    )
    restore = subprocess.run(
        [str(bin_dir() / "pg_restore"), "--no-owner", "-d", clone_dsn],
        stdin=dump.stdout,
        capture_output=True,
        check=False,
    )
    assert dump.stdout is not None
    dump.stdout.close()
    assert dump.wait() == 0
    assert restore.returncode == 0, restore.stderr.decode()
    fingerprint.save(evidence, source, label=f"clone-source:{name}")
    marker = {connect.MARKER_KEY: {"state": "ready", "source_fingerprint": source.id, "name": name}}
    with psycopg.connect(nonprod_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("comment on database {} is {}").format(
                sql.Identifier(name), sql.Literal(json.dumps(marker))
            )
        )
    return source.id


@dataclass
class Env:
    """A workspace over a small production, its clone and the test plan."""

    workspace: Path
    prod_dsn: str
    nonprod_dsn: str
    clone: str
    plan_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def cfg(self) -> config.Config:
        return config.load(self.workspace)

    def evidence(self) -> Evidence:
        return Evidence(self.cfg.evidence_path)

    def plan(self) -> rollout.Plan:
        return rollout.load_plan(self.plan_dir, self.cfg)

    def prod(self, statement: str) -> list[tuple[Any, ...]]:
        """Run a statement on production as the application would (not through oneroof)."""
        with psycopg.connect(self.prod_dsn, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def clone_sql(self, statement: str) -> list[tuple[Any, ...]]:
        dsn = psycopg.conninfo.make_conninfo(self.nonprod_dsn, dbname=self.clone)
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def make_clone(self) -> str:
        evidence = self.evidence()
        try:
            return make_clone(self.cfg, evidence, self.prod_dsn, self.nonprod_dsn, self.clone)
        finally:
            evidence.close()

    def drop_clone(self) -> None:
        with psycopg.connect(self.nonprod_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(self.clone)
                )
            )

    def ledger(self) -> list[tuple[str, str]]:
        exists = self.prod("select to_regclass('oneroof.rollout_ledger') is not null")[0][0]
        if not exists:
            return []
        return [
            (str(a), str(c))
            for a, c in self.prod(
                "select artifact, checksum from oneroof.rollout_ledger order by id"
            )
        ]

    def items(self) -> dict[str, int]:
        return {
            str(status): int(count)
            for status, count in self.prod(
                "select status, count(*) from app.items group by status order by 1"
            )
        }

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the `oneroof` command in a subprocess of this workspace."""
        return subprocess.run(
            [*CLI, "--workspace", str(self.workspace), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, "--workspace", str(self.workspace), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


def build_env(tmp_path: Path, prod_dsn: str, nonprod_dsn: str, schema: str = SCHEMA) -> Env:
    """Create the schema on production and a workspace; the clone is made by the caller."""
    with psycopg.connect(prod_dsn, autocommit=True) as conn:
        conn.execute(schema)
    clone = f"t{uuid.uuid4().hex[:10]}_clone"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "oneroof.toml").write_text(TOML.format(clone=clone))
    plan_dir = write_plan(workspace / "rollout" / "T_plan")
    env = dict(os.environ)
    env["ONEROOF_TEST_PROD_DSN"] = reader_dsn(prod_dsn)
    env["ONEROOF_TEST_APPLY_DSN"] = prod_dsn
    env["ONEROOF_TEST_NONPROD_DSN"] = nonprod_dsn
    return Env(workspace, prod_dsn, nonprod_dsn, clone, plan_dir, env)


@pytest.fixture
def make_env(
    tmp_path: Path,
    prod_db: str,
    prod_server: Server,
    nonprod_server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[str], Env]]:
    """`build_env` with `schema` on production, this process's environment pointing at it;
    its clone dropped afterwards."""
    made: list[Env] = []

    def make(schema: str = SCHEMA) -> Env:
        built = build_env(
            tmp_path, prod_server.dsn(prod_db), nonprod_server.dsn("postgres"), schema
        )
        monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", reader_dsn(built.prod_dsn))
        monkeypatch.setenv("ONEROOF_TEST_APPLY_DSN", built.prod_dsn)
        monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", built.nonprod_dsn)
        made.append(built)
        return built

    try:
        yield make
    finally:
        for built in made:
            built.drop_clone()


@pytest.fixture
def env(make_env: Callable[[str], Env]) -> Env:
    """A small production, its hand-made clone and a workspace pointing at both."""
    return make_env(SCHEMA)
