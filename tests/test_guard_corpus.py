"""The guard's corpus, run against real servers.

Every forbidden statement of the corpus is refused on the guarded production session, is
never sent (its unique marker comment never reaches the server's statement log, and no
statement other than the refusal is audited), is audited as refused, and leaves the
production database and session exactly as they were. The same statement executed raw —
as a superuser, on a separate scratch copy — leaves the trace the corpus names for it (a
canary row, a sequence value, a setting, a lock, a catalog row, …), so "nothing changed"
on production is a measured fact, not the absence of a check. The few statements that could
leave no trace are marked so, with the reason, and checked to leave none. Every plain read
of the corpus is allowed, sent, audited and returns rows.

Placeholders in the corpus SQL: {tok} (unique per run, for cluster-wide names), {db} (the
current database), {dsn} (a connection string to it) and {datadir} (the server's data
directory).
"""

from __future__ import annotations

import contextlib
import re
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql as pgsql

from fix_pg import READER
from oneroof import config, connect, guard
from oneroof.catalog import Catalog
from oneroof.errors import ForbiddenAction
from oneroof.evidence import Evidence

# -- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    forbidden: bool = True
    trace: str | None = None  # the snapshot component a raw execution changes
    no_trace: str | None = None  # why a raw execution cannot leave one
    prelude: tuple[str, ...] = ()  # run raw before the statement (and in the control run)
    epilogue: tuple[str, ...] = ()  # run raw after it (and in the control run); errors ignored
    options: str | None = None  # startup options of the raw connection
    copy_data: str | None = None  # rows fed to a COPY … FROM STDIN
    mark: bool = True  # prefix the marker comment


def F(id: str, sql: str, trace: str, **kw: Any) -> Case:
    """A forbidden statement that, executed, leaves a trace in `trace`."""
    return Case(id, sql, trace=trace, **kw)


def N(id: str, sql: str, reason: str, **kw: Any) -> Case:
    """A forbidden statement that cannot leave a trace, and why."""
    return Case(id, sql, no_trace=reason, **kw)


def R(id: str, sql: str) -> Case:
    """A plain read: allowed, and returns rows."""
    return Case(id, sql, forbidden=False)


BEGIN = ("begin",)
RO = "-c default_transaction_read_only=on"

DML = [
    F("insert", "insert into canary (id, note) values (501, 'inserted')", "canary"),
    F("insert-select", "insert into canary_junk select id from canary", "rows"),
    F("insert-default", "insert into canary_junk default values", "rows"),
    F("insert-returning", "insert into canary values (502, 'r') returning *", "canary"),
    F("upsert-nothing", "insert into canary values (503, 'u') on conflict do nothing", "canary"),
    F(
        "upsert-update",
        "insert into canary values (2, 'upserted') on conflict (id)"
        " do update set note = excluded.note",
        "canary",
    ),
    F("update", "update canary set note = 'updated' where id = 3", "canary"),
    F(
        "update-returning",
        "update canary set note = note || '!' where id = 4 returning id, note",
        "canary",
    ),
    F(
        "update-from",
        "update canary c set note = 'from' from (values (5)) v(id) where c.id = v.id",
        "canary",
    ),
    F("delete", "delete from canary where id = 6", "canary"),
    F("delete-using", "delete from canary c using (values (7)) v(id) where c.id = v.id", "canary"),
    F("delete-returning", "delete from canary where id = 8 returning *", "canary"),
    F(
        "merge-update",
        "merge into canary c using (values (9, 'merged')) as v(id, note) on c.id = v.id"
        " when matched then update set note = v.note"
        " when not matched then insert values (v.id, v.note)",
        "canary",
    ),
    F(
        "merge-insert",
        "merge into canary c using (select 504 as id) v on c.id = v.id"
        " when not matched then insert values (v.id, 'merged in')",
        "canary",
    ),
    F(
        "merge-delete",
        "merge into canary c using (select 10 as id) v on c.id = v.id when matched then delete",
        "canary",
    ),
    F("truncate", "truncate canary_trunc1", "catalog"),
    F("truncate-restart", "truncate table only canary_trunc2 restart identity", "catalog"),
    F("copy-from-stdin", "copy canary_junk from stdin", "rows", copy_data="31\n32\n"),
    F("copy-from-file", "copy canary_junk from '{datadir}/PG_VERSION'", "rows"),
    F("copy-from-program", "copy canary_junk from program 'echo 42'", "rows"),
    F("copy-to-file", "copy canary to '{datadir}/corpus_{tok}_table.csv'", "files"),
    F("copy-query-to-file", "copy (select 1) to '{datadir}/corpus_{tok}_query.csv'", "files"),
    F(
        "copy-to-program",
        "copy (select 1) to program 'cat > {datadir}/corpus_{tok}_program.txt'",
        "files",
    ),
    F(
        "copy-insert-returning",
        "copy (insert into canary_junk values (33) returning id) to stdout",
        "rows",
    ),
]

WRITABLE_CTES = [
    F(
        "cte-delete",
        "with d as (delete from canary where id = 11 returning id) select count(*) from d",
        "canary",
    ),
    F("cte-insert", "with i as (insert into canary_junk values (34) returning id) table i", "rows"),
    F(
        "cte-update-unreferenced",
        "with u as (update canary set note = 'cte' where id = 12) select 1",
        "canary",
    ),
    F(
        "cte-chained",
        "with a as (insert into canary_junk values (1) returning id),"
        " b as (update canary set note = 'chained' where id in (select id + 12 from a)"
        " returning id) select * from b",
        "canary",
    ),
    F(
        "cte-in-copy",
        "copy (with d as (delete from canary where id = 14 returning *) select * from d) to stdout",
        "canary",
    ),
    F(
        "cte-recursive-and-write",
        "with recursive r(n) as (select 1 union all select n + 1 from r where n < 3),"
        " w as (insert into canary_junk select n from r returning id) select count(*) from w",
        "rows",
    ),
    N(
        "cte-nested",
        "with a as (with b as (insert into canary_junk values (35) returning id)"
        " select * from b) select * from a",
        "PostgreSQL itself rejects a data-modifying WITH below the top level",
    ),
    N(
        "cte-in-subquery",
        "select * from (with x as (delete from canary where id = 15 returning *)"
        " select * from x) s",
        "PostgreSQL itself rejects a data-modifying WITH below the top level",
    ),
    N(
        "cte-in-scalar-subquery",
        "select (with x as (update canary set note = 'deep' where id = 15 returning id)"
        " select id from x)",
        "PostgreSQL itself rejects a data-modifying WITH below the top level",
    ),
]

ROW_LOCKS = [
    F("for-update", "select * from canary where id = 16 for update", "canary"),
    F("for-no-key-update", "select id from canary where id = 17 for no key update", "canary"),
    F("for-share", "select id from canary where id = 18 for share", "canary"),
    F("for-key-share", "select id from canary where id = 19 for key share", "canary"),
    F("for-update-nowait", "select id from canary where id = 20 for update nowait", "canary"),
    F(
        "for-update-skip-locked",
        "select id from canary where id = 21 for update skip locked",
        "canary",
    ),
    F("for-update-of", "select c.id from canary c where c.id = 22 for update of c", "canary"),
    F(
        "for-update-in-subquery",
        "select * from (select * from canary where id = 23 for update) s",
        "canary",
    ),
    F(
        "for-share-in-cte",
        "with x as (select * from canary where id = 24 for share) select * from x",
        "canary",
    ),
    F(
        "for-share-in-exists",
        "select exists (select 1 from canary where id = 25 for key share)",
        "canary",
    ),
]

DDL = [
    F("create-table", "create table corpus_new (id int)", "catalog"),
    F("create-temp-table", "create temp table corpus_tmp (id int)", "catalog"),
    F("create-unlogged-table", "create unlogged table corpus_unlogged (id int)", "catalog"),
    F("create-table-as", "create table corpus_ctas as select * from canary", "catalog"),
    F("select-into", "select * into corpus_into from canary", "catalog"),
    F("select-into-temp", "select 1 as x into temp corpus_into_tmp", "catalog"),
    F("create-view", "create view corpus_view as select 1 as x", "catalog"),
    F("create-matview", "create materialized view corpus_mv as select 1 as x", "catalog"),
    F("create-index", "create index corpus_idx on canary (note)", "catalog"),
    F(
        "create-index-concurrently",
        "create index concurrently corpus_idx_c on canary (id, note)",
        "catalog",
    ),
    F("drop-table", "drop table canary_dropme", "catalog"),
    F("alter-add-column", "alter table canary_junk add column corpus_col int", "catalog"),
    F("alter-rename", "alter table canary_ren rename to corpus_renamed", "catalog"),
    F("alter-set-option", "alter table canary set (fillfactor = 70)", "catalog"),
    F("alter-enable-rls", "alter table canary_junk enable row level security", "catalog"),
    F("alter-owner", "alter table canary_junk owner to corpus_{tok}_role", "catalog"),
    F("create-schema", "create schema corpus_schema", "catalog"),
    F("drop-schema", "drop schema canary_gone", "catalog"),
    F(
        "create-function",
        "create function corpus_fn() returns int language sql as 'select 1'",
        "catalog",
    ),
    F(
        "replace-function",
        "create or replace function canary_replace() returns int language sql as 'select 2'",
        "catalog",
    ),
    F("drop-function", "drop function canary_dropfn()", "catalog"),
    F("create-procedure", "create procedure corpus_proc() language sql as 'select 1'", "catalog"),
    F(
        "create-trigger",
        "create trigger corpus_trg after insert on canary_junk"
        " for each statement execute function canary_trigger_fn()",
        "catalog",
    ),
    F(
        "create-rule",
        "create rule corpus_rule as on insert to canary_junk do also notify corpus_rule",
        "catalog",
    ),
    F("create-policy", "create policy corpus_pol on canary using (true)", "catalog"),
    F("create-type", "create type corpus_type as enum ('a')", "catalog"),
    F("create-domain", "create domain corpus_domain as int", "catalog"),
    F("create-sequence", "create sequence corpus_seq", "catalog"),
    F("alter-sequence", "alter sequence canary_seq restart with 1000", "sequence"),
    F("create-extension", "create extension citext", "catalog"),
    F("drop-extension", "drop extension cube", "catalog"),
    F("create-statistics", "create statistics corpus_stats on id, note from canary", "catalog"),
    F("create-collation", 'create collation corpus_coll from "C"', "catalog"),
    F(
        "create-operator",
        "create operator ### (leftarg = int, rightarg = int, function = int4pl)",
        "catalog",
    ),
    F(
        "create-aggregate",
        "create aggregate corpus_sum(int) (sfunc = int4pl, stype = int)",
        "catalog",
    ),
    F(
        "create-text-search-config",
        "create text search configuration corpus_ts (copy = simple)",
        "catalog",
    ),
    F("create-publication", "create publication corpus_pub for table canary", "catalog"),
    F(
        "create-event-trigger",
        # (filtered to a command the corpus never runs: it must not fire on the later cases)
        "create event trigger corpus_evt on ddl_command_start"
        " when tag in ('CREATE FOREIGN TABLE') execute function canary_evt_fn()",
        "catalog",
    ),
    F("create-fdw", "create foreign data wrapper corpus_fdw", "catalog"),
    F("comment-on-table", "comment on table canary is 'corpus was here'", "catalog"),
    F("comment-on-column", "comment on column canary.note is 'corpus was here'", "catalog"),
    F("comment-on-database", "comment on database {db} is 'corpus was here'", "databases"),
    N(
        "security-label",
        "security label on table canary is 'secret'",
        "no security label provider is loaded on the test server: PostgreSQL rejects it",
    ),
    F("grant-table", "grant select on canary to corpus_{tok}_role", "catalog"),
    F("revoke-table", "revoke insert on canary from corpus_{tok}_role", "catalog"),
    F("grant-schema", "grant create on schema public to corpus_{tok}_role", "catalog"),
    F(
        "alter-default-privileges",
        "alter default privileges grant select on tables to corpus_{tok}_role",
        "catalog",
    ),
    F("reassign-owned", "reassign owned by corpus_{tok}_owner to current_user", "catalog"),
    F("create-role", "create role corpus_{tok}_new", "roles"),
    F("alter-role", "alter role corpus_{tok}_role set work_mem = '2MB'", "roles"),
    F("drop-role", "drop role corpus_{tok}_dropme", "roles"),
    F("grant-role", "grant corpus_{tok}_role to corpus_{tok}_member", "roles"),
    F("create-database", "create database corpus_{tok}_db", "databases"),
    F("alter-database-set", "alter database {db} set work_mem = '3MB'", "databases"),
    F("alter-system", "alter system set corpus.x_{tok} = 'on'", "system"),
    F("alter-system-reset", "alter system reset corpus.y_{tok}", "system"),
]

UTILITY = [
    F("vacuum", "vacuum canary", "stats"),
    F("vacuum-analyze", "vacuum (analyze) canary", "stats"),
    F("vacuum-full", "vacuum full canary_junk", "catalog"),
    F("analyze", "analyze canary", "stats"),
    F("analyze-all", "analyze", "stats"),
    F("reindex-table", "reindex table canary", "catalog"),
    F("reindex-index", "reindex index canary_pkey", "catalog"),
    F("cluster", "cluster canary using canary_pkey", "catalog"),
    F("refresh-matview", "refresh materialized view canary_mv", "catalog"),
    F("checkpoint", "checkpoint", "checkpoint"),
    # (a table of its own: the observer reads canary and canary_junk while the lock is held)
    F("lock", "lock table canary_lock in access exclusive mode", "locks", prelude=BEGIN),
    F("lock-share", "lock canary_lock in share mode", "locks", prelude=BEGIN),
    F("call", "call canary_proc()", "canary"),
    F("do", "do $$ begin perform canary_write(); end $$", "canary"),
    F("do-language", "do language plpgsql $$ begin perform canary_write(); end $$", "canary"),
    F("load", "load 'auto_explain'", "settings"),
]

SESSION = [
    F("set", "set work_mem = '1MB'", "settings"),
    F("set-to", "set search_path to corpus, public", "settings"),
    F("set-custom", "set corpus.flag = 'on'", "settings"),
    F("set-local", "set local work_mem = '2MB'", "settings", prelude=BEGIN),
    F(
        "set-statement-timeout",
        "set statement_timeout = 0",
        "settings",
        options="-c statement_timeout=20s",
    ),
    F("set-read-only-off", "set default_transaction_read_only = off", "settings", options=RO),
    F(
        "set-session-characteristics",
        "set session characteristics as transaction read write",
        "settings",
        options=RO,
    ),
    F("reset", "reset work_mem", "settings", prelude=("set work_mem = '1MB'",)),
    F("reset-all", "reset all", "settings", prelude=("set work_mem = '1MB'",)),
    F("set-role", "set role corpus_{tok}_role", "settings"),
    F("reset-role", "reset role", "settings", prelude=("set role corpus_{tok}_role",)),
    F("set-session-authorization", "set session authorization corpus_{tok}_role", "settings"),
    F("set-config", "select set_config('work_mem', '5MB', false)", "settings"),
    F(
        "set-config-in-where",
        "select 1 where set_config('work_mem', '6MB', false) <> ''",
        "settings",
    ),
    F(
        "set-config-local",
        "select pg_catalog.set_config('work_mem', '7MB', true)",
        "settings",
        prelude=BEGIN,
    ),
    F("discard-all", "discard all", "prepared", prelude=("prepare corpus_p as select 1",)),
    F(
        "discard-temp",
        "discard temp",
        "catalog",
        prelude=("create temp table corpus_tmp2 (id int)",),
    ),
]

TRANSACTIONS = [
    F("begin", "begin", "transaction"),
    F("begin-read-write", "begin read write", "transaction"),
    F("start-transaction", "start transaction isolation level serializable", "transaction"),
    F(
        "commit",
        "commit",
        "rows",
        prelude=("begin", "insert into canary_junk values (36)"),
    ),
    F("end", "end", "rows", prelude=("begin", "insert into canary_junk values (37)")),
    F("rollback", "rollback", "transaction", prelude=BEGIN),
    F("abort", "abort", "transaction", prelude=BEGIN),
    F(
        "savepoint",
        "savepoint corpus_sp",
        "rows",
        prelude=("begin", "insert into canary_junk values (38)"),
        epilogue=(
            "insert into canary_junk values (39)",
            "rollback to savepoint corpus_sp",
            "commit",
        ),
    ),
    F(
        "release-savepoint",
        "release savepoint corpus_sp",
        "rows",
        prelude=("begin", "savepoint corpus_sp"),
        epilogue=(
            "rollback to savepoint corpus_sp",
            "insert into canary_junk values (40)",
            "commit",
        ),
    ),
    F(
        "rollback-to-savepoint",
        "rollback to savepoint corpus_sp",
        "rows",
        prelude=("begin", "savepoint corpus_sp", "insert into canary_junk values (41)"),
        epilogue=("commit",),
    ),
    F(
        "set-transaction-read-write",
        "set transaction read write",
        "rows",
        options=RO,
        prelude=BEGIN,
        epilogue=("insert into canary_junk values (42)", "commit"),
    ),
    F(
        "set-transaction-read-only-off",
        "set transaction_read_only = off",
        "rows",
        options=RO,
        prelude=BEGIN,
        epilogue=("insert into canary_junk values (43)", "commit"),
    ),
    F(
        "set-transaction-isolation",
        "set transaction isolation level serializable",
        "settings",
        prelude=BEGIN,
    ),
    F(
        # prepared transactions are disabled on the test server, so the attempt ends (and
        # rolls back) the transaction; with them enabled it would leave a prepared one
        "prepare-transaction",
        "prepare transaction 'corpus_{tok}'",
        "rows",
        prelude=("begin", "insert into canary_junk values (44)"),
        epilogue=("commit",),
    ),
    N(
        "commit-prepared",
        "commit prepared 'corpus_none'",
        "no prepared transaction exists (max_prepared_transactions = 0 on the test server)",
    ),
]

NOTIFICATIONS = [
    F("listen", "listen corpus_{tok}", "listen"),
    F("unlisten", "unlisten corpus_{tok}", "listen", prelude=("listen corpus_{tok}",)),
    F("unlisten-all", "unlisten *", "listen", prelude=("listen corpus_{tok}",)),
    F("notify", "notify corpus_{tok}, 'notify'", "notify"),
    F("pg-notify", "select pg_notify('corpus_{tok}', 'pg_notify')", "notify"),
]

PREPARED = [
    F("prepare", "prepare corpus_p as select 1", "prepared"),
    F(
        "execute",
        "execute corpus_ins",
        "rows",
        prelude=("prepare corpus_ins as insert into canary_junk values (45)",),
    ),
    F(
        "explain-analyze-execute",
        "explain analyze execute corpus_ins",
        "rows",
        prelude=("prepare corpus_ins as insert into canary_junk values (46)",),
    ),
    F("deallocate", "deallocate corpus_p", "prepared", prelude=("prepare corpus_p as select 1",)),
    F("deallocate-all", "deallocate all", "prepared", prelude=("prepare corpus_p as select 1",)),
]

_WRITING_CURSOR = "declare corpus_w cursor for select canary_write() from generate_series(1, 3)"
CURSORS = [
    F("declare-with-hold", "declare corpus_c cursor with hold for select 1", "cursors"),
    F("declare", "declare corpus_c cursor for select * from canary", "cursors", prelude=BEGIN),
    F(
        "fetch",
        "fetch 2 from corpus_w",
        "canary",
        prelude=("begin", _WRITING_CURSOR),
        epilogue=("commit",),
    ),
    F(
        "move",
        "move forward 2 in corpus_w",
        "canary",
        prelude=("begin", _WRITING_CURSOR),
        epilogue=("commit",),
    ),
    F(
        "close",
        "close corpus_c",
        "cursors",
        prelude=("begin", "declare corpus_c cursor for select 1"),
    ),
]

MULTI = [
    F("multi-select-delete", "select 1; delete from canary where id = 26", "canary"),
    F("multi-trailing-insert", "select 1; insert into canary_junk values (47);", "rows"),
    F(
        "multi-after-line-comment",
        "select 1 -- only a comment here\n; delete from canary where id = 27",
        "canary",
    ),
    F(
        "multi-after-block-comment",
        "select 1 /* ; */; update canary set note = 'smuggled' where id = 28",
        "canary",
    ),
    F(
        "multi-after-dollar-string",
        "select $$ ; $$; update canary set note = 'dollar' where id = 29",
        "canary",
    ),
    F(
        "multi-after-string",
        "select 'a;b' as x; delete from canary where id = 30",
        "canary",
    ),
    F(
        "multi-begin-write-commit",
        "begin; update canary set note = 'in a block' where id = 31; commit",
        "canary",
    ),
    F("multi-set", "select 1; set work_mem = '9MB'", "settings"),
    F(
        # with standard_conforming_strings off the server reads \' as an escaped quote, so the
        # "string" the parser sees ends elsewhere and canary_write() runs as SQL
        "string-literal-trick",
        r"select 'a\' , ' , canary_write() -- '",
        "canary",
        options="-c standard_conforming_strings=off",
    ),
    N("multi-reads", "select 1; select 2", "two plain reads: refused only for being two"),
    N("unparseable", "selec 1", "a syntax error: PostgreSQL rejects it too"),
    N("unparseable-truncated", "select * from canary where", "a syntax error"),
    N("unparseable-unterminated", "select 'unterminated", "a syntax error"),
    N("empty", "", "an empty string is no statement", mark=False),
    N("comment-only", "-- nothing but a comment", "a comment is no statement"),
    N(
        "nul-byte",
        "select 1\x00; delete from canary where id = 32",
        "libpq ends the text at the NUL byte: only `select 1` would run",
    ),
]

_VICTIM = (
    "from pg_stat_activity where datname = current_database()"
    " and application_name = 'corpus-victim'"
)
FUNCTIONS = [
    F("nextval", "select nextval('canary_seq')", "sequence"),
    F("nextval-qualified", "select pg_catalog.nextval('canary_seq')", "sequence"),
    F("nextval-quoted", "select \"nextval\"('canary_seq')", "sequence"),
    F("nextval-quoted-qualified", 'select "pg_catalog"."nextval"(\'canary_seq\')', "sequence"),
    F("nextval-upper-case", "SELECT NEXTVAL('canary_seq')", "sequence"),
    F("nextval-unicode-escape", "select U&\"nextv\\0061l\"('canary_seq')", "sequence"),
    F("nextval-nested", "select (select (select nextval('canary_seq')))", "sequence"),
    F("nextval-in-from", "select * from nextval('canary_seq')", "sequence"),
    F("nextval-rows-from", "select * from rows from (nextval('canary_seq'))", "sequence"),
    F(
        "nextval-lateral",
        "select * from canary c, lateral (select nextval('canary_seq')) s where c.id = 1",
        "sequence",
    ),
    F("nextval-order-by", "select id from canary order by nextval('canary_seq')", "sequence"),
    F(
        "nextval-having",
        "select count(*) from canary having nextval('canary_seq') > 0",
        "sequence",
    ),
    F(
        "nextval-case",
        "select case when id = 1 then nextval('canary_seq') end from canary",
        "sequence",
    ),
    F("nextval-where", "select id from canary where nextval('canary_seq') > 0", "sequence"),
    F(
        "nextval-cte",
        "with s as (select nextval('canary_seq') as n) select n from s",
        "sequence",
    ),
    F("nextval-values", "values (nextval('canary_seq'))", "sequence"),
    F(
        "nextval-filter",
        "select count(*) filter (where nextval('canary_seq') > 0) from canary",
        "sequence",
    ),
    F(
        "nextval-window",
        "select id, sum(id) over (order by nextval('canary_seq')) from canary",
        "sequence",
    ),
    F(
        "nextval-join-on",
        "select a.id from canary a join canary b on a.id = b.id"
        " and nextval('canary_seq') > 0 where a.id < 3",
        "sequence",
    ),
    # (EXISTS drops the target list of its subquery: the call must sit in its WHERE)
    F("nextval-exists", "select exists (select 1 where nextval('canary_seq') > 0)", "sequence"),
    F("nextval-array", "select array[nextval('canary_seq')]", "sequence"),
    F("nextval-json", "select json_build_object('n', nextval('canary_seq'))", "sequence"),
    F("nextval-cast", "select nextval('canary_seq')::text", "sequence"),
    F(
        "nextval-function-argument",
        "select * from generate_series(1, nextval('canary_seq'))",
        "sequence",
    ),
    F("nextval-limit", "select 1 limit (select nextval('canary_seq'))", "sequence"),
    F("nextval-union", "select 1 union all select nextval('canary_seq')", "sequence"),
    F("nextval-explain-analyze", "explain analyze select nextval('canary_seq')", "sequence"),
    F("nextval-copy-to-stdout", "copy (select nextval('canary_seq')) to stdout", "sequence"),
    F("setval", "select setval('canary_seq', 4242)", "sequence"),
    F("setval-qualified", "select pg_catalog.setval('canary_seq', 4343, false)", "sequence"),
    F("pg-terminate-backend", f"select pg_terminate_backend(pid) {_VICTIM}", "victims"),
    F("pg-cancel-backend", f"select pg_cancel_backend(pid) {_VICTIM}", "victims"),
    F("pg-advisory-lock", "select pg_advisory_lock(4242)", "locks"),
    F("pg-advisory-lock-shared", "select pg_advisory_lock_shared(4243)", "locks"),
    F("pg-advisory-xact-lock", "select pg_advisory_xact_lock(4244)", "locks", prelude=BEGIN),
    F("pg-try-advisory-lock", "select pg_try_advisory_lock(4245)", "locks"),
    F("lo-create", "select lo_create(0)", "largeobjects"),
    F("lo-creat", "select lo_creat(-1)", "largeobjects"),
    F("lo-from-bytea", "select lo_from_bytea(0, 'corpus')", "largeobjects"),
    F("lo-import", "select lo_import('{datadir}/PG_VERSION')", "largeobjects"),
    F("lo-unlink", "select lo_unlink(min(oid)) from pg_largeobject_metadata", "largeobjects"),
    F("lo-put", "select lo_put(min(oid), 0, 'X') from pg_largeobject_metadata", "largeobjects"),
    F(
        "lo-export",
        "select lo_export(min(oid), '{datadir}/corpus_{tok}_lo.bin') from pg_largeobject_metadata",
        "files",
    ),
    F(
        "dblink",
        "select * from dblink('{dsn}', 'insert into canary_junk values (48) returning id')"
        " as t(id int)",
        "rows",
    ),
    F("dblink-exec", "select dblink_exec('{dsn}', 'delete from canary where id = 33')", "canary"),
    N(
        "pg-read-file",
        "select pg_read_file('PG_VERSION')",
        "it reads a server file: the harm is disclosure, not a change",
    ),
    N(
        "pg-read-binary-file",
        "select pg_read_binary_file('PG_VERSION')",
        "it reads a server file: the harm is disclosure, not a change",
    ),
    N(
        "pg-ls-dir",
        "select pg_ls_dir('.')",
        "it lists a server directory: the harm is disclosure, not a change",
    ),
    F("pg-switch-wal", "select pg_switch_wal()", "wal"),
    F(
        "pg-create-physical-replication-slot",
        "select pg_create_physical_replication_slot('corpus_{tok}_slot')",
        "slots",
    ),
    N(
        "pg-create-logical-replication-slot",
        "select pg_create_logical_replication_slot('corpus_{tok}_logical', 'pgoutput')",
        "wal_level is replica on the test server: PostgreSQL rejects it",
    ),
    F("pg-reload-conf", "select pg_reload_conf()", "conf_reload"),
    F("pg-sleep", "select pg_sleep(0.3)", "elapsed"),
    F("pg-stat-reset", "select pg_stat_reset()", "stats"),
    F("user-volatile", "select canary_write()", "canary"),
    F("user-volatile-qualified", "select public.canary_write()", "canary"),
    F("user-volatile-quoted", 'select "public"."canary_write"()', "canary"),
    F("user-volatile-in-from", "select * from canary_write()", "canary"),
    F(
        "user-volatile-in-where",
        "select 1 from canary where id = 1 and canary_write() > 0",
        "canary",
    ),
    F("user-operator", "select 1 #@# 2", "canary"),
    F("user-operator-qualified", "select 1 operator(public.#@#) 2", "canary"),
    F("user-operator-in-sublink", "select 1 #@# any (select 2)", "canary"),
    F("user-aggregate", "select canary_agg(id) from canary where id < 3", "canary"),
    F("field-notation", "select c.canary_field from canary c where c.id = 1", "canary"),
    F(
        "field-notation-indirection",
        "select (c).canary_field from canary c where c.id = 1",
        "canary",
    ),
    F("view-calling-volatile", "select * from canary_view", "canary"),
    F("view-over-view", "select * from public.canary_view_outer", "canary"),
    F("view-locking-rows", "select * from canary_locking_view", "canary"),
    F("domain-check-volatile", "select 1::canary_dom", "canary"),
    F("domain-cast-syntax", "select cast(2 as canary_dom)", "canary"),
    F("cast-function-volatile", "select row(1, 2)::canary_pair::canary_mood", "canary"),
]

EXPLAIN = [
    F("explain-analyze-insert", "explain analyze insert into canary_junk values (49)", "rows"),
    F(
        "explain-analyze-update",
        "explain (analyze, format json) update canary set note = 'explained' where id = 34",
        "canary",
    ),
    F(
        "explain-analyze-delete",
        "explain (analyze true) delete from canary where id = 35",
        "canary",
    ),
    F("explain-analyze-ctas", "explain analyze create table corpus_ctas2 as select 1", "catalog"),
    F(
        "explain-analyze-writable-cte",
        "explain analyze with d as (delete from canary where id = 36 returning *) select * from d",
        "canary",
    ),
    F("explain-analyze-volatile", "explain analyze select canary_write()", "canary"),
]

# Paths to user code that a parser alone cannot see, each written for a server that keeps
# its own objects: SQL-running built-ins and extensions, domain CHECKs reached without a
# cast, implicit casts, operator classes, declared volatility, foreign tables.
_CROSSTAB_SQL = "'select 1::text, 1::text, canary_write()::text'"
USER_CODE = [
    F("crosstab", f"select * from crosstab({_CROSSTAB_SQL}) as t(a text, b text)", "canary"),
    F(
        "crosstab-qualified",
        f"select * from public.crosstab({_CROSSTAB_SQL}) as t(a text, b text)",
        "canary",
    ),
    F("crosstab2", f"select * from crosstab2({_CROSSTAB_SQL})", "canary"),
    F(
        "crosstab-in-copy",
        f"copy (select * from crosstab({_CROSSTAB_SQL}) as t(a text, b text)) to stdout",
        "canary",
    ),
    F(
        "crosstab-lateral",
        f"select c.id from canary c, lateral crosstab({_CROSSTAB_SQL}) as t(a text, b text)"
        " where c.id = 1",
        "canary",
    ),
    F(
        "connectby-injection",
        "select * from connectby('(select canary_write() as id, 1 as parent) x', 'id',"
        " 'parent', '1', 0) as t(id int, parent int, level int)",
        "canary",
    ),
    F("input-is-valid-domain", "select pg_input_is_valid('1', 'canary_dom')", "canary"),
    F("input-error-info-domain", "select * from pg_input_error_info('1', 'canary_dom')", "canary"),
    F("trusted-function-domain-parameter", "select canary_trusted_dlen(5)", "canary"),
    F("composite-literal-domain", "select '(1)'::canary_wrap", "canary"),
    F("row-cast-domain", "select row(1)::canary_wrap", "canary"),
    F(
        "jsonb-populate-record-domain",
        "select jsonb_populate_record(null::canary_wrap, '{\"d\": 1}')",
        "canary",
    ),
    F(
        "json-populate-recordset-domain",
        "select * from json_populate_recordset(null::canary_wrap, '[{\"d\": 1}]')",
        "canary",
    ),
    F("domain-array-literal", "select '{1}'::canary_dom[]", "canary"),
    F("composite-array-literal", "select '{\"(1)\"}'::canary_wrap[]", "canary"),
    F("table-row-type-literal", "select '(1)'::canary_domtab", "canary"),
    F(
        "domain-table-polymorphic",
        "select array_append(array[d], '7') from canary_domtab",
        "canary",
    ),
    F("implicit-cast-function", "select abs(t) from canary_tags", "canary"),
    F("implicit-cast-operator", "select t + 1 from canary_tags", "canary"),
    F("opclass-order-by", "select p from canary_pts order by p", "canary"),
    F("opclass-distinct", "select distinct p from canary_pts", "canary"),
    F("opclass-union", "select p from canary_pts union select p from canary_pts", "canary"),
    F("opclass-greatest", "select greatest(p, p) from canary_pts", "canary"),
    F("opclass-window", "select row_number() over (order by p) from canary_pts", "canary"),
    F("opclass-group-by", "select p, count(*) from canary_pts group by p", "canary"),
    F("declared-stable", "select canary_stable()", "canary"),
    F("declared-immutable", "select canary_immutable(1)", "canary"),
    F("security-definer", "select canary_definer()", "canary"),
    F("aggregate-final-function", "select canary_final_agg(id) from canary", "canary"),
    F(
        "aggregate-final-function-window",
        "select canary_final_agg(id) over () from canary limit 1",
        "canary",
    ),
    F(
        "lateral-set-returning",
        "select c.id, s from canary c, lateral canary_srf(c.id) s where c.id = 1",
        "canary",
    ),
    F("view-over-stable", "select * from canary_stable_view", "canary"),
    F(
        "explain-folds-immutable",
        "explain select * from canary where id = canary_immutable(1)",
        "canary",
    ),
    F(
        "explain-estimates-stable",
        "explain select * from canary where id = canary_stable()",
        "canary",
    ),
    F("postgres-fdw", "select * from canary_remote", "canary"),
    F("postgres-fdw-count", "select count(*) from canary_remote", "canary"),
    F("postgres-fdw-partition", "select count(*) from canary_part", "canary"),
    F("file-fdw-program", "select * from canary_prog", "files"),
    N(
        "password-hashes",
        "select rolname, rolpassword from pg_authid",
        "it reads password hashes: the harm is disclosure, not a change",
    ),
    N(
        "user-mapping-passwords",
        "select * from pg_catalog.pg_user_mappings",
        "it reads foreign-server passwords: the harm is disclosure, not a change",
    ),
]

READS = [
    R("select-1", "select 1"),
    R("select-table", "select id, note from canary order by id"),
    R("count", "select count(*) from canary"),
    R("left-join", "select c.id, j.id from canary c left join canary_junk j on j.id = c.id"),
    R("natural-join", "select c.id from canary c natural join canary d where c.id < 3"),
    R("join-using", "select id from canary join canary d using (id, note) where id < 3"),
    R("cte", "with t as (select id from canary where id < 5) select sum(id) from t"),
    R("cte-materialized", "with x as materialized (select * from canary) select count(*) from x"),
    R(
        "recursive-cte",
        "with recursive r(n) as (select 1 union all select n + 1 from r where n < 10)"
        " select max(n) from r",
    ),
    R(
        "window",
        "select id, row_number() over (order by id desc), lag(id) over w"
        " from canary window w as (order by id)",
    ),
    R(
        "aggregate-having",
        "select note, count(*), min(id), max(id), avg(id) from canary"
        " group by note having count(*) >= 1 order by 1",
    ),
    R("rollup", "select grouping(note), count(*) from canary group by rollup (note)"),
    R("union", "select id from canary where id < 3 union select id from canary where id > 50"),
    R("intersect", "select id from canary intersect select g from generate_series(1, 5) g"),
    R("except", "select id from canary except select g from generate_series(1, 5) g order by 1"),
    R("values", "values (1, 'a'), (2, 'b')"),
    R("table", "table canary"),
    R("show", "show work_mem"),
    R("show-all", "show all"),
    R("explain", "explain select * from canary where id = 1"),
    R("explain-json", "explain (format json) select count(*) from canary"),
    R("explain-analyze-read", "explain analyze select count(*) from canary"),
    R("json-build", "select json_build_object('id', id, 'note', note) from canary where id = 1"),
    R("jsonb-agg", "select jsonb_agg(to_jsonb(c)) from canary c"),
    R("jsonb-path", "select jsonb_path_query('{\"a\": [1, 2, 3]}'::jsonb, '$.a[*] ? (@ > 1)')"),
    R("json-table", "select * from json_table('[1, 2]', '$[*]' columns (v int path '$')) jt"),
    R("json-recordset", "select * from json_to_recordset('[{\"a\": 1}]') as x(a int)"),
    R("format", "select format('%s-%s', id, note), concat_ws('/', id, note) from canary"),
    R(
        "text-search",
        "select to_tsvector('simple', note) @@ to_tsquery('simple', 'original') from canary",
    ),
    R("generate-series", "select * from generate_series(1, 3) g"),
    R(
        "rows-from",
        "select * from rows from (generate_series(1, 2), generate_series(3, 4)) t(a, b)",
    ),
    R(
        "lateral",
        "select c.id, s.n from canary c cross join lateral (select c.id * 2 as n) s where c.id < 4",
    ),
    R(
        "stable-functions",
        "select now(), current_timestamp, current_setting('work_mem'), version()",
    ),
    R(
        "allowed-volatile",
        "select random() < 2, clock_timestamp() > now() - interval '1 day',"
        " gen_random_uuid() is not null, pg_catalog.random() >= 0",
    ),
    R("sizes", "select pg_relation_size('canary'), pg_total_relation_size('canary')"),
    R("string-with-sql", "select 'x; delete from canary; --' as trick"),
    R("escape-string-with-sql", r"select E'\'; delete from canary; --' as trick"),
    R("dollar-string-with-sql", "select $$; delete from canary; $$ as trick"),
    R("comments-with-sql", "select /* ; delete from canary; */ 1 -- ; delete from canary"),
    R("quoted-identifiers", 'select "id" from "public"."canary" where "id" = 1'),
    R("like-between", "select id from canary where note like 'original%' and id between 1 and 5"),
    R("case", "select case when id % 2 = 0 then 'even' else 'odd' end from canary"),
    R("case-simple", "select case id when 1 then 'one' else 'other' end from canary"),
    R("conditional", "select coalesce(null, 1), nullif(1, 2), greatest(1, 2), least(1, 2)"),
    R("ordered-aggregate", "select array_agg(id order by id) filter (where id > 10) from canary"),
    R(
        "exists",
        "select id from canary c where exists (select 1 from canary d where d.id = c.id + 1)",
    ),
    R("in-subquery", "select id from canary where id in (select g from generate_series(1, 3) g)"),
    R("any-array", "select 1 = any (array[1, 2]), 2 in (1, 2), 3 <> all (array[1, 2])"),
    R("tablesample", "select count(*) from canary tablesample system (100)"),
    R("within-group", "select percentile_cont(0.5) within group (order by id) from canary"),
    R("sequence-relation", "select last_value, is_called from canary_seq"),
    R("matview", "select * from canary_mv"),
    R("builtin-casts", "select id::text, id::numeric(10, 2), '2024-01-01'::date + 1 from canary"),
    R("distinct-on", "select distinct on (note) note, id from canary order by note, id"),
    R("limit-offset", "select id from canary order by id limit 3 offset 1"),
    R("system-view", "select count(*) from pg_stat_activity"),
    R("dates", "select to_char(now(), 'YYYY'), date_trunc('day', now()), extract(year from now())"),
    R("scalar-subqueries", "select (select max(id) from canary), (select min(id) from canary)"),
    R("string-functions", "select upper(note), length(note), md5(note) from canary"),
    R("regex", "select regexp_replace(note, 'o', '0', 'g') from canary where note ~ '^orig'"),
]

FORBIDDEN = (
    DML
    + WRITABLE_CTES
    + ROW_LOCKS
    + DDL
    + UTILITY
    + SESSION
    + TRANSACTIONS
    + NOTIFICATIONS
    + PREPARED
    + CURSORS
    + MULTI
    + FUNCTIONS
    + EXPLAIN
    + USER_CODE
)
CORPUS = FORBIDDEN + READS

# -- the databases ---------------------------------------------------------------------------

SETUP = [
    "create table canary (id int primary key, note text not null)"
    " with (autovacuum_enabled = false)",
    "insert into canary select g, 'original ' || g from generate_series(1, 60) g",
    "create table canary_junk (id int) with (autovacuum_enabled = false)",
    "create table canary_lock (id int) with (autovacuum_enabled = false)",
    # objects the corpus drops, renames, truncates, replaces, revokes or reassigns
    "create table canary_trunc1 with (autovacuum_enabled = false) as select 1 as id",
    "create table canary_trunc2 with (autovacuum_enabled = false) as select 1 as id",
    "create table canary_dropme (id int) with (autovacuum_enabled = false)",
    "create table canary_ren (id int) with (autovacuum_enabled = false)",
    "create table canary_owned (id int) with (autovacuum_enabled = false)",
    "alter table canary_owned owner to corpus_{tok}_owner",
    "create schema canary_gone",
    "create function canary_replace() returns int language sql as 'select 1'",
    "create function canary_dropfn() returns int language sql as 'select 1'",
    "create extension cube",
    "grant insert on canary to corpus_{tok}_role",
    "create sequence canary_seq",
    """create function canary_write() returns int volatile language sql as $$
        insert into canary (id, note) select coalesce(max(id), 0) + 1, 'written' from canary
        returning id $$""",
    """create function canary_bool(int, int) returns boolean volatile language sql as $$
        select canary_write() > 0 $$""",
    "create operator #@# (leftarg = int, rightarg = int, function = canary_bool)",
    """create function canary_sfunc(int, int) returns int volatile language sql as $$
        select coalesce($1, 0) + canary_write() $$""",
    "create aggregate canary_agg(int) (sfunc = canary_sfunc, stype = int)",
    """create function canary_field(canary) returns int volatile language sql as $$
        select canary_write() $$""",
    "create view canary_view as select canary_write() as written",
    "create view canary_view_outer as select * from canary_view",
    "create view canary_locking_view as select * from canary where id = 37 for update",
    """create function canary_check(int) returns boolean volatile language sql as $$
        select canary_write() > 0 $$""",
    "create domain canary_dom as int check (canary_check(value))",
    "create type canary_pair as (a int, b int)",
    "create type canary_mood as enum ('written')",
    """create function canary_cast(canary_pair) returns canary_mood volatile language sql as $$
        select 'written'::canary_mood from (select canary_write()) w $$""",
    "create cast (canary_pair as canary_mood) with function canary_cast(canary_pair)",
    "create procedure canary_proc() language sql as $$ select canary_write() $$",
    """create function canary_trigger_fn() returns trigger language plpgsql as $$
        begin return null; end $$""",
    """create function canary_evt_fn() returns event_trigger language plpgsql as $$
        begin end $$""",
    "create materialized view canary_mv with (autovacuum_enabled = false)"
    " as select count(*) as n from canary",
    "create extension dblink",
    "select lo_from_bytea(0, 'canary') from generate_series(1, 5)",
    # user code behind names that look like plain reads
    "create extension tablefunc",
    """create function canary_stable() returns int stable language plpgsql as $$
        begin return canary_write(); end $$""",
    """create function canary_immutable(int) returns int immutable language plpgsql as $$
        begin perform canary_write(); return $1; end $$""",
    """create function canary_definer() returns int stable security definer language plpgsql
        as $$ begin return canary_write(); end $$""",
    """create function canary_srf(int) returns setof int stable language plpgsql as $$
        begin return next canary_write(); end $$""",
    "create view canary_stable_view as select canary_stable() as v",
    """create function canary_final(int) returns int immutable language plpgsql as $$
        begin perform canary_write(); return $1; end $$""",
    "create aggregate canary_final_agg(int)"
    " (sfunc = int4pl, stype = int, initcond = '0', finalfunc = canary_final)",
    "create type canary_wrap as (d canary_dom)",
    "create table canary_domtab (d canary_dom)",
    "insert into canary_domtab values (1)",
    """create function canary_trusted_dlen(canary_dom) returns int immutable language plpgsql
        as 'begin return 1; end'""",
    "create type canary_tag as enum ('a', 'b')",
    """create function canary_tag_int(canary_tag) returns int volatile language sql as $$
        select canary_write() $$""",
    "create cast (canary_tag as int) with function canary_tag_int(canary_tag) as implicit",
    "create table canary_tags (t canary_tag)",
    "insert into canary_tags values ('a')",
    "create type canary_pt as (x int)",
    # its operators live off the search path, as an extension's would in its own schema
    "create schema canary_ops",
    """create function canary_pt_cmp(canary_pt, canary_pt) returns int immutable
        language plpgsql as $$
        begin perform canary_write(); return btint4cmp($1.x, $2.x); end $$""",
    *[
        f"create function canary_ops.canary_pt_{name}(canary_pt, canary_pt) returns bool immutable"
        f" language sql as 'select $1.x {op} $2.x'"
        for name, op in (("lt", "<"), ("le", "<="), ("eq", "="), ("ge", ">="), ("gt", ">"))
    ],
    *[
        f"create operator canary_ops.{op} (leftarg = canary_pt, rightarg = canary_pt,"
        f" function = canary_ops.canary_pt_{name})"
        for name, op in (("lt", "<"), ("le", "<="), ("eq", "="), ("ge", ">="), ("gt", ">"))
    ],
    "create operator class canary_pt_ops default for type canary_pt using btree as"
    " operator 1 canary_ops.<, operator 2 canary_ops.<=, operator 3 canary_ops.=,"
    " operator 4 canary_ops.>=, operator 5 canary_ops.>,"
    " function 1 canary_pt_cmp(canary_pt, canary_pt)",
    "create table canary_pts (p canary_pt)",
    "insert into canary_pts values (row(1)), (row(2)), (row(3))",
    "create extension postgres_fdw",
    "create server canary_loop foreign data wrapper postgres_fdw"
    " options (host '{host}', port '{port}', dbname '{db}')",
    "create user mapping for current_user server canary_loop options (user '{user}')",
    """create function canary_write_q() returns int volatile language sql
        set search_path = public as $$
        insert into canary (id, note) select coalesce(max(id), 0) + 1, 'remote' from canary
        returning id $$""",
    "create view canary_remote_view as select canary_write_q() as written",
    "create view canary_remote_ids as select canary_write_q() as id",
    "create foreign table canary_remote (written int) server canary_loop"
    " options (table_name 'canary_remote_view')",
    "create table canary_part (id int) partition by range (id)",
    "create table canary_part_local partition of canary_part for values from (0) to (100)",
    "create foreign table canary_part_remote partition of canary_part"
    " for values from (100) to (200) server canary_loop options (table_name 'canary_remote_ids')",
    "create extension file_fdw",
    "create server canary_files foreign data wrapper file_fdw",
    "create foreign table canary_prog (line text) server canary_files"
    " options (program 'touch corpus_{tok}_fdw.txt; echo 1')",
    "vacuum analyze canary",
]
CLUSTER_SETUP = [
    "create role corpus_{tok}_role nologin",
    "create role corpus_{tok}_member nologin",
    "create role corpus_{tok}_owner nologin",
    "create role corpus_{tok}_dropme nologin",
    "alter system set corpus.y_{tok} = 'on'",
]

CATALOG_FINGERPRINT = r"""
select md5(coalesce(string_agg(x, '|' order by x), '')) from (
    select concat_ws(',', 'c', c.oid, c.relname, c.relnamespace, c.relkind, c.relowner, c.relacl,
        c.reloptions, c.relpersistence, c.relrowsecurity, c.relfilenode, c.reltuples,
        c.relhasindex, c.relhastriggers, c.relhasrules) as x
    from pg_class c where c.oid >= 16384
    union all
    select concat_ws(',', 'a', a.attrelid, a.attnum, a.attname, a.atttypid, a.attnotnull,
        a.attisdropped)
    from pg_attribute a where a.attrelid >= 16384
    union all
    select concat_ws(',', 'p', p.oid, p.proname, p.prosrc, p.provolatile, p.proacl, p.proowner)
    from pg_proc p where p.oid >= 16384
    union all
    select concat_ws(',', 'n', n.oid, n.nspname, n.nspacl, n.nspowner)
    from pg_namespace n where (n.oid >= 16384 or n.nspname = 'public')
        and n.nspname not like 'pg\_%temp\_%'
    union all
    select concat_ws(',', 'd', d.objoid, d.classoid, d.objsubid, d.description)
    from pg_description d where d.objoid >= 16384
    union all
    select concat_ws(',', 'count', (select count(*) from pg_type),
        (select count(*) from pg_trigger),
        (select count(*) from pg_rewrite), (select count(*) from pg_policy),
        (select count(*) from pg_extension), (select count(*) from pg_event_trigger),
        (select count(*) from pg_cast), (select count(*) from pg_operator),
        (select count(*) from pg_aggregate), (select count(*) from pg_publication),
        (select count(*) from pg_foreign_data_wrapper), (select count(*) from pg_statistic_ext),
        (select count(*) from pg_default_acl), (select count(*) from pg_collation),
        (select count(*) from pg_constraint), (select count(*) from pg_index),
        (select count(*) from pg_ts_config), (select count(*) from pg_seclabel))
) s
"""

# Read by a superuser observer connection to the same database: `{tok}` is filled in.
OBSERVED = {
    "canary": "select md5(coalesce(string_agg(concat_ws(':', id, note, xmax), ','"
    " order by id), '')), count(*) from canary",
    "rows": "select count(*), coalesce(sum(id), 0) from canary_junk",
    "sequence": "select last_value, is_called from canary_seq",
    "catalog": CATALOG_FINGERPRINT,
    "stats": "select vacuum_count, analyze_count,"
    " (select count(*) from pg_statistic where starelid >= 16384)"
    " from pg_stat_user_tables where relname = 'canary'",
    "largeobjects": "select (select count(*) from pg_largeobject_metadata),"
    " (select md5(coalesce(string_agg(concat_ws(':', loid, pageno, md5(data)), ','"
    " order by loid, pageno), '')) from pg_largeobject)",
    "files": "select coalesce(array_agg(f || ':' || (pg_stat_file(f)).size order by f), '{}')"
    " from pg_ls_dir('.') f where f like 'corpus\\_{tok}%'",
    "roles": "select coalesce(array_agg(concat_ws(':', r.rolname, r.rolsuper, r.rolcanlogin,"
    " r.rolconfig, (select count(*) from pg_auth_members m where m.roleid = r.oid"
    " or m.member = r.oid)) order by r.rolname), '{}')"
    " from pg_roles r where r.rolname like 'corpus\\_{tok}%'",
    "databases": "select (select coalesce(array_agg(datname::text order by datname), '{}')"
    " from pg_database where datname like 'corpus\\_{tok}%'),"
    " (select concat_ws(':', datacl, datconnlimit) from pg_database"
    " where datname = current_database()),"
    " (select coalesce(array_agg(setconfig::text order by setconfig::text), '{}')"
    " from pg_db_role_setting s join pg_database d on d.oid = s.setdatabase"
    " where d.datname = current_database()),"
    " (select count(*) from pg_shdescription s join pg_database d on d.oid = s.objoid"
    " where d.datname = current_database())",
    "system": "select coalesce(array_agg(name || '=' || setting order by name), '{}')"
    " from pg_file_settings where name like 'corpus.%\\_{tok}'",
    "slots": "select coalesce(array_agg(slot_name::text order by slot_name), '{}')"
    " from pg_replication_slots where slot_name like 'corpus\\_{tok}%'",
    "victims": f"select count(*) {_VICTIM} and state = 'active'",
    "checkpoint": "select checkpoint_lsn::text from pg_control_checkpoint()",
    "wal": "select pg_walfile_name(pg_current_wal_lsn())",
}
# Read through the connection under test: its own session state.
SESSION_STATE = {
    "settings": "select md5(string_agg(name || '=' || coalesce(setting, ''), ',' order by name)),"
    " current_user, session_user, current_setting('corpus.flag', true) from pg_settings",
    "listen": "select coalesce(array_agg(c order by c), '{}') from pg_listening_channels() c",
    "prepared": "select coalesce(array_agg(name::text order by name), '{}')"
    " from pg_prepared_statements where name not like '\\_pg3\\_%'",
    "cursors": "select coalesce(array_agg(name::text order by name), '{}') from pg_cursors",
}
LOCKS = (
    "select coalesce(array_agg(x order by x), '{}') from ("
    " select concat_ws(':', locktype, mode, relation::regclass, objid) as x from pg_locks"
    " where pid = %s and (locktype = 'advisory' or (locktype = 'relation' and relation >= 16384))"
    ") s"
)
# Traces that another process reports a moment later: polled for a short while.
ASYNC_TRACES = {"notify", "victims", "conf_reload"}
# Cluster-wide positions a shared external server moves on its own.
CLUSTER_CLOCKS = {"checkpoint", "wal"}


def _count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Side:
    """One database of the test: the guarded production one, or the raw scratch copy."""

    name: str
    dsn: str
    tok: str
    datadir: str
    observer: psycopg.Connection[Any]
    listener: psycopg.Connection[Any]
    notes: list[str] = field(default_factory=list)
    victims: list[tuple[threading.Thread, psycopg.Connection[Any]]] = field(default_factory=list)

    def fill(self, text: str) -> str:
        for key, value in (
            ("{tok}", self.tok),
            ("{db}", self.name),
            ("{dsn}", self.dsn),
            ("{datadir}", self.datadir),
        ):
            text = text.replace(key, value)
        return text

    def drain(self) -> int:
        """Notifications the listener received since the last drain."""
        self.listener.execute("select 1")
        count = len(self.notes)
        self.notes.clear()
        return count

    def ensure_victim(self) -> None:
        """A backend of this database busy in `pg_sleep`, for cancel and terminate."""
        query = self.fill(OBSERVED["victims"])
        if _count(self.observer, query) > 0:
            return
        conn = psycopg.connect(self.dsn, autocommit=True, application_name="corpus-victim")

        def sleep() -> None:
            try:
                conn.execute("select pg_sleep(120)")
            except psycopg.Error:
                pass
            finally:
                conn.close()

        thread = threading.Thread(target=sleep, daemon=True)
        thread.start()
        self.victims.append((thread, conn))
        deadline = time.monotonic() + 5
        while _count(self.observer, query) == 0:
            assert time.monotonic() < deadline, "the victim backend never became active"
            time.sleep(0.01)


@dataclass
class Env:
    server: Any
    tok: str
    prod: Side
    scratch: Side
    session: connect.Session
    evidence: Evidence
    log_path: Path | None
    strict_cluster: bool
    raw_errors: dict[str, str] = field(default_factory=dict)


def _build(server: Any, database: str, tok: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(server.dsn(database))
    fill = {
        "{tok}": tok,
        "{db}": database,
        "{host}": str(params.get("host") or "localhost"),
        "{port}": str(params.get("port") or "5432"),
        "{user}": str(params.get("user") or "postgres"),
    }
    with server.admin(database) as conn:
        for statement in SETUP:
            for key, value in fill.items():
                statement = statement.replace(key, value)
            conn.execute(statement)


def _side(server: Any, database: str, tok: str, datadir: str) -> Side:
    observer = psycopg.connect(server.dsn(database), autocommit=True, prepare_threshold=None)
    listener = psycopg.connect(server.dsn(database), autocommit=True)
    side = Side(database, server.dsn(database), tok, datadir, observer, listener)
    listener.add_notify_handler(lambda note: side.notes.append(note.payload))
    listener.execute(pgsql.SQL("listen {}").format(pgsql.Identifier(f"corpus_{tok}")))
    return side


def _close_side(server: Any, side: Side) -> None:
    with server.admin() as admin:
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = %s and application_name = 'corpus-victim'",
            (side.name,),
        )
    for thread, _ in side.victims:
        thread.join(timeout=5)
    side.observer.close()
    side.listener.close()


def _clean_cluster(server: Any, tok: str) -> None:
    """Remove what the corpus left on the whole cluster: databases, slots, settings, roles."""
    pattern = f"corpus\\_{tok}%"
    with server.admin() as admin:
        names = admin.execute(
            "select datname from pg_database where datname like %s", (pattern,)
        ).fetchall()
        for (name,) in names:
            server.drop_database(name)
        admin.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots"
            " where slot_name like %s",
            (pattern,),
        )
        for name in (f"corpus.x_{tok}", f"corpus.y_{tok}"):
            admin.execute(pgsql.SQL("alter system reset {}").format(pgsql.SQL(name)))
        roles = admin.execute(
            "select rolname from pg_roles where rolname like %s", (pattern,)
        ).fetchall()
        for (role,) in roles:
            admin.execute(pgsql.SQL("drop role {}").format(pgsql.Identifier(role)))


@pytest.fixture(scope="module")
def env(prod_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A guarded production database and a raw scratch copy, built alike, for the module."""
    tok = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as cleanup:
        # callbacks run last-registered first: the cluster is cleaned after the databases go
        cleanup.callback(_clean_cluster, prod_server, tok)
        prod_db = prod_server.create_database("corpus_prod")
        cleanup.callback(prod_server.drop_database, prod_db)
        scratch_db = prod_server.create_database("corpus_scratch")
        cleanup.callback(prod_server.drop_database, scratch_db)
        with prod_server.admin() as admin:
            for statement in CLUSTER_SETUP:
                admin.execute(statement.replace("{tok}", tok))
            datadir = str(admin.execute("show data_directory").fetchone()[0])
        _build(prod_server, prod_db, tok)
        _build(prod_server, scratch_db, tok)
        with prod_server.admin() as admin:
            admin.execute(
                pgsql.SQL("alter database {} set log_statement = 'all'").format(
                    pgsql.Identifier(prod_db)
                )
            )
        workspace = tmp_path_factory.mktemp("guard-corpus")
        (workspace / "oneroof.toml").write_text(
            textwrap.dedent(
                f"""\
                [production]
                dsn = "{prod_server.dsn(prod_db)}"
                statement_timeout = "20s"
                [guard]
                allow_privileged_role = true
                allow_functions = ["public.canary_trusted_*"]
                """
            )
        )
        cfg = config.load(workspace)
        evidence = Evidence(cfg.evidence_path)
        cleanup.callback(evidence.close)
        session = connect.open_production(cfg, evidence)
        cleanup.callback(session.close)
        sides = []
        for database in (prod_db, scratch_db):
            side = _side(prod_server, database, tok, datadir)
            cleanup.callback(_close_side, prod_server, side)
            sides.append(side)
        yield Env(
            prod_server,
            tok,
            sides[0],
            sides[1],
            session,
            evidence,
            getattr(prod_server, "log_path", None),
            strict_cluster=prod_server.label != "external",
        )
        assert evidence.verify() == []


# -- snapshots -------------------------------------------------------------------------------


def snapshot(
    env: Env,
    side: Side,
    conn: psycopg.Connection[Any],
    case: Case,
    elapsed: float,
) -> dict[str, Any]:
    """Every trace a statement could leave, as seen from the connection under test and beside."""
    shot: dict[str, Any] = {"transaction": conn.info.transaction_status.name}
    # the session's own state first: reading it inside an open transaction takes the same
    # catalog locks in every snapshot, before the locks are read
    for name, query in SESSION_STATE.items():
        if conn.info.transaction_status.name == "INERROR":
            shot[name] = "unreadable: failed transaction"
        else:
            shot[name] = conn.execute(query).fetchall()
    shot["locks"] = side.observer.execute(LOCKS, (conn.info.backend_pid,)).fetchall()
    for name, query in OBSERVED.items():
        shot[name] = side.observer.execute(side.fill(query)).fetchall()
    shot["notify"] = side.drain()
    if case.trace == "conf_reload":
        with psycopg.connect(side.dsn, autocommit=True) as fresh:
            shot["conf_reload"] = fresh.execute("select pg_conf_load_time()").fetchone()
    if case.trace == "elapsed":
        shot["elapsed"] = elapsed > 0.25
    return shot


def differences(
    before: dict[str, Any], after: dict[str, Any], ignore: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    return {
        k: (before[k], after.get(k))
        for k in before
        if k not in ignore and before[k] != after.get(k)
    }


def unchanged_ignoring(env: Env) -> set[str]:
    """What a comparison on production may ignore: clocks a shared server moves on its own."""
    return set() if env.strict_cluster else CLUSTER_CLOCKS


def marked(case: Case, prefix: str, tok: str) -> str:
    if not case.mark:
        return case.sql
    return f"/* {prefix}-{tok}-{case.id} */ {case.sql}"


def _run_raw_statement(conn: psycopg.Connection[Any], statement: str, case: Case) -> None:
    cursor = psycopg.ClientCursor(conn)  # the simple query protocol, as psql sends it
    if case.copy_data is not None:
        with cursor.copy(statement) as copy:
            copy.write(case.copy_data)
    elif re.search(r"(?is)\bcopy\b.*\bto\s+stdout\b", statement):
        with cursor.copy(statement) as copy:
            for _ in copy:
                pass
    else:
        cursor.execute(statement)


def raw_run(
    env: Env,
    case: Case,
    *,
    with_statement: bool,
    control_changed: bool | None = None,
    reader: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the case raw on the scratch copy: the snapshots before and after.

    As a superuser; with `reader`, as the least-privilege reader inside READ ONLY
    transactions — the walls without the guard. Both snapshots are taken on the connection
    that runs it, the first before the prelude. With `control_changed`, a trace another
    process reports asynchronously is waited for.
    """
    side = env.scratch
    if case.trace == "victims":
        side.ensure_victim()
    side.drain()
    options = case.options
    dsn = side.dsn
    if reader:
        options = f"{case.options or ''} {RO}".strip()
        dsn = psycopg.conninfo.make_conninfo(side.dsn, user=READER)
    if options:
        dsn = psycopg.conninfo.make_conninfo(dsn, options=options)
    conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None)
    try:
        pre = snapshot(env, side, conn, case, 0.0)
        for statement in case.prelude:
            # the reader may not even set an attack up: that is the wall working
            with contextlib.suppress(*((psycopg.Error,) if reader else ())):
                conn.execute(side.fill(statement))
        elapsed = 0.0
        if with_statement:
            started = time.monotonic()
            try:
                _run_raw_statement(conn, side.fill(marked(case, "scratch", env.tok)), case)
            except psycopg.Error as exc:
                env.raw_errors[case.id] = f"{type(exc).__name__}: {exc}"
            elapsed = time.monotonic() - started
        for statement in case.epilogue:
            with contextlib.suppress(psycopg.Error):
                conn.execute(side.fill(statement))
        post = snapshot(env, side, conn, case, elapsed)
        if control_changed is not None and case.trace in ASYNC_TRACES:
            deadline = time.monotonic() + 5
            while (post[case.trace] != pre[case.trace]) == control_changed:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
                notes = post["notify"]
                post = snapshot(env, side, conn, case, elapsed)
                post["notify"] += notes
        return pre, post
    finally:
        conn.close()


def new_log_text(env: Env, offset: int) -> str:
    assert env.log_path is not None
    with env.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def log_offset(env: Env) -> int:
    return env.log_path.stat().st_size if env.log_path is not None else 0


# -- the tests -------------------------------------------------------------------------------


def test_the_corpus_is_large_and_varied() -> None:
    ids = [case.id for case in CORPUS]
    assert len(ids) == len(set(ids)), "corpus ids must be unique (they are the markers)"
    assert len(CORPUS) >= 150
    assert len(READS) >= 40
    no_trace = [case for case in FORBIDDEN if case.no_trace]
    assert len(no_trace) * 10 <= len(FORBIDDEN), "statements without a trace stay a minority"
    for case in FORBIDDEN:
        assert (case.trace is None) != (case.no_trace is None), case.id


def test_the_corpus_meets_every_kind_of_refusal(env: Env) -> None:
    catalog = env.session.catalog
    kinds = {guard.classify(env.prod.fill(c.sql), catalog).kind for c in FORBIDDEN}
    assert kinds == set(guard.Kind) - {guard.Kind.READ, guard.Kind.INTERNAL}


def test_dblink_is_refused_by_name_even_when_not_installed() -> None:
    for sql in ("select dblink('x', 'y')", "select public.dblink_exec('x', 'y')"):
        verdict = guard.classify(sql, Catalog())
        assert not verdict.allowed
        assert "side effects" in verdict.reason


@pytest.mark.parametrize("case", FORBIDDEN, ids=[c.id for c in FORBIDDEN])
def test_forbidden_statement_is_refused_unsent_audited_and_leaves_no_trace(
    env: Env, case: Case
) -> None:
    side = env.prod
    statement = side.fill(marked(case, "corpus", env.tok))
    conn = env.session._conn
    if case.trace == "victims":
        side.ensure_victim()
    side.drain()
    before = snapshot(env, side, conn, case, 0.0)
    seq = env.evidence.last_seq()
    offset = log_offset(env)

    started = time.monotonic()
    with pytest.raises(ForbiddenAction) as refused:
        env.session.execute(statement)
    elapsed = time.monotonic() - started

    # nothing changed on production, in the database or in the session
    after = snapshot(env, side, conn, case, elapsed)
    assert differences(before, after, unchanged_ignoring(env)) == {}
    assert not env.session.in_transaction
    # audited as refused, and nothing else was recorded as sent
    records = [(r.role, r.outcome, r.sql) for r in env.evidence.records("audit", since=seq)]
    assert records == [("production", "refused", statement)]
    assert refused.value.sql == statement
    # never sent: the marker is not in the server's statement log
    if env.log_path is not None and case.mark:
        assert f"corpus-{env.tok}-{case.id} " not in new_log_text(env, offset)

    # executed raw on the scratch copy, the statement leaves its trace (or none, and why):
    # the trace is what the run with the statement changes and the control run — the same
    # prelude and epilogue without the statement — does not, or the other way round
    before_control, after_control = raw_run(env, case, with_statement=False)
    if case.trace is not None:
        control_changed = before_control[case.trace] != after_control[case.trace]
        before, after = raw_run(env, case, with_statement=True, control_changed=control_changed)
        changed = before[case.trace] != after[case.trace]
        assert changed != control_changed, (
            f"{case.id}: executed raw, it should have changed {case.trace}"
            f" (raw error: {env.raw_errors.get(case.id)})"
        )
    else:
        assert differences(before_control, after_control) == {}
        before, after = raw_run(env, case, with_statement=True)
        assert differences(before, after) == {}, f"{case.id}: {case.no_trace}"


@pytest.mark.parametrize("case", READS, ids=[c.id for c in READS])
def test_plain_read_is_allowed_sent_and_audited(env: Env, case: Case) -> None:
    side = env.prod
    statement = side.fill(marked(case, "corpus", env.tok))
    conn = env.session._conn
    before = snapshot(env, side, conn, case, 0.0)
    seq = env.evidence.last_seq()
    offset = log_offset(env)

    rows = env.session.execute(statement)

    assert rows, "a read of the corpus returns rows"
    after = snapshot(env, side, conn, case, 0.0)
    assert differences(before, after, unchanged_ignoring(env)) == {}
    records = [(r.outcome, r.sql) for r in env.evidence.records("audit", since=seq)]
    assert ("sent", statement) in records
    # the same log check that finds no refused statement finds every read: it can fail
    if env.log_path is not None:
        assert f"corpus-{env.tok}-{case.id} " in new_log_text(env, offset)


# What the role and READ ONLY alone still let through: attacks that need no privilege. The
# guard refuses them; without it they would leave these traces. Every other attack of the
# corpus is stopped by the least-privilege reader inside a READ ONLY transaction.
NO_PRIVILEGE_TRACES = {
    "settings": "SET, RESET and set_config change the session",
    "transaction": "transaction control changes the session",
    "listen": "LISTEN is session state",
    "prepared": "prepared statements are session state",
    "cursors": "cursors are session state",
    "locks": "advisory and ACCESS SHARE locks are open to every reader",
    "elapsed": "any role may hold its snapshot and connection",
    "notify": "NOTIFY and pg_notify work in a READ ONLY transaction",
}
NO_PRIVILEGE_CASES = {
    # SELECT on a file_fdw table (pg_read_all_data grants it) runs its program on the server
    "file-fdw-program": "a reader may read a foreign table whose program runs on the server",
}


@pytest.mark.slow
def test_the_privilege_wall_alone_stops_every_attack_that_needs_a_privilege(env: Env) -> None:
    """Run each traced attack raw as the reader in READ ONLY: only the known few leave a trace."""
    traced = [case for case in FORBIDDEN if case.trace is not None]
    through: list[str] = []
    for case in traced:
        trace = case.trace
        assert trace is not None
        before_control, after_control = raw_run(env, case, with_statement=False, reader=True)
        control_changed = before_control[trace] != after_control[trace]
        before, after = raw_run(
            env, case, with_statement=True, control_changed=control_changed, reader=True
        )
        if (before[trace] != after[trace]) != control_changed:
            through.append(case.id)
    by_id = {case.id: case for case in traced}
    unexpected = sorted(
        c
        for c in through
        if by_id[c].trace not in NO_PRIVILEGE_TRACES and c not in NO_PRIVILEGE_CASES
    )
    assert unexpected == [], f"the role and READ ONLY let these through: {unexpected}"
    beyond_session = [c for c in through if by_id[c].trace not in ("settings", "transaction")]
    print(
        f"\n{len(through)} of {len(traced)} traced attacks leave a trace with the role and"
        f" READ ONLY alone; beyond the session's own state: {sorted(beyond_session)}"
    )
