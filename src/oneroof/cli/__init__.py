"""The `oneroof` command: parses arguments, calls the library, prints, sets the exit code.

Errors and results are translated here and only here: a command returns its library
result (its `.ok` gives 0 or 1) or raises; an error prints one line on stderr and exits
with the code its class carries (`--debug` or ONEROOF_DEBUG=1 adds the traceback). Each command
group lives in its own module, registered on the shared app by importing it.
"""

from __future__ import annotations

import os
import sys
import traceback

import click
import typer

from oneroof.cli import (  # noqa: F401  (registers commands)
    approvals,
    campaign,
    check,
    clone,
    core,
    fingerprint,
    masking,
    rollout,
    serve,
)
from oneroof.cli._app import app, close_workspaces, err
from oneroof.errors import EXIT_FAILED, EXIT_OK, OneroofError, exit_code, pg_message

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
        try:
            result = command.main(args=argv, prog_name="oneroof", standalone_mode=False)
        finally:
            close_workspaces()
    except OneroofError as exc:
        if os.environ.get("ONEROOF_DEBUG"):
            traceback.print_exc()
        first, *_ = str(exc).splitlines() or [type(exc).__name__]
        err.print(f"oneroof: {first}", markup=False)
        sys.exit(exit_code(exc))
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except _USAGE_ERRORS as exc:
        exc.show()
        sys.exit(2)
    except _ABORTS:
        err.print("oneroof: interrupted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("oneroof: interrupted")
        sys.exit(130)
    except Exception as exc:
        psycopg = sys.modules.get("psycopg")  # loaded only when a command connected
        if psycopg is None or not isinstance(exc, psycopg.Error):
            raise
        if os.environ.get("ONEROOF_DEBUG"):
            traceback.print_exc()
        err.print(f"oneroof: PostgreSQL error: {pg_message(exc)}", markup=False)
        sys.exit(EXIT_FAILED)
    sys.exit(result_code(result))


def result_code(result: object) -> int:
    """The exit code of a command's result: 0 when it is ok (or there is none), 1 otherwise."""
    if result is None:
        return EXIT_OK
    if isinstance(result, int) and not isinstance(result, bool):
        return result  # click's own exit (--version, --help) under standalone_mode=False
    ok = getattr(result, "ok", None)
    if not isinstance(ok, bool):
        raise TypeError(f"a command returned {type(result).__name__}, which has no .ok")
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    main()
