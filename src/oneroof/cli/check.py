"""`oneroof check`: run check and scenario files on the clone or production, rollback-only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from oneroof import suite
    from oneroof.config import Config
from oneroof.cli._app import Result, app, err, open_workspace, out, print_json

# by status value: the suite module is imported only when a check runs
_STYLES = {
    "passed": "green",
    "failed": "red",
    "error": "red",
    "timeout": "red",
    "refused": "bold red",
    "not reached": "yellow",
    "not applicable": "dim",
}


def _paths(cfg: Config, paths: list[Path], objective: str | None) -> list[Path]:
    """The files to run: PATH arguments, else the suites of the objective (workspace-relative)."""
    from oneroof.errors import BadInput

    if objective is not None:
        known = {o.id: o for o in cfg.objectives}
        if objective not in known:
            ids = ", ".join(sorted(known)) or "none"
            raise BadInput(
                f"--objective {objective!r} is not an objective of oneroof.toml (known: {ids})",
                file=cfg.file,
            )
        if not paths:
            suites = known[objective].suites
            if not suites:
                raise BadInput(f"objective {objective!r} names no suites", file=cfg.file)
            return [cfg.workspace / s for s in suites]
    if not paths:
        raise BadInput("give the check or scenario files (or folders) to run, or --objective")
    # as given, else relative to the workspace (as rollout plan folders are)
    return [
        p
        if p.exists() or p.is_absolute() or not (cfg.workspace / p).exists()
        else cfg.workspace / p
        for p in paths
    ]


def _table(result: suite.RunResult) -> Table:
    from oneroof import suite

    table = Table(
        title=escape(f"oneroof check on {result.target} ({result.database})"),
        show_header=True,
        caption=None,
    )
    table.add_column("#", justify="right")
    table.add_column("file")
    table.add_column("item")
    table.add_column("status", no_wrap=True)
    table.add_column("ms", justify="right")
    table.add_column("detail", overflow="fold")
    for number, item in enumerate(result.items, start=1):
        style = _STYLES[item.status]
        table.add_row(
            str(number),
            escape(f"{item.file}:{item.line}"),
            escape(item.title),
            f"[{style}]{item.status}[/{style}]",
            f"{item.ms:.1f}",
            escape(item.detail()),
            style="dim" if item.kind == suite.STEP and item.status == suite.Status.PASSED else None,
        )
    return table


def _progress(total: int) -> Progress:
    return Progress(
        TextColumn("check"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not sys.stderr.isatty() or total == 0,
    )


@app.command("check")
def check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Check or scenario files, or folders of *.sql (run in name order)"),
    ] = None,
    target: Annotated[
        str,
        typer.Option("--target", "-t", help="clone | production (read-only through the guard)"),
    ] = "clone",
    objective: Annotated[
        str | None,
        typer.Option("--objective", help="Objective id the run is evidence for (default suites)"),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Clone name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write JUnit XML to this file")
    ] = None,
    tap: Annotated[bool, typer.Option("--tap", help="Print TAP (like pg_prove)")] = False,
    no_residue: Annotated[
        bool, typer.Option("--no-residue-proof", help="Skip the clone's before/after fingerprints")
    ] = False,
) -> Result | None:
    """Run checks and scenarios rollback-only; exit 0 only when every one passed."""
    from oneroof import suite
    from oneroof.errors import BadInput

    if target not in suite.TARGETS:
        raise BadInput(f"--target {target!r}: use clone or production")
    if as_json and tap:
        raise BadInput("--json and --tap both print on stdout: choose one")
    ws = open_workspace()
    files = suite.load(_paths(ws.cfg, list(paths or []), objective))  # parse all before any SQL
    total = sum(len(f.items) for f in files)
    with _progress(total) as bar:
        task = bar.add_task("items", total=total)
        result = suite.run(
            ws,
            files,
            target=target,
            objective=objective,
            clone_name=name,
            residue=not no_residue,
            progress=lambda _item: bar.advance(task),
        )
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(suite.to_junit(result), encoding="utf-8")
    if as_json:
        print_json(result.to_dict())
    elif tap:
        sys.stdout.write(suite.to_tap(result))
    else:
        out.print(_table(result))
        if result.residue is not None and not result.residue.free:
            for difference in result.residue.differences:
                out.print(f"[red]residue[/red] {escape(difference)}")
        if result.nothing_checked:
            skipped = [i for i in result.items if i.counted and i.status == "not applicable"]
            for item in skipped:
                out.print(
                    f"[yellow]not checked[/yellow] {escape(f'{item.file}:{item.line}')} "
                    f"{escape(item.title)}: {escape(item.message or '')}"
                )
        mark = "[green]✓[/green]" if result.ok else "[red]✗[/red]"
        label = f"{result.objective}: " if result.objective else ""
        summary = escape(f"{label}{result.summary()} (evidence record {result.evidence_seq})")
        out.print(f"{mark} {summary}")
    return result
