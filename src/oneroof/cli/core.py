"""Foundation commands: doctor, sql, audit, init."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from oneroof.rollout.applier import ApplierCheck
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
    from oneroof.clone.marker import major_mismatch, refuse_unfit_server

    ws = open_workspace()
    cfg = ws.cfg
    report: dict[str, Any] = {}
    warnings: list[str] = []
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
    if ws.has_replica:  # [production] replica_dsn: the same wall, proven a standby of it
        with ws.replica() as standby:
            report["production_standby"] = {
                **standby.identity.as_dict(),
                "read_only_proof": connect.prove_read_only(standby),
                "replay": ws.replay.to_dict() if ws.replay else None,
            }
    if cfg.clone_server_dsn is not None:
        with ws.server() as server:
            report["nonprod_server"] = server.identity.as_dict()
            same = server.identity.same_cluster(ws.production_identity)
            report["nonprod_server"]["same_cluster_as_production"] = same
            refuse_unfit_server(cfg, server, ws.production_identity)
            other_major = major_mismatch(server.identity, ws.production_identity)
            report["nonprod_server"]["same_major_as_production"] = other_major is None
            if other_major:
                warnings.append(other_major)
    applier_ok = True
    if cfg.apply_dsn is None:
        report["applier"] = {"configured": False}
        warnings.append(
            "[production] apply_dsn is not set: `rollout apply --execute` would write as the "
            "role of [production] dsn, the reader (a least-privilege reader cannot write); "
            "set apply_dsn to the role that applies"
        )
    else:
        applier = _applier(ws)
        applier_ok = applier.ok
        report["applier"] = {"configured": True, **applier.to_dict()}
    report["pg_dump"] = dump.client_version(cfg)
    report["warnings"] = warnings
    if as_json:
        print_json(report)
        return Outcome(applier_ok)
    table = Table(title="oneroof doctor", show_header=True)
    table.add_column("server")
    table.add_column("fact")
    table.add_column("value")
    for server_name, facts in report.items():
        if server_name == "warnings":
            continue
        if isinstance(facts, dict):
            for key, value in facts.items():
                table.add_row(server_name, key, _cell(value))
        else:
            table.add_row(server_name, "version", _cell(facts))
    out.print(table)
    for warning in warnings:
        err.print(f"[yellow]warning[/yellow] {escape(warning)}", highlight=False)
    if not applier_ok:
        lacking = report["applier"]["missing"] + [
            f"no such object: {a}" for a in report["applier"]["absent"]
        ]
        err.print(
            f"oneroof: the applier {report['applier']['user']} cannot apply the plans: "
            + "; ".join(lacking),
            markup=False,
        )
    return Outcome(applier_ok)


def _applier(ws: Workspace) -> ApplierCheck:
    """The applier's privileges over the objectives' plans and the ledger."""
    from oneroof import rollout
    from oneroof.rollout import applier as checks

    cfg = ws.cfg
    plans = []
    for objective in cfg.objectives:
        if objective.rollout:
            path = Path(objective.rollout)
            plans.append(
                rollout.load_plan(path if path.is_absolute() else cfg.workspace / path, cfg)
            )
    with ws.open_writer() as writer:
        return checks.check(writer, plans, cfg.counters, cfg.rollout.ledger_schema)


# -- sql ------------------------------------------------------------------------------------


@app.command("sql")
def sql_command(
    role: Annotated[str, typer.Argument(help="production | clone")],
    statement: Annotated[str, typer.Argument(help="One SQL statement")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Clone name")] = None,
    commit: Annotated[
        bool, typer.Option("--commit", help="On the clone: keep what the statement writes")
    ] = False,
) -> Result | None:
    """Run one statement: guarded on production; on the clone rolled back unless --commit."""
    from oneroof.errors import BadInput

    ws = open_workspace()
    summary: str
    if role == "production":
        if commit:
            raise BadInput("--commit is for the clone: production is only read here")
        with ws.open_production() as session:
            try:
                columns, rows = session.query(statement)
            except Exception as exc:
                import psycopg

                if isinstance(exc, psycopg.Error):
                    from oneroof.errors import DatabaseError

                    raise DatabaseError.from_psycopg(exc, role) from None
                raise
        document: dict[str, Any] = {"columns": columns, "rows": [list(row) for row in rows]}
        summary = f"{len(rows)} row(s)"
    elif role == "clone":
        from oneroof.clone.console import run_statement

        with ws.clone(name, ready_only=True) as session:
            result = run_statement(session, statement, commit=commit, evidence=ws.evidence)
        columns, rows, document = result.columns, result.rows, result.to_dict()
        summary = f"{len(rows)} row(s); {result.describe()}"
    else:
        raise BadInput(f"role must be production or clone, not {role!r}")
    if as_json:
        print_json(document)
        return None
    table = Table(show_header=True)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    out.print(table)
    err.print(summary)
    return None


# -- audit ----------------------------------------------------------------------------------


@audit_app.command("show")
def audit_show(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show the last N records")] = 50,
    kind: Annotated[str | None, typer.Option("--kind", help="Only records of this kind")] = "audit",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> Result | None:
    """List the newest records of the audit log (or of the whole evidence store: --kind '')."""
    from oneroof.errors import BadInput

    cfg = load_config()
    evidence = open_evidence(cfg)
    kinds = evidence.kinds()
    if kind and kind != "audit" and kind not in kinds:
        raise BadInput(
            f"--kind {kind!r}: no such kind in the evidence store "
            f"(kinds: {', '.join(kinds)}; '' for all)"
        )
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
# oneroof workspace: docs/reference/config.md describes every key.
# Start with these sections; every other one is optional.

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

# Named one-value reads: gates, deltas and reports use them by name.
[counters]
user_tables = "select count(*) from pg_catalog.pg_tables where schemaname <> 'pg_catalog'"

# What `oneroof run` proves: each objective names its suites (and, or, a rollout plan).
[[objective]]
id = "A"
title = "regression checks"
suites = ["checks", "scenarios"]
also_on_production = true         # the checks also run on production, read-only

# [[objective]]
# id = "F"
# title = "the example change"
# rollout = "rollout/EXAMPLE"

# A production target: its gate is evaluated on production by `oneroof gates` and `run`.
[[target]]
name = "the database has user tables"
gate = "user_tables >= 0"
"""

# Examples that pass on any database: they read the catalog, or write only inside the
# clone's rolled-back transaction.
_INIT_FILES = {
    "checks/01_catalog.sql": """\
-- Checks: each `-- check:` is one read, and `-- expect:` what it must return
-- (docs/reference/files.md). They run on the clone, or read-only on production.

-- check: the server answers
-- expect: value=1
select 1;

-- check: every relation has an owner that exists
-- expect: empty
select c.oid::regclass
from pg_catalog.pg_class c
left join pg_catalog.pg_roles r on r.oid = c.relowner
where r.oid is null;
""",
    "scenarios/01_scratch.sql": """\
-- A scenario: steps that write and assertions that read, in one transaction on the clone
-- that is always rolled back (on production a writing scenario is not applicable).
-- scenario: a scratch table is made, filled and counted
-- step: make it
create temporary table oneroof_scratch (id int primary key);
-- step: fill it
insert into oneroof_scratch select generate_series(1, 3);
-- assert: three rows
-- expect: value=3
select count(*) from oneroof_scratch;
-- assert: a duplicate key is refused
-- expect: error=23505
insert into oneroof_scratch values (1);
""",
    "rollout/EXAMPLE/01_comment.sql": """\
-- A gated artifact: its gate is evaluated on production inside its own transaction,
-- its row deltas are exact (it declares none: it changes no row), and `rollout rehearse`
-- runs it on the clone first.
-- artifact: EXAMPLE_01_comment
-- gate: user_tables >= 0
comment on schema public is 'standard public schema (set by the oneroof example)';
""",
}


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory of the new workspace")],
) -> Result | None:
    """Scaffold a workspace: a commented oneroof.toml and examples that pass on any database."""
    from oneroof import config
    from oneroof.errors import BadInput

    target = directory / config.CONFIG_NAME
    if target.exists():
        raise BadInput("already exists; not overwritten", file=target)
    existing = [name for name in _INIT_FILES if (directory / name).exists()]
    if existing:
        raise BadInput("already exists; not overwritten", file=directory / existing[0])
    for name, text in _INIT_FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    target.write_text(_INIT_TOML)
    err.print(f"created {target} with example checks, a scenario and a rollout plan")
    return None
