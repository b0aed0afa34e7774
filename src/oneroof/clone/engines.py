"""Clones that another engine makes: `[clone] method = "command"` and `oneroof clone adopt`.

Users who outgrow one machine run a clone engine — DBLab's thin clones on ZFS, Neon's
copy-on-write branches, their own ZFS or LVM snapshot script. oneroof drives it instead of
replacing it: `create_command`, `reset_command` and `drop_command` are argv lists in which
`{name}` stands for the clone's name; create (and reset, when the address changes) prints
the new database's DSN — as its last line, or in JSON under `dsn`, `connStr`,
`connection_uri` or `connection_string` (what `dblab clone create` and `neonctl branches
create --output json` print). `oneroof clone adopt DSN` does the same for a database that
already exists.

Whatever the engine returns is adopted only after the same checks as a clone of oneroof's
own: it is refused when it is production's own running server (system identifier and start
time: a physical copy shares the identifier, not the start) or a standby; it is marked,
isolated and fingerprinted; and the marker records whether its content equals production's
fingerprint now, and, if not, which saved fingerprint of production it equals (the state it
came from). Its DSN is kept in `.oneroof/clones/<name>.json` (mode 0600: it may hold a
password); the evidence store and the marker hold it redacted.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from oneroof import connect, fingerprint
from oneroof.clone._common import Step, _ident, _now, _quiet, _sql, _target
from oneroof.clone.isolation import isolate
from oneroof.clone.marker import (
    JOURNAL,
    ROLE_CLONE,
    CloneEntry,
    CloneInfo,
    DropResult,
    _database,
    _guard_name,
    _journal,
    _write_marker,
    major_mismatch,
    mark_ready,
    new_marker,
)
from oneroof.config import Config, Dsn, redact
from oneroof.connect import ServerSession
from oneroof.errors import (
    BadInput,
    ConfigError,
    DatabaseError,
    ForbiddenAction,
    OneroofError,
    ServerUnreachable,
)
from oneroof.evidence import Evidence
from oneroof.fingerprint import Fingerprint
from oneroof.workspace import Workspace

COMMAND = "command"  # made by [clone] create_command
ADOPTED = "adopted"  # brought by the user: oneroof clone adopt
DSN_KEYS = ("dsn", "connStr", "connection_uri", "connection_string")
PRODUCTION_LABELS = ("entry", "exit")  # saved fingerprints that are always production's
ADOPT_PRODUCTION = "adopt-production:"  # label of production's fingerprint at an adoption
COMMAND_TIMEOUT_SECONDS = 3600


# -- what the engine printed (pure) -------------------------------------------------------------


def substitute(argv: Sequence[str], name: str) -> list[str]:
    """The argv with `{name}` replaced by the clone's name (nothing else is interpreted)."""
    return [part.replace("{name}", name) for part in argv]


def dsn_from_output(stdout: str) -> str | None:
    """The DSN an engine printed: in JSON under one of `DSN_KEYS` (at any depth, the first),
    else its last non-empty line; None when it printed nothing."""
    text = stdout.strip()
    if not text:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return text.splitlines()[-1].strip()
    found = _find_dsn(document)
    if found is None:
        raise BadInput(
            f"the clone engine printed JSON without a DSN (none of {', '.join(DSN_KEYS)})"
        )
    return found


def _find_dsn(value: Any) -> str | None:
    if isinstance(value, Mapping):
        for key in DSN_KEYS:
            if isinstance(value.get(key), str) and value[key].strip():
                return str(value[key]).strip()
        children: Sequence[Any] = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        found = _find_dsn(child)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class Comparison:
    """How an adopted clone's content stands to production's: equal now, or which state."""

    equal: bool
    production_fingerprint: str
    production_taken_at: str
    differences: int
    first_differences: tuple[str, ...]
    came_from: dict[str, Any] | None  # the saved production fingerprint it equals, if any

    def describe(self) -> str:
        if self.equal:
            return (
                f"equals production's fingerprint {self.production_fingerprint[:8]} now "
                f"({self.production_taken_at})"
            )
        text = (
            f"differs from production's fingerprint {self.production_fingerprint[:8]} now in "
            f"{self.differences} place(s) ({'; '.join(self.first_differences[:3])})"
        )
        if self.came_from:
            text += (
                f"; it equals production's {self.came_from['label']} fingerprint "
                f"{str(self.came_from['fingerprint'])[:8]} of {self.came_from['taken_at']}"
            )
        else:
            text += "; it equals no fingerprint of production saved in this workspace"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "fingerprint": self.production_fingerprint,
            "taken_at": self.production_taken_at,
            "differences": self.differences,
            "first_differences": list(self.first_differences),
            "came_from": self.came_from,
            "describe": self.describe(),
        }


def compare(
    copied: Fingerprint, production: Fingerprint, saved: Sequence[tuple[str, Fingerprint]]
) -> Comparison:
    """The clone's fingerprint against production's now and the saved ones (label, print).

    The clone is hashed the way production was; only the sections both have are compared
    (production may have fallen back to counts above its scan budget).
    """
    sections = [s for s in fingerprint.ID_SECTIONS if s in copied.sections]
    sections = [s for s in sections if s in production.sections]
    differences = fingerprint.diff(production, copied, sections=sections)
    came_from = None
    if differences:
        for label, earlier in reversed(saved):
            if earlier.id == copied.id:
                came_from = {
                    "label": label,
                    "fingerprint": earlier.id,
                    "taken_at": earlier.taken_at,
                }
                break
    return Comparison(
        equal=not differences,
        production_fingerprint=production.id,
        production_taken_at=production.taken_at,
        differences=len(differences),
        first_differences=tuple(d.describe() for d in differences[:5]),
        came_from=came_from,
    )


# -- the registry: where each adopted clone is --------------------------------------------------


def _registry(cfg: Config) -> Path:
    return cfg.state_dir / connect.ADOPTED_DIR


def register(cfg: Config, name: str, dsn: str, method: str, database: str) -> None:
    """Remember where clone `name` is (its DSN may hold a password: the file is 0600)."""
    directory = _registry(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(
            {"name": name, "dsn": dsn, "method": method, "database": database, "at": _now()},
            handle,
        )
    os.replace(temporary, path)


def forget(cfg: Config, name: str) -> None:
    (_registry(cfg) / f"{name}.json").unlink(missing_ok=True)


def registered(cfg: Config) -> list[dict[str, Any]]:
    """Every adopted clone of the workspace (name, DSN, method, database)."""
    found = []
    for path in sorted(_registry(cfg).glob("*.json")) if _registry(cfg).exists() else []:
        entry = connect.adopted_clone(cfg, path.stem)
        if entry is not None:
            found.append(entry)
    return found


# -- running the engine ---------------------------------------------------------------------------


def run_engine(cfg: Config, key: str, name: str, say: Step) -> str:
    """Run `[clone] <key>` for clone `name`; its standard output. A failure names the key."""
    argv = getattr(cfg.clone, key)
    if not argv:
        raise ConfigError(
            f"clone.{key} is not set", file=cfg.file, line=cfg.line_of("clone", "method")
        )
    command = substitute(argv, name)
    say(f"running clone.{key}: {shlex.join(command)}")
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=COMMAND_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(
            f"clone.{key}: no program {command[0]!r} (give its path, or put it on PATH)",
            file=cfg.file,
            line=cfg.line_of("clone", key),
        ) from None
    except OSError as exc:  # not executable, a directory, …
        raise ConfigError(
            f"clone.{key}: cannot run {command[0]!r}: {exc.strerror or exc}"
            " (is it an executable file?)",
            file=cfg.file,
            line=cfg.line_of("clone", key),
        ) from None
    except subprocess.TimeoutExpired:
        raise DatabaseError(
            f"clone.{key} did not finish in {COMMAND_TIMEOUT_SECONDS}s: {shlex.join(command)}"
        ) from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line]
        raise DatabaseError(
            f"clone.{key} failed (exit code {done.returncode}): "
            f"{lines[-1] if lines else 'no message'}"
        )
    return done.stdout


def _resolve(dsn: str) -> str:
    """A DSN as given on the command line: literal, or `env:NAME`."""
    return Dsn(dsn, Path("."), "DSN", None).resolve() if dsn.startswith("env:") else dsn


# -- adopting -----------------------------------------------------------------------------------


def _in_recovery(server: ServerSession) -> bool:
    return bool(_sql(server, connect.STANDBY_PROOF)[0][0])


def _wal_of(server: ServerSession) -> dict[str, Any] | None:
    """The copy's timeline and WAL position: a physical copy of production continues its
    WAL on a timeline of its own from where it branched (a promoted standby's is 2 or more)."""
    try:
        rows = _sql(
            server,
            "select pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()),"
            " pg_catalog.pg_current_wal_lsn()::text",
        )
    except psycopg.Error:
        return None
    walfile, lsn = rows[0]
    return {"timeline": int(str(walfile)[:8], 16), "lsn": str(lsn)}


def _saved_production(evidence: Evidence) -> list[tuple[str, Fingerprint]]:
    found = []
    for record in evidence.records("fingerprint"):
        label = str(record.payload.get("label") or "")
        if label in PRODUCTION_LABELS or label.startswith(ADOPT_PRODUCTION):
            found.append((label, Fingerprint.from_dict(record.payload)))
    return found


def adopt(
    ws: Workspace,
    dsn: str,
    name: str | None = None,
    *,
    method: str = ADOPTED,
    step: Step | None = None,
) -> CloneInfo:
    """Adopt the database at `dsn` as clone `name`: check, mark, fingerprint, isolate.

    Refused (`ForbiddenAction`, nothing written) when it is production's own server or a
    standby, or carries the marker of another clone.
    """
    cfg, evidence = ws.cfg, ws.evidence
    say = step or _quiet
    started = time.perf_counter()
    target = _target(cfg, name)
    connect.check_clone_name(target, cfg.guard.clone_name_pattern)
    dsn = _resolve(dsn)
    production = ws.production_identity
    _guard_name(cfg, target, production)
    phases: dict[str, float] = {}
    with ws.server(dsn) as server:
        here = server.identity
        connect.refuse_production_instance(cfg, here, production, _in_recovery(server))
        _refuse_taken(ws, target, dsn)
        other_major = major_mismatch(here, production)
        if other_major and cfg.clone.require_same_major:
            raise ForbiddenAction(f"refused: {other_major}, and [clone] require_same_major = true")
        database = here.database
        _refuse_maintenance(cfg, database)
        found = _database(server, database)
        existing = found.marker if found is not None else None
        if existing is not None and (
            existing.get("name") != target or (existing.get("role") or ROLE_CLONE) != ROLE_CLONE
        ):
            raise ForbiddenAction(
                f"refused: {database!r} carries the marker of {existing.get('role') or 'clone'} "
                f"{existing.get('name')!r}, not of clone {target!r}"
            )
        _journal(evidence, "adopt-started", target, server, method=method, dsn=redact(dsn))
        marker = new_marker(
            target,
            method,
            production,
            database=database,
            instance={**here.as_dict(), "started": here.started},
            physical_copy=here.system_identifier == production.system_identifier,
            wal=_wal_of(server),
            dsn=redact(dsn),
            golden=_engine_reset(cfg) if method == COMMAND else None,
        )
        try:
            _write_marker(server, database, marker)
        except psycopg.errors.InsufficientPrivilege:
            raise BadInput(
                f"the role of the DSN may not mark database {database!r} (COMMENT ON DATABASE "
                "needs its owner or a superuser): connect as the clone's owner"
            ) from None
        register(cfg, target, dsn, method, database)
        try:
            tick = time.perf_counter()
            say("fingerprinting production (the state the clone is compared with)")
            now = fingerprint.of_production(ws)
            saved = _saved_production(evidence)
            fingerprint.save(evidence, now, label=f"{ADOPT_PRODUCTION}{target}")
            say(f"fingerprinting {target} as the engine made it")
            with ws.clone(target, production=production) as clone:
                copied = fingerprint.take(
                    clone,
                    mode=now.mode,
                    counters=cfg.counters,
                    content_hash=now.content_hash,
                    **fingerprint.scope(cfg),
                )
            fingerprint.save(evidence, copied, label=f"clone-source:{target}")
            phases["fingerprints"] = time.perf_counter() - tick
            comparison = compare(copied, now, saved)
            say(f"{target} {comparison.describe()}")
            marker.update(
                source_fingerprint=copied.id,
                source_taken_at=copied.taken_at,
                source_wal=copied.wal,
                content_hash=copied.content_hash,
                production=comparison.to_dict(),
            )
            _write_marker(server, database, marker)
            tick = time.perf_counter()
            say(f"isolating {target}")
            with ws.clone(target, production=production) as clone:
                marker["isolation"] = isolate(
                    cfg, server, clone, database, say, content_hash=copied.content_hash
                )
            phases["isolate"] = time.perf_counter() - tick
            mark_ready(marker)
            _write_marker(server, database, marker)
        except BaseException as exc:
            _journal(evidence, "adopt-failed", target, server, error=str(exc)[:500])
            raise
        _journal(evidence, "adopted", target, server, source_fingerprint=copied.id, method=method)
    notes = [f"{target} {comparison.describe()}"]
    if marker["physical_copy"]:
        notes.append("a physical copy of production (the same system identifier, another server)")
    if other_major:
        notes.append(other_major)
    return CloneInfo(
        "adopt",
        target,
        str(marker.get("golden") or ""),
        method,
        marker,
        time.perf_counter() - started,
        phases,
        notes=notes,
    )


def _engine_reset(cfg: Config) -> str | None:
    """What stands in for the golden copy of an engine's clone: its reset command."""
    argv = cfg.clone.reset_command or (cfg.clone.create_command if cfg.clone.drop_command else None)
    return f"the engine ({shlex.join(argv)})" if argv else None


def _refuse_taken(ws: Workspace, name: str, dsn: str) -> None:
    """A ready clone of this name elsewhere is not replaced by an adoption."""
    entry = connect.adopted_clone(ws.cfg, name)
    if entry is not None and entry["dsn"] != dsn:
        raise BadInput(
            f"clone {name!r} is already adopted at {redact(str(entry['dsn']))}: drop it first "
            "(`oneroof clone drop`) or choose another --name"
        )
    if entry is None and ws.cfg.clone_server_dsn is not None:
        with ws.server() as server:
            found = _database(server, name)
        if found is not None and found.marker is not None:
            raise BadInput(
                f"clone {name!r} exists on the non-production server: drop it first or choose "
                "another --name"
            )


# -- the command method: create, reset, drop ----------------------------------------------------


def create(ws: Workspace, name: str | None = None, *, step: Step | None = None) -> CloneInfo:
    """`[clone] create_command` makes the clone; oneroof adopts the DSN it prints."""
    cfg = ws.cfg
    say = step or _quiet
    target = _target(cfg, name)
    connect.check_clone_name(target, cfg.guard.clone_name_pattern)
    _guard_name(cfg, target, ws.production_identity)
    existing = connect.adopted_clone(cfg, target)
    if existing is not None:
        raise BadInput(
            f"clone {target!r} already exists ({redact(str(existing['dsn']))}): reset or drop it"
            " first"
        )
    started = time.perf_counter()
    return _adopt_made(ws, "create", _created(cfg, target, say), target, started, say)


def _created(cfg: Config, target: str, say: Step) -> str:
    """The DSN `create_command` printed for `target`; bad input, naming the line, if none."""
    printed = dsn_from_output(run_engine(cfg, "create_command", target, say))
    if printed is None:
        raise BadInput(
            "clone.create_command printed no DSN: it must print the new database's connection"
            " string (its last line, or JSON with dsn, connStr or connection_uri)",
            file=cfg.file,
            line=cfg.line_of("clone", "create_command"),
        )
    return printed


# a server's own databases: marking or isolating one would take the server's, not a clone's
_MAINTENANCE = frozenset({"postgres", "template0", "template1"})


def _refuse_maintenance(cfg: Config, database: str) -> None:
    own = None
    if cfg.clone_server_dsn is not None:
        try:
            own = psycopg.conninfo.conninfo_to_dict(cfg.clone_server_dsn.resolve()).get("dbname")
        except (OneroofError, psycopg.ProgrammingError):
            own = None  # an unreadable server_dsn is named where it is used
    if database.casefold() in _MAINTENANCE or (own and database == own):
        raise ForbiddenAction(
            f"refused: {database!r} is the server's own database, not a clone: the DSN must "
            "name the database the engine made (or the one to adopt)"
        )


def _adopt_made(
    ws: Workspace, action: str, dsn: str, target: str, started: float, say: Step
) -> CloneInfo:
    """Adopt what the engine made at `dsn`; the engine's own time is a phase of its own."""
    engine = time.perf_counter() - started
    info = adopt(ws, dsn, target, method=COMMAND, step=say)
    info.action = action
    info.phases = {"engine": engine, **info.phases}
    info.seconds = time.perf_counter() - started
    return info


def _entry(cfg: Config, name: str | None) -> tuple[str, dict[str, Any]]:
    """The clone's name and where the registry says it is; bad input when it names none."""
    target = _target(cfg, name)
    connect.check_clone_name(target, cfg.guard.clone_name_pattern)
    entry = connect.adopted_clone(cfg, target)
    if entry is None:
        raise BadInput(
            f"no clone {target!r} in this workspace: run `oneroof clone create` (or adopt)"
        )
    return target, entry


def reset(ws: Workspace, name: str | None = None, *, step: Step | None = None) -> CloneInfo:
    """Back to the engine's copy: `reset_command` (else drop and create), then adopt again."""
    cfg = ws.cfg
    say = step or _quiet
    target, entry = _entry(cfg, name)
    if entry.get("method") != COMMAND:
        raise BadInput(
            f"clone {target!r} was adopted (`oneroof clone adopt`): oneroof cannot reset a "
            "database it did not make; reset it with what made it and adopt it again"
        )
    started = time.perf_counter()
    if cfg.clone.reset_command:
        printed = dsn_from_output(run_engine(cfg, "reset_command", target, say))
        dsn = printed or str(entry["dsn"])
    else:
        if not cfg.clone.drop_command:
            raise ConfigError(
                "clone.reset_command (or drop_command, to drop and create) is not set: oneroof"
                " cannot reset an engine's clone without one",
                file=cfg.file,
                line=cfg.line_of("clone", "method"),
            )
        run_engine(cfg, "drop_command", target, say)
        forget(cfg, target)
        dsn = _created(cfg, target, say)
    forget(cfg, target)  # the engine's copy carries no marker of ours any more
    try:
        return _adopt_made(ws, "reset", dsn, target, started, say)
    except OneroofError:
        # what the engine made stays known, so `clone drop` can remove it with the engine
        if connect.adopted_clone(cfg, target) is None:
            register(cfg, target, dsn, COMMAND, str(entry["database"]))
        raise


def drop(ws: Workspace, name: str | None = None, *, step: Step | None = None) -> DropResult:
    """Remove an engine's clone (`drop_command`) or let go of an adopted one (its marker)."""
    cfg = ws.cfg
    say = step or _quiet
    target, entry = _entry(cfg, name)
    result = DropResult(target)
    database = str(entry["database"])
    if entry.get("method") == COMMAND:
        if not cfg.clone.drop_command:
            raise ConfigError(
                "clone.drop_command is not set: remove the clone with its engine",
                file=cfg.file,
                line=cfg.line_of("clone", "method"),
            )
        run_engine(cfg, "drop_command", target, say)
        result.dropped.append(target)
    else:
        # not ours to drop: take the marker off, and the database stays as it was brought
        with _reachable(ws, str(entry["dsn"])) as server:
            if server is not None:
                # the registry is a file: what it names is checked again before a write
                connect.refuse_production_instance(
                    cfg, server.identity, ws.production_identity, _in_recovery(server)
                )
                found = _database(server, database)
                if found is not None and (found.marker or {}).get("name") == target:
                    _sql(server, sql.SQL("COMMENT ON DATABASE {} IS NULL").format(_ident(database)))
        say(f"{target}: marker removed; database {database!r} kept (it was adopted)")
    forget(cfg, target)
    ws.evidence.append(JOURNAL, {"event": "dropped", "name": target, "dropped": result.dropped})
    return result


@contextmanager
def _reachable(ws: Workspace, dsn: str) -> Iterator[ServerSession | None]:
    """A server session on `dsn`, or None when it cannot be reached (listing, letting go)."""
    try:
        session: ServerSession | None = ws.server(dsn)
    except (ServerUnreachable, ConfigError):
        session = None
    try:
        yield session
    finally:
        if session is not None:
            session.close()


# -- listing ------------------------------------------------------------------------------------


def entries(ws: Workspace) -> list[CloneEntry]:
    """The workspace's adopted clones, each as its server holds its marker (or unreachable)."""
    found = []
    for entry in registered(ws.cfg):
        name, database = str(entry["name"]), str(entry["database"])
        marker: dict[str, Any] = {}
        size = None
        state = "unreachable"
        with _reachable(ws, str(entry["dsn"])) as server:
            if server is not None:
                rows = _sql(
                    server,
                    "select pg_catalog.shobj_description(d.oid, 'pg_database'),"
                    " pg_catalog.pg_database_size(d.oid) from pg_catalog.pg_database d"
                    " where d.datname = %s",
                    (database,),
                )
                if rows:
                    marker = connect.parse_marker(rows[0][0]) or {}
                    size = int(rows[0][1]) if rows[0][1] is not None else None
                state = str(marker.get("state") or "unmarked") if rows else "missing"
        if marker.get("name") not in (None, name):
            state = "unmarked"
        found.append(
            CloneEntry(
                name=name,
                role=ROLE_CLONE,
                state=state,
                marker=marker or {"method": entry.get("method"), "dsn": redact(str(entry["dsn"]))},
                size_bytes=size,
                golden=str(marker["golden"]) if marker.get("golden") else None,
            )
        )
    return found
