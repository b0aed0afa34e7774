"""`verify`: prove a clone isolated and its committed state the one copied from production."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import psycopg

from oneroof import connect, fingerprint, masking
from oneroof.clone._common import _sql, _target
from oneroof.clone.isolation import _TRIGGERS_QUERY, _trigger_key
from oneroof.clone.marker import (
    JOURNAL,
    READY,
    ROLE_CLONE,
    CloneVerification,
    _database,
    _guard_name,
    _identity_from_marker,
    _refuse_production_database,
    read_marker,
    refuse_unfit_server,
)
from oneroof.config import Config
from oneroof.connect import CloneSession, ServerIdentity, ServerSession
from oneroof.errors import BadInput, DatabaseError, ForbiddenAction
from oneroof.evidence import Evidence
from oneroof.fingerprint import Fingerprint
from oneroof.workspace import Workspace


def source_fingerprint(ws: Workspace, name: str | None = None) -> Fingerprint:
    """The fingerprint of production the clone was copied from (the marker names it)."""
    evidence = ws.evidence
    target = _target(ws.cfg, name)
    marker = read_marker(ws, target)
    if marker is None:
        raise BadInput(f"no marked clone {target!r} on the non-production server")
    reference = marker.get("source_fingerprint")
    if not reference:
        raise BadInput(f"clone {target!r} is not ready: its marker names no source fingerprint")
    found = fingerprint.find(evidence, str(reference))
    if found is None:
        raise BadInput(
            f"the source fingerprint {str(reference)[:8]} of clone {target!r} is not in this "
            "workspace's evidence store (was the clone created from another workspace?)"
        )
    return found


def entry_fingerprint(ws: Workspace, name: str | None = None) -> Fingerprint:
    """The fingerprint of production taken when the clone was made: its source for a dump
    (the same snapshot), production's own at the adoption of an engine's clone."""
    target = _target(ws.cfg, name)
    marker = read_marker(ws, target) or {}
    reference = (marker.get("production") or {}).get("fingerprint")
    if reference:
        # by label too: a clone equal to production has a fingerprint of the same id
        label = f"adopt-production:{target}"
        for record in reversed(ws.evidence.records("fingerprint")):
            if record.payload.get("label") == label and record.payload.get("id") == reference:
                return Fingerprint.from_dict(record.payload)
    return source_fingerprint(ws, name)


def verify(ws: Workspace, name: str | None = None) -> CloneVerification:
    """Check every point of isolation and that the committed state is the one copied."""
    cfg, evidence = ws.cfg, ws.evidence
    started = time.perf_counter()
    target = _target(cfg, name)
    result = CloneVerification(target)
    try:
        connect.check_clone_name(target, cfg.guard.clone_name_pattern)
        identity = ws.production_identity
        _guard_name(cfg, target, identity)
    except ForbiddenAction as exc:
        result.add("name_guard", False, exc.message)
        return _finish(evidence, result, started)
    # an adopted clone (clone/engines.py) lives on its own server, under its own name
    adopted = connect.adopted_clone(cfg, target)
    database = target if adopted is None else str(adopted["database"])
    with ws.server(None if adopted is None else str(adopted["dsn"])) as server:
        if adopted is None:
            refuse_unfit_server(cfg, server, identity)
        try:
            if adopted is None:
                _refuse_production_database(server, target, identity)
            else:
                recovering = bool(_sql(server, connect.STANDBY_PROOF)[0][0])
                connect.refuse_production_instance(cfg, server.identity, identity, recovering)
        except ForbiddenAction as exc:
            result.add("name_guard", False, exc.message)
            return _finish(evidence, result, started)
        where = "" if adopted is None else f" (database {database!r} at {server.identity.host})"
        result.add(
            "name_guard", True, f"{target!r} matches the pattern and is not production{where}"
        )
        found = _database(server, database)
        if found is None:
            result.add("exists", False, f"no database {database!r} on the non-production server")
            return _finish(evidence, result, started)
        marker = found.marker
        result.marker = marker
        if not _check_marker(result, marker, target, identity):
            return _finish(evidence, result, started)
        assert marker is not None
        isolation: Mapping[str, Any] = marker.get("isolation") or {}
        _check_access(cfg, server, result, database)
        with ws.clone(target) as clone:
            _check_triggers(cfg, clone, result)
            _check_replication(server, clone, result, database)
            _check_leases(cfg, clone, result)
            reference = str(marker.get("source_fingerprint") or "")
            source = fingerprint.find(evidence, reference) if reference else None
            now = fingerprint.take(
                clone,
                mode="full",
                jobs=cfg.clone.jobs,
                open_session=lambda: ws.clone(target),
                # hashed the way production was, whatever major the clone runs
                content_hash=source.content_hash if source is not None else None,
                **fingerprint.scope(cfg),
            )
            if marker.get("masking"):
                _check_masking(ws, clone, result, marker["masking"], isolation)
        result.clone_fingerprint = now.id
        result.source_fingerprint = reference or None
        if source is None:
            detail = f"source fingerprint {reference[:8]} is not in this workspace's evidence store"
            result.add("committed_state", False, detail)
            result.add("schema", False, detail)
        else:
            _check_state(result, source, now, isolation, marker.get("masking") or {})
            _check_schema(result, source, now, isolation)
    return _finish(evidence, result, started)


def _finish(evidence: Evidence, result: CloneVerification, started: float) -> CloneVerification:
    result.seconds = time.perf_counter() - started
    evidence.append(
        JOURNAL,
        {
            "event": "verified",
            "name": result.name,
            "ok": result.ok,
            "reasons": result.reasons,
            "clone_fingerprint": result.clone_fingerprint,
        },
    )
    return result


def _check_marker(
    result: CloneVerification,
    marker: dict[str, Any] | None,
    name: str,
    production: ServerIdentity,
) -> bool:
    if marker is None:
        result.add("marker", False, f"{name!r} carries no oneroof clone marker")
        return False
    problems = []
    if marker.get("state") != READY:
        problems.append(
            f"state is {marker.get('state')!r}, not 'ready' (an interrupted create: run "
            "`oneroof clone create` again)"
        )
    if (marker.get("role") or ROLE_CLONE) != ROLE_CLONE:
        problems.append(f"it is a {marker.get('role')} copy, not a clone")
    if marker.get("name") != name:
        problems.append(f"it names {marker.get('name')!r}, not {name!r}")
    source = _identity_from_marker(marker)
    if source is None or not source.same_database(production):
        where = (
            f"{source.database!r} of cluster {source.system_identifier}" if source else "nothing"
        )
        problems.append(
            f"its source is {where}, not production {production.database!r} of cluster "
            f"{production.system_identifier}"
        )
    if not marker.get("source_fingerprint"):
        problems.append("it names no source fingerprint")
    if problems:
        result.add("marker", False, "; ".join(problems))
        return False
    result.add(
        "marker",
        True,
        f"ready, made by {marker.get('method')} at {marker.get('created_at')} from "
        f"{production.database!r} (source fingerprint {str(marker['source_fingerprint'])[:8]})",
    )
    return True


def _check_access(cfg: Config, server: ServerSession, result: CloneVerification, name: str) -> None:
    roles = list(cfg.guard.app_roles)
    sessions = _sql(
        server,
        "select usename::text, count(*) from pg_catalog.pg_stat_activity"
        " where datname = %s and usename = any(%s) group by 1 order by 1",
        (name, roles),
    )
    count = sum(int(n) for _, n in sessions)
    detail = (
        "0 sessions of app roles"
        if not count
        else f"{count} session(s) of app roles: "
        + ", ".join(f"{role} ({n})" for role, n in sessions)
    )
    result.add("app_sessions", count == 0, detail, sessions={r: int(n) for r, n in sessions})
    existing = [
        str(r[0])
        for r in _sql(
            server,
            "select rolname::text from pg_catalog.pg_roles where rolname = any(%s) order by 1",
            (roles,),
        )
    ]
    allowed = []
    for role in ["public", *existing]:
        rows = _sql(
            server, "select pg_catalog.has_database_privilege(%s, %s, 'CONNECT')", (role, name)
        )
        if rows and rows[0][0]:
            allowed.append("PUBLIC" if role == "public" else role)
    absent = [r for r in roles if r not in existing]
    if allowed:
        detail = "CONNECT still granted to " + ", ".join(allowed)
    else:
        detail = "no CONNECT for PUBLIC" + (f" or {', '.join(existing)}" if existing else "")
        if absent:
            detail += f" (not on this server: {', '.join(absent)})"
    result.add("connect_privilege", not allowed, detail, allowed=allowed)


def _check_triggers(cfg: Config, clone: CloneSession, result: CloneVerification) -> None:
    patterns = list(cfg.isolation.disable_triggers)
    if not patterns:
        result.add("triggers", True, "no isolation.disable_triggers configured")
        return
    rows = _sql(clone, _TRIGGERS_QUERY, (patterns,))
    enabled = [_trigger_key(s, t, g) for s, t, g, state, _, _ in rows if state != "D"]
    if enabled:
        result.add(
            "triggers",
            False,
            f"{len(enabled)} of {len(rows)} configured trigger(s) enabled: " + ", ".join(enabled),
            enabled=enabled,
        )
    else:
        result.add("triggers", True, f"all {len(rows)} trigger(s) matching {patterns} disabled")


def _check_replication(
    server: ServerSession, clone: CloneSession, result: CloneVerification, name: str
) -> None:
    enabled = [
        str(r[0])
        for r in _sql(
            server,
            "select s.subname::text from pg_catalog.pg_subscription s"
            " join pg_catalog.pg_database d on d.oid = s.subdbid"
            " where d.datname = %s and s.subenabled order by 1",
            (name,),
        )
    ]
    result.add(
        "subscriptions",
        not enabled,
        "no enabled subscription" if not enabled else "enabled: " + ", ".join(enabled),
    )
    slots = [
        str(r[0])
        for r in _sql(
            server,
            "select slot_name::text from pg_catalog.pg_replication_slots where database = %s",
            (name,),
        )
    ]
    result.add(
        "replication_slots",
        not slots,
        "no replication slot" if not slots else "slots: " + ", ".join(slots),
    )
    mappings = [
        f"{srv} for {user}"
        for srv, user in _sql(
            clone, "select srvname::text, usename::text from pg_catalog.pg_user_mappings"
        )
    ]
    result.add(
        "user_mappings",
        not mappings,
        "no user mapping (foreign servers have no credentials)"
        if not mappings
        else "user mappings: " + ", ".join(mappings),
    )


def _check_leases(cfg: Config, clone: CloneSession, result: CloneVerification) -> None:
    counter = cfg.isolation.leases_counter
    if not counter:
        result.add("leases", True, "no isolation.leases_counter configured")
        return
    query = cfg.counters.get(counter)
    if query is None:
        result.add("leases", False, f"isolation.leases_counter {counter!r} is not in [counters]")
        return
    try:
        with clone.transaction():
            value = clone.scalar(query)
    except (psycopg.Error, DatabaseError) as exc:
        result.add("leases", False, f"counter {counter!r} failed on the clone: {exc}")
        return
    ok = value == 0 or value is False
    result.add("leases", ok, f"{counter} = {value}", value=value)


def _check_state(
    result: CloneVerification,
    source: Fingerprint,
    now: Fingerprint,
    isolation: Mapping[str, Any],
    masking_record: Mapping[str, Any] | None = None,
) -> None:
    reset_tables: Mapping[str, Any] = isolation.get("reset_tables") or {}
    # masked tables differ from production by design: they must be as they were masked
    masked_tables: Mapping[str, Any] = (masking_record or {}).get("tables") or {}
    expected, unexpected, masked = [], [], set()
    for difference in fingerprint.diff(source, now, sections=["counts", "content"]):
        recorded = reset_tables.get(difference.key)
        if recorded is None and difference.key in masked_tables:
            recorded = masked_tables[difference.key]
            masked.add(difference.key)
        if (
            isinstance(recorded, Mapping)
            and difference.change == "changed"
            and now.sections["counts"].get(difference.key) == recorded.get("count")
            and now.sections.get("content", {}).get(difference.key) == recorded.get("content")
        ):
            expected.append(difference)
        else:
            unexpected.append(difference)
    if unexpected:
        keys = list(dict.fromkeys(d.key for d in unexpected))
        result.add(
            "committed_state",
            False,
            f"{len(keys)} table(s) differ from the source fingerprint "
            f"{source.short}: " + ", ".join(keys),
            differences=[d.as_dict() for d in unexpected],
        )
        return
    tables = len(now.sections.get("counts", {}))
    detail = f"counts and content of {tables} table(s) equal the source fingerprint {source.short}"
    changed = sorted({d.key for d in expected} - masked)
    if changed:
        detail += f" (as isolation.reset_sql left them: {', '.join(changed)})"
    if masked_tables:
        detail += f"; {len(masked_tables)} masked table(s) as they were masked: " + ", ".join(
            sorted(masked_tables)
        )
    result.add("committed_state", True, detail)


def _check_masking(
    ws: Workspace,
    clone: CloneSession,
    result: CloneVerification,
    record: Mapping[str, Any],
    isolation: Mapping[str, Any],
) -> None:
    """No masked column holds a production value; the columns masking kept equal production's.

    The kept columns are compared with production's digest taken at the snapshot; the masked
    ones with production as it is now, by keyed hashes of both sides (`masking.prove`).
    """
    tables: Mapping[str, Any] = record.get("tables") or {}
    method = str(record.get("content_hash") or fingerprint.RECORD_HASH)
    reset_tables: Mapping[str, Any] = isolation.get("reset_tables") or {}
    problems: list[str] = []
    kept = fingerprint.partial_content(
        clone, {key: table.get("derived") or [] for key, table in tables.items()}, method
    )
    for key, table in tables.items():
        if key in reset_tables:
            continue  # isolation.reset_sql changed it on purpose after masking
        if list(kept.get(key, ())) != list(table.get("unmasked") or ()):
            problems.append(
                f"{key}: the columns masking keeps differ from production's at the snapshot"
            )
    with ws.reader() as production:  # a hot standby of production, when there is one
        proofs = masking.prove(
            production, clone, record.get("columns") or [], ws.cfg.production.scan_budget_rows
        )
    masked = [p for p in proofs if p.rule != "shuffle"]
    checked = [p for p in masked if p.checked]
    present = sum(p.shared for p in checked)
    for proof in checked:
        if proof.shared:
            problems.append(
                f"{proof.column}: {proof.shared} of its {proof.clone_values} distinct values "
                "are production values"
            )
    detail = f"{len(masked)} columns masked, {present} production values present"
    if checked:
        detail += (
            f" (keyed hashes of {sum(p.clone_values for p in checked)} clone and "
            f"{sum(p.production_values for p in checked)} production values compared)"
        )
    unchecked = [p.column for p in masked if not p.checked]
    if unchecked:
        detail += f"; not proven within the scan budget: {', '.join(unchecked)}"
    shuffled = [p.column for p in proofs if p.rule == "shuffle"]
    if shuffled:
        detail += f"; shuffled (production's values on other rows): {', '.join(shuffled)}"
    result.add(
        "masking",
        not problems,
        "; ".join(problems) if problems else detail,
        masked=len(masked),
        present=present,
        proven=len(checked) == len(masked),
        shuffled=len(shuffled),
        columns=[p.as_dict() for p in proofs],
    )


def _check_schema(
    result: CloneVerification,
    source: Fingerprint,
    now: Fingerprint,
    isolation: Mapping[str, Any],
) -> None:
    disabled = {f"trigger {key}" for key in isolation.get("disabled_triggers") or []}
    expected, unexpected = [], []
    for difference in fingerprint.diff(source, now, sections=["schema"]):
        if (
            difference.key in disabled
            and difference.change == "changed"
            and isinstance(difference.after, dict)
            and set(difference.after) == {"enabled"}
            and difference.after.get("enabled") == "D"
        ):
            expected.append(difference.key.removeprefix("trigger ") + " disabled")
        else:
            unexpected.append(difference)
    if unexpected:
        result.add(
            "schema",
            False,
            f"{len(unexpected)} difference(s) the isolation did not make: "
            + "; ".join(d.describe() for d in unexpected[:5])
            + (" …" if len(unexpected) > 5 else ""),
            expected_by_isolation=expected,
            unexpected=[d.as_dict() for d in unexpected],
        )
        return
    detail = "equal to the source"
    if expected:
        detail += " except what isolation changed: " + ", ".join(expected)
    result.add("schema", True, detail, expected_by_isolation=expected)
