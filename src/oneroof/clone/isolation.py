"""`isolate`: cut a freshly copied clone off from the world and record what changed."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from oneroof import fingerprint
from oneroof.clone._common import Step, _ident, _sql
from oneroof.config import Config
from oneroof.connect import CloneSession, ServerSession
from oneroof.errors import DatabaseError

_TRIGGERS_QUERY = """
    select n.nspname::text, c.relname::text, t.tgname::text, t.tgenabled::text,
           c.relkind::text, t.tgrelid::bigint
    from pg_catalog.pg_trigger t
    join pg_catalog.pg_class c on c.oid = t.tgrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where not t.tgisinternal and t.tgname like any(%s)
    order by t.tgparentid <> 0, 1, 2, 3
"""
_RELFILENODES = """
    select n.nspname::text, c.relname::text, c.relfilenode::bigint
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'm')
      and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
"""
_MODIFIED = """
    select schemaname::text, relname::text from pg_catalog.pg_stat_xact_user_tables
    where n_tup_ins + n_tup_upd + n_tup_del > 0
"""


def _trigger_key(schema: str, table: str, trigger: str) -> str:
    return f"{schema}.{table}.{trigger}"


def isolate(
    cfg: Config,
    server: ServerSession,
    clone: CloneSession,
    name: str,
    say: Step,
    *,
    content_hash: str | None = None,
) -> dict[str, Any]:
    """Cut the clone off from the world; return what was changed, for the marker.

    CONNECT is revoked from PUBLIC and the app roles and their sessions are ended; the
    configured triggers are disabled one by one (never `session_replication_role`, which
    would also switch off foreign keys); subscriptions are disabled and detached from their
    slots; slots of the clone are dropped; user mappings are dropped, so foreign servers
    have no credentials; `isolation.reset_sql` runs last, in one transaction.
    """
    report: dict[str, Any] = {}
    revoked = ["PUBLIC"]
    _sql(server, sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(_ident(name)))
    app_roles = list(cfg.guard.app_roles)
    existing = [
        str(r[0])
        for r in _sql(
            server,
            "select rolname::text from pg_catalog.pg_roles where rolname = any(%s) order by 1",
            (app_roles,),
        )
    ]
    for role in existing:
        _sql(
            server,
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(_ident(name), _ident(role)),
        )
        revoked.append(role)
    report["revoked_connect"] = revoked
    report["absent_app_roles"] = [r for r in app_roles if r not in existing]
    terminated = _sql(
        server,
        "select count(*) filter (where pg_catalog.pg_terminate_backend(pid, 5000))"
        " from pg_catalog.pg_stat_activity where datname = %s and usename = any(%s)",
        (name, app_roles),
    )
    report["terminated_sessions"] = int(terminated[0][0]) if terminated else 0

    disabled: list[str] = []
    already: list[str] = []
    not_disableable: list[str] = []
    patterns = list(cfg.isolation.disable_triggers)
    if patterns:
        for schema, table, trigger, enabled, kind, relid in _sql(
            clone, _TRIGGERS_QUERY, (patterns,)
        ):
            key = _trigger_key(schema, table, trigger)
            if enabled == "D":
                already.append(key)
                continue
            if kind not in ("r", "p", "f"):
                not_disableable.append(key)  # INSTEAD OF triggers of views cannot be disabled
                continue
            state = _sql(
                clone,
                "select tgenabled::text from pg_catalog.pg_trigger"
                " where tgrelid = %s::oid and tgname = %s",
                (relid, trigger),
            )
            if state and state[0][0] == "D":
                disabled.append(key)  # disabled with its partitioned parent just now
                continue
            keyword = sql.SQL("FOREIGN TABLE" if kind == "f" else "TABLE")
            _sql(
                clone,
                sql.SQL("ALTER {} {} DISABLE TRIGGER {}").format(
                    keyword, _ident(schema, table), _ident(trigger)
                ),
            )
            disabled.append(key)
        say(f"disabled {len(disabled)} trigger(s)")
    report["disabled_triggers"] = disabled
    report["already_disabled_triggers"] = already
    report["triggers_not_disableable"] = not_disableable

    subscriptions = []
    for (subname,) in _sql(
        server,
        "select s.subname::text from pg_catalog.pg_subscription s"
        " join pg_catalog.pg_database d on d.oid = s.subdbid where d.datname = %s order by 1",
        (name,),
    ):
        _sql(clone, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(_ident(subname)))
        _sql(
            clone,
            sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(_ident(subname)),
        )
        subscriptions.append(subname)
    report["disabled_subscriptions"] = subscriptions
    report["dropped_slots"] = _drop_slots(server, name)

    mappings = []
    for server_name, user in _sql(
        clone,
        "select srvname::text, case when umuser = 0 then null else usename::text end"
        " from pg_catalog.pg_user_mappings order by 1, 2",
    ):
        who = sql.SQL("PUBLIC") if user is None else _ident(user)
        _sql(
            clone,
            sql.SQL("DROP USER MAPPING IF EXISTS FOR {} SERVER {}").format(
                who, _ident(server_name)
            ),
        )
        mappings.append({"server": server_name, "user": user or "PUBLIC"})
    report["dropped_user_mappings"] = mappings
    report["foreign_servers"] = [
        str(r[0])
        for r in _sql(clone, "select srvname::text from pg_catalog.pg_foreign_server order by 1")
    ]

    report["reset_sql"] = list(cfg.isolation.reset_sql)
    report["reset_tables"] = (
        _run_reset_sql(cfg, clone, content_hash) if cfg.isolation.reset_sql else {}
    )
    return report


def _run_reset_sql(cfg: Config, clone: CloneSession, content_hash: str | None) -> dict[str, Any]:
    """Run `isolation.reset_sql` in one transaction; fingerprint the tables it changed."""
    changed: set[str] = set()
    with clone.write_transaction():
        before = {(s, t): node for s, t, node in _sql(clone, _RELFILENODES)}
        for statement in cfg.isolation.reset_sql:
            try:
                with clone.savepoint():
                    _sql(clone, statement)
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"isolation.reset_sql {statement!r} failed on the clone: "
                    f"{exc.diag.message_primary or exc} (SQLSTATE {exc.sqlstate})",
                    sqlstate=exc.sqlstate,
                ) from None
        changed.update(f"{s}.{t}" for s, t in _sql(clone, _MODIFIED))
        after = {(s, t): node for s, t, node in _sql(clone, _RELFILENODES)}
        # TRUNCATE (and rewrites) are not counted as modified rows; a new relfilenode shows them.
        for (schema, table), node in after.items():
            if before.get((schema, table)) != node:
                changed.add(f"{schema}.{table}")
    if not changed:
        return {}
    # hashed like the source, so that `verify` compares like with like
    taken = fingerprint.take(clone, mode="full", tables=sorted(changed), content_hash=content_hash)
    return {
        table: {
            "count": taken.sections["counts"].get(table),
            "content": taken.sections.get("content", {}).get(table),
        }
        for table in sorted(changed)
    }


def _drop_slots(server: ServerSession, name: str) -> list[str]:
    slots = _sql(
        server,
        "select slot_name::text, active_pid from pg_catalog.pg_replication_slots"
        " where database = %s",
        (name,),
    )
    dropped = []
    for slot, pid in slots:
        if pid is not None:
            _sql(server, "select pg_catalog.pg_terminate_backend(%s, 5000)", (pid,))
        _sql(server, "select pg_catalog.pg_drop_replication_slot(%s)", (slot,))
        dropped.append(str(slot))
    return dropped
