"""Guarded connections on real servers: production read-only and audited, clones name-guarded."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from oneroof import connect
from oneroof.errors import ForbiddenAction


@pytest.fixture
def workspace(make_workspace, prod_db, prod_server):
    with prod_server.admin(prod_db) as conn:
        conn.execute("create table canary(id int primary key, note text)")
        conn.execute("insert into canary values (1, 'original')")
        conn.execute("create sequence canary_seq")
    return make_workspace(prod_db)


def test_production_session_is_read_only_and_audited(workspace) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    with connect.open_production(cfg, evidence) as session:
        assert session.execute("select note from canary") == [("original",)]
        assert session.setting("default_transaction_read_only") == "on"
        assert session.setting("application_name") == "oneroof"
        assert session.setting("statement_timeout") == "20s"
        assert "read-only transaction" in connect.prove_read_only(session)
        with pytest.raises(ForbiddenAction):
            session.execute("update canary set note = 'changed'")
    sent = [(r.classification, r.outcome, r.sql) for r in evidence.records("audit")]
    assert ("read", "sent", "select note from canary") in sent
    assert ("write", "refused", "update canary set note = 'changed'") in sent
    assert evidence.verify() == []


def test_a_misjudged_statement_still_cannot_write(workspace) -> None:
    """Even a statement sent past the guard runs in a READ ONLY transaction."""
    cfg = workspace.config()
    with connect.open_production(cfg, workspace.evidence()) as session:
        with session.transaction(), pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            session._send("insert into canary values (2, 'x')", None, "test")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            # outside any explicit transaction the session default is read-only too
            session._send("insert into canary values (2, 'x')", None, "test")


def test_dsn_options_cannot_turn_read_only_off(
    workspace, prod_server, prod_db, monkeypatch
) -> None:
    dsn = prod_server.reader_dsn(prod_db) + " options='-c default_transaction_read_only=off'"
    monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", dsn)
    with connect.open_production(workspace.config(), workspace.evidence()) as session:
        assert session.setting("default_transaction_read_only") == "on"


def test_unreachable_server_names_the_host(workspace, monkeypatch) -> None:
    from oneroof.errors import ServerUnreachable

    monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", "host=/nonexistent/socket port=1 dbname=app")
    with pytest.raises(ServerUnreachable) as info:
        connect.open_production(workspace.config(), workspace.evidence())
    assert "/nonexistent/socket:1/app" in str(info.value)
    assert "check that the server is running" in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "app",  # does not match
        "APP_CLONE",  # case
        '"app_clone"',  # quoting
        " app_clone",  # whitespace
        "app_clone ",
        "app_clone\n",
        "app_cl\u043ene",  # Cyrillic o
        "app%_clone",  # LIKE wildcards
        "a" * 60 + "_clone",  # longer than 63 bytes
        "",
    ],
)
def test_clone_name_guard_refuses(name: str) -> None:
    with pytest.raises(ForbiddenAction):
        connect.check_clone_name(name, r"^[a-z0-9_]+_(clone|nonprod)$")


def test_clone_name_equal_to_production_is_refused() -> None:
    production = connect.ServerIdentity("1", "h", 5432, "Shop_Clone", "18", 180000)
    with pytest.raises(ForbiddenAction, match="production"):
        connect.check_clone_name("shop_clone", r"^[a-z_]+_clone$", production)


def test_clone_session_refuses_production_itself(workspace, prod_server, monkeypatch) -> None:
    """A clone name that matches the pattern but is production's own database is refused."""
    import uuid

    name = f"x{uuid.uuid4().hex[:8]}_clone"
    with prod_server.admin() as conn:
        conn.execute(f'create database "{name}"')
    try:
        monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", prod_server.reader_dsn(name))
        monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", prod_server.dsn("postgres"))
        cfg = workspace.config()
        with pytest.raises(ForbiddenAction, match="production"):
            connect.open_clone(cfg, workspace.evidence(), name, require_marker=False)
    finally:
        prod_server.drop_database(name)


def test_clone_session_requires_the_marker(workspace, nonprod_server) -> None:
    name = "app_clone"
    nonprod_server.drop_database(name)
    with nonprod_server.admin() as conn:
        conn.execute(f"create database {name}")
    try:
        with pytest.raises(ForbiddenAction, match="marker"):
            connect.open_clone(workspace.config(), workspace.evidence(), name)
    finally:
        nonprod_server.drop_database(name)


def test_a_clone_still_being_made_is_refused_for_work(workspace, nonprod_server) -> None:
    name = "app_clone"
    nonprod_server.drop_database(name)
    with nonprod_server.admin() as conn:
        conn.execute(f"create database {name}")
        conn.execute(
            f"""comment on database {name} is '{{"oneroof_clone": {{"state": "creating"}}}}'"""
        )
    try:
        with pytest.raises(ForbiddenAction, match="not ready"):
            connect.open_clone(workspace.config(), workspace.evidence(), name, ready_only=True)
        # the clone module itself may still open it to finish or clean up
        connect.open_clone(workspace.config(), workspace.evidence(), name).close()
    finally:
        nonprod_server.drop_database(name)


def _identity(system: str, host: str, started: str, version: str = "18.6") -> Any:
    return connect.ServerIdentity(system, host, 5432, "app", version, 180006, started)


UNKNOWN = "unknown@/tmp/link:5432"


@pytest.mark.parametrize(
    ("here", "there", "same"),
    [
        # both identifiers known: they decide, whatever the address
        (_identity("7", "a", "t1"), _identity("7", "b", "t1"), True),
        (_identity("7", "a", "t1"), _identity("8", "a", "t1"), False),
        # a physical copy elsewhere: one cluster, another running server
        (_identity("7", "a", "t1"), _identity("7", "b", "t2"), False),
        # an identifier unreadable: another address proves nothing (a symlinked socket,
        # an IP for a name), the running server's start instant and version do
        (_identity(UNKNOWN, "/tmp/link", "t1"), _identity("7", "/tmp/s", "t1"), True),
        (_identity(UNKNOWN, "/tmp/link", "t1"), _identity("7", "/tmp/s", "t2"), False),
        (_identity(UNKNOWN, "h", "t1", "17.2"), _identity("7", "h", "t1"), False),
        # nothing to tell them apart: fail safe, the same
        (_identity(UNKNOWN, "a", ""), _identity("7", "b", "t1"), True),
        (_identity(UNKNOWN, "a", ""), _identity(UNKNOWN, "b", ""), True),
    ],
)
def test_a_server_is_production_s_unless_it_proves_otherwise(
    here: connect.ServerIdentity, there: connect.ServerIdentity, same: bool
) -> None:
    assert here.same_instance(there) is same
    assert there.same_instance(here) is same
