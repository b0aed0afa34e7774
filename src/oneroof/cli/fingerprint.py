"""`oneroof fingerprint`: fingerprint production or the clone; diff two fingerprints."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from oneroof import connect, fingerprint
    from oneroof.workspace import Workspace
from oneroof.cli._app import (
    Outcome,
    Result,
    app,
    err,
    load_config,
    open_evidence,
    open_workspace,
    out,
    print_json,
)

fingerprint_app = typer.Typer(help="Prove a database unchanged: fingerprint and diff.")
app.add_typer(fingerprint_app, name="fingerprint")

ModeOption = Annotated[
    str, typer.Option("--mode", help="catalog | counts | full (content hash of every table)")
]
JobsOption = Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Parallel sessions")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the fingerprint as JSON")]
SaveOption = Annotated[bool, typer.Option("--save", help="Store it in the evidence store")]


def _progress() -> Progress:
    return Progress(
        TextColumn("fingerprint"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not sys.stderr.isatty(),
    )


def _run(
    ws: Workspace, role: str, mode: str, jobs: int, name: str | None
) -> fingerprint.Fingerprint:
    from oneroof import connect, fingerprint

    cfg = ws.cfg
    with ExitStack() as stack:
        session: connect.Session
        opener: Callable[[], connect.Session]
        budget: int | None = None
        primary_lsn = None
        if role == connect.PRODUCTION:
            # a hot standby of production when [production] replica_dsn names one
            session = stack.enter_context(ws.reader())
            budget = cfg.production.scan_budget_rows
            opener = ws.open_reader
            primary_lsn = ws.primary_lsn if ws.has_replica else None
        else:
            session = stack.enter_context(ws.clone(name, ready_only=True))

            def opener() -> connect.Session:
                return ws.clone(name, ready_only=True)

        bar = stack.enter_context(_progress())
        task = bar.add_task("tables", total=None)
        return fingerprint.take(
            session,
            mode=mode,
            counters=cfg.counters,
            jobs=jobs,
            open_session=opener,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            scan_budget_rows=budget,
            primary_lsn=primary_lsn,
            **fingerprint.scope(cfg),
        )


def _show(fp: fingerprint.Fingerprint, as_json: bool, role: str) -> None:
    if as_json:
        print_json(fp.to_dict())
        return
    out.print(f"[bold]{role}[/bold] {fp.database}: fingerprint [bold]{fp.short}[/bold] ({fp.mode})")
    out.print(f"  id   {fp.id}")
    out.print(f"  wal  {fp.wal or 'not readable'}")
    for section, digest in sorted(fp.digests.items()):
        size = len(fp.sections.get(section) or {})
        out.print(f"  {section:<10} {digest[:16]}  ({size} entries)")
    for note in fp.notes:
        out.print(f"  [yellow]note[/yellow] {note}")


def _command(
    role: str, mode: str, jobs: int, as_json: bool, save: bool, name: str | None
) -> Result | None:
    from oneroof import fingerprint

    ws = open_workspace()
    fp = _run(ws, role, mode, jobs, name)
    if save:
        fingerprint.save(ws.evidence, fp, label=role)
    _show(fp, as_json, role)
    return None


@fingerprint_app.command("production")
def production(
    mode: ModeOption = "full",
    jobs: JobsOption = 1,
    as_json: JsonOption = False,
    save: SaveOption = False,
) -> Result | None:
    """Fingerprint production (read-only, guarded, audited)."""
    from oneroof import connect

    return _command(connect.PRODUCTION, mode, jobs, as_json, save, None)


@fingerprint_app.command("clone")
def clone(
    mode: ModeOption = "full",
    jobs: JobsOption = 1,
    as_json: JsonOption = False,
    save: SaveOption = False,
    name: Annotated[str | None, typer.Option("--name", help="Clone name")] = None,
) -> Result | None:
    """Fingerprint the clone."""
    from oneroof import connect

    return _command(connect.CLONE, mode, jobs, as_json, save, name)


@fingerprint_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="Saved fingerprint id (prefix) or JSON file")],
    b: Annotated[str, typer.Argument(help="Saved fingerprint id (prefix) or JSON file")],
    as_json: JsonOption = False,
) -> Result | None:
    """Compare two fingerprints: exit 0 when equal, 1 listing every difference."""
    from oneroof import fingerprint

    cfg = load_config()
    evidence = open_evidence(cfg)
    left = fingerprint.load_reference(evidence, a)
    right = fingerprint.load_reference(evidence, b)
    differences = fingerprint.diff(left, right)
    if as_json:
        print_json(
            {
                "equal": not differences and left.id == right.id,
                "a": left.id,
                "b": right.id,
                "wal_equal": left.wal is not None and left.wal == right.wal,
                "differences": [d.as_dict() for d in differences],
            }
        )
    elif not differences and left.id == right.id:
        out.print(f"[green]equal[/green] {left.short} == {right.short}")
        if left.wal is not None and left.wal == right.wal:
            out.print("  WAL insert position unchanged: the server wrote nothing in between")
    else:
        out.print(f"[red]differ[/red] {left.short} != {right.short}")
        for difference in differences:
            out.print("  " + difference.describe(), markup=False)
        if left.id != right.id and not differences:
            out.print("  (the fingerprints cover different sections or modes)")
    return Outcome(not differences and left.id == right.id)
