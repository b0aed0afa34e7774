"""Reset, drop and list clones, and the drops of our own databases they share with create."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from oneroof import connect
from oneroof.clone import engines
from oneroof.clone._common import Step, _ident, _now, _quiet, _sql, _target
from oneroof.clone.copying import copy_database
from oneroof.clone.isolation import _drop_slots, isolate
from oneroof.clone.marker import (
    CREATING,
    MARKER_VERSION,
    READY,
    ROLE_CLONE,
    ROLE_GOLDEN,
    CloneEntry,
    CloneInfo,
    DropResult,
    _database,
    _guard_name,
    _identity_from_marker,
    _interrupted,
    _journal,
    _process_alive,
    _refuse_production_database,
    _write_marker,
    golden_name,
    parse_marker,
    refuse_unfit_server,
)
from oneroof.config import Config
from oneroof.connect import ServerIdentity, ServerSession
from oneroof.errors import BadInput, ForbiddenAction
from oneroof.workspace import Workspace

# -- reset ------------------------------------------------------------------------------------


def reset(ws: Workspace, name: str | None = None, *, step: Step | None = None) -> CloneInfo:
    """Rebuild the clone from its golden copy, re-isolate it and mark it ready.

    Never connects to production: the production identity the name guard needs comes from
    the golden copy's marker (recorded from production at creation) and from the configured
    DSN's database name.
    """
    cfg, evidence = ws.cfg, ws.evidence
    if _engine_made(cfg, name):
        return engines.reset(ws, name, step=step)
    say = step or _quiet
    started = time.perf_counter()
    target = _target(cfg, name)
    _guard_name(cfg, target, None)
    golden = golden_name(target)
    with ws.server() as server:
        golden_db = _database(server, golden)
        clone_db = _database(server, target)
        if clone_db is not None and clone_db.marker is None:
            if _interrupted(evidence, target, server) not in ("create-started", "reset-started"):
                raise ForbiddenAction(
                    f"refused: database {target!r} carries no oneroof marker; only a clone made "
                    "by `oneroof clone create` is reset"
                )
        elif clone_db is not None and (
            clone_db.role != ROLE_CLONE or (clone_db.marker or {}).get("name") != target
        ):
            raise ForbiddenAction(
                f"refused: {target!r} carries the marker of {clone_db.role} "
                f"{(clone_db.marker or {}).get('name')!r}, not of a clone named {target!r}"
            )
        elif clone_db is not None and _process_alive(clone_db.marker or {}):
            raise BadInput(
                f"clone {target!r} is being created by process "
                f"{(clone_db.marker or {}).get('pid')} on this host; wait for it to finish"
            )
        if golden_db is None or golden_db.marker is None:
            raise BadInput(
                f"clone {target!r} has no golden copy ({golden!r}) to reset from; run "
                "`oneroof clone create`"
            )
        gmarker = golden_db.marker
        if (
            gmarker.get("role") != ROLE_GOLDEN
            or gmarker.get("clone") != target
            or gmarker.get("state") != READY
        ):
            raise ForbiddenAction(f"refused: {golden!r} is not a ready golden copy of {target!r}")
        identity = _identity_from_marker(gmarker)
        _guard_name(cfg, target, identity)
        refuse_unfit_server(cfg, server, identity)
        _refuse_production_database(server, target, identity)
        _refuse_production_database(server, golden, identity)

        _journal(evidence, "reset-started", target, server)
        phases: dict[str, float] = {}
        tick = time.perf_counter()
        if clone_db is not None:
            say(f"dropping {target}")
            _drop_database(ws, server, target, identity)
        phases["drop"] = time.perf_counter() - tick
        tick = time.perf_counter()
        say(f"copying golden copy {golden} into {target}")
        copied = copy_database(cfg, server, target, golden)
        say(f"copied by {copied.describe()} in {copied.seconds:.2f}s")
        marker = {
            key: value
            for key, value in gmarker.items()
            if key not in ("clone", "golden", "created_at", "role", "name", "state")
        }
        marker.update(
            version=MARKER_VERSION,
            role=ROLE_CLONE,
            name=target,
            state=CREATING,
            golden=golden,
            pid=os.getpid(),
            host=socket.gethostname(),
            copy=copied.to_dict(),
        )
        created_at = gmarker.get("created_at")
        _write_marker(server, target, marker)
        phases["copy"] = time.perf_counter() - tick
        tick = time.perf_counter()
        try:
            with ws.clone(target, production=identity) as clone:
                again = isolate(
                    cfg, server, clone, target, say, content_hash=gmarker.get("content_hash")
                )
        except BaseException as exc:
            _journal(evidence, "reset-failed", target, server, error=str(exc)[:500])
            raise
        phases["isolate"] = time.perf_counter() - tick
        marker["isolation"] = _merge_isolation(gmarker.get("isolation") or {}, again)
        marker.pop("pid", None)
        marker.pop("host", None)
        marker.update(state=READY, created_at=created_at, reset_at=_now())
        _write_marker(server, target, marker)
        _journal(
            evidence, "reset", target, server, source_fingerprint=marker.get("source_fingerprint")
        )
    say(f"clone {target} reset from {golden}")
    return CloneInfo(
        "reset",
        target,
        golden,
        str(marker.get("method", "")),
        marker,
        time.perf_counter() - started,
        phases,
        copy=copied.to_dict(),
    )


def _merge_isolation(first: Mapping[str, Any], again: Mapping[str, Any]) -> dict[str, Any]:
    """What isolation changed since the source: the create's changes plus the re-isolation's."""
    merged: dict[str, Any] = dict(first)
    for key, value in again.items():
        if key in ("reset_tables",):
            merged[key] = {**dict(first.get(key) or {}), **dict(value)}
        elif isinstance(value, list) and isinstance(first.get(key), list):
            seen = list(first[key])
            merged[key] = seen + [v for v in value if v not in seen]
        else:
            merged[key] = value
    merged["disabled_triggers"] = sorted(
        set(first.get("disabled_triggers") or []) | set(again.get("disabled_triggers") or [])
    )
    merged["already_disabled_triggers"] = sorted(
        set(again.get("already_disabled_triggers") or []) - set(merged["disabled_triggers"])
    )
    return merged


# -- drop and list ----------------------------------------------------------------------------


def drop(ws: Workspace, name: str | None = None, *, step: Step | None = None) -> DropResult:
    """Drop the clone and its golden copy — only databases that pass the guard and are ours."""
    cfg, evidence = ws.cfg, ws.evidence
    if _engine_made(cfg, name):
        return engines.drop(ws, name, step=step)
    say = step or _quiet
    target = _target(cfg, name)
    _guard_name(cfg, target, None)
    golden = golden_name(target)
    result = DropResult(target)
    with ws.server() as server:
        clone_db = _database(server, target)
        golden_db = _database(server, golden)
        if clone_db is None and golden_db is None:
            raise BadInput(
                f"no clone {target!r} (nor its golden copy) on the non-production server"
            )
        identity: ServerIdentity | None = None
        if clone_db is not None:
            if clone_db.marker is None:
                raise ForbiddenAction(
                    f"refused: database {target!r} carries no oneroof marker; only a clone made "
                    "by `oneroof clone create` is dropped"
                )
            if clone_db.role != ROLE_CLONE or clone_db.marker.get("name") != target:
                raise ForbiddenAction(
                    f"refused: {target!r} carries the marker of {clone_db.role} "
                    f"{clone_db.marker.get('name')!r}, not of a clone named {target!r}"
                )
            if clone_db.state not in (READY, CREATING):
                raise ForbiddenAction(
                    f"refused: {target!r} carries a marker in an unknown state {clone_db.state!r}"
                )
            if _process_alive(clone_db.marker):
                raise BadInput(
                    f"clone {target!r} is being created by process "
                    f"{clone_db.marker.get('pid')} on this host; wait for it to finish"
                )
            identity = _identity_from_marker(clone_db.marker)
        if golden_db is not None:
            gmarker = golden_db.marker
            if (
                gmarker is None
                or gmarker.get("role") != ROLE_GOLDEN
                or gmarker.get("clone") != target
            ):
                raise ForbiddenAction(
                    f"refused: {golden!r} is not marked as the golden copy of {target!r}; "
                    "nothing was dropped"
                )
            identity = identity or _identity_from_marker(gmarker)
        _guard_name(cfg, target, identity)
        refuse_unfit_server(cfg, server, identity)
        _refuse_production_database(server, target, identity)
        _refuse_production_database(server, golden, identity)
        for database, present in ((target, clone_db), (golden, golden_db)):
            if present is None:
                continue
            say(f"dropping {database}")
            _drop_database(ws, server, database, identity)
            result.dropped.append(database)
        _journal(evidence, "dropped", target, server, dropped=result.dropped)
    return result


def _engine_made(cfg: Config, name: str | None) -> bool:
    """True for a clone an engine made or the user brought (`clone/engines.py`)."""
    target = _target(cfg, name)
    connect.check_clone_name(target, cfg.guard.clone_name_pattern)
    return cfg.clone.method == engines.COMMAND or connect.adopted_clone(cfg, target) is not None


def list_clones(ws: Workspace) -> list[CloneEntry]:
    """Every database of the non-production server that carries a oneroof marker, and the
    workspace's adopted clones (each where it is)."""
    adopted = engines.entries(ws)
    if ws.cfg.clone_server_dsn is None:
        return adopted
    with ws.server() as server:
        rows = _sql(
            server,
            "select d.datname::text, pg_catalog.shobj_description(d.oid, 'pg_database'),"
            " case when has_database_privilege(d.oid, 'CONNECT')"
            " then pg_catalog.pg_database_size(d.oid) end"
            " from pg_catalog.pg_database d order by 1",
        )
    marked = [(str(n), parse_marker(c), s) for n, c, s in rows]
    names = {n for n, m, _ in marked if m is not None}
    entries = []
    for database, marker, size in marked:
        if marker is None:
            continue
        role = str(marker.get("role") or ROLE_CLONE)
        golden = marker.get("golden") if role == ROLE_CLONE else None
        entries.append(
            CloneEntry(
                name=database,
                role=role,
                state=str(marker.get("state") or "unknown"),
                marker=marker,
                size_bytes=int(size) if size is not None else None,
                golden=str(golden) if golden and golden in names else None,
            )
        )
    return entries + [a for a in adopted if a.name not in names]


# -- dropping and copying our own databases ---------------------------------------------------


def _terminate_others(server: ServerSession, name: str) -> int:
    """End every other session on `name` (a clone of ours that is being templated)."""
    rows = _sql(
        server,
        "select count(*) filter (where pg_catalog.pg_terminate_backend(pid, 5000))"
        " from pg_catalog.pg_stat_activity where datname = %s"
        " and pid <> pg_catalog.pg_backend_pid()",
        (name,),
    )
    return int(rows[0][0]) if rows else 0


def _abandon(
    ws: Workspace,
    server: ServerSession,
    name: str,
    golden: str,
    identity: ServerIdentity,
    marker: Mapping[str, Any],
    error: BaseException,
) -> None:
    """After a failed create: drop the half-made clone (and half-made golden copy)."""
    _journal(ws.evidence, "create-failed", name, server, error=str(error)[:500])
    if server.closed:
        return
    try:
        current = _database(server, name)
        if current is not None and current.state == CREATING:
            _drop_database(ws, server, name, identity)
        if marker.get("golden_state") == CREATING:
            made = _database(server, golden)
            if made is not None and made.marker is None:
                _drop_database(ws, server, golden, identity, unmarked=True)
    except (psycopg.Error, ForbiddenAction):
        pass  # the marker says creating: verify refuses it, the next create rebuilds it


def _drop_database(
    ws: Workspace,
    server: ServerSession,
    name: str,
    identity: ServerIdentity | None,
    *,
    unmarked: bool = False,
) -> None:
    """Drop one database of ours: its subscriptions and slots first, then WITH (FORCE)."""
    subscriptions = _sql(
        server,
        "select s.subname::text from pg_catalog.pg_subscription s"
        " join pg_catalog.pg_database d on d.oid = s.subdbid where d.datname = %s",
        (name,),
    )
    if subscriptions:
        with ws.clone(name, production=identity, require_marker=not unmarked) as clone:
            for (subname,) in subscriptions:
                _sql(clone, sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(_ident(subname)))
                _sql(
                    clone,
                    sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(_ident(subname)),
                )
                _sql(clone, sql.SQL("DROP SUBSCRIPTION {}").format(_ident(subname)))
    _drop_slots(server, name)
    current = _database(server, name)
    if current is None:
        return
    if current.is_template:
        _sql(server, sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(_ident(name)))
    _sql(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))
