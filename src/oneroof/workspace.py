"""The workspace of one command: its config, its evidence store, and the sessions it opens.

Every library command takes a `Workspace`. It opens one production reader session the
first time one is needed and hands that same session to every later read of the command
(production's identity and the guard's catalog are read once, with it), so a whole
campaign costs production a few connections rather than one per step. Clone and server
sessions are opened fresh for their callers. It counts what it opened, per role.

With `[production] replica_dsn`, `reader()` hands out the session on production's hot
standby instead (opened once too, after it caught up with the primary): full fingerprints,
the clone's dump and checks read there; gates, counters of gates and applies stay on the
primary (`production()`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from oneroof import config as config_module
from oneroof import connect
from oneroof.config import Config
from oneroof.connect import CloneSession, ProductionSession, ServerIdentity, ServerSession
from oneroof.errors import DatabaseError
from oneroof.evidence import Evidence


class Workspace:
    """One command's config, evidence store and sessions; close it (or use `with`)."""

    def __init__(self, cfg: Config, evidence: Evidence | None = None) -> None:
        self.cfg = cfg
        self.evidence = evidence if evidence is not None else Evidence(cfg.evidence_path)
        self._production: ProductionSession | None = None
        self._replica: ProductionSession | None = None
        self.replay: connect.Replay | None = None  # the standby's last catch-up
        self._identity: ServerIdentity | None = None
        self.opened: Counter[str] = Counter()

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Workspace:
        """The workspace of `directory` (default: $ONEROOF_WORKSPACE or the current one)."""
        return cls(config_module.load(directory))

    # -- production -------------------------------------------------------------------------

    @contextmanager
    def production(self) -> Iterator[ProductionSession]:
        """The command's production reader session, opened on first use and then shared."""
        session = self._production
        if session is None or session.closed:
            session = connect.open_production(self.cfg, self.evidence)
            self.opened["production"] += 1
            self._production = session
            self._identity = session.identity
        if session.in_transaction:
            raise DatabaseError("the shared production session is inside a transaction")
        yield session

    def open_production(self) -> ProductionSession:
        """Another production reader session, for a worker that needs its own (`--jobs`)."""
        self.opened["production"] += 1
        return connect.open_production(self.cfg, self.evidence)

    def open_writer(self) -> ProductionSession:
        """The applier's session: only `rollout apply` opens it."""
        self.opened["production-writer"] += 1
        return connect.open_production_writer(self.cfg, self.evidence)

    @property
    def has_replica(self) -> bool:
        """True when `[production] replica_dsn` names a hot standby for the heavy reads."""
        return self.cfg.replica_dsn is not None

    @contextmanager
    def replica(self) -> Iterator[ProductionSession]:
        """The shared session on production's hot standby, once it has replayed what the
        primary had written when it was asked (`self.replay` says how far and how long)."""
        session = self._replica
        if session is None or session.closed:
            session = connect.open_standby(self.cfg, self.evidence, self.production_identity)
            self.opened["production-standby"] += 1
            self._replica = session
        if session.in_transaction:
            raise DatabaseError("the shared standby session is inside a transaction")
        with self.production() as primary:
            timeout = connect.statement_timeout_ms(self.cfg) / 1000
            self.replay = connect.wait_for_replay(session, primary, timeout)
        if not self.replay.caught_up:
            # a stale standby would prove "unchanged" of a production that has moved on
            raise DatabaseError(
                f"production's standby {session.identity.host}:{session.identity.port} had "
                f"replayed {self.replay.replay_lsn or 'nothing'} of the primary's "
                f"{self.replay.primary_lsn} after {timeout:g}s ([production] "
                "statement_timeout): its reads would miss what production committed since. "
                "Check replication (pg_stat_replication on the primary, replay not paused), "
                "or remove [production] replica_dsn to read the primary"
            )
        yield session

    @contextmanager
    def reader(self) -> Iterator[ProductionSession]:
        """Where production's heavy reads go: the standby when there is one, else the primary."""
        if self.has_replica:
            with self.replica() as session:
                yield session
        else:
            with self.production() as session:
                yield session

    def open_reader(self) -> ProductionSession:
        """Another session where `reader()` reads, for a worker that needs its own."""
        if not self.has_replica:
            return self.open_production()
        self.opened["production-standby"] += 1
        return connect.open_standby(self.cfg, self.evidence, self.production_identity)

    def primary_lsn(self) -> str | None:
        """The primary's WAL position now (a fingerprint on the standby records it)."""
        with self.production() as session:
            value = session.scalar(connect.PRIMARY_LSN)
        return str(value) if value is not None else None

    @property
    def production_identity(self) -> ServerIdentity:
        """Production's server identity, read once."""
        if self._identity is None:
            with self.production() as session:
                self._identity = session.identity
        return self._identity

    # -- non-production ---------------------------------------------------------------------

    def clone(
        self,
        name: str | None = None,
        *,
        require_marker: bool = True,
        ready_only: bool = False,
        production: ServerIdentity | None = None,
    ) -> CloneSession:
        """A new session on the clone, after the name guard, identity and marker checks.

        `production` is the identity the clone must not be; by default production's own,
        read once (a reset passes the one its golden copy recorded, never connecting).
        """
        session = connect.open_clone(
            self.cfg,
            self.evidence,
            name,
            require_marker=require_marker,
            production=production or self.production_identity,
            ready_only=ready_only,
        )
        self.opened["clone"] += 1
        return session

    def server(self, dsn: str | None = None) -> ServerSession:
        """A new maintenance session on the non-production server (with `dsn`: on the server
        of an adopted clone)."""
        session = connect.open_server(self.cfg, dsn)
        self.opened["server"] += 1
        return session

    def clone_name(self, explicit: str | None = None) -> str:
        return connect.clone_name(self.cfg, explicit)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._production is not None:
            self._production.close()
            self._production = None
        if self._replica is not None:
            self._replica.close()
            self._replica = None

    def __del__(self) -> None:
        # a workspace nobody closed must not keep a connection slot of production open
        self.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
