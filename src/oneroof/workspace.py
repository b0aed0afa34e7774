"""The workspace of one command: its config, its evidence store, and the sessions it opens.

Every library command takes a `Workspace`. It opens one production reader session the
first time one is needed and hands that same session to every later read of the command
(production's identity and the guard's catalog are read once, with it), so a whole
campaign costs production a few connections rather than one per step. Clone and server
sessions are opened fresh for their callers. It counts what it opened, per role.
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

    def server(self) -> ServerSession:
        """A new maintenance session on the non-production server."""
        session = connect.open_server(self.cfg)
        self.opened["server"] += 1
        return session

    def clone_name(self, explicit: str | None = None) -> str:
        return connect.clone_name(self.cfg, explicit)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._production is not None:
            self._production.close()
            self._production = None

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
