"""Properties of the guard, checked with generated SQL.

Against a real server: anything the guard allows on production — SQL generated from a small
grammar mixing safe and unsafe functions, row locks, writable CTEs, INTO, DML, DDL and
utility statements, comments and `;` — is one statement, and executes inside
`BEGIN READ ONLY` without a read-only violation (SQLSTATE 25006). Other errors (a type
mismatch, a division by zero) are fine: the claim is only that nothing allowed writes.

Pure: `classify` never raises, whatever the text, and never allows two statements.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pglast
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneroof import config, connect, guard
from oneroof.catalog import (
    FIRST_NORMAL_OID,
    Catalog,
    CatalogRows,
    DependencyRow,
    FunctionRow,
    OperatorRow,
    RelationRow,
    Trust,
    TypeRow,
)
from oneroof.evidence import Evidence

SETUP = [
    "create table gt (id int primary key, v int, note text)",
    "insert into gt select g, g % 7, 'note ' || g from generate_series(1, 20) g",
    "create sequence gt_seq",
    """create function gt_write() returns int volatile language sql as $$
        insert into gt (id, v, note) select coalesce(max(id), 0) + 1, 0, 'w' from gt
        returning id $$""",
    "create function gt_stable() returns int stable language sql as 'select 1'",
    """create function gt_field(gt) returns int volatile language sql as $$
        select gt_write() $$""",
    """create function gt_bool(int, int) returns boolean volatile language sql as $$
        select gt_write() > 0 $$""",
    "create operator ##> (leftarg = int, rightarg = int, function = gt_bool)",
    """create function gt_sfunc(int, int) returns int volatile language sql as $$
        select coalesce($1, 0) + gt_write() $$""",
    "create aggregate gt_agg(int) (sfunc = gt_sfunc, stype = int)",
    "create view gt_view as select gt_write() as w",
    "create view gt_plain_view as select id, v from gt",
    "create view gt_locking_view as select id, v from gt where id = 1 for share",
    """create function gt_check(int) returns boolean volatile language sql as $$
        select gt_write() > 0 $$""",
    "create domain gt_dom as int check (gt_check(value))",
    "create procedure gt_proc() language sql as $$ select gt_write() $$",
    "create materialized view gt_mv as select count(*) as n from gt",
]

SAFE_CALLS = [
    "abs(t.v)",
    "lower(t.note)",
    "length(t.note)",
    "now()",
    "current_setting('work_mem')",
    "random()",
    "pg_catalog.random()",
    "coalesce(t.v, 0)",
    "greatest(t.v, 1)",
    "md5(t.note)",
    "pg_backend_pid()",
    "clock_timestamp()",
    "gen_random_uuid()",
    "pg_relation_size('gt')",
    "to_char(now(), 'YYYY')",
    "(select count(*) from gt)",
    "jsonb_build_object('a', t.v)",
    "sum(t.v)",
    "count(*)",
    "row_number() over (order by t.id)",
    "(select max(w.id) from gt_plain_view w)",
    "t.v::text",
    "upper(t.note)",
    "t.id + 1",
    "round(2.5)",
    "coalesce(t.note, 'x')",
    "array_length(array[t.id], 1)",
]
UNSAFE_CALLS = [
    "nextval('gt_seq')",
    "setval('gt_seq', 5)",
    "pg_notify('gt', 'x')",
    "set_config('work_mem', '1MB', false)",
    "pg_advisory_lock(7)",
    "pg_try_advisory_xact_lock(7)",
    "lo_create(0)",
    "gt_write()",
    "public.gt_write()",
    '"gt_write"()',
    "pg_sleep(0)",
    "txid_current()",
    "pg_stat_reset()",
    "t.v ##> 1",
    "pg_reload_conf()",
    "currval('gt_seq')",
    "lo_import('PG_VERSION')",
    "pg_read_file('PG_VERSION')",
]
# Calls that look like plain reads to a parser that does not ask the catalog enough: a
# function in field notation, an aggregate with a volatile transition function, a view or a
# domain that runs a volatile function, an operator in a sublink.
SUBTLE_CALLS = [
    "gt_stable()",
    "t.gt_field",
    "(t).gt_field",
    "gt_agg(t.v)",
    "t.v::gt_dom",
    "cast(1 as gt_dom)",
    "(select w from gt_view)",
    "(select count(*) from public.gt_view)",
    "(select max(id) from gt_locking_view)",
    "t.v ##> any (select 1)",
]
ATOMS = ["t.id", "t.v", "t.note", "1", "2.5", "'x'", "null", "true", "0"]
OPERATORS = ["+", "-", "*", "/", "=", "<", "<>", "||", "and", "or"]
FROMS = [
    "",
    " from gt t",
    " from gt t join gt u on u.id = t.id",
    " from gt t, lateral (select t.v as lv) l",
    " from gt_plain_view t",
    " from (select * from gt) t",
    " from gt t, gt_view vw",
]
CTES = [
    "with w as (insert into gt (id, v) values (1000, 1) returning id) ",
    "with w as (update gt set v = 0 returning id) ",
    "with w as (delete from gt where id < 0 returning id) ",
    "with c as (select 1 as one) ",
    "with c as (select * from gt for update) ",
    "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3) ",
]
LOCKS = [" for update", " for share", " for no key update", " for key share", " for update of t"]
POOL = [
    "insert into gt (id, v) values (2000, 1)",
    "insert into gt (id, v) values (1, 1) on conflict (id) do update set v = 2",
    "update gt set v = v + 1",
    "delete from gt where id = 1",
    "merge into gt using (select 1 as id) s on gt.id = s.id when matched then delete",
    "create table gt_x (id int)",
    "create temp table gt_tmp (id int)",
    "create table gt_y as select 1 as x",
    "drop table gt",
    "alter table gt add column z int",
    "truncate gt",
    "vacuum gt",
    "analyze gt",
    "lock table gt",
    "set work_mem = '1MB'",
    "set local work_mem = '1MB'",
    "reset all",
    "notify gt",
    "listen gt",
    "begin",
    "commit",
    "set transaction read write",
    "call gt_proc()",
    "do $$ begin perform gt_write(); end $$",
    "copy gt from stdin",
    "copy gt to stdout",
    "copy (select nextval('gt_seq')) to stdout",
    "grant select on gt to public",
    "comment on table gt is 'x'",
    "refresh materialized view gt_mv",
    "select 1",
    "table gt",
    "values (1), (2)",
    "show work_mem",
    "select * from gt_view",
    "prepare gt_p as select 1",
    "execute gt_p",
    "discard all",
    "checkpoint",
    "explain analyze delete from gt",
    "explain select * from gt",
    "select * from gt_mv",
]
COMMENTS = ["", " ", "\n", " /* c; */ ", " -- c;\n", "/* ; delete from gt */"]
SEPARATORS = [";", "; ", ";\n", " ; ", "; -- c\n", "/* x */;"]

calls = st.sampled_from(SAFE_CALLS * 5 + UNSAFE_CALLS + SUBTLE_CALLS * 3)
atoms = st.sampled_from(ATOMS)
expressions = st.recursive(
    st.one_of(atoms, calls),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(OPERATORS), inner).map(
            lambda x: f"({x[0]} {x[1]} {x[2]})"
        ),
        st.tuples(inner, inner).map(lambda x: f"case when {x[0]} is null then {x[1]} end"),
        st.tuples(inner, inner).map(lambda x: f"coalesce({x[0]}, {x[1]})"),
        inner.map(lambda e: f"(select {e} from gt t limit 1)"),
        inner.map(lambda e: f"{e}::text"),
        st.tuples(inner, inner).map(lambda x: f"{x[0]} in (select {x[1]} from gt t)"),
        st.tuples(inner, inner).map(lambda x: f"exists (select 1 from gt t where {x[0]} = {x[1]})"),
    ),
    max_leaves=5,
)


@st.composite
def selects(draw: st.DrawFn) -> str:
    columns = draw(st.lists(expressions, min_size=1, max_size=3))
    sql = "select " + ", ".join(columns)
    if draw(st.integers(0, 9)) == 0:
        sql += " into gt_new"
    sql += draw(st.sampled_from(FROMS))
    if draw(st.booleans()):
        sql += " where " + draw(expressions)
    if draw(st.booleans()):
        sql += " order by 1"
    if draw(st.integers(0, 5)) == 0:
        sql += draw(st.sampled_from(LOCKS))
    if draw(st.integers(0, 4)) == 0:
        sql = draw(st.sampled_from(CTES)) + sql
    if draw(st.integers(0, 6)) == 0:
        sql = draw(st.sampled_from(["explain ", "explain analyze ", "explain (analyze) "])) + sql
    return sql


statements = st.one_of(selects(), selects(), st.sampled_from(POOL))


@st.composite
def programs(draw: st.DrawFn) -> str:
    """One to three statements, joined by `;`, with comments around."""
    parts = draw(st.lists(statements, min_size=1, max_size=3))
    if draw(st.integers(0, 3)) > 0:  # mostly single statements: the interesting ones
        parts = parts[:1]
    text = draw(st.sampled_from(COMMENTS)) + parts[0]
    for part in parts[1:]:
        text += draw(st.sampled_from(SEPARATORS)) + draw(st.sampled_from(COMMENTS)) + part
    if draw(st.booleans()):
        text += draw(st.sampled_from([";", " ", " -- trailing", ";\n"]))
    return text


@dataclass
class Target:
    dsn: str
    catalog: Catalog


@pytest.fixture(scope="module")
def target(prod_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    database = prod_server.create_database("guard_props")
    try:
        with prod_server.admin(database) as conn:
            for statement in SETUP:
                conn.execute(statement)
        workspace = tmp_path_factory.mktemp("guard-props")
        (workspace / "oneroof.toml").write_text(
            textwrap.dedent(
                f"""\
                [production]
                dsn = "{prod_server.dsn(database)}"
                [guard]
                allow_privileged_role = true
                """
            )
        )
        cfg = config.load(workspace)
        evidence = Evidence(cfg.evidence_path)
        with connect.open_production(cfg, evidence) as session:
            assert session.catalog is not None
            catalog = session.catalog
        evidence.close()
        yield Target(prod_server.dsn(database), catalog)
    finally:
        prod_server.drop_database(database)


def _execute_read_only(conn: psycopg.Connection[Any], sql: str) -> str | None:
    """Run `sql` in a READ ONLY transaction, rolled back; the SQLSTATE of its error, if any."""
    conn.execute("begin read only")
    try:
        statement = pglast.parse_sql(sql)[0].stmt
        if isinstance(statement, pglast.ast.CopyStmt):
            with conn.cursor().copy(sql) as copy:
                for _ in copy:
                    pass
        else:
            conn.execute(sql)
        return None
    except psycopg.Error as exc:
        return exc.sqlstate or type(exc).__name__
    finally:
        conn.execute("rollback")


def test_whatever_the_guard_allows_runs_read_only_without_a_write(target: Target) -> None:
    seen = {"allowed": 0, "refused": 0}
    conn = psycopg.connect(
        target.dsn, autocommit=True, prepare_threshold=None, options="-c statement_timeout=5s"
    )

    @settings(max_examples=300, deadline=None, database=None)
    @given(programs())
    def check(sql: str) -> None:
        verdict = guard.classify(sql, target.catalog)
        if not verdict.allowed:
            seen["refused"] += 1
            return
        seen["allowed"] += 1
        assert len(pglast.parse_sql(sql)) == 1, f"allowed a multi-statement string: {sql!r}"
        state = _execute_read_only(conn, sql)
        assert state != "25006", f"the guard allowed a write: {sql!r}"

    try:
        check()
    finally:
        conn.close()
    # the grammar is worth its name only if it produces both kinds in quantity
    assert seen["allowed"] >= 15, seen
    assert seen["refused"] >= 30, seen


def test_the_grammar_reaches_the_server_for_real(target: Target) -> None:
    """The property's oracle works: a refused statement, run read-only, is a 25006."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        for sql in [
            "select gt_write()",
            "select t.gt_field from gt t",
            "select * from gt_view",
            "select * from gt_locking_view",
            "select gt_agg(v) from gt",
            "select 1::gt_dom",
        ]:
            assert not guard.classify(sql, target.catalog).allowed
            assert _execute_read_only(conn, sql) == "25006"


@settings(max_examples=500, deadline=None, database=None)
@given(st.text())
def test_classify_never_raises(text: str) -> None:
    catalog = _MINIMAL
    for verdict in (guard.classify(text), guard.classify(text, catalog)):
        assert isinstance(verdict, guard.Verdict)
        assert verdict.reason


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from("select 1;'\"$-/*\\\nEe()x")))
def test_classify_never_raises_on_sql_like_noise(text: str) -> None:
    verdict = guard.classify(text)
    if verdict.allowed:
        assert len(pglast.parse_sql(text)) == 1


READS = [
    "select 1",
    "select abs(-1)",
    "values (1)",
    "show work_mem",
    "select 'a;b'",
    "select $$;$$",
    "explain select 1",
    "with c as (select 1) select * from c",
    "select 1 /* ; */",
]


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from(READS),
    st.sampled_from(READS),
    st.sampled_from(SEPARATORS),
    st.sampled_from(COMMENTS),
    st.sampled_from(["", ";", " -- end", ";\n"]),
)
def test_two_statements_are_always_refused(
    first: str, second: str, separator: str, comment: str, end: str
) -> None:
    catalog = _MINIMAL
    assert guard.classify(first, catalog).allowed
    verdict = guard.classify(first + separator + comment + second + end, catalog)
    assert not verdict.allowed
    assert verdict.kind == guard.Kind.MULTI


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(), st.text())
def test_a_nul_byte_is_always_refused(before: str, after: str) -> None:
    verdict = guard.classify(before + "\x00" + after)
    assert not verdict.allowed
    assert verdict.kind == guard.Kind.UNPARSEABLE


# -- catalog-aware refusals a test server cannot easily show (a superuser-only operator
# class, a quoted name that differs only in case, a function that shadows a built-in)


def _fn(oid: int, schema: str, name: str, volatility: str = "i", **kw: Any) -> FunctionRow:
    return FunctionRow(oid, schema, name, volatility, oid < FIRST_NORMAL_OID, **kw)


_MINIMAL = Catalog.build(
    CatalogRows(
        functions=[_fn(1, "pg_catalog", "abs")],
        operators=[OperatorRow(2, "pg_catalog", "+", 23, 23, 1)],
    )
)

# A catalog the tests assemble row by row: a superuser-only operator class, a quoted name
# that differs only in case, a function that shadows a built-in, a domain, views.
_SYNTHETIC = Catalog.build(
    CatalogRows(
        search_path=("app", "pg_catalog", "public"),
        functions=[
            _fn(100, "pg_catalog", "random", "v"),
            _fn(101, "pg_catalog", "abs"),
            _fn(102, "pg_catalog", "int4lt"),
            _fn(20001, "public", "canary", argtypes=(20100,)),
            _fn(20002, "public", "Canary", "v"),
            _fn(20003, "app", "random", "v"),
            _fn(20004, "app", "audit", "v"),
            _fn(20005, "public", "hash_words", "s", argtypes=(25,)),
        ],
        operators=[
            OperatorRow(200, "pg_catalog", "<", 23, 23, 102),
            OperatorRow(20010, "public", "###", 23, 23, 20004),
            OperatorRow(20011, "public", ">=", 23, 23, 20004),
        ],
        types=[TypeRow(20020, "public", "checked", "d", base=23)],
        type_dependencies=[DependencyRow(20020, "check", "pg_proc", 20004)],
        relations=[
            RelationRow(20030, "public", "locking_view", "v", 20031),
            RelationRow(20032, "public", "audit_view", "v", 20033),
            RelationRow(20034, "public", "clock_view", "v", 20035),
            RelationRow(20036, "public", "t", "r", 20100),
        ],
        relation_dependencies=[
            DependencyRow(20030, "lock", "-", 0),
            DependencyRow(20032, "view", "pg_proc", 20004),
            DependencyRow(20034, "view", "pg_proc", 100),
        ],
    ),
    Trust(functions=("public.canary",)),
)


@pytest.mark.parametrize(
    ("sql", "allowed"),
    [
        ("select canary()", True),  # trusted by name
        ("select hash_words('x')", False),  # user-defined and STABLE: not trusted for that
        ('select "Canary"()', False),  # the catalog is case-sensitive, as the server is
        ("select pg_catalog.random()", True),
        ("select random()", False),  # app.random() shadows it on search_path = app, …
        ("select app.random()", False),
        ("select * from t order by a using <", True),
        ("select * from t order by a using ###", False),
        ("select 1 between 0 and 2", False),  # BETWEEN runs >= and <=
        ("select 1 ### any (select 1)", False),
        ("select * from clock_view", True),
        ("select * from audit_view", False),
        ("copy audit_view to stdout", False),
        ("select * from public.locking_view", False),
        ("select 1::checked", False),
        ("select x.canary from t x", True),  # field notation of a trusted function
        ("select x.hash_words from t x", True),  # hash_words(text) cannot take a row
        ("select 'C:\\temp', 'a\\\\'", True),  # no backslash before a quote, or an even run
        ("select 'a\\'", False),  # ends elsewhere with standard_conforming_strings off
        ("select E'a\\''", True),
        ("select $$a\\'$$", True),
    ],
)
def test_catalog_aware_classification(sql: str, allowed: bool) -> None:
    assert guard.classify(sql, _SYNTHETIC).allowed is allowed, guard.classify(sql, _SYNTHETIC)
