"""`oneroof masking`: find the columns to mask, and check `[masking]` against production."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from oneroof.cli._app import Result, app, open_workspace, out, print_json

masking_app = typer.Typer(
    help="Personal data leaves production only masked: suggest rules, check them (docs/masking.md)."
)
app.add_typer(masking_app, name="masking")

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document")]


@dataclass
class PlanResult:
    """What `masking plan` found: every masked column and why."""

    columns: list[dict[str, Any]] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    ok: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "columns": self.columns, "tables": self.tables}


@masking_app.command("suggest")
def suggest(
    sample: Annotated[
        int, typer.Option("--sample", min=1, max=100_000, help="Rows sampled per table")
    ] = 200,
    as_json: JsonOption = False,
) -> Result | None:
    """List columns that look personal (by name and by sampled content) as a \\[masking] section.

    The patterns run on production over at most --sample rows of each table; only counts
    come back, never a value.
    """
    from oneroof import masking

    ws = open_workspace()
    with ws.production() as session:
        found = masking.suggest(session, ws.cfg, sample)
    if as_json:
        print_json(found.to_dict())
        return found
    if not found.suggestions:
        out.print(f"no likely personal column in {found.tables} table(s)")
        return found
    table = Table(show_header=True)
    for column in ("column", "looks like", "rule", "because", "configured"):
        table.add_column(column)
    for s in found.suggestions:
        table.add_row(
            *(escape(v) for v in (s.column, s.kind, s.rule, s.reason)), s.configured or "—"
        )
    out.print(table)
    out.print("\n# paste into oneroof.toml, then check it with `oneroof masking plan`")
    out.print(found.toml(), markup=False, end="")
    return found


@masking_app.command("plan")
def plan(as_json: JsonOption = False) -> Result | None:
    """Check \\[masking] against production: every masked column, and what carried its rule.

    A rule that does not fit its column, or would break a constraint, exits 2 naming it.
    """
    from oneroof import masking

    ws = open_workspace()
    with ws.production() as session:
        found = masking.plan(ws.cfg, session)
    result = PlanResult()
    if found is not None:
        result.columns = [m.as_dict() for m in found.columns]
        result.tables = list(found.tables)
    if as_json:
        print_json(result.to_dict())
        return result
    if found is None:
        out.print("no [masking] rules: clones copy every column as it is")
        return result
    table = Table(show_header=True)
    for column in ("column", "rule", "why"):
        table.add_column(column)
    for entry in found.columns:
        table.add_row(escape(entry.key), escape(str(entry.rule)), escape(entry.origin))
    out.print(table)
    out.print(
        f"{len(found.columns)} column(s) of {len(found.tables)} table(s) are read masked "
        "from production"
    )
    return result
