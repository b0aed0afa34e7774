"""Foundation commands: doctor, sql, audit, init."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

if TYPE_CHECKING:
    pass
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
from oneroof.cli._app import cell as _cell

audit_app = typer.Typer(help="The audit log: every statement sent to or refused for production.")
app.add_typer(audit_app, name="audit")


# -- doctor ---------------------------------------------------------------------------------


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> Result | None:
    """Reach each configured server, show versions and identity, prove production read-only."""
    from oneroof import connect, dump

    ws = open_workspace()
    cfg = ws.cfg
    report: dict[str, Any] = {}
    with ws.production() as session:
        report["production"] = {
            **session.identity.as_dict(),
            "read_only_proof": connect.prove_read_only(session),
            "statement_timeout": session.setting("statement_timeout"),
        }
        privileges = session.privileges.as_dict() if session.privileges else {}
        report["production_role"] = {
            "user": privileges.get("user"),
            "member_of": ", ".join(privileges.get("member_of", [])) or "none",
            "attributes": ", ".join(
                f"{role}: {'/'.join(flags)}"
                for role, flags in privileges.get("attributes", {}).items()
                if flags
            )
            or "none",
            "write_privileges": ", ".join(
                f"{p} on {v['relations']}"
                for p, v in privileges.get("write_privileges", {}).items()
            )
            or "none",
            "least_privilege": not privileges.get("excess"),
            "privileged_role_allowed": (
                "yes — [guard] allow_privileged_role = true: " + "; ".join(privileges["excess"])
                if session.privileged_allowed
                else "no"
            ),
            "trusted": "; ".join(connect.trust(cfg).describe()) or "nothing beyond built-ins",
        }
    if cfg.clone_server_dsn is not None:
        with ws.server() as server:
            report["nonprod_server"] = server.identity.as_dict()
            same = server.identity.same_cluster(ws.production_identity)
            report["nonprod_server"]["same_cluster_as_production"] = same
            if same and not cfg.clone.allow_production_cluster:
                from oneroof.clone.marker import _refuse_production_cluster

                _refuse_production_cluster(cfg, server, ws.production_identity)
            production_major = ws.production_identity.server_version_num // 10000
            nonprod_major = server.identity.server_version_num // 10000
            report["nonprod_server"]["same_major_as_production"] = production_major == nonprod_major
    report["pg_dump"] = dump.client_version(cfg)
    if as_json:
        print_json(report)
        return None
    table = Table(title="oneroof doctor", show_header=True)
    table.add_column("server")
    table.add_column("fact")
    table.add_column("value")
    for server_name, facts in report.items():
        if isinstance(facts, dict):
            for key, value in facts.items():
                table.add_row(server_name, key, _cell(value))
        else:
            table.add_row(server_name, "version", _cell(facts))
    out.print(table)
    return None


# -- sql ------------------------------------------------------------------------------------


@app.command("sql")
def sql_command(
    role: Annotated[str, typer.Argument(help="production | clone")],
    statement: Annotated[str, typer.Argument(help="One SQL statement")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Clone name")] = None,
) -> Result | None:
    """Run one guarded statement: the safe console for production."""
    from oneroof import connect
    from oneroof.errors import BadInput

    ws = open_workspace()
    session: connect.Session
    if role == "production":
        session = ws.open_production()
    elif role == "clone":
        session = ws.clone(name, ready_only=True)
    else:
        raise BadInput(f"role must be production or clone, not {role!r}")
    with session:
        try:
            columns, rows = session.query(statement)
        except Exception as exc:
            import psycopg

            if isinstance(exc, psycopg.Error):
                from oneroof.errors import DatabaseError

                raise DatabaseError.from_psycopg(exc, role) from None
            raise
    if as_json:
        print_json({"columns": columns, "rows": [list(row) for row in rows]})
        return None
    table = Table(show_header=True)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    out.print(table)
    err.print(f"{len(rows)} row(s)")
    return None


# -- audit ----------------------------------------------------------------------------------


@audit_app.command("show")
def audit_show(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show the last N records")] = 50,
    kind: Annotated[str | None, typer.Option("--kind", help="Only records of this kind")] = "audit",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> Result | None:
    """List the newest records of the audit log (or of the whole evidence store: --kind '')."""
    cfg = load_config()
    evidence = open_evidence(cfg)
    records = (
        evidence.records(kind or None)[-limit:] if limit > 0 else evidence.records(kind or None)
    )
    if as_json:
        print_json([r.as_dict() for r in records])
        return None
    table = Table(show_header=True)
    for column in ("seq", "at", "kind", "role", "class", "outcome"):
        table.add_column(column, no_wrap=True)
    table.add_column("sql", overflow="ellipsis", no_wrap=True)
    for record in records:
        table.add_row(
            str(record.seq),
            record.at[:23],
            record.kind,
            _cell(record.role),
            _cell(record.classification),
            _cell(record.outcome),
            " ".join((record.sql or "").split())[:200],
        )
    out.print(table)
    return None


@audit_app.command("verify")
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> Result | None:
    """Check the hash chain of the evidence store; exit 1 naming every broken record."""
    cfg = load_config()
    evidence = open_evidence(cfg)
    problems = evidence.verify()
    count = evidence.last_seq()
    if as_json:
        print_json({"intact": not problems, "records": count, "problems": problems})
    elif problems:
        for problem in problems:
            out.print(f"[red]✗[/red] {problem}")
    else:
        out.print(f"[green]✓[/green] audit chain intact: {count} record(s)")
    return Outcome(not problems)


# -- init -----------------------------------------------------------------------------------

_INIT_TOML = """\
# oneroof workspace. Start with these three sections; every other one is optional.
[production]
dsn = "env:PROD_DSN"              # the least-privilege reader (docs/safety.md); env:NAME or a DSN
# apply_dsn = "env:APPLY_DSN"     # the role `rollout apply --execute` writes with

[clone]
server_dsn = "env:NONPROD_DSN"    # maintenance DSN on the non-production server
name = "app_clone"

[guard]
clone_name_pattern = "^[a-z0-9_]+_(clone|nonprod)$"
# allow_functions = ["app.is_valid_iban"]   # your own functions reads may run
# allow_extensions = ["citext"]             # extensions whose functions reads may run
"""


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory of the new workspace")],
) -> Result | None:
    """Scaffold a workspace: oneroof.toml and empty checks/, scenarios/, rollout/ folders."""
    from oneroof import config
    from oneroof.errors import BadInput

    target = directory / config.CONFIG_NAME
    if target.exists():
        raise BadInput("already exists; not overwritten", file=target)
    for folder in ("checks", "scenarios", "rollout"):
        (directory / folder).mkdir(parents=True, exist_ok=True)
    target.write_text(_INIT_TOML)
    err.print(f"created {target}")
    return None
