"""The one exception hierarchy of oneroof, and the one place that maps it to exit codes.

Every error a user can cause or meet derives from `OneroofError`; each class carries its
exit code and its HTTP status. The command line and the HTTP API translate them at their
edge, once each; nothing else decides exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed, a gate is closed: NO-GO
EXIT_BAD_INPUT = 2
EXIT_FORBIDDEN = 3


class OneroofError(Exception):
    """Base of every error oneroof raises on purpose; it carries its exit code and HTTP status."""

    exit_code: ClassVar[int] = EXIT_FAILED
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(OneroofError):
    """A file or argument the user gave cannot be used as it is."""

    exit_code = EXIT_BAD_INPUT
    http_status = 400

    def __init__(self, message: str, *, file: Path | str | None = None, line: int | None = None):
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(where + message)
        self.file = str(file) if file is not None else None
        self.line = line


class ConfigError(BadInput):
    """`oneroof.toml` is missing, malformed or refers to something unset."""

    http_status = 500  # for a client of the API, the server's own configuration is at fault


class UnusableStore(BadInput):
    """The evidence store is not a usable SQLite file (corrupt, or something else)."""

    http_status = 500


class NotFound(BadInput):
    """What was asked for does not exist (yet): no campaign, no such record or plan."""

    http_status = 404


class ServerUnreachable(OneroofError):
    """A configured server could not be reached; the message names the host and what to check."""

    exit_code = EXIT_BAD_INPUT
    http_status = 503


class ForbiddenAction(OneroofError):
    """The guard refused an action: nothing was sent, nothing changed."""

    exit_code = EXIT_FORBIDDEN
    http_status = 403

    def __init__(self, message: str, *, sql: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.sql = sql
        self.reason = reason or message


class GateClosed(OneroofError):
    """A gate that must hold does not: NO-GO, nothing was written."""

    http_status = 409


class CheckFailed(OneroofError):
    """A verification did not hold (a check, a verify, a rollout stop or delta)."""

    http_status = 409


class DatabaseError(OneroofError):
    """PostgreSQL reported an error the tool could not turn into a result."""

    http_status = 502

    def __init__(self, message: str, *, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate

    @classmethod
    def from_psycopg(cls, exc: Exception, context: str = "") -> DatabaseError:
        """The error of a psycopg exception, its message formatted once (`pg_message`)."""
        prefix = f"{context}: " if context else ""
        return cls(prefix + pg_message(exc), sqlstate=getattr(exc, "sqlstate", None))


def exit_code(error: BaseException) -> int:
    """The exit code of the command line for `error` (1 for anything unexpected)."""
    return error.exit_code if isinstance(error, OneroofError) else EXIT_FAILED


def pg_message(exc: BaseException) -> str:
    """A PostgreSQL error as one line: its primary message and SQLSTATE."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if not primary:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        primary = lines[0] if lines else type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    return f"{primary} (SQLSTATE {state})" if state else str(primary)
