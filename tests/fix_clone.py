"""Shared pieces of the clone tests: the One-Roof workspace, the CLI runner, database lists."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql

from oneroof import cli, connect, roles
from oneroof.clone import golden_name
from oneroof.demo import load_generator
from oneroof.embedded import EmbeddedServer

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


# What real schemas have: domains, enums, generated columns, triggers, a table without a
# primary key, a partitioned table with sub-partitions, views, a materialized view left
# stale on purpose (production's no longer matches its query). Every major from 13 runs it.
REAL_SCHEMA = """
create domain year as integer check (value >= 1901 and value <= 2155);
create type mpaa_rating as enum ('G', 'PG', 'PG-13', 'R', 'NC-17');
create table film (
    film_id serial primary key,
    title text not null,
    release_year year,
    rating mpaa_rating default 'G',
    title_upper text generated always as (upper(title)) stored,
    last_update timestamptz not null default now(),
    check (film_id > 0)
);
create function touch() returns trigger language plpgsql as
    $$ begin new.last_update := now(); return new; end $$;
create trigger film_touch before update on film for each row
    when (old.title is distinct from new.title) execute function touch();
create table audit_log (at timestamptz default now(), note text not null);
create table payment (id bigserial, amount numeric(6, 2), paid_on date not null)
    partition by range (paid_on);
create table payment_2022 partition of payment
    for values from ('2022-01-01') to ('2023-01-01') partition by range (paid_on);
create table payment_2022_h1 partition of payment_2022
    for values from ('2022-01-01') to ('2022-07-01');
create table payment_2022_h2 partition of payment_2022
    for values from ('2022-07-01') to ('2023-01-01');
create index film_title on film (lower(title)) where release_year > 2000;
insert into film (title, release_year, rating)
    select 'film ' || g, 2000 + g % 20, 'PG' from generate_series(1, 40) g;
insert into audit_log (note) select 'n' || g from generate_series(1, 25) g;
insert into payment (amount, paid_on)
    select g, date '2022-01-01' + g from generate_series(1, 300) g;
-- views whose text 16 and later deparse without the qualification 13 to 15 print
create view recent as select f.film_id, f.title from film f where f.release_year > 2010
    order by f.film_id;
create view per_year as select f.release_year, count(*) as n from film f
    group by f.release_year having count(*) > 1;
create view paid as select f.title, p.amount from film f join payment p on p.id = f.film_id;
create view outer_ref as select f.film_id,
    (select max(p.amount) from payment p where p.id = f.film_id) as top from film f
    where f.film_id in (select p.id from payment p);
create materialized view rating_counts as select rating, count(*) as n from film group by 1;
insert into film (title, release_year, rating) values ('late', 2001, 'R');
"""


def workspace_toml(clone: str, *, clone_extra: str = "", rest: str = "") -> str:
    """A workspace on the test servers (the env DSNs make_workspace sets) for one clone."""
    return f"""\
[production]
dsn = "env:ONEROOF_TEST_PROD_DSN"
apply_dsn = "env:ONEROOF_TEST_APPLY_DSN"
statement_timeout = "20s"
[clone]
server_dsn = "env:ONEROOF_TEST_NONPROD_DSN"
name = "{clone}"
{clone_extra}
[guard]
clone_name_pattern = "^[a-z0-9_]+_(clone|nonprod)$"
[counters]
films = "select count(*) from public.film"
{rest}
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


@contextlib.contextmanager
def primary_and_standby(
    prefix: str,
    build: Callable[[psycopg.Connection[Any]], None],
    settings: dict[str, str] | None = None,
) -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    """A production of its own — database `app`, `build` run in it, the least-privilege
    reader on it — and its hot standby (`pg_basebackup -R`), caught up."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    primary = EmbeddedServer(root / "primary", settings=settings).start()
    standby: EmbeddedServer | None = None
    try:
        with connect.open_admin(primary.dsn()) as admin:
            admin.execute(roles.reader_sql(roles.READER_ROLE, "postgres"))
            admin.execute("create database app")
        with connect.open_admin(primary.dsn("app")) as conn:
            conn.execute(roles.reader_sql(roles.READER_ROLE, "app").split(";\n", 1)[1])
            build(conn)
        standby = EmbeddedServer.standby_of(primary, root / "standby", settings=settings)
        standby.wait_replayed(primary)
        yield primary, standby
    finally:
        if standby is not None:
            standby.remove()
        primary.remove()
        shutil.rmtree(root, ignore_errors=True)
