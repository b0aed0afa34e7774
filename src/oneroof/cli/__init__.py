"""The `oneroof` command: parses arguments, calls the library, prints, sets the exit code.

Errors are translated here and only here: one line on stderr and the exit code that
`errors.exit_code` gives (`--debug` or ONEROOF_DEBUG=1 adds the traceback). Each command
group lives in its own module, registered on the shared app by importing it.
"""

from __future__ import annotations

import os
import sys
import traceback

import click
import psycopg
import typer

from oneroof.cli import campaign, check, clone, core, fingerprint, rollout, serve  # noqa: F401  (registers commands)
from oneroof.cli._app import app, err
from oneroof.errors import EXIT_FAILED, EXIT_OK, OneroofError, exit_code

__all__ = ["app", "main"]

try:  # Typer ≥ 0.25 carries its own copy of click; older ones use click itself
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - depends on the installed Typer
    _TyperClickException = click.ClickException  # type: ignore[misc,assignment]

_USAGE_ERRORS = (click.ClickException, _TyperClickException)
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run, translate errors, exit."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="oneroof", standalone_mode=False)
    except OneroofError as exc:
        if os.environ.get("ONEROOF_DEBUG"):
            traceback.print_exc()
        first, *_ = str(exc).splitlines() or [type(exc).__name__]
        err.print(f"oneroof: {first}", markup=False)
        sys.exit(exit_code(exc))
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except psycopg.Error as exc:
        if os.environ.get("ONEROOF_DEBUG"):
            traceback.print_exc()
        message = (exc.diag.message_primary if exc.diag else None) or str(exc).splitlines()[0]
        err.print(f"oneroof: PostgreSQL error: {message} (SQLSTATE {exc.sqlstate})", markup=False)
        sys.exit(EXIT_FAILED)
    except _USAGE_ERRORS as exc:
        exc.show()
        sys.exit(2)
    except _ABORTS:
        err.print("oneroof: interrupted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("oneroof: interrupted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else EXIT_OK)


if __name__ == "__main__":
    main()
