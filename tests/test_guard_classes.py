"""Every class of path to user code, in generated variants, is refused; the same contexts with
built-in code pass.

A real server holds one object per class (functions of every declared volatility, a domain
whose CHECK is user code, types built on it, an implicit cast, an operator class, views,
foreign tables, tablefunc). Hypothesis places a hostile expression or relation of a class in
a random context — the select list, WHERE, ORDER BY, GROUP BY, a CTE, a subquery, LATERAL,
a window, COPY … TO STDOUT, EXPLAIN, UNION, VALUES — with random nesting, letter case and
quoting, and the guard, deciding from that server's catalog, refuses every one. The safe
twin of each context passes, and runs.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oneroof import config, connect, guard
from oneroof.catalog import Catalog
from oneroof.evidence import Evidence

SETUP = [
    "create table hc (id int primary key, note text)",
    "insert into hc select g, 'n' || g from generate_series(1, 5) g",
    "create table hc_log (at timestamptz default now())",
    """create function hc_write() returns int volatile language sql as $$
        insert into hc_log default values returning 1 $$""",
    "create function hc_stable() returns int stable language plpgsql as"
    " 'begin return hc_write(); end'",
    "create function hc_immutable(int) returns int immutable language plpgsql as"
    " 'begin perform hc_write(); return $1; end'",
    "create function hc_definer() returns int stable security definer language plpgsql as"
    " 'begin return hc_write(); end'",
    "create function \"HcMixed\"() returns int immutable language sql as 'select 1'",
    "create function hc_srf(int) returns setof int stable language plpgsql as"
    " 'begin return next hc_write(); end'",
    "create function hc_field(hc) returns int stable language plpgsql as"
    " 'begin return hc_write(); end'",
    "create function hc_final(int) returns int immutable language plpgsql as"
    " 'begin perform hc_write(); return $1; end'",
    "create aggregate hc_agg(int) (sfunc = int4pl, stype = int, initcond = '0',"
    " finalfunc = hc_final)",
    "create function hc_bool(int, int) returns boolean immutable language plpgsql as"
    " 'begin return hc_write() > 0; end'",
    "create operator #@# (leftarg = int, rightarg = int, function = hc_bool)",
    "create function hc_check(int) returns boolean immutable language plpgsql as"
    " 'begin return hc_write() > 0; end'",
    "create domain hc_dom as int check (hc_check(value))",
    "create type hc_wrap as (d hc_dom)",
    "create table hc_domtab (d hc_dom)",
    "create type hc_tag as enum ('a', 'b')",
    "create function hc_tag_int(hc_tag) returns int volatile language sql as 'select hc_write()'",
    "create cast (hc_tag as int) with function hc_tag_int(hc_tag) as implicit",
    "create table hc_tags (t hc_tag)",
    "create type hc_pt as (x int)",
    "create schema hc_ops",
    "create function hc_pt_cmp(hc_pt, hc_pt) returns int immutable language plpgsql as"
    " 'begin perform hc_write(); return btint4cmp($1.x, $2.x); end'",
    *[
        f"create function hc_ops.pt_{n}(hc_pt, hc_pt) returns bool immutable language sql"
        f" as 'select $1.x {o} $2.x'"
        for n, o in (("lt", "<"), ("le", "<="), ("eq", "="), ("ge", ">="), ("gt", ">"))
    ],
    *[
        f"create operator hc_ops.{o} (leftarg = hc_pt, rightarg = hc_pt, function = hc_ops.pt_{n})"
        for n, o in (("lt", "<"), ("le", "<="), ("eq", "="), ("ge", ">="), ("gt", ">"))
    ],
    "create operator class hc_pt_ops default for type hc_pt using btree as"
    " operator 1 hc_ops.<, operator 2 hc_ops.<=, operator 3 hc_ops.=,"
    " operator 4 hc_ops.>=, operator 5 hc_ops.>, function 1 hc_pt_cmp(hc_pt, hc_pt)",
    "create table hc_pts (p hc_pt)",
    "create view hc_view as select hc_stable() as v",
    "create view hc_view_outer as select * from hc_view",
    "create view hc_plain_view as select id, upper(note) as note from hc",
    "create table hc_policy (id int)",
    "alter table hc_policy enable row level security",
    "create policy hc_p on hc_policy using (hc_check(id))",
    "create extension tablefunc",
    "create extension file_fdw",
    "create server hc_files foreign data wrapper file_fdw",
    "create foreign table hc_foreign (line text) server hc_files options (program 'echo 1')",
    "create table hc_parent (id int) partition by list (id)",
    "create foreign table hc_child partition of hc_parent for values in (1) server hc_files"
    " options (program 'echo 1')",
]

# Expressions by class: each reaches user code, a side effect or SQL run from text.
HOSTILE_EXPRESSIONS = {
    "user-volatile": ["hc_write()", "public.hc_write()"],
    "declared-stable": ["hc_stable()", "public.hc_stable()", "HC_STABLE()"],
    "declared-immutable": ["hc_immutable(1)", "hc_immutable(hc_immutable(2))"],
    "security-definer": ["hc_definer()"],
    "quoted-mixed-case": ['"HcMixed"()', 'public."HcMixed"()'],
    "set-returning": ["(select max(s) from hc_srf(1) s)"],
    "aggregate-final": ["(select hc_agg(id) from hc)", "(select hc_agg(id) over () limit 1)"],
    "operator": ["1 #@# 2", "1 operator(public.#@#) 2", "(1 #@# any (select 2))"],
    "domain-cast": ["1::hc_dom", "cast(1 as hc_dom)", "'1'::hc_dom", "'{1}'::hc_dom[]"],
    "domain-composite": [
        "'(1)'::hc_wrap",
        "row(1)::hc_wrap",
        "jsonb_populate_record(null::hc_wrap, '{}')",
        "(select count(*) from json_populate_recordset(null::hc_wrap, '[]'))",
        "'{\"(1)\"}'::hc_wrap[]",
        "'(1)'::hc_domtab",
    ],
    "domain-by-text": [
        "pg_input_is_valid('1', 'hc_dom')",
        "(pg_input_error_info('1', 'hc_dom')).message",
    ],
    "sql-text": [
        "query_to_xml('select 1', true, false, '')",
        "table_to_xml('hc', true, false, '')",
        "schema_to_xml('public', true, false, '')",
        "database_to_xml(true, false, '')",
        "schema_to_xml_and_xmlschema('public', true, false, '')",
        "(select count(*) from crosstab('select 1::text, 1::text, 1::text') as t(a text, b text))",
        "ts_stat('select 1')",
    ],
    "side-effect": [
        "nextval('x')",
        "txid_current()",
        "pg_current_xact_id()",
        "set_config('work_mem', '1MB', false)",
        "pg_advisory_lock(1)",
        "pg_read_file('PG_VERSION')",
        "pg_terminate_backend(1)",
        "lo_export(1, '/tmp/x')",
    ],
    "implicit-cast": ["(select abs(t) from hc_tags)", "(select max(t + 1) from hc_tags)"],
    "opclass": [
        "(select p from hc_pts order by p limit 1)",
        "(select count(distinct p) from hc_pts)",
        "(select greatest(p, p) from hc_pts limit 1)",
    ],
    "view": ["(select v from hc_view)", "(select count(*) from hc_view_outer)"],
    "policy": ["(select count(*) from hc_policy)"],
    "foreign": ["(select count(*) from hc_foreign)", "(select count(*) from hc_parent)"],
}
HOSTILE_RELATIONS = {
    "view": ["hc_view", "public.hc_view_outer"],
    "opclass": ["hc_pts"],
    "implicit-cast": ["hc_tags"],
    "domain-column": ["hc_domtab"],
    "policy": ["hc_policy"],
    "foreign": ["hc_foreign", "hc_parent"],
    "secret": ["pg_authid", "pg_catalog.pg_user_mappings"],
}
SAFE_EXPRESSIONS = [
    "1",
    "lower('A')",
    "abs(-1)",
    "now() > '2000-01-01'",
    "'x'::text",
    "(select max(id) from hc)",
    "coalesce(null, 2)",
    "array_length(array[1, 2], 1)",
    "jsonb_build_object('a', 1)",
    "(select count(*) from hc_plain_view)",
    "1 = any (array[1])",
    "'5'::int + 1",
]
SAFE_RELATIONS = ["hc", "public.hc", "hc_plain_view", "pg_class", "hc_log"]

EXPRESSION_CONTEXTS = [
    "select {x}",
    "select {x} from hc",
    "select id from hc where {x} is not null",
    "select id from hc order by {x}",
    "select count(*) from hc group by {x}",
    "with c as (select {x} as v) select * from c",
    "with recursive r(n) as (select 1 union all select n + 1 from r where n < 2) select {x} from r",
    "select * from (select {x} as v) s",
    "select (select {x})",
    "select id from hc where exists (select {x})",
    "select array[{x}]",
    "select coalesce({x}, null)",
    "select case when id > 0 then {x} end from hc",
    "select sum(id) over (order by {x}) from hc",
    "copy (select {x}) to stdout",
    "explain select {x}",
    "explain (format json) select {x} from hc",
    "select 1 union all select {x}",
    "select * from hc, lateral (select {x} as v) l",
    "values ({x})",
    "select jsonb_build_object('k', {x})",
    "select id from hc where id in (select {x})",
    "select {x} is distinct from 1",
]
RELATION_CONTEXTS = [
    "select * from {r}",
    "select count(*) from {r}",
    "table {r}",
    "select 1 from hc join {r} on true",
    "select * from (select * from {r}) s",
    "with c as (select * from {r}) select count(*) from c",
    "explain select * from {r}",
    "select exists (select 1 from {r})",
    "copy (select * from {r}) to stdout",
    "select 1 from hc where id in (select 1 from {r})",
]
WRAPPERS = ["{}", "({})", "coalesce({}, {})", "nullif({}, 0)", "(select {})", "-(({}))"]


class Target:
    """The server's catalog and a reader connection, with a short repr for failure reports."""

    def __init__(self, catalog: Catalog, reader: psycopg.Connection[Any]) -> None:
        self.catalog = catalog
        self.reader = reader

    def __repr__(self) -> str:
        return "<the guard_classes database>"


@pytest.fixture(scope="module")
def catalog(prod_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    database = prod_server.create_database("guard_classes")
    try:
        with prod_server.admin(database) as conn:
            for statement in SETUP:
                conn.execute(statement)
        workspace = tmp_path_factory.mktemp("guard-classes")
        (workspace / "oneroof.toml").write_text(
            textwrap.dedent(
                f"""\
                [production]
                dsn = "{prod_server.reader_dsn(database)}"
                """
            )
        )
        cfg = config.load(workspace)
        evidence = Evidence(cfg.evidence_path)
        with connect.open_production(cfg, evidence) as session:
            assert session.catalog is not None
            found = session.catalog
            session.execute("select 1")  # the reader reaches it: the catalog is its view
        evidence.close()
        yield found
    finally:
        prod_server.drop_database(database)


@pytest.fixture(scope="module")
def target(prod_server: Any, catalog: Catalog) -> Iterator[Target]:
    with psycopg.connect(prod_server.dsn("postgres"), autocommit=True) as admin:
        database = admin.execute(
            "select datname from pg_database where datname like 'guard\\_classes\\_%'"
        ).fetchone()
    assert database is not None
    conn = psycopg.connect(
        prod_server.reader_dsn(database[0]),
        autocommit=True,
        options="-c default_transaction_read_only=on -c statement_timeout=5s",
    )
    yield Target(catalog, conn)
    conn.close()


@st.composite
def hostile_statements(draw: st.DrawFn) -> tuple[str, str]:
    if draw(st.booleans()):
        kind = draw(st.sampled_from(sorted(HOSTILE_EXPRESSIONS)))
        atom = draw(st.sampled_from(HOSTILE_EXPRESSIONS[kind]))
        wrapper = draw(st.sampled_from(WRAPPERS))
        expression = wrapper.replace("{}", atom)
        context = draw(st.sampled_from(EXPRESSION_CONTEXTS))
        return kind, context.replace("{x}", expression)
    kind = draw(st.sampled_from(sorted(HOSTILE_RELATIONS)))
    relation = draw(st.sampled_from(HOSTILE_RELATIONS[kind]))
    context = draw(st.sampled_from(RELATION_CONTEXTS))
    keywords_upper = draw(st.booleans())
    statement = context.replace("{r}", relation)
    if keywords_upper:
        statement = statement.replace("select ", "SELECT ").replace(" from ", " FROM ")
    return kind, statement


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(hostile_statements())
def test_every_class_of_path_to_user_code_is_refused(
    target: Target, generated: tuple[str, str]
) -> None:
    kind, statement = generated
    verdict = guard.classify(statement, target.catalog)
    assert not verdict.allowed, f"{kind}: allowed {statement!r}"


@st.composite
def safe_statements(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        atom = draw(st.sampled_from(SAFE_EXPRESSIONS))
        wrapper = draw(st.sampled_from(WRAPPERS))
        context = draw(st.sampled_from(EXPRESSION_CONTEXTS))
        return context.replace("{x}", wrapper.replace("{}", atom))
    relation = draw(st.sampled_from(SAFE_RELATIONS))
    return draw(st.sampled_from(RELATION_CONTEXTS)).replace("{r}", relation)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(safe_statements())
def test_the_same_contexts_with_built_in_code_pass_and_run(target: Target, statement: str) -> None:
    verdict = guard.classify(statement, target.catalog)
    assert verdict.allowed, f"refused {statement!r}: {verdict.reason}"
    try:
        if statement.startswith("copy"):
            with target.reader.cursor().copy(statement) as copy:
                for _ in copy:
                    pass
        else:
            target.reader.execute(statement)
    except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege):
        raise
    except psycopg.Error:
        pass  # a generated type mismatch: the claim is only that it passes and writes nothing


def test_each_class_is_generated(catalog: Catalog) -> None:
    """Every hostile atom, in the plainest context, is refused for the reason of its class."""
    kinds = {
        "user-volatile": guard.Kind.USER_CODE,
        "side-effect": guard.Kind.SIDE_EFFECT,
        "foreign": guard.Kind.FOREIGN,
        "secret": guard.Kind.SECRET,
    }
    for kind, atoms in HOSTILE_EXPRESSIONS.items():
        for atom in atoms:
            verdict = guard.classify(f"select {atom}", catalog)
            assert not verdict.allowed, (kind, atom)
            if kind in kinds:
                assert verdict.kind == kinds[kind], (kind, atom, verdict)
    for kind, relations in HOSTILE_RELATIONS.items():
        for relation in relations:
            verdict = guard.classify(f"select * from {relation}", catalog)
            assert not verdict.allowed, (kind, relation)
            if kind in kinds:
                assert verdict.kind == kinds[kind], (kind, relation, verdict)


# A schema shaped like the real ones (Pagila's kinds of objects), read by the reader.
REAL_SCHEMA = [
    "create domain year as integer check (value >= 1901 and value <= 2155)",
    "create type mpaa_rating as enum ('G', 'PG', 'PG-13', 'R', 'NC-17')",
    "create table film (film_id serial primary key, title text not null, release_year year,"
    " rating mpaa_rating default 'G', rental_rate numeric(4, 2) not null default 4.99,"
    " fulltext tsvector generated always as (to_tsvector('english', title)) stored,"
    " last_update timestamptz not null default now())",
    "create index film_fulltext on film using gist (fulltext)",
    "create index film_title on film (lower(title))",
    "create table actor (actor_id serial primary key, first_name text, last_name text)",
    "create table film_actor (actor_id int references actor, film_id int references film,"
    " primary key (actor_id, film_id))",
    "create table payment (payment_id serial, amount numeric(5, 2), paid_at timestamptz,"
    " customer jsonb) partition by range (paid_at)",
    "create table payment_2022 partition of payment for values from ('2022-01-01')"
    " to ('2023-01-01') partition by range (paid_at)",
    "create table payment_2022_h1 partition of payment_2022 for values from ('2022-01-01')"
    " to ('2022-07-01')",
    "create table payment_2022_h2 partition of payment_2022 for values from ('2022-07-01')"
    " to ('2023-01-01')",
    "insert into film (title, release_year, rating) select 'Film ' || g, 2000 + g % 20,"
    " (array['G', 'PG', 'R'])[1 + g % 3]::mpaa_rating from generate_series(1, 50) g",
    "insert into actor (first_name, last_name) select 'A' || g, 'B' || g"
    " from generate_series(1, 10) g",
    "insert into film_actor select 1 + g % 10, g from generate_series(1, 50) g",
    "insert into payment (amount, paid_at, customer) select g, '2022-01-01'::timestamptz"
    " + g * interval '3 days', jsonb_build_object('id', g, 'tags', jsonb_build_array('a'))"
    " from generate_series(1, 100) g",
    "create view film_list as select f.film_id, f.title, f.rating,"
    " string_agg(a.first_name || ' ' || a.last_name, ', ' order by a.last_name) as actors"
    " from film f join film_actor fa using (film_id) join actor a using (actor_id)"
    " group by f.film_id, f.title, f.rating",
    "create materialized view rating_counts as select rating, count(*) from film group by 1",
    "create table no_key (a int, b text)",
    "insert into no_key values (1, 'x'), (1, 'x')",
]
REAL_READS = [
    "select * from film_list order by film_id limit 5",
    "select rating, count(*), avg(rental_rate) from film group by rating order by rating",
    "select title from film where fulltext @@ to_tsquery('english', 'film') limit 3",
    "select title from film where lower(title) = 'film 7'",
    "select rating, title, rank() over (partition by rating order by title) from film",
    "select date_trunc('month', paid_at), sum(amount) from payment group by 1 order by 1",
    "select customer->>'id', customer #> '{tags,0}' from payment where amount > 95",
    "select jsonb_agg(jsonb_build_object('t', title)) from film where release_year > 2015",
    "select count(*) from payment_2022_h1",
    "select * from rating_counts",
    "select release_year::int + 1, rental_rate::text, rating::text from film limit 3",
    "select min(rating), max(rating) from film",
    "select * from film where rating in ('PG', 'R') and release_year between 2001 and 2010",
    "select a.last_name, count(*) from actor a join film_actor fa on fa.actor_id = a.actor_id"
    " group by 1 having count(*) > 1",
    "with recent as (select * from payment where paid_at > '2022-06-01')"
    " select count(*), percentile_cont(0.5) within group (order by amount) from recent",
    "select distinct on (rating) rating, title from film order by rating, title",
    "select * from no_key",
    "select f.title, (select count(*) from film_actor x where x.film_id = f.film_id) from film f",
    "explain select * from film_list",
    "select * from json_to_recordset('[{\"a\": 1999}]') as x(a year)",
    "select enum_range(null::mpaa_rating), 'R'::mpaa_rating > 'G'",
    "select row_to_json(f) from film f limit 1",
]


def test_reads_of_a_real_schema_pass_for_the_reader(
    prod_server: Any, prod_db: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with prod_server.admin(prod_db) as conn:
        for statement in REAL_SCHEMA:
            conn.execute(statement)
    workspace = tmp_path_factory.mktemp("real-schema")
    (workspace / "oneroof.toml").write_text(
        f'[production]\ndsn = "{prod_server.reader_dsn(prod_db)}"\n'
    )
    cfg = config.load(workspace)
    evidence = Evidence(cfg.evidence_path)
    with connect.open_production(cfg, evidence) as session:
        for statement in REAL_READS:
            rows = session.execute(statement)
            assert rows, statement
    evidence.close()
