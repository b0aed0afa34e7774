"""`create`: copy production into a new clone, by dump or by template, and keep its golden copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from oneroof import connect, dump, fingerprint, masking
from oneroof.clone import engines
from oneroof.clone._common import Step, _ident, _now, _quiet, _sql, _target
from oneroof.clone.copying import copy_database
from oneroof.clone.isolation import isolate
from oneroof.clone.lifecycle import _abandon, _drop_database, _terminate_others
from oneroof.clone.marker import (
    CREATING,
    MAKER_KEYS,
    READY,
    ROLE_CLONE,
    ROLE_GOLDEN,
    CloneInfo,
    _database,
    _guard_name,
    _interrupted,
    _journal,
    _process_alive,
    _refuse_production_database,
    _write_marker,
    golden_name,
    major_mismatch,
    mark_ready,
    new_marker,
    refuse_unfit_server,
)
from oneroof.clone.process import _client, _spawn, _stop, _tail
from oneroof.config import Config, redact
from oneroof.connect import ProductionSession, ServerIdentity, ServerSession
from oneroof.errors import BadInput, CheckFailed, DatabaseError, ForbiddenAction
from oneroof.evidence import Evidence
from oneroof.fingerprint import Fingerprint
from oneroof.workspace import Workspace

DUMP_APP = "oneroof-dump"
RESTORE_APP = "oneroof-restore"
READ_ONLY_OPTION = "-c default_transaction_read_only=on"


# -- production facts -------------------------------------------------------------------------

# The roles a dump of the database names: owners, grantees and policy roles (pg_shdepend),
# and the bootstrap superuser, whose dependencies are not recorded.
_ROLES_QUERY = (
    "select r.rolname::text from pg_catalog.pg_roles r where r.oid = 10"
    " or r.oid in (select d.refobjid from pg_catalog.pg_shdepend d"
    " where d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass"
    " and d.dbid = (select oid from pg_catalog.pg_database where datname = current_database()))"
    " order by 1"
)
_ENCODING_QUERY = (
    "select pg_catalog.pg_encoding_to_char(d.encoding)::text, d.datcollate::text,"
    " d.datctype::text from pg_catalog.pg_database d where d.datname = current_database()"
)
_OTHER_SESSIONS = (
    "select count(*) from pg_catalog.pg_stat_activity"
    " where datname = %s and pid <> pg_catalog.pg_backend_pid()"
)


def create(ws: Workspace, name: str | None = None, *, step: Step | None = None) -> CloneInfo:
    """Copy production into a new, isolated, marked clone and keep its golden copy.

    Refuses (`ForbiddenAction`, nothing changed) a name the guard does not accept, the
    production database itself, and a database of that name that is not ours. An
    interrupted create of the same name is dropped and rebuilt; a ready clone is left alone
    (`BadInput`: reset or drop it first).
    """
    cfg, evidence = ws.cfg, ws.evidence
    if cfg.clone.method == engines.COMMAND:  # an external engine makes it (clone/engines.py)
        return engines.create(ws, name, step=step)
    say = step or _quiet
    started = time.perf_counter()
    target = _target(cfg, name)
    connect.check_clone_name(target, cfg.guard.clone_name_pattern)  # before any connection
    golden = golden_name(target)
    method = cfg.clone.method
    # a dump reads production's hot standby when there is one; a template copy the primary
    with ws.reader() if method == "dump" else ws.production() as session:
        identity = ws.production_identity
        _guard_name(cfg, target, identity)
        with ws.server() as server:
            refuse_unfit_server(cfg, server, identity)
            other_major = major_mismatch(server.identity, identity)
            if other_major:
                say(f"note: {other_major}")
            _refuse_production_database(server, target, identity)
            _refuse_production_database(server, golden, identity)
            if method == "template":
                if server.identity.system_identifier != identity.system_identifier:
                    raise BadInput(
                        "clone.method = 'template' copies the database inside one server, but "
                        "[clone] server_dsn is another cluster than production; use "
                        "method = 'dump'"
                    )
            else:
                dump.require_client_can_read(cfg, identity.server_version_num, "production")
            recovered = _prepare_create(ws, server, target, golden, identity, say)
            _journal(evidence, "create-started", target, server, method=method)
            marker = new_marker(target, method, identity, golden=golden)
            phases: dict[str, float] = {}
            try:
                if method == "template":
                    source = _copy_by_template(
                        ws, server, session, target, identity, marker, phases, say
                    )
                else:
                    source = _copy_by_dump(
                        ws, server, session, target, identity, marker, phases, say
                    )
                fingerprint.save(evidence, source, label=f"clone-source:{target}")
                marker["source_fingerprint"] = source.id
                marker["source_wal"] = source.wal
                marker["source_taken_at"] = source.taken_at
                marker["content_hash"] = source.content_hash
                _write_marker(server, target, marker)
                tick = time.perf_counter()
                say(f"isolating {target}")
                with ws.clone(target, production=identity) as clone:
                    marker["isolation"] = isolate(
                        cfg, server, clone, target, say, content_hash=source.content_hash
                    )
                marker["isolation"]["created_roles"] = marker.pop("created_roles", [])
                phases["isolate"] = time.perf_counter() - tick
                tick = time.perf_counter()
                _make_golden(ws, server, target, golden, identity, marker, say)
                phases["golden"] = time.perf_counter() - tick
                marker.pop("golden_state", None)
                mark_ready(marker)
                _write_marker(server, target, marker)
            except BaseException as exc:
                _abandon(ws, server, target, golden, identity, marker, exc)
                raise
            _journal(evidence, "created", target, server, source_fingerprint=source.id)
    say(f"clone {target} ready (golden copy {golden})")
    return CloneInfo(
        "create",
        target,
        golden,
        method,
        marker,
        time.perf_counter() - started,
        phases,
        recovered,
        [other_major] if other_major else [],
        copy=dict(marker.get("golden_copy") or {}),
    )


def _prepare_create(
    ws: Workspace,
    server: ServerSession,
    name: str,
    golden: str,
    identity: ServerIdentity,
    say: Step,
) -> list[str]:
    """Refuse what is not ours; drop what an interrupted run of ours left. Checks come first."""
    evidence = ws.evidence
    clone_db = _database(server, name)
    golden_db = _database(server, golden)
    drops: list[tuple[str, str, bool]] = []
    interrupted = _interrupted(evidence, name, server)
    if clone_db is not None:
        marker = clone_db.marker
        if marker is None:
            if interrupted not in ("create-started", "reset-started"):
                raise ForbiddenAction(
                    f"refused: a database {name!r} exists on the non-production server and "
                    "carries no oneroof marker, so it is not a clone this tool made; choose "
                    "another name or remove it yourself"
                )
            what = "reset" if interrupted == "reset-started" else "create"
            drops.append((name, f"{name}: unmarked leftover of an interrupted {what}", True))
        elif clone_db.role != ROLE_CLONE or marker.get("name") != name:
            raise ForbiddenAction(
                f"refused: {name!r} carries the marker of {marker.get('role')} "
                f"{marker.get('name')!r}, not of a clone named {name!r}"
            )
        elif clone_db.state == READY:
            raise BadInput(
                f"clone {name!r} already exists and is ready: verify it, or run "
                "`oneroof clone reset` (from its golden copy) or `oneroof clone drop` first"
            )
        else:
            if _process_alive(marker):
                raise BadInput(
                    f"clone {name!r} is being created by process {marker.get('pid')} on this "
                    "host; wait for it to finish"
                )
            drops.append((name, f"{name}: interrupted create (state {clone_db.state!r})", False))
    if golden_db is not None:
        gmarker = golden_db.marker
        clone_marker = clone_db.marker if clone_db is not None else None
        if gmarker is None:
            ours = (clone_marker or {}).get("golden_state") == CREATING or (
                _interrupted(evidence, golden, server) == "golden-started"
            )
            if not ours:
                raise ForbiddenAction(
                    f"refused: the golden copy's name {golden!r} is taken by a database "
                    "without a oneroof marker; remove it yourself or choose another clone name"
                )
            drops.append(
                (golden, f"{golden}: unmarked leftover of an interrupted golden copy", True)
            )
        elif gmarker.get("role") != ROLE_GOLDEN or gmarker.get("clone") != name:
            raise ForbiddenAction(
                f"refused: {golden!r} carries the marker of {gmarker.get('role')} "
                f"{gmarker.get('name')!r}, not the golden copy of {name!r}"
            )
        # A golden copy of ours stays until the new one replaces it: reset keeps working.
    recovered = []
    for database, note, unmarked in drops:
        say(f"recovering: dropping {note}")
        _drop_database(ws, server, database, identity, unmarked=unmarked)
        recovered.append(note)
    return recovered


def _create_database(
    server: ServerSession, name: str, encoding: tuple[str, str, str] | None
) -> None:
    """CREATE DATABASE from template0 with production's encoding (and locale, if known here)."""
    base = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(_ident(name))
    attempts: list[sql.Composable] = []
    if encoding is not None:
        enc, collate, ctype = encoding
        attempts.append(
            base
            + sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                sql.Literal(enc), sql.Literal(collate), sql.Literal(ctype)
            )
        )
        attempts.append(base + sql.SQL(" ENCODING {}").format(sql.Literal(enc)))
    attempts.append(base)
    for index, statement in enumerate(attempts):
        try:
            _sql(server, statement)
            return
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.FeatureNotSupported):
            if index == len(attempts) - 1:
                raise


def _ensure_roles(server: ServerSession, roles: Sequence[str]) -> list[str]:
    """Create, NOLOGIN, the roles the dump refers to that the non-production server lacks."""
    if not roles:
        return []
    present = {
        str(r[0])
        for r in _sql(
            server,
            "select rolname::text from pg_catalog.pg_roles where rolname = any(%s)",
            (list(roles),),
        )
    }
    created = []
    for role in roles:
        if role in present:
            continue
        try:
            _sql(server, sql.SQL("CREATE ROLE {} NOLOGIN").format(_ident(role)))
        except psycopg.errors.InsufficientPrivilege:
            missing = ", ".join(r for r in roles if r not in present)
            raise BadInput(
                f"the production database refers to roles the non-production server lacks "
                f"({missing}); create them there (NOLOGIN is enough) or let the maintenance "
                "user of clone.server_dsn create roles"
            ) from None
        except psycopg.errors.DuplicateObject:
            continue
        created.append(role)
    return created


def _copy_by_dump(
    ws: Workspace,
    server: ServerSession,
    session: ProductionSession,
    name: str,
    identity: ServerIdentity,
    marker: dict[str, Any],
    phases: dict[str, float],
    say: Step,
) -> Fingerprint:
    """pg_dump from the snapshot the source fingerprint reads, then pg_restore into the clone.

    With `[masking]` the masked tables' rows are read masked from the same snapshot and
    written into the clone beside pg_restore's data section, before its post-data one.
    """
    cfg, evidence = ws.cfg, ws.evidence
    masked = masking.plan(cfg, session)  # a bad rule is refused before the clone exists
    key = masking.resolve_key(cfg) if masked is not None and masked.needs_key else None
    encoding_rows = session.execute(_ENCODING_QUERY)
    encoding = tuple(str(v) for v in encoding_rows[0]) if encoding_rows else None
    say(f"creating database {name} on the non-production server")
    _create_database(server, name, encoding)  # type: ignore[arg-type]
    _write_marker(server, name, marker)
    work = cfg.state_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob(f"dump-{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed create of this workspace
    directory = Path(tempfile.mkdtemp(prefix=f"dump-{name}-", dir=work))
    try:
        tick = time.perf_counter()
        source, roles, snapshot, exported = _dump(
            cfg,
            evidence,
            session,
            directory,
            say,
            masked,
            key,
            ws.open_reader,
            ws.primary_lsn if session.standby else None,
        )
        phases["dump"] = time.perf_counter() - tick
        marker["snapshot"] = snapshot
        if session.standby:
            marker["read_from"] = {"standby": session.identity.as_dict(), **source.standby}
        created_roles = _ensure_roles(server, roles)
        marker["created_roles"] = created_roles
        tick = time.perf_counter()
        log = directory / "restore.log"
        if masked is None or exported is None:
            _restore(cfg, name, directory / "dump", log, say)
        else:
            _restore_masked(ws, name, identity, directory / "dump", log, say, masked, exported)
            marker["masking"] = _masking_record(ws, name, identity, masked, exported, source)
        phases["restore"] = time.perf_counter() - tick
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return source


def _dump(
    cfg: Config,
    evidence: Evidence,
    session: ProductionSession,
    directory: Path,
    say: Step,
    masked: masking.Plan | None = None,
    key: str | None = None,
    open_helper: Callable[[], ProductionSession] | None = None,
    primary_lsn: Callable[[], str | None] | None = None,
) -> tuple[Fingerprint, list[str], str, masking.Export | None]:
    """Export a snapshot, run pg_dump from it, and fingerprint production from it meanwhile.

    Masked tables are left out of pg_dump's data and read masked in the same transaction.
    On a hot standby (the session's own DSN) pg_dump reads the standby too, and the source
    fingerprint records the primary's position (`primary_lsn`) beside the replay position.
    """
    dsn = (session.dsn_setting or cfg.production_dsn).resolve()
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    options = f"{params.get('options') or ''} {READ_ONLY_OPTION}".strip()
    conninfo, env = _client(dsn, application_name=DUMP_APP, options=options)
    env.update(PGOPTIONS=READ_ONLY_OPTION, PGAPPNAME=DUMP_APP)
    log = directory / "dump.log"
    exclude: list[str] = []
    if masked is not None:
        exclude = [f"--exclude-table-data={pattern}" for pattern in masked.exclude_patterns()]
        if dump.client_major(cfg) >= 18:
            # statistics hold sample values (most common values, histogram bounds)
            exclude.append("--no-statistics")
    exported: masking.Export | None = None
    # pg_dump holds this snapshot for its whole run; max_snapshot_seconds cannot end it
    with session.transaction(hold_snapshot=True):
        snapshot = str(session.scalar("select pg_export_snapshot()"))
        command = [
            str(dump.bin_path(cfg, "pg_dump")),
            f"--snapshot={snapshot}",
            "-Fd",
            "-j",
            str(cfg.clone.jobs),
            "-Z",
            "0",
            "--no-sync",
            *exclude,
            "-f",
            str(directory / "dump"),
            "-d",
        ]
        evidence.audit(
            connect.PRODUCTION,
            "internal",
            " ".join([*command, redact(conninfo)]),
            "sent",
            program="pg_dump",
            jobs=cfg.clone.jobs,
            **session.audit_tags,
        )
        say(f"pg_dump -j {cfg.clone.jobs} from snapshot {snapshot}; fingerprinting meanwhile")
        process = _spawn([*command, conninfo], env, log)
        exporter: masking.Exporter | None = None
        try:
            if masked is not None and masked.tables:
                # the masked tables are read by more sessions of this snapshot meanwhile
                exporter = masking.Exporter(
                    masked,
                    key,
                    directory / "masked",
                    say,
                    version=session.identity.server_version_num,
                    jobs=cfg.clone.jobs if open_helper is not None else 1,
                )
                if open_helper is not None:
                    exporter.start(snapshot, open_helper)
            roles = [str(r[0]) for r in session.execute(_ROLES_QUERY)]
            source = fingerprint.take(
                session,
                mode="full",
                counters=cfg.counters,
                primary_lsn=primary_lsn,
                **fingerprint.scope(cfg),
            )
            if exporter is not None:
                exported = exporter.finish(session, source.content_hash)
                exporter = None
            code = process.wait()
        except BaseException:
            _stop(process)
            if exporter is not None:
                exporter.abandon()
            raise
    if code != 0:
        raise DatabaseError(f"pg_dump failed (exit code {code}): {_tail(log)}")
    return source, roles, snapshot, exported


def _restore_command(
    cfg: Config, name: str, directory: Path, section: str | None = None
) -> tuple[list[str], dict[str, str]]:
    dsn = psycopg.conninfo.make_conninfo(connect.server_dsn(cfg).resolve(), dbname=name)
    conninfo, env = _client(dsn, application_name=RESTORE_APP)
    env["PGAPPNAME"] = RESTORE_APP
    command = [
        str(dump.bin_path(cfg, "pg_restore")),
        "-j",
        str(cfg.clone.jobs),
        "--exit-on-error",
        *([f"--section={section}"] if section else []),
        "-d",
        conninfo,
        str(directory),
    ]
    return command, env


def _finish_restore(process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    try:
        code = process.wait()
    except BaseException:
        _stop(process)
        raise
    if code != 0:
        raise DatabaseError(f"pg_restore into {name!r} failed (exit code {code}): {_tail(log)}")


def _restore(cfg: Config, name: str, directory: Path, log: Path, say: Step) -> None:
    say(f"pg_restore -j {cfg.clone.jobs} into {name}")
    _finish_restore(_spawn(*_restore_command(cfg, name, directory), log), name, log)


def _restore_masked(
    ws: Workspace,
    name: str,
    identity: ServerIdentity,
    directory: Path,
    log: Path,
    say: Step,
    masked: masking.Plan,
    exported: masking.Export,
) -> None:
    """pre-data; then the other tables' data (pg_restore) and the masked rows (COPY) at once;
    then post-data, which builds the indexes and validates the foreign keys over both."""
    cfg = ws.cfg
    say(f"pg_restore pre-data into {name}")
    _finish_restore(_spawn(*_restore_command(cfg, name, directory, "pre-data"), log), name, log)
    say(f"pg_restore -j {cfg.clone.jobs} data into {name}; writing the masked rows meanwhile")
    process = _spawn(*_restore_command(cfg, name, directory, "data"), log)
    try:
        with ws.clone(name, production=identity) as clone:
            masking.load(clone, masked, exported)
    except BaseException:
        _stop(process)
        raise
    _finish_restore(process, name, log)
    say(f"pg_restore -j {cfg.clone.jobs} post-data into {name}")
    try:
        _finish_restore(
            _spawn(*_restore_command(cfg, name, directory, "post-data"), log), name, log
        )
    except DatabaseError as exc:
        if not re.search(r"violates|could not create unique index", str(exc)):
            raise
        lines = [m.line for m in masked.columns if m.line is not None]
        raise BadInput(
            f"[masking] the masked rows break a constraint of the clone: {exc}; change the rule",
            file=masked.file,
            line=min(lines) if lines else None,
        ) from None


def _masking_record(
    ws: Workspace,
    name: str,
    identity: ServerIdentity,
    masked: masking.Plan,
    exported: masking.Export,
    source: Fingerprint,
) -> dict[str, Any]:
    """What verify checks of the masked tables: the rows as masked, and production's digest
    of the columns masking left as they were (both from the snapshot)."""
    with ws.clone(name, production=identity) as clone:
        loaded = fingerprint.take(
            clone, mode="full", tables=list(masked.tables), content_hash=source.content_hash
        )
    record = masked.to_marker()
    record["content_hash"] = source.content_hash
    for key, table in masked.tables.items():
        count = loaded.sections["counts"].get(key)
        if count != source.sections.get("counts", {}).get(key):
            raise CheckFailed(
                f"masking: the clone's {key} has {count} rows, production's snapshot "
                f"{source.sections.get('counts', {}).get(key)}"
            )
        record["tables"][key].update(
            count=count,
            content=loaded.sections.get("content", {}).get(key),
            derived=list(table.derived),
            unmasked=list(exported.unmasked.get(key, (None, None))),
        )
    return record


def _copy_by_template(
    ws: Workspace,
    server: ServerSession,
    session: ProductionSession,
    name: str,
    identity: ServerIdentity,
    marker: dict[str, Any],
    phases: dict[str, float],
    say: Step,
) -> Fingerprint:
    """CREATE DATABASE … TEMPLATE production, proven equal to the fingerprint taken before.

    The copy needs production without sessions, ours included: the workspace's production
    session is closed first (the next read opens another).
    """
    cfg, evidence = ws.cfg, ws.evidence
    tick = time.perf_counter()
    say(f"fingerprinting production {identity.database}")
    source = fingerprint.take(session, mode="full", counters=cfg.counters, **fingerprint.scope(cfg))
    ws.close()
    phases["fingerprint"] = time.perf_counter() - tick
    # a session just closed (our own) can stay visible while its backend exits: wait for
    # it as long as CREATE DATABASE itself would (5 seconds)
    deadline = time.monotonic() + 5
    while True:
        others = int(_sql(server, _OTHER_SESSIONS, (identity.database,))[0][0])
        if not others or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    refusal = (
        f"refused: the production database {identity.database!r} has {{}} other session(s); "
        "CREATE DATABASE … TEMPLATE needs none. Use clone.method = 'dump', which copies "
        "from a snapshot while they keep working"
    )
    if others:
        raise ForbiddenAction(refusal.format(others))
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        _ident(name), _ident(identity.database)
    )
    text = statement.as_string(server.raw_for_clone)
    evidence.audit(connect.PRODUCTION, "internal", text, "sent", program="template copy")
    tick = time.perf_counter()
    say(f"copying {identity.database} into {name} (template)")
    try:
        _sql(server, statement)
    except psycopg.errors.ObjectInUse:
        raise ForbiddenAction(refusal.format("some")) from None
    _write_marker(server, name, marker)
    phases["copy"] = time.perf_counter() - tick
    with ws.clone(name, production=identity) as clone:
        copy = fingerprint.take(
            clone,
            mode="full",
            counters=cfg.counters,
            content_hash=source.content_hash,
            **fingerprint.scope(cfg),
        )
    differences = fingerprint.diff(source, copy)
    if differences:
        raise CheckFailed(
            f"production changed between its fingerprint and the template copy "
            f"({differences[0].describe()}); run create again, or use clone.method = 'dump'"
        )
    return source


def _make_golden(
    ws: Workspace,
    server: ServerSession,
    name: str,
    golden: str,
    identity: ServerIdentity,
    marker: dict[str, Any],
    say: Step,
) -> None:
    """Replace the golden copy with a connection-less template of the freshly isolated clone."""
    evidence = ws.evidence
    marker["golden_state"] = CREATING
    _write_marker(server, name, marker)
    _journal(evidence, "golden-started", golden, server, clone=name)
    if _database(server, golden) is not None:
        _drop_database(ws, server, golden, identity)
    say(f"keeping golden copy {golden}")
    _terminate_others(server, name)
    copied = copy_database(ws.cfg, server, golden, name)
    say(f"golden copy by {copied.describe()} in {copied.seconds:.2f}s")
    marker["golden_copy"] = copied.to_dict()
    _sql(
        server,
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true").format(
            _ident(golden)
        ),
    )
    golden_marker = {
        key: value
        for key, value in marker.items()
        if key != "golden_state" and key not in MAKER_KEYS
    }
    golden_marker.update(
        role=ROLE_GOLDEN, name=golden, clone=name, state=READY, created_at=_now(), golden=None
    )
    _write_marker(server, golden, golden_marker)
    _journal(evidence, "golden-made", golden, server, clone=name)
