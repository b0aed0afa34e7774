"""Guarded connections: the only place oneroof opens a connection to a database.

A production session is opened `default_transaction_read_only=on` with a statement timeout,
runs every statement inside an explicit `READ ONLY` transaction, passes every statement
through the guard before it is sent, and writes every statement — allowed, refused or
internal — to the audit log. A clone session is refused unless the database name matches
the clone name pattern, is not the production database (server identity and name), and
carries the clone marker. The non-production server's maintenance session is used only by
the clone module, for names that passed the same guard.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import psycopg
import psycopg.conninfo
from psycopg import sql as pgsql

from oneroof import catalog, guard, roles
from oneroof.config import Config, Dsn, redact_message
from oneroof.errors import (
    ConfigError,
    DatabaseError,
    ForbiddenAction,
    ServerUnreachable,
    pg_message,
)
from oneroof.evidence import Evidence, storable

PRODUCTION = "production"
CLONE = "clone"
SERVER = "nonprod-server"
MARKER_KEY = "oneroof_clone"
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL silently truncates longer names


class SnapshotTooOld(DatabaseError):
    """A production read transaction outlived `[production] max_snapshot_seconds`: ended."""


@dataclass(frozen=True)
class ServerIdentity:
    """Who a session is talking to: cluster, address and database."""

    system_identifier: str
    host: str
    port: int
    database: str
    server_version: str
    server_version_num: int
    started: str = ""  # pg_postmaster_start_time(): tells a physical copy from its original

    @property
    def known(self) -> bool:
        """Whether the cluster's system identifier could be read (pg_control_system())."""
        return not self.system_identifier.startswith("unknown@")

    def same_instance(self, other: ServerIdentity) -> bool:
        """True when both are (or may be) the very same running server: one cluster (system
        identifier) started at the same instant. A physical copy of a cluster (a promoted
        standby, a ZFS or LVM snapshot started elsewhere) shares its system identifier and
        nothing else. Fails safe: what cannot be told apart counts as the same."""
        if not self.same_cluster(other):
            return False
        if self.started and other.started:
            return self.started == other.started
        return True

    def same_cluster(self, other: ServerIdentity) -> bool:
        """True when both are (or may be) one cluster.

        With both system identifiers known, they decide. Without one, an address proves
        nothing (a symlinked socket, an IP for a name, a proxy all reach one server by
        another address), so the running server's start instant and version decide; when
        even those are missing, they count as one cluster: a copy elsewhere proves itself by
        letting its identifier be read.
        """
        if self.known and other.known:
            return self.system_identifier == other.system_identifier
        if self.started and other.started:
            return (self.started, self.server_version) == (other.started, other.server_version)
        return True

    def same_database(self, other: ServerIdentity) -> bool:
        """True when both name the same database of the same cluster, whatever the address."""
        return (
            self.system_identifier == other.system_identifier
            and self.database.casefold() == other.database.casefold()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "system_identifier": self.system_identifier,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "server_version": self.server_version,
        }


# The tool's own statements that are not plain reads: exact shapes, audited like the rest.
BEGIN_READ_ONLY = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
BEGIN_READ_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"
BEGIN_CLONE = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
_SNAPSHOT_ID = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$")
_SAVEPOINT = re.compile(r"^(SAVEPOINT|ROLLBACK TO SAVEPOINT|RELEASE SAVEPOINT) oneroof_sp_\d+$")
# Output formats fixed for a fingerprint transaction, so text forms are the same everywhere.
FORMAT_SETTINGS = (
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL IntervalStyle = 'iso_8601'",
    "SET LOCAL extra_float_digits = 3",
    "SET LOCAL bytea_output = 'hex'",
    "SET LOCAL lc_monetary = 'C'",
    "SET LOCAL xmloption = 'content'",
)
IDENTITY_QUERY = (
    "select (select system_identifier::text from pg_catalog.pg_control_system()),"
    " current_database()::text, current_setting('server_version'),"
    " current_setting('server_version_num')::int, pg_catalog.pg_postmaster_start_time()::text"
)
IDENTITY_QUERY_FALLBACK = (
    "select null::text, current_database()::text, current_setting('server_version'),"
    " current_setting('server_version_num')::int, pg_catalog.pg_postmaster_start_time()::text"
)
READ_ONLY_PROOF = "SHOW default_transaction_read_only"
# A hot standby of production ([production] replica_dsn) proves it is one: in recovery, and
# (with IDENTITY_QUERY) the primary's system identifier.
STANDBY_PROOF = "select pg_catalog.pg_is_in_recovery()"
REPLAY_LSN = "select pg_catalog.pg_last_wal_replay_lsn()::text"
PRIMARY_LSN = "select pg_catalog.pg_current_wal_lsn()::text"
PRIMARY_INSERT_LSN = "select pg_catalog.pg_current_wal_insert_lsn()::text"
# The last statement of every production transaction: NULL proves that the transaction
# changed nothing (no row, sequence, catalog entry or temporary table), whatever else the
# server was doing meanwhile.
WRITE_PROOF = "select pg_catalog.pg_current_xact_id_if_assigned()::text"
# The row counters of the open transaction so far (rollout deltas). It reads the backend's
# own pending statistics; the guard refuses its functions only because they are volatile.
# A materialized view is derived data: REFRESH changes no table's delta (nor a fingerprint's).
XACT_TABLE_STATS = (
    "select schemaname::text, relname::text, n_tup_ins, n_tup_upd, n_tup_del"
    " from pg_catalog.pg_stat_xact_user_tables s"
    " where n_tup_ins + n_tup_upd + n_tup_del > 0 and not exists (select from"
    " pg_catalog.pg_class c where c.oid = s.relid and c.relkind = 'm')"
)
# The partitioned tables above a partition, at any depth (deltas declared on a parent).
PARTITION_ANCESTORS = (
    "select n.nspname::text || '.' || c.relname::text from pg_catalog.pg_partition_ancestors("
    "pg_catalog.to_regclass(%s)) a join pg_catalog.pg_class c on c.oid = a.relid"
    " join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.relkind = 'p'"
)
# The masking key travels as this statement's bound parameter, into a setting local to the
# open transaction: COPY takes no server-side parameters, and the key must never be in the
# text of a statement (the audit log stores statement text). The result is not the key.
MASK_KEY_SETTING = "oneroof.mask_key"
SET_MASK_KEY = "select pg_catalog.length(pg_catalog.set_config('oneroof.mask_key', %s, true)) > 0"
# `oneroof doctor` sends this harmless write on purpose: PostgreSQL itself must refuse it.
READ_ONLY_PROBE = "CREATE TEMPORARY TABLE oneroof_read_only_probe (x int)"
_INTERNAL_EXACT = frozenset(
    {
        BEGIN_READ_ONLY,
        IDENTITY_QUERY,
        IDENTITY_QUERY_FALLBACK,
        READ_ONLY_PROOF,
        STANDBY_PROOF,
        REPLAY_LSN,
        PRIMARY_LSN,
        READ_ONLY_PROBE,
        WRITE_PROOF,
        XACT_TABLE_STATS,
        PARTITION_ANCESTORS,
        SET_MASK_KEY,
        COMMIT,
        ROLLBACK,
        roles.PRIVILEGES_QUERY,
        roles.APPLIER_PRIVILEGES_QUERY,
        *catalog.all_query_shapes(),
        *FORMAT_SETTINGS,
    }
)


# A `transaction: none` artifact's statements run in no transaction block, so the writer's
# session, opened read-only, turns read-write around them and back (`outside_transaction`).
SESSION_READ_WRITE = "SET default_transaction_read_only = off"
SESSION_READ_ONLY = "SET default_transaction_read_only = on"
_WRITER_SHAPES = frozenset(
    {BEGIN_READ_WRITE, COMMIT, ROLLBACK, SESSION_READ_WRITE, SESSION_READ_ONLY}
)
_LOCAL_TIMEOUT = re.compile(r"^SET LOCAL statement_timeout = '\d+ms'$")
# The applier's one session-level setting: an artifact's statement outside a transaction
# (an index build) runs under `[rollout] statement_timeout`, then production's comes back.
_SESSION_TIMEOUT = re.compile(r"^SET statement_timeout = '\d+ms'$")


def local_timeout(milliseconds: int) -> str:
    """The internal statement that sets the statement timeout of the open transaction."""
    return f"SET LOCAL statement_timeout = '{int(milliseconds)}ms'"


def _classify(statement: str, catalog_: catalog.Catalog | None) -> guard.Verdict:
    """The guard's verdict, after refusing text that is not valid UTF-8 (it cannot be sent)."""
    if storable(statement) != statement:
        return guard.Verdict(
            False,
            guard.Kind.UNPARSEABLE,
            "the statement is not valid UTF-8 (its undecodable bytes are shown as \\xNN)",
        )
    return guard.classify(statement, catalog_)


def _is_internal(statement: str) -> bool:
    if statement in _INTERNAL_EXACT or _SAVEPOINT.match(statement):
        return True
    if _LOCAL_TIMEOUT.match(statement):
        return True
    prefix = "SET TRANSACTION SNAPSHOT '"
    if statement.startswith(prefix) and statement.endswith("'"):
        return bool(_SNAPSHOT_ID.match(statement[len(prefix) : -1]))
    return False


def _describe(dsn: str) -> str:
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an unparseable connection string)"
    host = str(params.get("host") or params.get("hostaddr") or "localhost (default socket)")
    port = str(params.get("port") or "5432")
    database = str(params.get("dbname") or params.get("user") or "")
    return f"{host}:{port}/{database}" if database else f"{host}:{port}"


def _connect(dsn: str, role: str, key: str, **overrides: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            dsn, autocommit=True, prepare_threshold=None, connect_timeout=10, **overrides
        )
    except psycopg.OperationalError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[0].rsplit("failed:", 1)[-1].strip() if lines else "no answer"
        # the server answered: there is no clone yet (libpq gives no SQLSTATE at connect)
        if role == "clone" and re.search(r'database ".*" does not exist', reason):
            raise ServerUnreachable(
                f"no clone at {_describe(dsn)}: {redact_message(reason, dsn)} — make it with "
                "`oneroof clone create` (or name another with --name)"
            ) from None
        raise ServerUnreachable(
            f"cannot reach the {role} server at {_describe(dsn)}: {redact_message(reason, dsn)}"
            f" — check that the server is running, the host, port and database in {key}, "
            "and the credentials"
        ) from None
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"{key}: not a valid connection string: "
            f"{redact_message(str(exc).strip(), dsn, parse_error=True)}"
        ) from None


class Session:
    """A guarded connection for one role; every statement goes through `execute`."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        role: str,
        evidence: Evidence | None,
        catalog: catalog.Catalog | None,
        *,
        read_identity: bool = True,
    ) -> None:
        self._conn = conn
        self.role = role
        self.evidence = evidence
        self.catalog = catalog
        self._in_transaction = False
        self._writing = False
        self._standalone = False  # inside `outside_transaction`
        self._savepoints = 0
        self._sent: list[str] = []  # guarded statements of the open transaction
        self.writer = False
        self.transactions = 0  # production transactions ended, each with its write proof
        self.privileges: roles.RolePrivileges | None = None
        self.privileged_allowed = False
        # the longest statement timeout a transaction may set: production's own, never more
        self.max_timeout_ms: int | None = None
        self.artifact_timeout_ms: int | None = None
        # [production] max_snapshot_seconds: checked before each statement of a transaction
        self.max_snapshot_seconds: float | None = None
        self._began: float | None = None  # when the open transaction began (monotonic)
        self._first_read: float | None = None  # its first guarded statement: locks from then
        self._age_limited = False
        self._expired = False
        self.audit_tags: dict[str, Any] = {}  # added to each audit record (a standby says so)
        if read_identity:
            self.identity = self._read_identity()

    # -- statements -------------------------------------------------------------------------

    def _audit(self, kind: str, statement: str, outcome: str, **extra: Any) -> None:
        if self.role == PRODUCTION and self.evidence is not None:
            self.evidence.audit(self.role, kind, statement, outcome, **self.audit_tags, **extra)

    def _send(
        self, statement: str, params: Sequence[Any] | None, kind: str
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            cursor = self._conn.execute(statement, params)
        except psycopg.Error as exc:
            state = exc.sqlstate or ""
            self._audit(kind, statement, f"error {state}".strip())
            raise
        if cursor.description is None:
            return [], []
        return [c.name for c in cursor.description], cursor.fetchall()

    def internal(
        self, statement: str, params: Sequence[Any] | None = None, **audit: Any
    ) -> list[tuple[Any, ...]]:
        """Run one of the tool's own exact statement shapes (transaction setup and the like)."""
        writer_shape = self.writer and (
            statement in _WRITER_SHAPES or bool(_SESSION_TIMEOUT.match(statement))
        )
        if self.role == PRODUCTION and not (_is_internal(statement) or writer_shape):
            raise ForbiddenAction(f"not an internal statement shape: {statement!r}")
        self._audit(guard.Kind.INTERNAL, statement, "sent", **audit)
        return self._send(statement, params, guard.Kind.INTERNAL)[1]

    def execute(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Classify, audit and run one statement; rows returned (empty for none).

        On production a statement outside a transaction runs in its own READ ONLY one.
        """
        return self.query(statement, params)[1]

    def query(
        self, statement: str, params: Sequence[Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Like `execute`, but also returns the column names."""
        if self.role != PRODUCTION:
            return self._send(statement, params, "clone")
        verdict = _classify(statement, self.catalog)
        if not verdict.allowed:
            self._audit(verdict.kind, statement, "refused", reason=verdict.reason)
            verdict.raise_if_refused(statement, self.role)
        if self._in_transaction or self._expired:
            self._check_age()
            self._audit(verdict.kind, statement, "sent")
            self._sent.append(statement)
            return self._send(statement, params, verdict.kind)
        with self.transaction():
            self._audit(verdict.kind, statement, "sent")
            self._sent.append(statement)
            return self._send(statement, params, verdict.kind)

    def scalar(self, statement: str, params: Sequence[Any] | None = None) -> Any:
        """The single value of a one-row, one-column query."""
        rows = self.execute(statement, params)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise DatabaseError(
                f"expected one value, got {len(rows)} row(s) of "
                f"{len(rows[0]) if rows else 0} column(s)"
            )
        return rows[0][0]

    def copy_out(self, statement: str) -> Iterator[bytes]:
        """Classify, audit and stream one `COPY (read) TO STDOUT`: its data, chunk by chunk.

        COPY takes no server-side parameters: compose literals with psycopg.sql, and send a
        secret as the bound parameter of an internal statement (`SET_MASK_KEY`) first. On
        production a COPY outside a transaction runs in its own READ ONLY one.
        """
        if self.role == PRODUCTION:
            verdict = _classify(statement, self.catalog)
            if verdict.allowed and statement.lstrip()[:4].upper() != "COPY":
                verdict = guard.Verdict(False, verdict.kind, "copy_out streams COPY … TO STDOUT")
            if not verdict.allowed:
                self._audit(verdict.kind, statement, "refused", reason=verdict.reason)
                verdict.raise_if_refused(statement, self.role)
            if not self._in_transaction and not self._expired:
                with self.transaction():
                    yield from self.copy_out(statement)
                return
            self._check_age()
            self._audit(verdict.kind, statement, "sent")
            self._sent.append(statement)
        try:
            with self._conn.cursor().copy(statement) as copy:
                for data in copy:
                    yield bytes(data)
        except psycopg.Error as exc:
            self._audit("read", statement, f"error {exc.sqlstate or ''}".strip())
            raise

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def transaction(
        self,
        *,
        snapshot: str | None = None,
        force_rollback: bool = True,
        consistent: bool = False,
        hold_snapshot: bool = False,
    ) -> Iterator[Session]:
        """One transaction, rolled back unless `force_rollback=False`.

        On production always REPEATABLE READ READ ONLY. Elsewhere a plain read-write
        transaction, or a REPEATABLE READ READ ONLY one with `consistent=True` or a snapshot.
        `max_snapshot_seconds` ends a transaction that is older at its next statement, unless
        it imports a snapshot (the exporting transaction decides) or `hold_snapshot` (the
        dump's: pg_dump holds that snapshot for its whole run anyway).
        """
        if self._in_transaction:
            raise DatabaseError("a transaction is already open on this session")
        begin = BEGIN_CLONE
        if self.role == PRODUCTION or consistent or snapshot is not None:
            begin = BEGIN_READ_ONLY
        self.internal(begin)
        self._begin_clock(limited=snapshot is None and not hold_snapshot)
        try:
            if snapshot is not None:
                if not _SNAPSHOT_ID.match(snapshot):
                    raise ForbiddenAction(f"not a snapshot id: {snapshot!r}")
                self.internal(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            yield self
        except BaseException:
            if self._in_transaction:
                self._end(ROLLBACK)
            raise
        else:
            if self._in_transaction:
                self._end(ROLLBACK if force_rollback else COMMIT)
        finally:
            self._expired = False

    def _begin_clock(self, *, limited: bool) -> None:
        self._in_transaction = True
        self._sent = []
        self._began = time.monotonic()
        self._first_read = None
        self._age_limited = limited
        self._expired = False

    def snapshot_age(self) -> float:
        """Seconds the open transaction has held its snapshot (0 outside a transaction)."""
        if not self._in_transaction or self._began is None:
            return 0.0
        return time.monotonic() - self._began

    def snapshot_due(self) -> bool:
        """True when the open transaction is older than `max_snapshot_seconds`."""
        limit = self.max_snapshot_seconds
        return limit is not None and self._in_transaction and self.snapshot_age() > limit

    def renew_snapshot(self) -> None:
        """End the open read-only transaction (with its write proof) and begin another like
        it: the statements after this see a new snapshot (a fingerprint past its limit)."""
        if not self._in_transaction or self._writing:
            raise DatabaseError("renew_snapshot needs an open read-only transaction")
        limited = self._age_limited
        self._end(ROLLBACK)
        self.internal(BEGIN_READ_ONLY)
        self._begin_clock(limited=limited)

    def _check_age(self) -> None:
        """Refuse a statement in a transaction ended for its age; end one past the limit."""
        if self._expired:
            raise SnapshotTooOld(
                "this production transaction was ended: it held its snapshot longer than "
                f"[production] max_snapshot_seconds = {self.max_snapshot_seconds:g}"
            )
        if self._first_read is None:
            self._first_read = time.monotonic()
        if not self._age_limited or not self.snapshot_due():
            return
        age = self.snapshot_age()
        self._end(ROLLBACK)
        self._expired = True
        raise SnapshotTooOld(
            f"a production read transaction held its snapshot for {age:.1f}s, longer than "
            f"[production] max_snapshot_seconds = {self.max_snapshot_seconds:g}: it was ended "
            "(vacuum on production waits for the oldest snapshot). Lower the work per "
            "transaction, raise the limit, or read from a standby ([production] replica_dsn)"
        )

    def _end(self, statement: str, *, writing: bool = False) -> None:
        self._in_transaction = False
        self._savepoints = 0
        if self._conn.closed:
            return
        proof: dict[str, Any] = {}
        if self.role == PRODUCTION:
            proof = self._write_proof(writing)
            ended = time.monotonic()
            if self._began is not None:
                # how long the snapshot, and the ACCESS SHARE locks of its reads, were held
                proof["seconds"] = round(ended - self._began, 3)
                proof["lock_seconds"] = round(ended - (self._first_read or ended), 3)
            self._began = self._first_read = None
        try:
            self.internal(statement, **proof)
        except psycopg.Error:
            if statement == COMMIT:
                raise
            # A failed rollback leaves nothing to undo; the connection is closed below.
            self._conn.close()
        if proof.get("xid") is not None and not writing:
            shown = "; ".join(s if len(s) <= 200 else s[:199] + "…" for s in proof["statements"])
            raise ForbiddenAction(
                f"refused: a production transaction of oneroof was assigned transaction id "
                f"{proof['xid']}: something it ran prepared a write ({shown or 'its setup'}); "
                "it was rolled back. Remove what is not a plain read, or the trust that let it "
                "through ([guard] allow_functions, allow_extensions)",
                sql=proof["statements"][-1] if proof["statements"] else None,
            )

    def _write_proof(self, writing: bool) -> dict[str, Any]:
        """Read the transaction's id as its last statement: NULL proves it wrote nothing."""
        self.transactions += 1
        statements = list(self._sent)
        self._sent = []
        base: dict[str, Any] = {"proof": True, "apply": writing, "statements": statements}
        status = self._conn.info.transaction_status
        if status != psycopg.pq.TransactionStatus.INTRANS:
            # an error ended it: PostgreSQL rolls all of it back, and the id cannot be read
            return {**base, "proven": False, "xid": None}
        try:
            rows = self.internal(WRITE_PROOF)
        except psycopg.Error:
            return {**base, "proven": False, "xid": None}
        return {**base, "proven": True, "xid": rows[0][0] if rows else None}

    @contextmanager
    def write_transaction(self) -> Iterator[Session]:
        """A READ WRITE transaction on a production writer session: commits unless it raises.

        This is the only way oneroof writes to production; only `rollout.apply` opens a
        writer session, after every gate, rehearsal and drift check has held.
        """
        if self.role == PRODUCTION and not self.writer:
            raise ForbiddenAction("refused: this production session is read-only")
        if self._in_transaction:
            raise DatabaseError("a transaction is already open on this session")
        self.internal(BEGIN_READ_WRITE if self.role == PRODUCTION else BEGIN_CLONE)
        self._begin_clock(limited=False)
        self._writing = True
        try:
            yield self
        except BaseException:
            self._writing = False
            self._end(ROLLBACK, writing=True)
            raise
        else:
            self._writing = False
            self._end(COMMIT, writing=True)

    @contextmanager
    def outside_transaction(self) -> Iterator[Session]:
        """The writer's statements in no transaction block, each committing on its own: the
        `transaction: none` artifacts (CREATE INDEX CONCURRENTLY, …) of a gated apply only.

        `apply` sends them (audited) while no transaction is open; a read in between still
        runs in its own READ ONLY transaction with its write proof.
        """
        if self.role == PRODUCTION and not self.writer:
            raise ForbiddenAction("refused: this production session is read-only")
        if self._in_transaction:
            raise DatabaseError("a transaction is already open on this session")
        if self.role == PRODUCTION:
            self.internal(SESSION_READ_WRITE)
        self._standalone = True
        try:
            yield self
        finally:
            self._standalone = False
            if self.role == PRODUCTION and not self._conn.closed:
                self.internal(SESSION_READ_ONLY)

    def apply(
        self, statement: str, params: Sequence[Any] | None = None, **audit: Any
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Send one statement of a gated artifact inside `write_transaction`, or in no
        transaction inside `outside_transaction` (audited)."""
        alone = self._standalone and not self._in_transaction
        if self.role == PRODUCTION and not (self.writer and (self._writing or alone)):
            raise ForbiddenAction("refused: writes to production only inside a gated apply")
        verdict = _classify(statement, self.catalog)
        if verdict.kind in (guard.Kind.TRANSACTION, guard.Kind.MULTI, guard.Kind.UNPARSEABLE):
            self._audit(verdict.kind, statement, "refused", reason=verdict.reason, **audit)
            raise ForbiddenAction(
                f"refused in an artifact: {verdict.reason} (the artifact's transaction "
                "belongs to oneroof)",
                sql=statement,
            )
        self._audit(verdict.kind, statement, "apply", **audit)
        self._sent.append(statement)
        if self._first_read is None:
            self._first_read = time.monotonic()
        if "step" in audit:  # oneroof's own statements of the apply: locks, ledger, post-checks
            return self._send(statement, params, verdict.kind)
        with self._artifact_timeout(alone):
            return self._send(statement, params, verdict.kind)

    @contextmanager
    def _artifact_timeout(self, alone: bool) -> Iterator[None]:
        """An artifact's statement runs under `[rollout] statement_timeout`, every read of the
        apply (gates, deltas, the ledger) under production's own."""
        limit, usual = self.artifact_timeout_ms, self.max_timeout_ms
        if self.role != PRODUCTION or limit is None or usual is None or limit == usual:
            yield
            return
        if alone:
            self.internal(f"SET statement_timeout = '{int(limit)}ms'")
            try:
                yield
            finally:
                if not self._conn.closed:
                    self.internal(f"SET statement_timeout = '{int(usual)}ms'")
            return
        self.internal(local_timeout(limit))
        yield  # a failed statement aborts the transaction: nothing more is read in it
        self.internal(local_timeout(usual))

    def set_statement_timeout(self, milliseconds: int) -> int:
        """Set the open transaction's statement timeout; on production never above its own.

        Returns the timeout set. A check file may lower production's timeout, not raise it.
        """
        if self.max_timeout_ms is not None:
            milliseconds = min(milliseconds, self.max_timeout_ms)
        self.internal(local_timeout(milliseconds))
        return milliseconds

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint inside the open transaction, rolled back to on error."""
        self._savepoints += 1
        name = f"oneroof_sp_{self._savepoints}"
        self.internal(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if not self._conn.closed:
                self.internal(f"ROLLBACK TO SAVEPOINT {name}")
            raise
        else:
            self.internal(f"RELEASE SAVEPOINT {name}")

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    # -- identity and housekeeping ----------------------------------------------------------

    def _read_identity(self) -> ServerIdentity:
        try:
            if self._in_transaction:
                with self.savepoint():
                    rows = self.internal(IDENTITY_QUERY)
            else:
                rows = self.internal(IDENTITY_QUERY)
        except psycopg.errors.InsufficientPrivilege:
            # Without pg_control_system() the identity rests on address and name alone.
            rows = self.internal(IDENTITY_QUERY_FALLBACK)
        row = rows[0]
        info = self._conn.info
        return ServerIdentity(
            system_identifier=row[0] or f"unknown@{info.host}:{info.port}",
            host=str(info.host),
            port=int(info.port),
            database=row[1],
            server_version=row[2],
            server_version_num=row[3],
            started=str(row[4] or ""),
        )

    def setting(self, name: str) -> str:
        """A server setting's current value (SHOW), through the guard."""
        if not re.fullmatch(r"[A-Za-z_.]+", name):
            raise ForbiddenAction(f"not a setting name: {name!r}")
        return str(self.execute(f"SHOW {name}")[0][0])

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def close(self) -> None:
        if not self._conn.closed:
            if self._in_transaction:
                self._end(ROLLBACK)
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProductionSession(Session):
    """A guarded, read-only, audited session on production; its raw connection stays inside."""

    dsn_setting: Dsn | None = None  # the configured DSN it was opened with (pg_dump uses it)
    standby = False  # a hot standby of production ([production] replica_dsn)


class _Raw(Session):
    @property
    def raw_for_clone(self) -> psycopg.Connection[Any]:
        """The underlying connection, for COPY and notices: never on production (mypy sees it)."""
        if self.role == PRODUCTION:  # belt and braces: the type already keeps production out
            raise ForbiddenAction("the raw production connection is never handed out")
        return self._conn


class CloneSession(_Raw):
    """A read-write session on a clone that passed the name guard, identity and marker checks."""


class ServerSession(_Raw):
    """The non-production server's maintenance session (CREATE/DROP DATABASE)."""


def _timeout_ms(value: str, key: str) -> str:
    from oneroof.sqltext import setting_ms

    try:
        return f"{setting_ms(value)}ms"
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def production_options(config: Config) -> str:
    """The startup options every production session is opened with."""
    statement_timeout = _timeout_ms(
        config.production.statement_timeout, "production.statement_timeout"
    )
    lock_timeout = _timeout_ms(config.production.lock_timeout, "production.lock_timeout")
    return (
        "-c default_transaction_read_only=on"
        f" -c statement_timeout={statement_timeout}"
        f" -c lock_timeout={lock_timeout}"
        " -c idle_in_transaction_session_timeout=600s"
    )


def trust(config: Config) -> catalog.Trust:
    """What `[guard]` trusts beyond the built-ins."""
    return catalog.Trust(
        functions=tuple(config.guard.allow_functions),
        extensions=frozenset(config.guard.allow_extensions),
        foreign_tables=tuple(config.guard.allow_foreign_tables),
    )


def read_catalog(session: Session, config: Config) -> catalog.Catalog:
    """The guard's catalog of the session's server (internal statements, one per query)."""
    results = [session.internal(q) for q in catalog.queries(session.identity.server_version_num)]
    return catalog.Catalog.build(catalog.rows_from_results(results), trust(config))


def _artifact_timeout_ms(config: Config) -> int:
    """`[rollout] statement_timeout` in milliseconds (validated when the config was read)."""
    from oneroof.sqltext import setting_ms

    return setting_ms(config.rollout.statement_timeout)


def statement_timeout_ms(config: Config) -> int:
    """`[production] statement_timeout` in milliseconds (a bare number is milliseconds)."""
    from oneroof.sqltext import setting_ms

    try:
        return setting_ms(config.production.statement_timeout)
    except ValueError as exc:
        raise ConfigError(
            f"production.statement_timeout: {exc}",
            file=config.file,
            line=config.line_of("production", "statement_timeout"),
        ) from None


def open_production(config: Config, evidence: Evidence) -> ProductionSession:
    """A read-only, guarded, audited session on production, as the least-privilege reader.

    Refused (`ForbiddenAction`) when the role may do more than read, unless
    `[guard] allow_privileged_role` accepts it; then the audit log says so.
    """
    return _open_production(config, evidence, config.production_dsn, applier=False)


def _open_production(
    config: Config,
    evidence: Evidence,
    dsn_setting: Dsn,
    *,
    applier: bool,
    standby_of: ServerIdentity | None = None,
) -> ProductionSession:
    dsn = dsn_setting.resolve()
    max_timeout_ms = statement_timeout_ms(config)
    conn = _connect(
        dsn,
        PRODUCTION,
        dsn_setting.key,
        options=production_options(config),
        application_name="oneroof-apply" if applier else "oneroof",
    )
    tags = {"server": "standby"} if standby_of is not None else {}
    try:
        evidence.audit(
            PRODUCTION, guard.Kind.INTERNAL, "-- connect", "sent", target=_describe(dsn), **tags
        )
        session = ProductionSession(conn, PRODUCTION, evidence, None, read_identity=False)
        session.audit_tags = tags
        session.dsn_setting = dsn_setting
        session.max_timeout_ms = max_timeout_ms
        if applier:
            session.artifact_timeout_ms = _artifact_timeout_ms(config)
        session.max_snapshot_seconds = config.production.max_snapshot_seconds
        with session.transaction():  # the session's setup is one proven transaction too
            _set_up(session, config, evidence, applier)
            if standby_of is not None:
                _prove_standby(session, config, standby_of)
        return session
    except BaseException:
        conn.close()
        raise


def _prove_standby(session: ProductionSession, config: Config, primary: ServerIdentity) -> None:
    """Refuse a `replica_dsn` that is not a hot standby of this very production."""
    line = config.line_of("production", "replica_dsn")
    recovering = session.internal(STANDBY_PROOF)
    if not recovering or recovering[0][0] is not True:
        raise ConfigError(
            f"production.replica_dsn: {session.identity.host}:{session.identity.port} is not in "
            "recovery, so it is not a hot standby (pg_is_in_recovery() is false); point it at "
            "a standby of production, or remove it to read the primary",
            file=config.file,
            line=line,
        )
    here, there = session.identity.system_identifier, primary.system_identifier
    if here.startswith("unknown@") or here != there:
        raise ConfigError(
            f"production.replica_dsn: {session.identity.host}:{session.identity.port} is a "
            f"standby of cluster {here}, not of production (system identifier {there}); "
            "point it at a standby of production",
            file=config.file,
            line=line,
        )
    if session.identity.database.casefold() != primary.database.casefold():
        raise ConfigError(
            f"production.replica_dsn: reads database {session.identity.database!r}, production "
            f"is {primary.database!r}; name the same database",
            file=config.file,
            line=line,
        )
    session.standby = True


def open_standby(config: Config, evidence: Evidence, primary: ServerIdentity) -> ProductionSession:
    """A guarded reader session on production's hot standby (`[production] replica_dsn`).

    The same wall as `open_production` — the least-privilege check, read-only proof, guard,
    audit (each record says `server: standby`) and a write proof per transaction — and
    proven a standby of `primary`: in recovery, with the primary's system identifier.
    """
    if config.replica_dsn is None:
        raise ConfigError(
            "[production] replica_dsn is not set",
            file=config.file,
            line=config.line_of("production"),
        )
    return _open_production(config, evidence, config.replica_dsn, applier=False, standby_of=primary)


def lsn_value(text: str) -> int:
    """An LSN (`16/B374D848`) as the number it stands for, to compare and subtract."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class Replay:
    """How far a standby had replayed when the primary was at `primary_lsn`."""

    primary_lsn: str | None
    replay_lsn: str | None
    waited_seconds: float
    caught_up: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary_lsn": self.primary_lsn,
            "replay_lsn": self.replay_lsn,
            "waited_seconds": round(self.waited_seconds, 3),
            "caught_up": self.caught_up,
        }


def wait_for_replay(standby: Session, primary: Session, timeout_seconds: float) -> Replay:
    """Read the primary's WAL position, then wait until the standby has replayed up to it.

    A read of the standby after this sees at least what production had committed at that
    moment. Gives up after `timeout_seconds` (the result says it did not catch up).
    """
    started = time.monotonic()
    # the insert position, not the write one: with synchronous_commit off a committed
    # transaction may lie beyond what the primary has written yet
    target = primary.scalar(PRIMARY_INSERT_LSN)
    replayed: str | None = None
    while True:
        with standby.transaction():
            rows = standby.internal(REPLAY_LSN)
        replayed = rows[0][0] if rows else None
        caught = target is not None and replayed is not None
        if caught and lsn_value(str(replayed)) >= lsn_value(str(target)):
            return Replay(str(target), str(replayed), time.monotonic() - started, True)
        if time.monotonic() - started > timeout_seconds:
            return Replay(target, replayed, time.monotonic() - started, False)
        time.sleep(0.05)


def _set_up(session: ProductionSession, config: Config, evidence: Evidence, applier: bool) -> None:
    """Identity, the read-only proof, the role's privileges and the guard's catalog."""
    session.identity = session._read_identity()
    flag = session.internal(READ_ONLY_PROOF)
    if not flag or flag[0][0] != "on":
        # A pooler that drops startup options would leave the session writable: refuse it.
        raise ForbiddenAction(
            "the production session is not read-only (default_transaction_read_only is "
            f"{flag[0][0] if flag else 'unknown'}); is a connection pooler dropping "
            "startup options? Connect oneroof to the server directly"
        )
    privileges = roles.RolePrivileges.from_rows(session.internal(roles.PRIVILEGES_QUERY))
    session.privileges = privileges
    excess = roles.excess(privileges)
    if excess and not applier:
        if not config.guard.allow_privileged_role:
            evidence.audit(
                PRODUCTION,
                guard.Kind.INTERNAL,
                "-- privileged role refused",
                "refused",
                excess=[e.describe() for e in excess],
            )
            raise ForbiddenAction(roles.refusal_message(privileges))
        session.privileged_allowed = True
        evidence.audit(
            PRODUCTION,
            guard.Kind.INTERNAL,
            "-- privileged role allowed by [guard] allow_privileged_role",
            "sent",
            excess=[e.describe() for e in excess],
        )
    session.catalog = read_catalog(session, config)


def prove_read_only(session: Session) -> str:
    """Send a harmless write inside a READ ONLY transaction; return PostgreSQL's refusal.

    Raises `CheckFailed` if the server accepted it: the session would not be read-only.
    """
    from oneroof.errors import CheckFailed

    try:
        with session.transaction():
            session.internal(READ_ONLY_PROBE)
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        return pg_message(exc)
    raise CheckFailed("production accepted a write: the session is NOT read-only")


def open_production_writer(config: Config, evidence: Evidence) -> ProductionSession:
    """A production session that may open gated write transactions (rollout apply only).

    It connects as `[production] apply_dsn` (else `dsn`) and is opened read-only like every
    other; only `write_transaction()` switches one transaction to READ WRITE, and every
    statement in it is audited as an apply.
    """
    setting = config.apply_dsn or config.production_dsn
    session = _open_production(config, evidence, setting, applier=True)
    session.writer = True
    return session


def production_identity(config: Config, evidence: Evidence) -> ServerIdentity:
    """The server identity of production (opens and closes a guarded session)."""
    with open_production(config, evidence) as session:
        return session.identity


def check_clone_name(name: str, pattern: str, production: ServerIdentity | None = None) -> None:
    """Refuse (`ForbiddenAction`) a clone name that the guard does not accept.

    The name must be plain ASCII without surrounding space or control characters, fit in
    PostgreSQL's 63-byte identifiers (longer names are silently truncated by the server),
    match the pattern in full, and differ from the production database's name even in case.
    """
    if not isinstance(name, str) or not name:
        raise ForbiddenAction("refused: empty clone name")
    if not name.isascii() or not name.isprintable() or name != name.strip():
        raise ForbiddenAction(
            f"refused: clone name {name!r} is not plain ASCII without spaces or control characters"
        )
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ForbiddenAction(
            f"refused: clone name {name[:20]!r}… is longer than {MAX_IDENTIFIER_BYTES} bytes "
            "(PostgreSQL would truncate it to another name)"
        )
    if re.fullmatch(pattern, name) is None:
        raise ForbiddenAction(
            f"refused: clone name {name!r} does not match guard.clone_name_pattern {pattern!r}"
        )
    if production is not None and name.casefold() == production.database.casefold():
        raise ForbiddenAction(
            f"refused: {name!r} is the name of the production database; a clone needs its own"
        )


def clone_name(config: Config, explicit: str | None = None) -> str:
    """The clone name to use: `--name`, else `[clone] name`, else `<production>_clone`."""
    if explicit:
        return explicit
    if config.clone.name:
        return config.clone.name
    params = psycopg.conninfo.conninfo_to_dict(config.production_dsn.resolve())
    base = str(params.get("dbname") or params.get("user") or "production")
    return f"{base}_clone"


def server_dsn(config: Config) -> Dsn:
    """The non-production server's maintenance DSN; `ConfigError` when not configured."""
    if config.clone_server_dsn is None:
        raise ConfigError(
            "[clone] server_dsn is not set: oneroof needs a non-production server for the clone",
            file=config.file,
            line=config.line_of("clone"),
        )
    return config.clone_server_dsn


def open_server(config: Config, dsn: str | None = None) -> ServerSession:
    """The maintenance session on the non-production server (CREATE/DROP DATABASE); with
    `dsn`, on the server of an adopted clone (`adopted_clone`)."""
    if dsn is None:
        dsn = server_dsn(config).resolve()
        key = "clone.server_dsn"
    else:
        key = "the adopted clone's DSN"
    conn = _connect(dsn, "non-production", key, application_name="oneroof")
    return ServerSession(conn, SERVER, None, None)


ADOPTED_DIR = "clones"  # .oneroof/clones/<name>.json: where each adopted clone is


def adopted_clone(config: Config, name: str) -> dict[str, Any] | None:
    """Where the adopted clone `name` is (`oneroof clone adopt`, `[clone] method = "command"`):
    its DSN and database, from the workspace's registry; None for a clone of server_dsn."""
    path = config.state_dir / ADOPTED_DIR / f"{name}.json"
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a readable clone registry entry: {exc}", file=path) from None
    if not isinstance(entry, dict) or entry.get("name") != name or not entry.get("dsn"):
        raise ConfigError(f"not a clone registry entry of {name!r}", file=path)
    return entry


def refuse_production_instance(
    config: Config, here: ServerIdentity, production: ServerIdentity, in_recovery: bool
) -> None:
    """Refuse an adopted clone that is production itself, production's own running server
    (unless `[clone] allow_production_cluster`), or a standby (it cannot be written)."""
    where = f"{here.database!r} on {here.host}:{here.port}"
    itself = here.database.casefold() == production.database.casefold()
    if here.same_instance(production) and (itself or not config.clone.allow_production_cluster):
        since = (
            f"started {production.started}"
            if production.started and here.started
            else "its identity unreadable, so not provably another server"
        )
        raise ForbiddenAction(
            f"refused: {where} is production's own server (system identifier "
            f"{production.system_identifier}, {since}): a clone must be a copy elsewhere"
            + ("" if itself else " (or set [clone] allow_production_cluster = true)")
        )
    if in_recovery:
        raise ForbiddenAction(
            f"refused: {where} is a server in recovery (a standby): a clone must be writable"
        )


def read_marker(session: CloneSession) -> dict[str, Any] | None:
    """The clone marker of the session's database, or None when it carries none."""
    rows = session.raw_for_clone.execute(
        "select pg_catalog.shobj_description(d.oid, 'pg_database')"
        " from pg_catalog.pg_database d where d.datname = current_database()"
    ).fetchall()
    return parse_marker(rows[0][0]) if rows else None


def parse_marker(comment: str | None) -> dict[str, Any] | None:
    """The clone marker inside a database comment, or None when the comment holds none."""
    if not comment:
        return None
    try:
        value = json.loads(comment)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get(MARKER_KEY), dict):
        return None
    marker: dict[str, Any] = value[MARKER_KEY]
    return marker


def open_clone(
    config: Config,
    evidence: Evidence,
    name: str | None = None,
    *,
    require_marker: bool = True,
    production: ServerIdentity | None = None,
    ready_only: bool = False,
) -> CloneSession:
    """A read-write session on the clone, after the name guard, identity and marker checks.

    `ready_only` also refuses a clone whose marker says it is still being made (suites,
    rehearsals and the consoles use it; the clone module itself does not).
    """
    target = clone_name(config, name)
    check_clone_name(target, config.guard.clone_name_pattern)
    if production is None:
        production = production_identity(config, evidence)
    check_clone_name(target, config.guard.clone_name_pattern, production)
    adopted = adopted_clone(config, target)
    if adopted is None:
        dsn = psycopg.conninfo.make_conninfo(server_dsn(config).resolve(), dbname=target)
        conn = _connect(dsn, "clone", "clone.server_dsn", application_name="oneroof-clone")
    else:
        conn = _connect(
            str(adopted["dsn"]),
            "clone",
            "the adopted clone's DSN",
            application_name="oneroof-clone",
        )
    try:
        session = CloneSession(conn, CLONE, evidence, None)
        if adopted is not None:
            # an engine's copy: its own database name, maybe production's system identifier
            recovering = session.raw_for_clone.execute(STANDBY_PROOF).fetchone()
            refuse_production_instance(
                config, session.identity, production, bool(recovering and recovering[0])
            )
            marker = read_marker(session)
            if (marker or {}).get("name") != target and (require_marker or ready_only):
                raise ForbiddenAction(
                    f"refused: the database at the DSN registered for clone {target!r} does not "
                    "carry its marker; run `oneroof clone adopt` (or create) again"
                )
        elif session.identity.database != target:
            raise ForbiddenAction(
                f"refused: connected to {session.identity.database!r}, not the clone {target!r}"
            )
        elif session.identity.same_database(production):
            raise ForbiddenAction(
                f"refused: {target!r} on {session.identity.host}:{session.identity.port} is the "
                "production database (same cluster system identifier and name)"
            )
        marker = read_marker(session) if require_marker or ready_only else None
        if require_marker and marker is None:
            raise ForbiddenAction(
                f"refused: database {target!r} carries no oneroof clone marker; only a clone "
                "created by `oneroof clone create` is written to"
            )
        if ready_only and marker is not None and marker.get("state", "ready") != "ready":
            raise ForbiddenAction(
                f"refused: clone {target!r} is not ready (state {marker.get('state')!r}): an "
                "interrupted create or reset; run `oneroof clone create` or `reset` again"
            )
        return session
    except BaseException:
        conn.close()
        raise


def open_admin(dsn: str) -> psycopg.Connection[Any]:
    """A plain autocommit connection to a server oneroof itself started (demo, benchmarks).

    It plays the application and the humans of the demo world — generating data, signing
    approvals. It is never used for a configured production or clone role.
    """
    return _connect(dsn, "embedded", "the embedded server")


def quote_ident(name: str) -> pgsql.Identifier:
    """An identifier for psycopg's sql composition (never f-strings)."""
    return pgsql.Identifier(name)
