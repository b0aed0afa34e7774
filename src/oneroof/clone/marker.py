"""The clone marker and naming: golden copy names, the marker, the journal, the results."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from oneroof import __version__, connect
from oneroof.clone._common import _ident, _now, _sql, _target
from oneroof.config import Config
from oneroof.connect import MARKER_KEY, MAX_IDENTIFIER_BYTES, ServerIdentity, ServerSession
from oneroof.errors import ConfigError, ForbiddenAction
from oneroof.evidence import Evidence
from oneroof.workspace import Workspace

MARKER_VERSION = 1
CREATING = "creating"
READY = "ready"
ROLE_CLONE = "clone"
ROLE_GOLDEN = "golden"
GOLDEN_SUFFIX = "_golden"
JOURNAL = "clone"  # kind of the evidence records of the clone lifecycle


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
    notes: list[str] = field(default_factory=list)
    copy: dict[str, Any] = field(default_factory=dict)  # how the copy was made (copying)

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
            "notes": self.notes,
            "copy": self.copy,
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


# -- the marker, the name guard and the journal -----------------------------------------------


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


def _database(server: ServerSession, name: str) -> _Database | None:
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


MAKER_KEYS = ("pid", "host", "started_at")  # who is making the clone: dropped once ready


def new_marker(name: str, method: str, source: ServerIdentity, **fields: Any) -> dict[str, Any]:
    """The marker of a clone in the making (`creating`): the process making it, so that an
    interrupted make is told from one still running, and the production it stands for."""
    return {
        "version": MARKER_VERSION,
        "state": CREATING,
        "role": ROLE_CLONE,
        "name": name,
        "method": method,
        "started_at": _now(),
        "source": source.as_dict(),
        **fields,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "tool": f"oneroof {__version__}",
    }


def mark_ready(marker: dict[str, Any]) -> None:
    """The marker of a clone made: `ready`, without the maker's process."""
    for key in MAKER_KEYS:
        marker.pop(key, None)
    marker.update(state=READY, created_at=_now())


def _write_marker(server: ServerSession, name: str, marker: Mapping[str, Any]) -> None:
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


def read_marker(ws: Workspace, name: str | None = None) -> dict[str, Any] | None:
    """The marker of the clone `name` as the server holds it (no connection to the clone)."""
    target = _target(ws.cfg, name)
    connect.check_clone_name(target, ws.cfg.guard.clone_name_pattern)
    adopted = connect.adopted_clone(ws.cfg, target)
    if adopted is not None:  # an engine's clone: on its own server, its own database name
        with ws.server(str(adopted["dsn"])) as server:
            found = _database(server, str(adopted["database"]))
        marker = found.marker if found is not None else None
        return marker if (marker or {}).get("name") == target else None
    with ws.server() as server:
        found = _database(server, target)
    return found.marker if found is not None else None


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


def refuse_unfit_server(
    cfg: Config, server: ServerSession, production: ServerIdentity | None
) -> None:
    """Refuse a non-production server that is production's own cluster, unless allowed, or
    of another major version than production's when `[clone] require_same_major`."""
    if production is None:
        return
    if cfg.clone.require_same_major and major_mismatch(server.identity, production):
        raise ForbiddenAction(
            f"refused: {major_mismatch(server.identity, production)}, and [clone] "
            "require_same_major = true. Point server_dsn at a server of production's major "
            "version, or set require_same_major = false to rehearse on this one"
        )
    if cfg.clone.allow_production_cluster:
        return
    if server.identity.same_cluster(production):
        raise ForbiddenAction(
            f"refused: [clone] server_dsn ({server.identity.host}:{server.identity.port}) is "
            f"production's own cluster (system identifier {production.system_identifier}): a "
            "clone there shares production's disk, memory and connection slots. Point "
            "server_dsn at another server, or accept it with [clone] allow_production_cluster "
            "= true"
        )


def major_mismatch(server: ServerIdentity, production: ServerIdentity) -> str | None:
    """What differs when the non-production server runs another major version, else None."""
    ours, theirs = server.server_version_num // 10000, production.server_version_num // 10000
    if not ours or not theirs or ours == theirs:
        return None
    return (
        f"the non-production server runs PostgreSQL {server.server_version} and production "
        f"{production.server_version}: clones, suites and rehearsals run on another major "
        "version than production's (plans, locks and errors may differ)"
    )


def _refuse_production_database(
    server: ServerSession, name: str, production: ServerIdentity | None
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


def _journal(
    evidence: Evidence, event: str, name: str, server: ServerSession, **extra: Any
) -> None:
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


def _interrupted(evidence: Evidence, name: str, server: ServerSession) -> str | None:
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
