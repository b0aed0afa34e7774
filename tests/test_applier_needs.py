"""The privileges an artifact needs, read from its statements by the parser (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oneroof.rollout import applier
from oneroof.rollout.artifact import parse_artifact


def _needs(tmp_path: Path, body: str, counters: dict[str, str] | None = None) -> set[str]:
    file = tmp_path / "01_a.sql"
    file.write_text(f"-- artifact: A_01\n-- gate: true\n{body}\n")
    artifact = parse_artifact(file, counters or {})
    found, unread = applier.needs([artifact], counters or {})
    return {n.describe().rsplit(" (", 1)[0] for n in found} | {f"unread {u}" for u in unread}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "insert into app.t (a) select b from app.s;",
            {
                "INSERT on app.t",
                "USAGE on the sequences of app.t's column defaults",
                "SELECT on app.s",
                "USAGE on schema app",
            },
        ),
        (
            "insert into t values (1) on conflict (a) do update set b = 2;",
            {"INSERT on t", "UPDATE on t", "USAGE on the sequences of t's column defaults"},
        ),
        (
            "insert into t values (1) on conflict do nothing;",
            {"INSERT on t", "USAGE on the sequences of t's column defaults"},
        ),
        ("update t set a = 1 where b in (select c from u);", {"UPDATE on t", "SELECT on u"}),
        ("delete from t using u where t.a = u.a;", {"DELETE on t", "SELECT on u"}),
        ("truncate a, b;", {"TRUNCATE on a", "SELECT on a", "TRUNCATE on b", "SELECT on b"}),
        (
            "merge into t using s on t.a = s.a when matched then delete"
            " when not matched then insert values (s.a);",
            {
                "DELETE on t",
                "INSERT on t",
                "USAGE on the sequences of t's column defaults",
                "SELECT on s",
            },
        ),
        (
            'alter table "Mixed".t add column x int;',
            {'ownership of "Mixed".t', "USAGE on schema Mixed"},
        ),
        (
            "create index on s.t (a);",
            {"ownership of s.t", "CREATE on the schema of s.t", "USAGE on schema s"},
        ),
        ("drop table s.t;", {"ownership of s.t", "USAGE on schema s"}),
        ("create table s.n (a int);", {"CREATE on schema s", "USAGE on schema s"}),
        ("create table n as select * from t;", {"CREATE on the current schema", "SELECT on t"}),
        # a CTE is read by name: SELECT of no table is not asked for as a missing object
        (
            "with c as (select 1 as a) insert into t select a from c;",
            {"INSERT on t", "USAGE on the sequences of t's column defaults", "SELECT on c"},
        ),
        ("do $$ begin perform 1; end $$;", {"unread 01_a.sql:3 (DoStmt)"}),
        ("call app.p();", {"unread 01_a.sql:3 (CallStmt)"}),
    ],
)
def test_each_statement_names_what_it_needs(tmp_path: Path, body: str, expected: set[str]) -> None:
    assert _needs(tmp_path, body) == expected


def test_the_counters_an_artifact_reads_are_read_by_the_applier(tmp_path: Path) -> None:
    counters = {"n": "select count(*) from app.items"}
    file = tmp_path / "01_a.sql"
    file.write_text(
        "-- artifact: A_01\n-- gate: n >= 0\n-- expect-delta: app.t +n\n"
        "insert into app.t values (1);\n"
    )
    artifact = parse_artifact(file, counters)
    found, _ = applier.needs([artifact], counters)
    assert "SELECT on app.items (01_a.sql: counter n)" in {n.describe() for n in found}


def test_the_ledger_needs_only_what_its_state_requires() -> None:
    rows = [
        ("table", "oneroof.rollout_ledger", "INSERT", None),
        ("table", "oneroof.rollout_ledger", "SELECT", None),
        ("schema", "oneroof", "USAGE", None),
        ("schema", "oneroof", "CREATE", None),
        ("database", "", "CREATE", False),
    ]
    judged = applier.judge("app", rows, [], "oneroof", [])
    assert judged.ledger == "to be created"
    assert [n.describe() for n in judged.missing] == ["CREATE on the database (ledger)"]
    made = [
        ("table", "oneroof.rollout_ledger", "INSERT", True),
        ("table", "oneroof.rollout_ledger", "SELECT", True),
        ("schema", "oneroof", "USAGE", True),
        ("schema", "oneroof", "CREATE", False),
        ("database", "", "CREATE", False),
    ]
    judged = applier.judge("app", made, [], "oneroof", [])
    assert judged.ledger == "exists" and judged.ok
