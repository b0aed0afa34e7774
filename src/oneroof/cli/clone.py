"""`oneroof clone`: create, verify, reset, drop and list the isolated non-production copy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

if TYPE_CHECKING:
    from oneroof import clone as clones
from oneroof.cli._app import Result, app, err, open_workspace, out, print_json, print_table

clone_app = typer.Typer(
    help="The isolated non-production copy of production: create, verify, reset, drop, list."
)
app.add_typer(clone_app, name="clone")

NameOption = Annotated[
    str | None,
    typer.Option("--name", help="Clone name (default: \\[clone] name, else <production>_clone)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document")]


def _say(message: str) -> None:
    err.print(f"[dim]…[/dim] {message}", markup=True, highlight=False)


def _size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


_DONE = {"create": "created", "reset": "reset", "adopt": "adopted"}


def _show_info(info: clones.CloneInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.to_dict())
        return
    isolation: dict[str, Any] = info.marker.get("isolation") or {}
    out.print(
        f"[green]✓[/green] clone [bold]{info.name}[/bold] {_DONE.get(info.action, info.action)} in "
        f"{info.seconds:.1f}s ({info.method}); golden copy {info.golden}"
    )
    out.print(f"  source fingerprint  {info.source_fingerprint[:8]}")
    if info.marker.get("database") and info.marker.get("database") != info.name:
        where = info.marker.get("instance") or {}
        out.print(
            f"  database            {info.marker['database']} on "
            f"{where.get('host')}:{where.get('port')}",
            markup=False,
            highlight=False,
        )
    if info.copy:
        what = "copied by" if info.action == "reset" else "golden copy by"
        out.print(
            f"  {what:<19} {info.copy.get('describe')}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"  revoked CONNECT     {', '.join(isolation.get('revoked_connect', [])) or '—'}")
    out.print(f"  disabled triggers   {', '.join(isolation.get('disabled_triggers', [])) or '—'}")
    if info.marker.get("masking"):  # [masking]: read masked on production (docs/masking.md)
        masked = info.marker["masking"].get("columns") or []
        out.print(f"  masked columns      {len(masked)}", markup=False)
    for note in info.recovered:
        out.print(f"  [yellow]recovered[/yellow] {note}")
    for note in info.notes:
        out.print(f"  [yellow]note[/yellow] {note}", highlight=False)


@clone_app.command("create")
def create(name: NameOption = None, as_json: JsonOption = False) -> Result | None:
    """Copy production into a new isolated clone (from one snapshot) and keep a golden copy."""
    from oneroof import clone as clones

    info = clones.create(open_workspace(), name, step=_say)
    _show_info(info, as_json)
    return None


@clone_app.command("adopt")
def adopt(
    dsn: Annotated[
        str,
        typer.Argument(help="The existing non-production database: a DSN, or env:NAME"),
    ],
    name: NameOption = None,
    as_json: JsonOption = False,
) -> Result | None:
    """Adopt an existing non-production database as the clone: checked, marked, isolated.

    Refused when it is production's own server or a standby; its content is compared with
    production's fingerprint now, and the marker says from which production state it came.
    """
    from oneroof import clone as clones

    info = clones.adopt(open_workspace(), dsn, name, step=_say)
    _show_info(info, as_json)
    return None


@clone_app.command("reset")
def reset(name: NameOption = None, as_json: JsonOption = False) -> Result | None:
    """Rebuild the clone from its golden copy and re-isolate it (production is not touched)."""
    from oneroof import clone as clones

    info = clones.reset(open_workspace(), name, step=_say)
    _show_info(info, as_json)
    return None


@clone_app.command("verify")
def verify(name: NameOption = None, as_json: JsonOption = False) -> Result | None:
    """Prove the clone isolated and its committed state the one copied; exit 1 naming why not."""
    from oneroof import clone as clones

    result = clones.verify(open_workspace(), name)
    if as_json:
        print_json(result.to_dict())
    else:
        for point in result.points:
            mark = "[green]✓[/green]" if point.ok else "[red]✗[/red]"
            out.print(f"{mark} {point.name:<18} ", end="")
            out.print(point.detail, markup=False)
        if result.ok:
            out.print(f"[green]clone {result.name} verified[/green]")
        else:
            out.print(f"[red]clone {result.name} does NOT verify[/red]")
    if not result.ok:
        err.print("oneroof: verify failed: " + "; ".join(result.reasons), markup=False)
    return result


@clone_app.command("drop")
def drop(name: NameOption = None, as_json: JsonOption = False) -> Result | None:
    """Drop the clone and its golden copy (only databases that are marked clones of ours)."""
    from oneroof import clone as clones

    result = clones.drop(open_workspace(), name, step=_say)
    if as_json:
        print_json(result.to_dict())
    else:
        out.print(f"dropped {', '.join(result.dropped)}")
    return None


@clone_app.command("list")
def list_command(as_json: JsonOption = False) -> Result | None:
    """List the marked clones and golden copies on the non-production server."""
    from oneroof import clone as clones

    entries = clones.list_clones(open_workspace())
    if as_json:
        print_json([entry.to_dict() for entry in entries])
        return None
    table = Table(show_header=True)
    for column in ("name", "role", "state", "size", "source", "fingerprint", "created", "golden"):
        table.add_column(column)
    for entry in entries:
        source = entry.marker.get("instance") or entry.marker.get("source") or {}
        table.add_row(
            entry.name,
            entry.role,
            entry.state,
            _size(entry.size_bytes),
            f"{source.get('database', '?')}@{source.get('host', '?')}:{source.get('port', '?')}",
            str(entry.marker.get("source_fingerprint") or "")[:8] or "—",
            str(entry.marker.get("reset_at") or entry.marker.get("created_at") or "—"),
            entry.golden or "—",
        )
    print_table(table)
    if not entries:
        err.print("no marked clone on the non-production server")
    return None
