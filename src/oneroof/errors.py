"""The one exception hierarchy of oneroof, and the one place that maps it to exit codes.

Every error a user can cause or meet derives from `OneroofError`. The command line and the
HTTP API translate them at their edge with `exit_code()`; nothing else decides exit codes.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed, a gate is closed: NO-GO
EXIT_BAD_INPUT = 2
EXIT_FORBIDDEN = 3


class OneroofError(Exception):
    """Base of every error oneroof raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(OneroofError):
    """A file or argument the user gave cannot be used as it is."""

    def __init__(self, message: str, *, file: Path | str | None = None, line: int | None = None):
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(where + message)
        self.file = str(file) if file is not None else None
        self.line = line


class ConfigError(BadInput):
    """`oneroof.toml` is missing, malformed or refers to something unset."""


class ServerUnreachable(OneroofError):
    """A configured server could not be reached; the message names the host and what to check."""


class ForbiddenAction(OneroofError):
    """The guard refused an action: nothing was sent, nothing changed."""

    def __init__(self, message: str, *, sql: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.sql = sql
        self.reason = reason or message


class GateClosed(OneroofError):
    """A gate that must hold does not: NO-GO, nothing was written."""


class CheckFailed(OneroofError):
    """A verification did not hold (a check, a verify, a rollout stop or delta)."""


class DatabaseError(OneroofError):
    """PostgreSQL reported an error the tool could not turn into a result."""

    def __init__(self, message: str, *, sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


_EXIT_CODES: tuple[tuple[type[OneroofError], int], ...] = (
    (ForbiddenAction, EXIT_FORBIDDEN),
    (BadInput, EXIT_BAD_INPUT),
    (ServerUnreachable, EXIT_BAD_INPUT),
    (GateClosed, EXIT_FAILED),
    (CheckFailed, EXIT_FAILED),
    (DatabaseError, EXIT_FAILED),
)


def exit_code(error: BaseException) -> int:
    """The exit code of the command line for `error` (1 for anything unexpected)."""
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_FAILED
