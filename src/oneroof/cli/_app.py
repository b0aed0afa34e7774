"""The shared pieces of the `oneroof` command: the Typer app, consoles and global options."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol

import typer
from rich.console import Console

from oneroof import __version__

if TYPE_CHECKING:
    from oneroof import config
    from oneroof.evidence import Evidence
    from oneroof.workspace import Workspace


def _hide_flag_types() -> None:
    """Show no `<bool>` beside a flag in help: it takes no value, and `<bool>` says it does."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - another Typer layout: its own help stands
        return
    shown = TyperOption.display_type_rich

    def display(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    TyperOption.display_type_rich = display  # type: ignore[method-assign]


_hide_flag_types()

app = typer.Typer(
    name="oneroof",
    help="Change a production PostgreSQL database without ever putting it at risk.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Result(Protocol):
    """What a command returns: the library's result, whose `ok` decides the exit code."""

    @property
    def ok(self) -> bool: ...


@dataclass(frozen=True)
class Outcome:
    """A result for a command whose library call returns no result object of its own."""

    ok: bool


class State:
    """Global options shared by every command, and the workspaces it opened (closed by main)."""

    workspace: Path | None = None
    opened: ClassVar[list[Workspace]] = []


state = State()


def _version(value: bool) -> None:
    if value:
        out.print(f"oneroof {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Workspace directory holding oneroof.toml (default: $ONEROOF_WORKSPACE or .)",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    state.workspace = workspace
    if debug:
        os.environ["ONEROOF_DEBUG"] = "1"


def load_config() -> config.Config:
    """The workspace config named by the global options."""
    from oneroof import config

    return config.load(state.workspace)


def open_workspace() -> Workspace:
    """The command's one Workspace: config, evidence store, sessions; `main` closes it."""
    from oneroof.workspace import Workspace

    ws = Workspace(load_config())
    state.opened.append(ws)
    return ws


def close_workspaces() -> None:
    while state.opened:
        state.opened.pop().close()


def open_evidence(cfg: config.Config) -> Evidence:
    """The workspace's evidence store."""
    from oneroof.evidence import Evidence

    return Evidence(cfg.evidence_path)


def print_json(value: Any) -> None:
    """One JSON document on stdout and nothing else there."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def print_table(table: Any) -> None:
    """A table on stdout; piped, at its natural width, so that no cell is cut to 80 columns."""
    if out.is_terminal:
        out.print(table)
        return
    wide = Console(file=sys.stdout, width=100_000, highlight=False, color_system=None)
    wide.print(table)


def cell(value: Any) -> str:
    """A value as a table cell: the one text form of values (sqltext.value_text)."""
    from oneroof.sqltext import value_text

    return value_text(value)
