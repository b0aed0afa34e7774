"""Fingerprints on real servers: stable, restore-proof, and sensitive to any single change."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from oneroof import connect, fingerprint
from oneroof.embedded import bin_dir

SCHEMA = """
create table item(id int primary key, price numeric, note text default 'n', tags jsonb);
create table nokey(a int, b text);
create table measure(at date not null, value float8) partition by range (at);
create table measure_2025 partition of measure for values from ('2025-01-01') to ('2026-01-01');
create table measure_2026 partition of measure for values from ('2026-01-01') to ('2027-01-01');
create sequence counter_seq;
create function touch() returns trigger language plpgsql as $$ begin return new; end $$;
create trigger item_touch before update on item for each row execute function touch();
create view cheap as select id from item where price < 10;
create role fp_reader;
insert into item
  select g, g / 4.0, 'note ' || g, jsonb_build_object('g', g) from generate_series(1, 200) g;
insert into nokey values (1, 'x'), (1, 'x'), (2, null);
insert into measure values ('2025-03-01', 1.5), ('2026-03-01', 2.5);
select nextval('counter_seq');
"""


@pytest.fixture
def database(prod_server, prod_db) -> str:
    with prod_server.admin(prod_db) as conn:
        conn.execute("drop role if exists fp_reader")
        conn.execute(SCHEMA)
    return prod_db


@pytest.fixture
def take(make_workspace, database) -> Callable[..., fingerprint.Fingerprint]:
    workspace = make_workspace(database)

    def run(mode: str = "full", jobs: int = 1) -> fingerprint.Fingerprint:
        cfg = workspace.config()
        evidence = workspace.evidence()
        with connect.open_production(cfg, evidence) as session:
            return fingerprint.take(
                session,
                mode=mode,
                jobs=jobs,
                open_session=lambda: connect.open_production(cfg, evidence),
            )

    return run


def test_same_database_twice_gives_the_same_id(take) -> None:
    first = take()
    assert take().id == first.id
    assert take(jobs=3).id == first.id
    assert set(first.sections["counts"]) >= {"public.item", "public.measure_2025"}
    assert first.sections["counts"]["public.nokey"] == 3


def test_restored_dump_elsewhere_gives_the_same_id(
    take, prod_server, nonprod_server, database, make_workspace
) -> None:
    original = take()
    target = nonprod_server.create_database("restored")
    try:
        with nonprod_server.admin() as conn:
            conn.execute("drop role if exists fp_reader")
            conn.execute("create role fp_reader")
        dump = subprocess.run(
            [str(bin_dir() / "pg_dump"), "-Fc", "-d", prod_server.dsn(database)],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            [str(bin_dir() / "pg_restore"), "--exit-on-error", "-d", nonprod_server.dsn(target)],
            input=dump,
            check=True,
            capture_output=True,
        )
        workspace = make_workspace(target)
        import os

        os.environ["ONEROOF_TEST_PROD_DSN"] = nonprod_server.reader_dsn(target)
        cfg = workspace.config()
        with connect.open_production(cfg, workspace.evidence()) as session:
            restored = fingerprint.take(session)
        assert fingerprint.diff(original, restored) == []
        assert restored.id == original.id
        assert restored.identity["database"] != original.identity["database"]
    finally:
        nonprod_server.drop_database(target)


CHANGES = [
    ("update item set note = 'changed' where id = 7", "content", "public.item"),
    ("insert into item values (999, 1, 'new', null)", "counts", "public.item"),
    ("delete from item where id = 3", "counts", "public.item"),
    ("update item set price = 1.0 where id = 4", None, None),  # setup for the next one
    ("insert into nokey values (1, 'x')", "counts", "public.nokey"),
    ("update measure set value = 9 where at = '2026-03-01'", "content", "public.measure_2026"),
    ("alter table item alter column note set default 'm'", "schema", "column public.item.note"),
    ("alter table item disable trigger item_touch", "schema", "trigger public.item.item_touch"),
    ("grant select on item to fp_reader", "schema", "relation public.item"),
    ("select nextval('counter_seq')", "sequences", "public.counter_seq"),
    ("create index on nokey(a)", "schema", "index public.nokey_a_idx"),
    (
        "create or replace view cheap as select id from item where price < 11",
        "schema",
        "relation public.cheap",
    ),
]


@pytest.mark.parametrize(("change", "section", "key"), [c for c in CHANGES if c[1]])
def test_any_single_change_changes_the_id_and_diff_names_it(
    take, prod_server, database, change: str, section: str, key: str
) -> None:
    before = take()
    with prod_server.admin(database) as conn:
        conn.execute(change)
    after = take()
    assert after.id != before.id
    differences = fingerprint.diff(before, after)
    assert (section, key) in {(d.section, d.key) for d in differences}, differences
    # nothing else is reported for a change confined to one table's rows
    if section in ("content", "counts"):
        assert {d.key for d in differences} == {key}


def test_numeric_scale_is_a_change(take, prod_server, database) -> None:
    with prod_server.admin(database) as conn:
        conn.execute("update item set price = 1.0 where id = 4")
    before = take()
    with prod_server.admin(database) as conn:
        conn.execute("update item set price = 1.00 where id = 4")
    after = take()
    assert after.id != before.id
    assert [d.key for d in fingerprint.diff(before, after)] == ["public.item"]


CANDIDATES = [
    "1",
    "t",
    "2020-01-02",
    "2020-01-02 03:04:05",
    "03:04:05",
    "1 day",
    "a",
    "{}",
    "[]",
    '{"a":1}',
    "<a/>",
    "(1,2)",
    "((1,2),(3,4))",
    "<(1,2),3>",
    "[1,2)",
    "{[1,2)}",
    "aa",
    "00:00:00:00:00:00",
    "00:00:00:00:00:00:00:00",
    "127.0.0.1",
    "10.0.0.0/8",
    "00000000-0000-0000-0000-000000000001",
    "1/0",
    "0/0",
    "'a':1",
    "a & b",
    "$.a",
    "{1,2}",
    "1:1:",
    "(0,1)",
    "{1,2,3}",
    "1 2",
    "101",
    "(1,1)",
]


def test_every_builtin_type_fingerprints(prod_server, database, take) -> None:
    with prod_server.admin(database) as conn:
        types = [
            row[0]
            for row in conn.execute(
                "select format_type(t.oid, null) from pg_type t"
                " where t.typnamespace = 'pg_catalog'::regnamespace and t.typisdefined"
                " and t.typtype in ('b', 'r', 'm', 'e') and t.typcategory <> 'P'"
                " and t.typname !~ '^(pg_|_)' and t.typelem = 0 and t.typrelid = 0"
                " and t.typname not in ('unknown', 'cstring', 'internal', 'aclitem',"
                "  'refcursor', 'gtsvector', 'regnamespace', 'regrole', 'regcollation',"
                "  'txid_snapshot', 'int2vector', 'oidvector')"
                " order by 1"
            )
        ]
        usable: list[tuple[str, str]] = []
        for type_name in types:
            for literal in CANDIDATES:
                try:
                    with conn.transaction():
                        conn.execute(f"select %s::text::{type_name}", (literal,))
                    usable.append((type_name, literal))
                    break
                except psycopg.Error:
                    continue
        missing = sorted(set(types) - {t for t, _ in usable})
        assert len(usable) >= 50 and len(missing) <= 12, missing
        columns = ", ".join(f"c{i} {t}" for i, (t, _) in enumerate(usable))
        conn.execute(f"create table everything(id int, {columns})")
        values = ", ".join(f"%s::text::{t}" for t, _ in usable)
        conn.execute(f"insert into everything values (1, {values})", [v for _, v in usable])
        conn.execute("insert into everything(id) values (2)")  # all NULLs
    first = take()
    assert take().id == first.id
    assert first.sections["counts"]["public.everything"] == 2
    # every column counts: a value of any type turned NULL changes the table's content hash,
    # and putting it back gives the first fingerprint again
    blind = []
    with prod_server.admin(database) as conn:
        for index, (type_name, literal) in enumerate(usable):
            conn.execute(f"update everything set c{index} = null where id = 1")
            if take().table_content("public.everything") == first.table_content(
                "public.everything"
            ):
                blind.append(type_name)
            conn.execute(
                f"update everything set c{index} = %s::text::{type_name} where id = 1", (literal,)
            )
    assert blind == [], f"the content hash does not see a change of {blind}"
    assert take().id == first.id


def test_catalog_mode_has_schema_only(take) -> None:
    catalog = take("catalog")
    assert set(catalog.sections) == {"schema"}
    counts = take("counts")
    assert "content" not in counts.sections and "counts" in counts.sections


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def test_wal_position_is_recorded_and_advances_with_a_write(take, prod_server, database) -> None:
    """Equal positions prove no write; the server may still log a little on its own
    (running-xacts records), so only the write case is asserted strictly."""
    first = take()
    assert first.wal is not None
    with prod_server.admin(database) as conn:
        conn.execute("insert into nokey select g, 'w' from generate_series(1, 100) g")
    second = take()
    assert second.wal is not None
    assert _lsn(second.wal) > _lsn(first.wal)


def test_fingerprint_runs_on_production_only_through_the_guard(
    make_workspace, database, prod_server
) -> None:
    workspace = make_workspace(database)
    cfg = workspace.config()
    evidence = workspace.evidence()
    with prod_server.admin() as conn:
        conn.execute(
            sql.SQL("alter database {} set log_statement = 'all'").format(sql.Identifier(database))
        )
    log = prod_server.log_path
    offset = log.stat().st_size if log is not None else 0
    with connect.open_production(cfg, evidence) as session:
        fingerprint.take(session)
    records = evidence.records("audit")
    assert "refused" not in {r.outcome for r in records}
    assert evidence.verify() == []
    if log is None:
        pytest.skip("an external test server: its statement log is not readable here")
    # every statement the server received from the session was audited before it was sent
    audited = {" ".join((r.sql or "").split()) for r in records}
    text = log.read_bytes()[offset:].decode(errors="replace")
    received = [
        " ".join(m.group(1).split())
        for m in re.finditer(r"LOG:  statement: (.*?)(?=\n\S|\Z)", text, re.S)
    ]
    assert len(received) > 10
    assert [q for q in received if q not in audited] == []


TRICKY = [
    # the same column sums, different rows: a per-column sum would call these equal
    ("(1, 2), (2, 1)", "(1, 1), (2, 2)"),
    ("(1, null)", "(null, 1)"),
    ("(0, 0)", "(null, null)"),
    ("(1, 2), (1, 2)", "(1, 2)"),  # a duplicate row counts
    ("(1, 2), (1, 2), (3, 4)", "(1, 2), (3, 4), (3, 4)"),
]


@pytest.mark.parametrize(("left", "right"), TRICKY)
def test_content_hash_tells_apart_rows_that_share_column_sums(
    make_workspace, prod_server, prod_db, left: str, right: str
) -> None:
    with prod_server.admin(prod_db) as conn:
        for name, rows in (("l", left), ("r", right)):
            conn.execute(f"create table {name}(a int, b bigint, t text, n numeric)")
            conn.execute(f"insert into {name}(a, b) values {rows}")
    workspace = make_workspace(prod_db)
    with connect.open_production(workspace.config(), workspace.evidence()) as session:
        fp = fingerprint.take(session)
    assert fp.sections["content"]["public.l"] != fp.sections["content"]["public.r"]
