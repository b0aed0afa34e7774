"""The clone lifecycle on two real servers: create, verify, reset, drop, list, name-guarded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fix_clone import (
    TOML,
    build_one_roof,
    clone_name,
    databases,
    ensure_login_role,
    remove_clone,
    run_cli,
)
from oneroof import clone, connect, fingerprint
from oneroof.clone import golden_name
from oneroof.errors import BadInput, ForbiddenAction
from oneroof.workspace import Workspace as Ws


@pytest.fixture
def one_roof(prod_server: Any, prod_db: str) -> str:
    with prod_server.admin(prod_db) as conn:
        build_one_roof(conn)
    return prod_db


@pytest.fixture
def name(nonprod_server: Any) -> Iterator[str]:
    value = clone_name()
    try:
        yield value
    finally:
        remove_clone(nonprod_server, value)


@pytest.fixture
def workspace(make_workspace: Any, one_roof: str, name: str) -> Any:
    return make_workspace(one_roof, TOML.format(name=name, method="dump"))


def point(result: clone.CloneVerification, which: str) -> clone.Point:
    found = [p for p in result.points if p.name == which]
    assert found, [p.name for p in result.points]
    return found[0]


def failing(result: clone.CloneVerification) -> set[str]:
    return {p.name for p in result.points if not p.ok}


# -- the lifecycle ------------------------------------------------------------------------------


def test_create_verify_reset_drop(workspace: Any, name: str, nonprod_server: Any) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    info = clone.create(Ws(cfg, evidence))
    assert info.name == name and info.golden == golden_name(name)

    marker = info.marker
    assert marker["state"] == "ready" and marker["role"] == "clone" and marker["version"] == 1
    assert marker["name"] == name and marker["method"] == "dump" and marker["created_at"]
    with connect.open_production(cfg, evidence) as session:
        assert marker["source"] == session.identity.as_dict()
    isolation = marker["isolation"]
    assert isolation["revoked_connect"][0] == "PUBLIC"
    assert isolation["disabled_triggers"] == ["ops.issues.emit_issue_event"]
    assert isolation["reset_sql"] == cfg.isolation.reset_sql
    # the two tables reset_sql changed, and nothing else
    assert set(isolation["reset_tables"]) == {"ops.job_leases", "ops.dispatch_settings"}
    assert isolation["reset_tables"]["ops.job_leases"]["count"] == 0

    # the clone equals production at the snapshot: the saved source fingerprint is production's
    source = clone.source_fingerprint(Ws(cfg, evidence))
    assert source.id == marker["source_fingerprint"]
    with connect.open_production(cfg, evidence) as session:
        assert fingerprint.take(session, counters=cfg.counters).id == source.id
    assert source.sections["counters"]["leases"] == 2  # production keeps its leases
    sent = [r.sql or "" for r in evidence.records("audit")]
    dumps = [s for s in sent if "pg_dump" in s]
    assert len(dumps) == 1 and f"--snapshot={marker['snapshot']}" in dumps[0]
    assert "default_transaction_read_only=on" in dumps[0] and "oneroof-dump" in dumps[0]
    assert "refused" not in {r.outcome for r in evidence.records("audit")}

    result = clone.verify(Ws(cfg, evidence))
    assert result.ok, result.reasons
    assert {p.name for p in result.points} >= {
        "name_guard",
        "marker",
        "app_sessions",
        "connect_privilege",
        "triggers",
        "subscriptions",
        "leases",
        "committed_state",
        "schema",
    }
    assert "ops.issues.emit_issue_event disabled" in point(result, "schema").detail
    assert "ops.job_leases" in point(result, "committed_state").detail

    entries = {e.name: e for e in clone.list_clones(Ws(cfg))}
    assert entries[name].role == "clone" and entries[name].state == "ready"
    assert entries[name].golden == golden_name(name)
    assert entries[golden_name(name)].role == "golden"
    with nonprod_server.admin() as conn:
        row = conn.execute(
            "select datallowconn, datistemplate from pg_database where datname = %s",
            (golden_name(name),),
        ).fetchone()
    assert row == (False, True)

    # a modified clone no longer verifies; reset brings back the created state
    with nonprod_server.admin(name) as conn:
        conn.execute("update core.objects set name = name || '!' where id = 1")
        conn.execute("create table scratch (x int)")
    broken = clone.verify(Ws(cfg, evidence))
    assert failing(broken) == {"committed_state", "schema"}
    assert "core.objects" in point(broken, "committed_state").detail
    assert "public.scratch" in point(broken, "schema").detail
    audited = len(evidence.records("audit"))
    again = clone.reset(Ws(cfg, evidence))
    assert len(evidence.records("audit")) == audited  # reset never touches production
    assert again.marker["source_fingerprint"] == marker["source_fingerprint"]
    assert again.marker["reset_at"] and again.marker["state"] == "ready"
    assert clone.verify(Ws(cfg, evidence)).ok

    dropped = clone.drop(Ws(cfg, evidence))
    assert dropped.dropped == [name, golden_name(name)]
    assert name not in databases(nonprod_server)
    assert golden_name(name) not in databases(nonprod_server)
    assert evidence.verify() == []


def test_verify_names_each_breach_of_isolation(
    workspace: Any, name: str, nonprod_server: Any
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    ensure_login_role(nonprod_server, "app_rw")
    clone.create(Ws(cfg, evidence))
    assert clone.verify(Ws(cfg, evidence)).ok
    assert "app_rw" in clone.read_marker(Ws(cfg))["isolation"]["revoked_connect"]  # type: ignore[index]

    # an operator re-grants CONNECT and the application connects
    with nonprod_server.admin() as conn:
        conn.execute(sql.SQL("grant connect on database {} to app_rw").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(nonprod_server.dsn(name), user="app_rw")
    with psycopg.connect(dsn) as app:
        app.execute("select 1")
        result = clone.verify(Ws(cfg, evidence))
        assert failing(result) == {"app_sessions", "connect_privilege"}
        assert "app_rw (1)" in point(result, "app_sessions").detail
        assert "app_rw" in point(result, "connect_privilege").detail
    # reset ends that: CONNECT is revoked again, the session is gone with the old database
    clone.reset(Ws(cfg, evidence))
    assert clone.verify(Ws(cfg, evidence)).ok

    breaches = [
        ("alter table ops.issues enable trigger emit_issue_event", {"triggers"}),
        (
            "insert into ops.job_leases values ('job:x', 'w', now())",
            {"leases", "committed_state"},
        ),
        ("update core.actors set active = not active where id = 7", {"committed_state"}),
    ]
    for statement, expected in breaches:
        with nonprod_server.admin(name) as conn:
            conn.execute(statement)
        result = clone.verify(Ws(cfg, evidence))
        assert not result.ok
        assert failing(result) == expected, (statement, result.reasons)
        reasons = " ".join(result.reasons)
        if "triggers" in expected:
            assert "ops.issues.emit_issue_event" in point(result, "triggers").detail
        if "leases" in expected:
            assert point(result, "leases").detail == "leases = 1"
        if statement.startswith("update core.actors"):
            assert "core.actors" in reasons
        clone.reset(Ws(cfg, evidence))
        assert clone.verify(Ws(cfg, evidence)).ok


def test_verify_cli_prints_every_point_and_exits_1_naming_the_reason(
    workspace: Any, name: str, nonprod_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--workspace", str(workspace.path), "clone"]
    code, out, _ = run_cli([*base, "create", "--json"], capsys)
    assert code == 0 and json.loads(out)["marker"]["state"] == "ready"
    code, out, _ = run_cli([*base, "verify", "--json"], capsys)
    document = json.loads(out)
    assert code == 0 and document["ok"] is True
    assert all({"name", "ok", "detail"} <= set(p) for p in document["points"])
    with nonprod_server.admin(name) as conn:
        conn.execute("delete from gov.laws where code = 'LAW-DOT' and version = 1")
    code, out, err = run_cli([*base, "verify"], capsys)
    assert code == 1
    assert "✗ committed_state" in out and "gov.laws" in out
    assert "verify failed: committed_state" in err
    code, out, _ = run_cli([*base, "list", "--json"], capsys)
    listed = {e["name"]: e for e in json.loads(out)}
    assert listed[name]["golden"] == golden_name(name)
    code, out, _ = run_cli([*base, "reset", "--json"], capsys)
    assert code == 0 and json.loads(out)["action"] == "reset"
    code, _, _ = run_cli([*base, "verify"], capsys)
    assert code == 0
    code, out, _ = run_cli([*base, "drop", "--json"], capsys)
    assert code == 0 and json.loads(out)["dropped"] == [name, golden_name(name)]


def test_create_refuses_a_ready_clone_and_reset_needs_the_golden_copy(
    workspace: Any, name: str, nonprod_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    with pytest.raises(BadInput, match="golden copy"):
        clone.reset(Ws(cfg, evidence))
    clone.create(Ws(cfg, evidence))
    before = databases(nonprod_server)
    code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
    assert code == 2 and "already exists and is ready" in err
    assert databases(nonprod_server) == before


# -- isolation of what a dump carries along -------------------------------------------------------


@pytest.mark.parametrize("privileged", [False, True], ids=["reader", "privileged-role"])
def test_foreign_servers_and_subscriptions_are_neutralised(
    workspace: Any,
    name: str,
    prod_server: Any,
    one_roof: str,
    nonprod_server: Any,
    privileged: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if privileged:
        # only a superuser's pg_dump copies subscriptions: then the clone must disable them
        monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", prod_server.dsn(one_roof))
        toml = (workspace.path / "oneroof.toml").read_text()
        workspace.write(toml.replace("[guard]\n", "[guard]\nallow_privileged_role = true\n"))
    with prod_server.admin(one_roof) as conn:
        conn.execute("create foreign data wrapper fake_fdw")
        conn.execute("create server partner foreign data wrapper fake_fdw options (host 'partner')")
        conn.execute(
            "create user mapping for public server partner options (user 'u', password 'secret')"
        )
        conn.execute(
            "create user mapping for current_user server partner options (user 'me', password 'p')"
        )
        conn.execute(
            "create subscription upstream connection 'host=/nonexistent dbname=nowhere'"
            " publication p with (connect = false)"
        )
    cfg = workspace.config()
    evidence = workspace.evidence()
    try:
        info = clone.create(Ws(cfg, evidence))
        isolation = info.marker["isolation"]
        assert {m["user"] for m in isolation["dropped_user_mappings"]} == {"PUBLIC", "postgres"}
        assert isolation["foreign_servers"] == ["partner"]
        assert isolation["disabled_subscriptions"] == (["upstream"] if privileged else [])
        with nonprod_server.admin(name) as conn:
            assert conn.execute("select count(*) from pg_user_mappings").fetchone() == (0,)
            sub = conn.execute(
                "select subenabled, subslotname from pg_subscription where subname = 'upstream'"
            ).fetchone()
        assert sub == ((False, None) if privileged else None)
        result = clone.verify(Ws(cfg, evidence))
        assert result.ok, result.reasons
        assert point(result, "user_mappings").ok and point(result, "subscriptions").ok
        # a subscription would block DROP DATABASE: drop takes it away first
        assert clone.drop(Ws(cfg, evidence)).dropped == [name, golden_name(name)]
    finally:
        with prod_server.admin(one_roof) as conn:
            conn.execute("alter subscription upstream set (slot_name = none)")
            conn.execute("drop subscription upstream")


# -- the name guard ------------------------------------------------------------------------------

CRAFTED = [
    "app",  # does not match the pattern
    "APP_CLONE",  # case
    "App_clone",
    '"app_clone"',  # quoting
    "app_clone'",
    " app_clone",  # whitespace
    "app_clone ",
    "app_clone\t",
    "app_clone\n",
    "app_cl\u043ene",  # Cyrillic o
    "app_clone\u200b",  # zero-width space
    "ａpp_clone",  # fullwidth a
    "app%_clone",  # LIKE wildcards
    "%_clone",
    "app_clon_",
    "a" * 60 + "_clone",  # longer than 63 bytes: PostgreSQL would truncate it
    "app_clone; drop database postgres",
    "",
]


@pytest.mark.parametrize("action", ["create", "reset", "drop"])
def test_crafted_names_are_refused_with_exit_3_and_nothing_changes(
    make_workspace: Any,
    prod_db: str,
    prod_server: Any,
    nonprod_server: Any,
    capsys: pytest.CaptureFixture[str],
    action: str,
) -> None:
    workspace = make_workspace(prod_db, TOML.format(name="app_clone", method="dump"))
    before = (databases(prod_server), databases(nonprod_server))
    for crafted in CRAFTED:
        args = ["--workspace", str(workspace.path), "clone", action, "--name", crafted]
        code, out, err = run_cli(args, capsys)
        assert code == 3, (crafted, err)
        assert out == "" and "refused" in err
    assert (databases(prod_server), databases(nonprod_server)) == before
    # refused before any connection: not even production was reached
    assert workspace.evidence().records("audit") == []


def test_a_valid_name_with_underscores_matches_no_other_database(
    workspace: Any, name: str, nonprod_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """`_` is a LIKE wildcard: a name that would match ours as a pattern is not ours."""
    clone.create(Ws(workspace.config(), workspace.evidence()))
    before = databases(nonprod_server)
    lookalike = name[0] + "_" + name[2:]
    args = ["--workspace", str(workspace.path), "clone", "drop", "--name", lookalike]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "no clone" in err
    code, _, err = run_cli([*args[:3], "reset", "--name", lookalike], capsys)
    assert code == 2 and "no golden copy" in err
    assert databases(nonprod_server) == before


def test_the_production_database_itself_is_refused(
    make_workspace: Any,
    prod_server: Any,
    nonprod_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """[clone] server_dsn points at the production server and the name is production's."""
    production = clone_name()  # matches the clone name pattern on purpose
    with prod_server.admin() as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(production)))
    try:
        with prod_server.admin(production) as conn:
            conn.execute("create table precious (id int primary key, v text)")
            conn.execute("insert into precious values (1, 'keep me')")
        workspace = make_workspace(production, TOML.format(name=production, method="dump"))
        monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", prod_server.dsn("postgres"))
        before = databases(prod_server)
        for action in ("create", "reset", "drop"):
            args = ["--workspace", str(workspace.path), "clone", action]
            code, _, err = run_cli(args, capsys)
            assert code == 3, (action, err)
            assert "production database" in err
        # also when only the DSN's database name differs in case from the clone name
        code, _, err = run_cli(
            ["--workspace", str(workspace.path), "clone", "verify", "--json"], capsys
        )
        assert code == 1 and "production" in err
        assert databases(prod_server) == before
        with prod_server.admin(production) as conn:
            assert conn.execute("select v from precious").fetchall() == [("keep me",)]
        # the library says the same, whatever name it is given
        cfg = workspace.config()
        with pytest.raises(ForbiddenAction, match="production"):
            clone.create(Ws(cfg, workspace.evidence()), production)
        with pytest.raises(ForbiddenAction, match="production"):
            clone.drop(Ws(cfg, workspace.evidence()), production)
    finally:
        prod_server.drop_database(production)


def test_a_database_without_the_marker_is_not_ours(
    workspace: Any, name: str, nonprod_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with nonprod_server.admin() as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    with nonprod_server.admin(name) as conn:
        conn.execute("create table theirs (v text)")
        conn.execute("insert into theirs values ('not yours')")
    before = databases(nonprod_server)
    for action in ("create", "reset", "drop"):
        args = ["--workspace", str(workspace.path), "clone", action]
        code, _, err = run_cli(args, capsys)
        assert code == 3, (action, err)
        assert "marker" in err
    assert databases(nonprod_server) == before
    with nonprod_server.admin(name) as conn:
        assert conn.execute("select v from theirs").fetchall() == [("not yours",)]
    result = clone.verify(Ws(workspace.config(), workspace.evidence()))
    assert not result.ok and failing(result) == {"marker"}


def test_a_golden_copy_is_not_a_clone(
    make_workspace: Any, one_roof: str, name: str, nonprod_server: Any
) -> None:
    """A pattern that also admits the golden copy's name still cannot aim at it."""
    toml = TOML.format(name=name, method="dump").replace(
        "^[a-z0-9_]+_(clone|nonprod)$", "^[a-z0-9_]+_(clone|nonprod|golden)$"
    )
    workspace = make_workspace(one_roof, toml)
    cfg = workspace.config()
    evidence = workspace.evidence()
    clone.create(Ws(cfg, evidence))
    before = databases(nonprod_server)
    for action in (clone.create, clone.reset, clone.drop):
        with pytest.raises(ForbiddenAction, match="golden"):
            action(Ws(cfg, evidence), golden_name(name))
    assert databases(nonprod_server) == before
    assert not clone.verify(Ws(cfg, evidence), golden_name(name)).ok


def test_golden_names_fit_in_63_bytes_and_stay_distinct() -> None:
    assert golden_name("app_clone") == "app_clone_golden"
    long_a = "a" * 57 + "_clone"
    long_b = "a" * 56 + "b_clone"
    assert len(long_a) == 63
    for value in (long_a, long_b, "x" * 50 + "_clone"):
        assert len(golden_name(value).encode()) <= 63
        assert golden_name(value).endswith("_golden")
    assert golden_name(long_a) != golden_name(long_b)


# -- method template ----------------------------------------------------------------------------


def test_template_method_on_the_production_server(
    make_workspace: Any,
    one_roof: str,
    prod_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = clone_name()
    toml = TOML.format(name=name, method="template")
    # a template copy lives on production's own cluster: only when the workspace accepts it
    toml = toml.replace(
        'method = "template"\n', 'method = "template"\nallow_production_cluster = true\n'
    )
    workspace = make_workspace(one_roof, toml)
    monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", prod_server.dsn("postgres"))
    cfg = workspace.config()
    evidence = workspace.evidence()
    try:
        info = clone.create(Ws(cfg, evidence))
        assert info.marker["method"] == "template"
        result = clone.verify(Ws(cfg, evidence))
        assert result.ok, result.reasons
        assert any("TEMPLATE" in (r.sql or "") for r in evidence.records("audit"))
        clone.drop(Ws(cfg, evidence))

        # production in use: the copy is refused, and the message points to dump
        before = databases(prod_server)
        with prod_server.admin(one_roof) as app:
            app.execute("select 1")
            code, _, err = run_cli(["--workspace", str(workspace.path), "clone", "create"], capsys)
        assert code == 3
        assert "other session" in err and "dump" in err
        assert databases(prod_server) == before
    finally:
        remove_clone(prod_server, name)


def test_template_method_needs_the_same_server(workspace: Any, name: str) -> None:
    text = (workspace.path / "oneroof.toml").read_text().replace('"dump"', '"template"')
    (workspace.path / "oneroof.toml").write_text(text)
    with pytest.raises(BadInput, match="dump"):
        clone.create(Ws(workspace.config(), workspace.evidence()))


# -- interrupted creates (the killed-process version is in test_clone_slow.py) ------------------


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the clean-up of a failed create."""


def test_an_interrupted_create_is_refused_by_verify_and_rebuilt(
    workspace: Any, name: str, nonprod_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(clone.creation, "_abandon", lambda *args, **kwargs: None)
        patch.setattr(clone.creation, "_restore", crash)
        clone.create(Ws(cfg, evidence))
    assert clone.read_marker(Ws(cfg))["state"] == "creating"  # type: ignore[index]
    result = clone.verify(Ws(cfg, evidence))
    assert failing(result) == {"marker"} and "creating" in point(result, "marker").detail
    info = clone.create(Ws(cfg, evidence))
    assert info.recovered == [f"{name}: interrupted create (state 'creating')"]
    assert clone.verify(Ws(cfg, evidence)).ok


def test_a_create_interrupted_while_making_the_golden_copy_is_rebuilt(
    workspace: Any, name: str, nonprod_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    real = clone._write_marker

    def crash_on_golden(server: Any, database: str, marker: Any) -> None:
        if marker.get("role") == "golden":
            raise Crash  # the golden copy exists, its marker is not written yet
        real(server, database, marker)

    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(clone.creation, "_abandon", lambda *args, **kwargs: None)
        patch.setattr(clone.creation, "_write_marker", crash_on_golden)
        clone.create(Ws(cfg, evidence))
    assert databases(nonprod_server)[golden_name(name)] is None  # unmarked
    assert not clone.verify(Ws(cfg, evidence)).ok
    info = clone.create(Ws(cfg, evidence))
    assert len(info.recovered) == 2
    assert clone.verify(Ws(cfg, evidence)).ok
    entries = {e.name: e for e in clone.list_clones(Ws(cfg))}
    assert entries[golden_name(name)].role == "golden"


def test_an_unmarked_leftover_is_ours_only_when_our_journal_says_so(
    workspace: Any, name: str, nonprod_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill between CREATE DATABASE and its first COMMENT leaves an unmarked database."""
    cfg = workspace.config()
    evidence = workspace.evidence()
    with nonprod_server.admin() as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    args = ["--workspace", str(workspace.path), "clone", "create"]
    code, _, err = run_cli(args, capsys)
    assert code == 3 and "no oneroof marker" in err
    with connect.open_server(cfg) as server:
        clone._journal(evidence, "create-started", name, server, method="dump")
    info = clone.create(Ws(cfg, evidence))
    assert info.recovered == [f"{name}: unmarked leftover of an interrupted create"]
    assert clone.verify(Ws(cfg, evidence)).ok


def test_a_server_newer_than_pg_dump_is_refused_before_anything_changes(
    workspace: Any, nonprod_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oneroof import dump

    monkeypatch.setattr(dump, "client_major", lambda *args, **kwargs: 12)
    before = databases(nonprod_server)
    with pytest.raises(BadInput, match="newer than the client"):
        clone.create(Ws(workspace.config(), workspace.evidence()))
    assert databases(nonprod_server) == before


def test_a_non_production_server_that_is_production_is_refused(
    make_workspace: Any,
    one_roof: str,
    prod_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = clone_name()
    workspace = make_workspace(one_roof, TOML.format(name=name, method="dump"))
    monkeypatch.setenv("ONEROOF_TEST_NONPROD_DSN", prod_server.dsn("postgres"))
    before = databases(prod_server)
    for command in (["doctor"], ["clone", "create"], ["clone", "verify"]):
        code, _, err = run_cli(["--workspace", str(workspace.path), *command], capsys)
        assert code == 3, (command, err)
        assert "production's own cluster" in err and "allow_production_cluster" in err
    assert databases(prod_server) == before


def test_sql_on_the_clone_rolls_back_unless_commit(
    workspace: Any, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = workspace.config()
    clone.create(Ws(cfg, workspace.evidence()))
    base = ["--workspace", str(workspace.path), "sql", "clone"]
    update = "update core.objects set name = name || '!' where id <= 3"

    code, _, err = run_cli([*base, update], capsys)
    assert code == 0
    assert "UPDATE 3: rolled back, 3 row(s) changed and none kept" in " ".join(err.split())
    assert clone.verify(Ws(cfg, workspace.evidence())).ok  # nothing was kept

    # a write hidden behind a SELECT is seen from the transaction id, and rolled back too
    hidden = "with w as (update core.objects set name = 'x' returning 1) select count(*) from w"
    code, out, _ = run_cli([*base, "--json", hidden], capsys)
    document = json.loads(out)
    assert code == 0 and document["wrote"] is True and document["committed"] is False
    code, out, _ = run_cli([*base, "--json", "select count(*) from core.objects"], capsys)
    assert json.loads(out)["wrote"] is False

    # a rolled-back insert still moves the identity's sequence: said, not hidden
    insert = "insert into ops.job_leases values ('job:x', 'me', now())"
    code, _, err = run_cli([*base, insert], capsys)
    assert code == 0 and "rolled back" in err and "never rolls a sequence back" not in err
    code, out, _ = run_cli([*base, "--json", "select nextval('core.objects_id_seq')"], capsys)
    assert json.loads(out)["sequences_advanced"] == ["core.objects_id_seq"]
    assert "never rolls a sequence back" in json.loads(out)["summary"]
    clone.reset(Ws(cfg, workspace.evidence()))

    code, _, err = run_cli([*base, "vacuum core.objects"], capsys)
    assert code == 2 and "cannot be rolled back" in err and "--commit" in err

    code, _, err = run_cli([*base, "--commit", update], capsys)
    text = " ".join(err.split())
    assert code == 0 and "committed, 3 row(s) changed" in text
    assert "differs from its golden copy" in text and "oneroof clone reset" in text
    assert not clone.verify(Ws(cfg, workspace.evidence())).ok
    recorded = workspace.evidence().records("clone_sql")
    assert recorded and recorded[-1].sql == update and recorded[-1].payload["rowcount"] == 3
    clone.reset(Ws(cfg, workspace.evidence()))
    assert clone.verify(Ws(cfg, workspace.evidence())).ok

    production = ["--workspace", str(workspace.path), "sql", "production", "--commit", "select 1"]
    code, _, err = run_cli(production, capsys)
    assert code == 2 and "production is only read" in err
