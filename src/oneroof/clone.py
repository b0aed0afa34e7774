"""The clone: an isolated non-production copy of production, name-guarded, reset in seconds.

`create` copies production into a database on the non-production server — with `pg_dump
--snapshot` from the very snapshot the source fingerprint reads (method `dump`), or with
`CREATE DATABASE … TEMPLATE` on the production server itself (method `template`) — isolates
it, keeps a connection-less golden copy beside it, and writes the clone marker. `verify`
proves the isolation and that the committed state is still the one copied. `reset` rebuilds
the clone from the golden copy without touching production; `drop` removes both; `list`
shows every marked database of the server.

The marker is JSON under `connect.MARKER_KEY` in `COMMENT ON DATABASE`. It is written twice:
`state: "creating"` right after the database exists, and `state: "ready"` only once the copy,
the isolation and the golden copy succeeded, so a crash never leaves a clone that `verify`
accepts; the next `create` (or `reset`) recognises the interrupted one and rebuilds it. A
database of the chosen name without any marker is not ours and is refused — except one this
workspace's evidence journal shows we were creating when we were interrupted (the moment
between `CREATE DATABASE` and the first `COMMENT`).

The golden copy of clone `<name>` is `<name>_golden`; when that would exceed PostgreSQL's 63
bytes, `<first 47 bytes of name>_<8 hex of sha256(name)>_golden` (see `golden_name`). It is a
template that accepts no connections and carries its own marker (`role: "golden"`).

Every production access goes through `connect.open_production` (guarded, audited); the
pg_dump command line is audited too. Every name reaching SQL is composed with
`psycopg.sql.Identifier`/`Literal`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from oneroof import __version__, connect, dump, fingerprint
from oneroof.config import Config, redact
from oneroof.connect import MARKER_KEY, MAX_IDENTIFIER_BYTES, ServerIdentity, Session
from oneroof.errors import (
    BadInput,
    CheckFailed,
    ConfigError,
    DatabaseError,
    ForbiddenAction,
)
from oneroof.evidence import Evidence
from oneroof.fingerprint import Fingerprint

MARKER_VERSION = 1
CREATING = "creating"
READY = "ready"
ROLE_CLONE = "clone"
ROLE_GOLDEN = "golden"
GOLDEN_SUFFIX = "_golden"
JOURNAL = "clone"  # kind of the evidence records of the clone lifecycle
DUMP_APP = "oneroof-dump"
RESTORE_APP = "oneroof-restore"
READ_ONLY_OPTION = "-c default_transaction_read_only=on"
# Above this size FILE_COPY (copy the files, one checkpoint) beats WAL_LOG (log every block).
FILE_COPY_BYTES = 256 * 1024 * 1024

Step = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _target(cfg: Config, name: str | None) -> str:
    """The clone name: an explicit one as given (even empty: the guard judges it), else the
    configured or derived one."""
    return name if name is not None else connect.clone_name(cfg)


def golden_name(name: str) -> str:
    """The golden copy's name for clone `name`, always within 63 bytes and distinct per name."""
    candidate = name + GOLDEN_SUFFIX
    if len(candidate.encode()) <= MAX_IDENTIFIER_BYTES:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_IDENTIFIER_BYTES - len(GOLDEN_SUFFIX) - len(digest) - 1
    prefix = name.encode()[:keep].decode(errors="ignore")
    return f"{prefix}_{digest}{GOLDEN_SUFFIX}"


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One point of `verify`: what was checked, whether it holds, and what was seen."""

    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "data": self.data}


@dataclass
class CloneVerification:
    """Every point `verify` checked; `ok` only when each one holds."""

    name: str
    points: list[Point] = field(default_factory=list)
    marker: dict[str, Any] | None = None
    source_fingerprint: str | None = None
    clone_fingerprint: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.points) and all(point.ok for point in self.points)

    @property
    def reasons(self) -> list[str]:
        """`name: detail` of every failing point."""
        return [f"{p.name}: {p.detail}" for p in self.points if not p.ok]

    def add(self, name: str, ok: bool, detail: str, **data: Any) -> Point:
        point = Point(name, ok, detail, data)
        self.points.append(point)
        return point

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "points": [p.to_dict() for p in self.points],
            "reasons": self.reasons,
            "marker": self.marker,
            "source_fingerprint": self.source_fingerprint,
            "clone_fingerprint": self.clone_fingerprint,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class CloneInfo:
    """What `create` or `reset` made: the clone, its golden copy, its marker and the timings."""

    action: str
    name: str
    golden: str
    method: str
    marker: dict[str, Any]
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)

    @property
    def source_fingerprint(self) -> str:
        return str(self.marker.get("source_fingerprint", ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "golden": self.golden,
            "method": self.method,
            "source_fingerprint": self.source_fingerprint,
            "seconds": round(self.seconds, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "recovered": self.recovered,
            "marker": self.marker,
        }


@dataclass(frozen=True)
class CloneEntry:
    """One marked database of the non-production server, as `list_clones` shows it."""

    name: str
    role: str
    state: str
    marker: dict[str, Any]
    size_bytes: int | None
    golden: str | None = None  # for a clone: its golden copy's name, when that exists

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "golden": self.golden,
            "size_bytes": self.size_bytes,
            "marker": self.marker,
        }

    # Read like a mapping too (`dict(entry)`, `entry["golden"]`).
    def keys(self) -> list[str]:
        return list(self.to_dict())

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]


@dataclass
class DropResult:
    """The databases `drop` removed."""

    name: str
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dropped": self.dropped}


# -- small helpers over the maintenance and clone sessions ------------------------------------


def _sql(
    session: Session, statement: str | sql.Composable, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement on a server or clone session (never production) and fetch its rows."""
    cursor = session.raw_for_clone.execute(statement, params)  # type: ignore[arg-type]
    return cursor.fetchall() if cursor.description is not None else []


def _ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


parse_marker = connect.parse_marker


@dataclass(frozen=True)
class _Database:
    name: str
    oid: int
    marker: dict[str, Any] | None
    allow_connections: bool
    is_template: bool

    @property
    def role(self) -> str:
        return str((self.marker or {}).get("role") or ROLE_CLONE)

    @property
    def state(self) -> str:
        return str((self.marker or {}).get("state") or "")


def _database(server: Session, name: str) -> _Database | None:
    rows = _sql(
        server,
        "select d.oid::bigint, pg_catalog.shobj_description(d.oid, 'pg_database'),"
        " d.datallowconn, d.datistemplate from pg_catalog.pg_database d where d.datname = %s",
        (name,),
    )
    if not rows:
        return None
    oid, comment, allow, template = rows[0]
    return _Database(name, int(oid), parse_marker(comment), bool(allow), bool(template))


def _write_marker(server: Session, name: str, marker: Mapping[str, Any]) -> None:
    text = json.dumps({MARKER_KEY: dict(marker)}, sort_keys=True, separators=(",", ":"))
    _sql(
        server,
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(_ident(name), sql.Literal(text)),
    )


def _identity_from_marker(marker: Mapping[str, Any]) -> ServerIdentity | None:
    source = marker.get("source")
    if not isinstance(source, Mapping) or not source.get("database"):
        return None
    return ServerIdentity(
        system_identifier=str(source.get("system_identifier") or ""),
        host=str(source.get("host") or ""),
        port=int(source.get("port") or 0),
        database=str(source["database"]),
        server_version=str(source.get("server_version") or ""),
        server_version_num=0,
    )


def _configured_database(cfg: Config) -> str | None:
    """Production's database name as configured (read from the DSN, no connection)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(cfg.production_dsn.resolve())
    except (ConfigError, psycopg.ProgrammingError):
        return None
    value = params.get("dbname") or params.get("user")
    return str(value) if value else None


def _guard_name(cfg: Config, name: str, production: ServerIdentity | None) -> None:
    """The name guard: pattern, length, plain ASCII, and not production's database name."""
    connect.check_clone_name(name, cfg.guard.clone_name_pattern, production)
    configured = _configured_database(cfg)
    if configured is not None and name.casefold() == configured.casefold():
        raise ForbiddenAction(
            f"refused: {name!r} is the name of the production database in production.dsn; "
            "a clone needs its own"
        )


def _refuse_production_database(
    server: Session, name: str, production: ServerIdentity | None
) -> None:
    """Refuse when `name` on this server is production itself (same cluster and name)."""
    if production is None:
        return
    here = ServerIdentity(
        server.identity.system_identifier,
        server.identity.host,
        server.identity.port,
        name,
        server.identity.server_version,
        server.identity.server_version_num,
    )
    if here.same_database(production):
        raise ForbiddenAction(
            f"refused: {name!r} on {server.identity.host}:{server.identity.port} is the "
            "production database (same cluster system identifier and name)"
        )


def _journal(evidence: Evidence, event: str, name: str, server: Session, **extra: Any) -> None:
    evidence.append(
        JOURNAL,
        {
            "event": event,
            "name": name,
            "server": server.identity.system_identifier,
            "port": server.identity.port,
            **extra,
        },
    )


def _interrupted(evidence: Evidence, name: str, server: Session) -> str | None:
    """The unfinished step this workspace's journal shows for `name` on this server, if any."""
    for record in reversed(evidence.records(JOURNAL)):
        payload = record.payload
        if (
            payload.get("name") == name
            and payload.get("server") == server.identity.system_identifier
            and payload.get("port") == server.identity.port
        ):
            event = str(payload.get("event"))
            return event if event in ("create-started", "reset-started", "golden-started") else None
    return None


def _process_alive(marker: Mapping[str, Any]) -> bool:
    """True when the marker's process still runs on this host (a create in progress)."""
    pid = marker.get("pid")
    if marker.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
        return status.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# -- child processes --------------------------------------------------------------------------

_LIBC: Any = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc to ask
        _LIBC = None


def _die_with_parent() -> None:
    # A killed oneroof must not leave pg_dump/pg_restore running on: PR_SET_PDEATHSIG.
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)


def _client(dsn: str, **overrides: str) -> tuple[str, dict[str, str]]:
    """A conninfo for a client program, with the password moved to the environment."""
    params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items() if v is not None}
    env: dict[str, str] = {}
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = password
    params.update(overrides)
    return psycopg.conninfo.make_conninfo("", **params), env


def _spawn(command: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            preexec_fn=_die_with_parent if _LIBC is not None else None,
        )


def _tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


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


# -- create -----------------------------------------------------------------------------------


def create(
    cfg: Config,
    evidence: Evidence,
    name: str | None = None,
    *,
    production_session: Session | None = None,
    step: Step | None = None,
) -> CloneInfo:
    """Copy production into a new, isolated, marked clone and keep its golden copy.

    Refuses (`ForbiddenAction`, nothing changed) a name the guard does not accept, the
    production database itself, and a database of that name that is not ours. An
    interrupted create of the same name is dropped and rebuilt; a ready clone is left alone
    (`BadInput`: reset or drop it first).
    """
    say = step or _quiet
    started = time.perf_counter()
    target = _target(cfg, name)
    connect.check_clone_name(target, cfg.guard.clone_name_pattern)  # before any connection
    golden = golden_name(target)
    method = cfg.clone.method
    session = production_session or connect.open_production(cfg, evidence)
    own = production_session is None
    try:
        identity = session.identity
        _guard_name(cfg, target, identity)
        with connect.open_server(cfg) as server:
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
            recovered = _prepare_create(cfg, evidence, server, target, golden, identity, say)
            _journal(evidence, "create-started", target, server, method=method)
            marker: dict[str, Any] = {
                "version": MARKER_VERSION,
                "state": CREATING,
                "role": ROLE_CLONE,
                "name": target,
                "method": method,
                "started_at": _now(),
                "source": identity.as_dict(),
                "golden": golden,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "tool": f"oneroof {__version__}",
            }
            phases: dict[str, float] = {}
            try:
                if method == "template":
                    source = _copy_by_template(
                        cfg, evidence, server, session, own, target, identity, marker, phases, say
                    )
                else:
                    source = _copy_by_dump(
                        cfg, evidence, server, session, target, identity, marker, phases, say
                    )
                    if own:
                        session.close()
                fingerprint.save(evidence, source, label=f"clone-source:{target}")
                marker["source_fingerprint"] = source.id
                marker["source_wal"] = source.wal
                marker["source_taken_at"] = source.taken_at
                _write_marker(server, target, marker)
                tick = time.perf_counter()
                say(f"isolating {target}")
                with connect.open_clone(cfg, evidence, target, production=identity) as clone:
                    marker["isolation"] = isolate(cfg, server, clone, target, say)
                marker["isolation"]["created_roles"] = marker.pop("created_roles", [])
                phases["isolate"] = time.perf_counter() - tick
                tick = time.perf_counter()
                _make_golden(cfg, evidence, server, target, golden, identity, marker, say)
                phases["golden"] = time.perf_counter() - tick
                marker.pop("golden_state", None)
                marker.pop("pid", None)
                marker.pop("host", None)
                marker.pop("started_at", None)
                marker["state"] = READY
                marker["created_at"] = _now()
                _write_marker(server, target, marker)
            except BaseException as exc:
                _abandon(cfg, evidence, server, target, golden, identity, marker, exc)
                raise
            _journal(evidence, "created", target, server, source_fingerprint=source.id)
    finally:
        if own:
            session.close()
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
    )


def _prepare_create(
    cfg: Config,
    evidence: Evidence,
    server: Session,
    name: str,
    golden: str,
    identity: ServerIdentity,
    say: Step,
) -> list[str]:
    """Refuse what is not ours; drop what an interrupted run of ours left. Checks come first."""
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
        _drop_database(cfg, evidence, server, database, identity, unmarked=unmarked)
        recovered.append(note)
    return recovered


def _create_database(server: Session, name: str, encoding: tuple[str, str, str] | None) -> None:
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


def _ensure_roles(server: Session, roles: Sequence[str]) -> list[str]:
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
    cfg: Config,
    evidence: Evidence,
    server: Session,
    session: Session,
    name: str,
    identity: ServerIdentity,
    marker: dict[str, Any],
    phases: dict[str, float],
    say: Step,
) -> Fingerprint:
    """pg_dump from the snapshot the source fingerprint reads, then pg_restore into the clone."""
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
        source, roles, snapshot = _dump(cfg, evidence, session, directory, say)
        phases["dump"] = time.perf_counter() - tick
        marker["snapshot"] = snapshot
        created_roles = _ensure_roles(server, roles)
        marker["created_roles"] = created_roles
        tick = time.perf_counter()
        _restore(cfg, server, name, directory / "dump", directory / "restore.log", say)
        phases["restore"] = time.perf_counter() - tick
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return source


def _dump(
    cfg: Config, evidence: Evidence, session: Session, directory: Path, say: Step
) -> tuple[Fingerprint, list[str], str]:
    """Export a snapshot, run pg_dump from it, and fingerprint production from it meanwhile."""
    dsn = cfg.production_dsn.resolve()
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    options = f"{params.get('options') or ''} {READ_ONLY_OPTION}".strip()
    conninfo, env = _client(dsn, application_name=DUMP_APP, options=options)
    env.update(PGOPTIONS=READ_ONLY_OPTION, PGAPPNAME=DUMP_APP)
    log = directory / "dump.log"
    with session.transaction():
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
        )
        say(f"pg_dump -j {cfg.clone.jobs} from snapshot {snapshot}; fingerprinting meanwhile")
        process = _spawn([*command, conninfo], env, log)
        try:
            roles = [str(r[0]) for r in session.execute(_ROLES_QUERY)]
            source = fingerprint.take(session, mode="full", counters=cfg.counters)
            code = process.wait()
        except BaseException:
            _stop(process)
            raise
    if code != 0:
        raise DatabaseError(f"pg_dump failed (exit code {code}): {_tail(log)}")
    return source, roles, snapshot


def _restore(
    cfg: Config, server: Session, name: str, directory: Path, log: Path, say: Step
) -> None:
    dsn = psycopg.conninfo.make_conninfo(connect.server_dsn(cfg).resolve(), dbname=name)
    conninfo, env = _client(dsn, application_name=RESTORE_APP)
    env["PGAPPNAME"] = RESTORE_APP
    command = [
        str(dump.bin_path(cfg, "pg_restore")),
        "-j",
        str(cfg.clone.jobs),
        "--exit-on-error",
        "-d",
        conninfo,
        str(directory),
    ]
    say(f"pg_restore -j {cfg.clone.jobs} into {name}")
    process = _spawn(command, env, log)
    try:
        code = process.wait()
    except BaseException:
        _stop(process)
        raise
    if code != 0:
        raise DatabaseError(f"pg_restore into {name!r} failed (exit code {code}): {_tail(log)}")


def _copy_by_template(
    cfg: Config,
    evidence: Evidence,
    server: Session,
    session: Session,
    own: bool,
    name: str,
    identity: ServerIdentity,
    marker: dict[str, Any],
    phases: dict[str, float],
    say: Step,
) -> Fingerprint:
    """CREATE DATABASE … TEMPLATE production, proven equal to the fingerprint taken before.

    The copy needs production without sessions, ours included: our session is closed first
    (a session the caller passed in stays open, and the copy is refused).
    """
    tick = time.perf_counter()
    say(f"fingerprinting production {identity.database}")
    source = fingerprint.take(session, mode="full", counters=cfg.counters)
    if own:
        session.close()
    phases["fingerprint"] = time.perf_counter() - tick
    others = int(_sql(server, _OTHER_SESSIONS, (identity.database,))[0][0])
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
    with connect.open_clone(cfg, evidence, name, production=identity) as clone:
        copy = fingerprint.take(clone, mode="full", counters=cfg.counters)
    differences = fingerprint.diff(source, copy)
    if differences:
        raise CheckFailed(
            f"production changed between its fingerprint and the template copy "
            f"({differences[0].describe()}); run create again, or use clone.method = 'dump'"
        )
    return source


def _make_golden(
    cfg: Config,
    evidence: Evidence,
    server: Session,
    name: str,
    golden: str,
    identity: ServerIdentity,
    marker: dict[str, Any],
    say: Step,
) -> None:
    """Replace the golden copy with a connection-less template of the freshly isolated clone."""
    marker["golden_state"] = CREATING
    _write_marker(server, name, marker)
    _journal(evidence, "golden-started", golden, server, clone=name)
    if _database(server, golden) is not None:
        _drop_database(cfg, evidence, server, golden, identity)
    say(f"keeping golden copy {golden}")
    _terminate_others(server, name)
    _sql(server, _template_copy(server, golden, name))
    _sql(
        server,
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true").format(
            _ident(golden)
        ),
    )
    golden_marker = {
        key: value
        for key, value in marker.items()
        if key not in ("golden_state", "pid", "host", "started_at")
    }
    golden_marker.update(
        role=ROLE_GOLDEN, name=golden, clone=name, state=READY, created_at=_now(), golden=None
    )
    _write_marker(server, golden, golden_marker)
    _journal(evidence, "golden-made", golden, server, clone=name)


def _template_copy(server: Session, target: str, template: str) -> sql.Composed:
    size = _sql(server, "select pg_catalog.pg_database_size(%s)", (template,))[0][0]
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(_ident(target), _ident(template))
    if server.identity.server_version_num >= 150000 and int(size or 0) >= FILE_COPY_BYTES:
        statement += sql.SQL(" STRATEGY FILE_COPY")
    return statement


def _terminate_others(server: Session, name: str) -> int:
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
    cfg: Config,
    evidence: Evidence,
    server: Session,
    name: str,
    golden: str,
    identity: ServerIdentity,
    marker: Mapping[str, Any],
    error: BaseException,
) -> None:
    """After a failed create: drop the half-made clone (and half-made golden copy)."""
    _journal(evidence, "create-failed", name, server, error=str(error)[:500])
    if server.closed:
        return
    try:
        current = _database(server, name)
        if current is not None and current.state == CREATING:
            _drop_database(cfg, evidence, server, name, identity)
        if marker.get("golden_state") == CREATING:
            made = _database(server, golden)
            if made is not None and made.marker is None:
                _drop_database(cfg, evidence, server, golden, identity, unmarked=True)
    except (psycopg.Error, ForbiddenAction):
        pass  # the marker says creating: verify refuses it, the next create rebuilds it


def _drop_database(
    cfg: Config,
    evidence: Evidence,
    server: Session,
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
        with connect.open_clone(
            cfg, evidence, name, production=identity, require_marker=not unmarked
        ) as clone:
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


def _drop_slots(server: Session, name: str) -> list[str]:
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


# -- isolate ----------------------------------------------------------------------------------

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


def isolate(cfg: Config, server: Session, clone: Session, name: str, say: Step) -> dict[str, Any]:
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
    report["reset_tables"] = _run_reset_sql(cfg, clone) if cfg.isolation.reset_sql else {}
    return report


def _run_reset_sql(cfg: Config, clone: Session) -> dict[str, Any]:
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
    taken = fingerprint.take(clone, mode="full", tables=sorted(changed))
    return {
        table: {
            "count": taken.sections["counts"].get(table),
            "content": taken.sections.get("content", {}).get(table),
        }
        for table in sorted(changed)
    }


# -- reset ------------------------------------------------------------------------------------


def reset(
    cfg: Config,
    evidence: Evidence,
    name: str | None = None,
    *,
    step: Step | None = None,
) -> CloneInfo:
    """Rebuild the clone from its golden copy, re-isolate it and mark it ready.

    Never connects to production: the production identity the name guard needs comes from
    the golden copy's marker (recorded from production at creation) and from the configured
    DSN's database name.
    """
    say = step or _quiet
    started = time.perf_counter()
    target = _target(cfg, name)
    _guard_name(cfg, target, None)
    golden = golden_name(target)
    with connect.open_server(cfg) as server:
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
        _refuse_production_database(server, target, identity)
        _refuse_production_database(server, golden, identity)

        _journal(evidence, "reset-started", target, server)
        phases: dict[str, float] = {}
        tick = time.perf_counter()
        if clone_db is not None:
            say(f"dropping {target}")
            _drop_database(cfg, evidence, server, target, identity)
        phases["drop"] = time.perf_counter() - tick
        tick = time.perf_counter()
        say(f"copying golden copy {golden} into {target}")
        _sql(server, _template_copy(server, target, golden))
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
        )
        created_at = gmarker.get("created_at")
        _write_marker(server, target, marker)
        phases["copy"] = time.perf_counter() - tick
        tick = time.perf_counter()
        try:
            with connect.open_clone(cfg, evidence, target, production=identity) as clone:
                again = isolate(cfg, server, clone, target, say)
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


def drop(
    cfg: Config,
    evidence: Evidence,
    name: str | None = None,
    *,
    step: Step | None = None,
) -> DropResult:
    """Drop the clone and its golden copy — only databases that pass the guard and are ours."""
    say = step or _quiet
    target = _target(cfg, name)
    _guard_name(cfg, target, None)
    golden = golden_name(target)
    result = DropResult(target)
    with connect.open_server(cfg) as server:
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
        _refuse_production_database(server, target, identity)
        _refuse_production_database(server, golden, identity)
        for database, present in ((target, clone_db), (golden, golden_db)):
            if present is None:
                continue
            say(f"dropping {database}")
            _drop_database(cfg, evidence, server, database, identity)
            result.dropped.append(database)
        _journal(evidence, "dropped", target, server, dropped=result.dropped)
    return result


def list_clones(cfg: Config) -> list[CloneEntry]:
    """Every database of the non-production server that carries a oneroof marker."""
    with connect.open_server(cfg) as server:
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
    return entries


def read_marker(cfg: Config, name: str | None = None) -> dict[str, Any] | None:
    """The marker of the clone `name` as the server holds it (no connection to the clone)."""
    target = _target(cfg, name)
    connect.check_clone_name(target, cfg.guard.clone_name_pattern)
    with connect.open_server(cfg) as server:
        found = _database(server, target)
    return found.marker if found is not None else None


def source_fingerprint(cfg: Config, evidence: Evidence, name: str | None = None) -> Fingerprint:
    """The fingerprint of production the clone was copied from (the marker names it)."""
    target = _target(cfg, name)
    marker = read_marker(cfg, target)
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


# -- verify -----------------------------------------------------------------------------------


def verify(
    cfg: Config,
    evidence: Evidence,
    name: str | None = None,
    *,
    production: ServerIdentity | None = None,
) -> CloneVerification:
    """Check every point of isolation and that the committed state is the one copied."""
    started = time.perf_counter()
    target = _target(cfg, name)
    result = CloneVerification(target)
    try:
        connect.check_clone_name(target, cfg.guard.clone_name_pattern)
        identity = production or connect.production_identity(cfg, evidence)
        _guard_name(cfg, target, identity)
    except ForbiddenAction as exc:
        result.add("name_guard", False, exc.message)
        return _finish(evidence, result, started)
    with connect.open_server(cfg) as server:
        try:
            _refuse_production_database(server, target, identity)
        except ForbiddenAction as exc:
            result.add("name_guard", False, exc.message)
            return _finish(evidence, result, started)
        result.add("name_guard", True, f"{target!r} matches the pattern and is not production")
        found = _database(server, target)
        if found is None:
            result.add("exists", False, f"no database {target!r} on the non-production server")
            return _finish(evidence, result, started)
        marker = found.marker
        result.marker = marker
        if not _check_marker(result, marker, target, identity):
            return _finish(evidence, result, started)
        assert marker is not None
        isolation: Mapping[str, Any] = marker.get("isolation") or {}
        _check_access(cfg, server, result, target)
        with connect.open_clone(cfg, evidence, target, production=identity) as clone:
            _check_triggers(cfg, clone, result)
            _check_replication(server, clone, result, target)
            _check_leases(cfg, clone, result)
            now = fingerprint.take(
                clone,
                mode="full",
                jobs=cfg.clone.jobs,
                open_session=lambda: connect.open_clone(cfg, evidence, target, production=identity),
            )
        result.clone_fingerprint = now.id
        reference = str(marker.get("source_fingerprint") or "")
        source = fingerprint.find(evidence, reference) if reference else None
        result.source_fingerprint = reference or None
        if source is None:
            detail = f"source fingerprint {reference[:8]} is not in this workspace's evidence store"
            result.add("committed_state", False, detail)
            result.add("schema", False, detail)
        else:
            _check_state(result, source, now, isolation)
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


def _check_access(cfg: Config, server: Session, result: CloneVerification, name: str) -> None:
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


def _check_triggers(cfg: Config, clone: Session, result: CloneVerification) -> None:
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
    server: Session, clone: Session, result: CloneVerification, name: str
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


def _check_leases(cfg: Config, clone: Session, result: CloneVerification) -> None:
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
) -> None:
    reset_tables: Mapping[str, Any] = isolation.get("reset_tables") or {}
    expected, unexpected = [], []
    for difference in fingerprint.diff(source, now, sections=["counts", "content"]):
        recorded = reset_tables.get(difference.key)
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
    if expected:
        changed = sorted({d.key for d in expected})
        detail += f" (as isolation.reset_sql left them: {', '.join(changed)})"
    result.add("committed_state", True, detail)


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
