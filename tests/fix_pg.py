"""Fixture plugin: real PostgreSQL servers for the tests.

Two throwaway embedded servers per test session (per xdist worker) — one plays production,
the other the non-production server — and a fresh database per test, cheaply copied from a
template. With ONEROOF_TEST_DSN set, that one server plays both roles instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from oneroof import roles
from oneroof.embedded import EmbeddedServer

READER = roles.READER_ROLE


def reader_dsn(dsn: str) -> str:
    """The same DSN as the least-privilege reader role."""
    return psycopg.conninfo.make_conninfo(dsn, user=READER)


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases on."""

    base_dsn: str
    label: str
    log_path: Path | None = None  # the server's log file, when the tests started the server

    def dsn(self, database: str = "postgres") -> str:
        """A superuser DSN: the tests' own access, the applier and the demo's humans."""
        return psycopg.conninfo.make_conninfo(self.base_dsn, dbname=database)

    def reader_dsn(self, database: str = "postgres") -> str:
        """The least-privilege production reader, created with the SQL of docs/safety.md."""
        return psycopg.conninfo.make_conninfo(self.base_dsn, dbname=database, user=READER)

    def create_reader(self) -> None:
        """The reader role, made by `roles.reader_sql` in template1 (so every new database
        inherits its grants) and in postgres."""
        with self.admin("template1") as conn:
            exists = conn.execute("select from pg_roles where rolname = %s", (READER,)).fetchone()
            if exists is None:
                conn.execute(roles.reader_sql(READER, "template1"))
        with self.admin("postgres") as conn:
            conn.execute(roles.reader_sql(READER, "postgres").split(";\n", 1)[1])

    def admin(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(database), autocommit=True)

    def create_database(self, prefix: str, template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        statement = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" template {}").format(sql.Identifier(template))
        with self.admin() as conn:
            conn.execute(statement)
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """(production server, non-production server) for the whole test session."""
    external = os.environ.get("ONEROOF_TEST_DSN")
    if external:
        server = Server(external, "external")
        server.create_reader()
        yield server, server
        return
    # Outside pytest's basetemp: a later pytest run re-creates that tree with mode 0700,
    # which would lock the servers' unprivileged user out of their own data directories.
    root = Path(tempfile.mkdtemp(prefix="oneroof-test-pg-"))
    production = EmbeddedServer(root / "prod").start()
    nonprod = EmbeddedServer(root / "nonprod").start()
    try:
        servers = (
            Server(production.dsn(), "prod", production.log),
            Server(nonprod.dsn(), "nonprod", nonprod.log),
        )
        for server in servers:
            server.create_reader()
        yield servers
    finally:
        production.remove()
        nonprod.remove()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def prod_server(pg_servers: tuple[Server, Server]) -> Server:
    return pg_servers[0]


@pytest.fixture(scope="session")
def nonprod_server(pg_servers: tuple[Server, Server]) -> Server:
    return pg_servers[1]


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A directory for embedded servers a test starts itself (outside pytest's basetemp)."""
    root = Path(tempfile.mkdtemp(prefix="oneroof-test-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def prod_db(prod_server: Server) -> Iterator[str]:
    """The name of a fresh, empty database on the production server."""
    name = prod_server.create_database("prod")
    try:
        yield name
    finally:
        prod_server.drop_database(name)


_SERVER_FIXTURES = frozenset({"pg_servers", "server_dir"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a PostgreSQL server `db`: `-m "not db"` runs the pure ones."""
    for item in items:
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
