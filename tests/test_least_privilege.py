"""The production role: least privilege by default, each excess named with its fix.

A READ ONLY transaction stops none of signals, slots, file and program access: the role's
privileges do. A production session refuses a role that may do more than read, unless the
workspace opts in; the reader that docs/safety.md creates passes every read command.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from fix_pg import READER
from oneroof import cli, connect, roles
from oneroof.errors import ForbiddenAction

DOCS = Path(__file__).resolve().parent.parent / "docs" / "safety.md"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture
def production(prod_server: Any, prod_db: str) -> str:
    with prod_server.admin(prod_db) as conn:
        conn.execute("create table orders (id int primary key, total numeric)")
        conn.execute("insert into orders select g, g * 1.5 from generate_series(1, 20) g")
        conn.execute("create sequence order_seq")
        conn.execute("create view big_orders as select * from orders where total > 10")
    return prod_db


@pytest.fixture
def role(prod_server: Any) -> Iterator[str]:
    """A fresh login role, dropped afterwards with everything granted to it."""
    name = f"lp_{uuid.uuid4().hex[:8]}"
    with prod_server.admin() as conn:
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(name)))
        conn.execute(sql.SQL("grant pg_read_all_data to {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with prod_server.admin() as conn:
            for database in conn.execute("select datname from pg_database where datallowconn"):
                with prod_server.admin(database[0]) as db:
                    db.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(name)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def _as(prod_server: Any, database: str, user: str) -> str:
    import psycopg.conninfo

    return psycopg.conninfo.make_conninfo(prod_server.dsn(database), user=user)


def test_a_superuser_is_refused_by_default_naming_each_privilege_and_its_fix(
    make_workspace: Any, production: str, prod_server: Any, monkeypatch: Any, capsys: Any
) -> None:
    workspace = make_workspace(production)
    monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", prod_server.dsn(production))
    for command in (["sql", "production", "select 1"], ["doctor"], ["gates"]):
        code, _out, err = run_cli(["--workspace", str(workspace.path), *command], capsys)
        assert code == 3, (command, err)
        assert "superuser (fix: ALTER ROLE postgres NOSUPERUSER)" in err
        assert "replication (fix: ALTER ROLE postgres NOREPLICATION)" in err
        assert "allow_privileged_role" in err and "Traceback" not in err
        assert err.count("\n") == 1, err
    refused = [r for r in workspace.evidence().records("audit") if r.outcome == "refused"]
    assert refused and refused[-1].sql == "-- privileged role refused"
    assert any("superuser" in e for e in refused[-1].payload["excess"])


@pytest.mark.parametrize(
    ("grant", "named", "fix"),
    [
        ("alter role {role} replication", "replication", "ALTER ROLE {role} NOREPLICATION"),
        ("alter role {role} bypassrls", "bypassrls", "ALTER ROLE {role} NOBYPASSRLS"),
        ("alter role {role} createrole", "createrole", "ALTER ROLE {role} NOCREATEROLE"),
        ("alter role {role} createdb", "createdb", "ALTER ROLE {role} NOCREATEDB"),
        ("grant pg_signal_backend to {role}", "member of pg_signal_backend", "REVOKE"),
        ("grant pg_read_server_files to {role}", "member of pg_read_server_files", "REVOKE"),
        ("grant pg_write_server_files to {role}", "member of pg_write_server_files", "REVOKE"),
        (
            "grant pg_execute_server_program to {role}",
            "member of pg_execute_server_program",
            "REVOKE pg_execute_server_program FROM {role}",
        ),
        ("grant pg_checkpoint to {role}", "member of pg_checkpoint", "REVOKE"),
        ("grant pg_maintain to {role}", "member of pg_maintain", "REVOKE"),
        ("grant pg_create_subscription to {role}", "member of pg_create_subscription", "REVOKE"),
        ("grant pg_write_all_data to {role}", "member of pg_write_all_data", "REVOKE"),
        ("grant insert on orders to {role}", "INSERT on 1 relation (public.orders)", "REVOKE"),
        ("grant update (total) on orders to {role}", "UPDATE on 1 relation", "REVOKE UPDATE"),
        ("grant delete, truncate on orders to {role}", "DELETE, TRUNCATE on 1 relation", ""),
        ("grant update on order_seq to {role}", "UPDATE on 1 relation (public.order_seq)", ""),
        ("alter table orders owner to {role}", "owns 1 of them", "use a role that owns no"),
    ],
)
def test_each_excess_privilege_is_refused_with_its_fix(
    make_workspace: Any,
    production: str,
    prod_server: Any,
    role: str,
    monkeypatch: Any,
    grant: str,
    named: str,
    fix: str,
) -> None:
    with prod_server.admin(production) as conn:
        conn.execute(grant.format(role=role))
    workspace = make_workspace(production)
    monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", _as(prod_server, production, role))
    with pytest.raises(ForbiddenAction) as refused:
        connect.open_production(workspace.config(), workspace.evidence())
    message = str(refused.value)
    assert named in message
    assert fix.format(role=role) in message


def test_a_privilege_held_through_another_role_is_found(
    make_workspace: Any, production: str, prod_server: Any, role: str, monkeypatch: Any
) -> None:
    group = f"{role}_ops"
    with prod_server.admin(production) as conn:
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(group)))
        conn.execute(sql.SQL("grant pg_signal_backend to {}").format(sql.Identifier(group)))
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(group), sql.Identifier(role)))
    try:
        workspace = make_workspace(production)
        monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", _as(prod_server, production, role))
        with pytest.raises(ForbiddenAction, match="member of pg_signal_backend"):
            connect.open_production(workspace.config(), workspace.evidence())
    finally:
        with prod_server.admin(production) as conn:
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(group)))


def test_allow_privileged_role_is_stated_in_doctor_and_the_audit_log(
    make_workspace: Any, production: str, prod_server: Any, monkeypatch: Any, capsys: Any
) -> None:
    workspace = make_workspace(production)
    toml = (workspace.path / "oneroof.toml").read_text()
    workspace.write(toml.replace("[guard]\n", "[guard]\nallow_privileged_role = true\n"))
    monkeypatch.setenv("ONEROOF_TEST_PROD_DSN", prod_server.dsn(production))
    code, out, err = run_cli(["--workspace", str(workspace.path), "doctor", "--json"], capsys)
    assert code == 0, err
    import json

    role_facts = json.loads(out)["production_role"]
    assert role_facts["least_privilege"] is False
    assert role_facts["privileged_role_allowed"].startswith("yes")
    assert "superuser" in role_facts["privileged_role_allowed"]
    allowed = [
        r for r in workspace.evidence().records("audit") if r.sql and "privileged role" in r.sql
    ]
    assert allowed and "allowed by [guard] allow_privileged_role" in allowed[-1].sql


def test_the_reader_of_the_docs_passes_doctor_and_every_read_command(
    make_workspace: Any, production: str, capsys: Any, tmp_path: Path
) -> None:
    workspace = make_workspace(production)
    (workspace.path / "checks").mkdir()
    (workspace.path / "checks" / "orders.sql").write_text(
        "-- check: orders exist\n-- expect: rows=20\nselect id from orders;\n"
        "-- check: big orders\n-- expect: true\nselect count(*) > 0 from big_orders;\n"
    )
    ws = ["--workspace", str(workspace.path)]
    code, out, err = run_cli([*ws, "doctor", "--json"], capsys)
    assert code == 0, err
    assert '"least_privilege": true' in out and f'"user": "{READER}"' in out
    for command in (
        ["sql", "production", "select count(*), sum(total) from orders", "--json"],
        ["sql", "production", "select * from big_orders order by id limit 3"],
        ["fingerprint", "production", "--mode", "full", "--json"],
        ["check", str(workspace.path / "checks"), "--target", "production", "--json"],
        ["gates", "--json"],
        ["audit", "verify"],
    ):
        code, out, err = run_cli([*ws, *command], capsys)
        assert code == 0, (command, err)


def test_docs_show_the_reader_sql_that_the_demo_and_the_fixtures_run() -> None:
    text = DOCS.read_text()
    assert roles.reader_sql(roles.READER_ROLE, "app") in text


# -- the decision, without a database ---------------------------------------------------------


def _rows(*role_rows: tuple[str, bool, list[str]], writes: dict[str, Any] | None = None) -> Any:
    rows: list[tuple[Any, ...]] = [("role", n, s, f, 0, 0) for n, s, f in role_rows]
    for privilege, (count, owned, examples) in (writes or {}).items():
        rows.append(("write", privilege, False, examples, count, owned))
    return roles.RolePrivileges.from_rows(rows)


def test_a_plain_reader_has_no_excess() -> None:
    privileges = _rows(("reader", True, []), ("pg_read_all_data", False, []))
    assert roles.excess(privileges) == []


def test_excess_names_attributes_of_groups_and_groups_writes_together() -> None:
    privileges = _rows(
        ("Reader", True, []),
        ("admins", False, ["superuser"]),
        ("pg_signal_backend", False, []),
        writes={
            "INSERT": (3, 0, ["app.a", "app.b", "app.c"]),
            "UPDATE": (3, 0, ["app.a", "app.b", "app.c"]),
            "DELETE": (1, 0, ["app.a"]),
        },
    )
    found = [e.describe() for e in roles.excess(privileges)]
    assert found[0] == 'superuser through membership in admins (fix: REVOKE admins FROM "Reader")'
    assert 'member of pg_signal_backend (fix: REVOKE pg_signal_backend FROM "Reader")' in found
    assert any(
        re.match(r"INSERT, UPDATE on 3 relations \(app.a, app.b, app.c\) \(fix: REVOKE INSERT", f)
        for f in found
    )
    assert any(f.startswith("DELETE on 1 relation (app.a)") for f in found)
