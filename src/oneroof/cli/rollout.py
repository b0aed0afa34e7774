"""`oneroof gates` and `oneroof rollout {plan|rehearse|apply|watch|status} PLAN_DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from oneroof import rollout
    from oneroof.config import Config
    from oneroof.gates import GateResult
    from oneroof.workspace import Workspace
from oneroof.cli._app import Outcome, Result, app, err, open_workspace, out, print_json

rollout_app = typer.Typer(
    help="Gated SQL artifacts: plan, rehearse on the clone, apply exactly once on production."
)
app.add_typer(rollout_app, name="rollout")

PlanArgument = Annotated[Path, typer.Argument(help="Plan folder (rollout/<plan>)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document")]

_STYLES = {
    "ok": "green",
    "applied": "green",
    "would apply": "cyan",
    "already applied": "dim",
    "skipped": "dim",
    "failed": "red",
    "refused": "red",
    "halted": "red",
    "not run": "yellow",
    "not reached": "yellow",
    "left for a human": "yellow",
}


def _plan(cfg: Config, path: Path) -> rollout.Plan:
    from oneroof import rollout

    return rollout.load_plan(rollout.resolve_plan_dir(cfg, path), cfg)


def _say(message: str) -> None:
    err.print(escape(message))


def _gate_line(artifact: str | None, result: GateResult) -> str:

    mark = "[green]open[/green]  " if result.holds else "[red]closed[/red]"
    from oneroof.sqltext import value_text

    values = ", ".join(f"{k}={value_text(v)}" for k, v in sorted(result.values.items()))
    who = f"{escape(artifact)}  " if artifact else ""
    return f"  {mark} {who}{escape(result.expression)}" + (
        f"  [dim]({escape(values)})[/dim]" if values else ""
    )


def _grouped(results: list[tuple[str, GateResult]]) -> list[str]:
    """One line per distinct gate, naming the artifacts that carry it."""
    groups: dict[tuple[str, bool, str], list[str]] = {}
    first: dict[tuple[str, bool, str], GateResult] = {}
    for artifact_id, result in results:
        key = (result.expression, result.holds, repr(sorted(result.values.items())))
        groups.setdefault(key, []).append(artifact_id)
        first.setdefault(key, result)
    return [
        _gate_line(None, first[key]) + f"  [dim]— {escape(', '.join(ids))}[/dim]"
        for key, ids in groups.items()
    ]


def _deltas(counts: dict[str, dict[str, int]]) -> str:
    from oneroof import rollout

    parts = []
    for table, delta in sorted(counts.items()):
        signs = " ".join(f"{s}{delta.get(k, 0)}" for s, k in rollout.SIGNS.items())
        parts.append(f"{table} {signs}")
    return "; ".join(parts) or "none"


def _runs_table(title: str, runs: list[rollout.ArtifactRun]) -> Table:
    table = Table(title=escape(title), show_header=True)
    table.add_column("artifact")
    table.add_column("status", no_wrap=True)
    table.add_column("deltas (measured)", overflow="fold")
    table.add_column("expected", overflow="fold")
    table.add_column("detail", overflow="fold")
    for run in runs:
        style = _STYLES.get(run.status, "white")
        detail = run.reason or ""
        if run.rows and run.columns:
            shown = ", ".join(f"{c}={v}" for c, v in zip(run.columns, run.rows[0], strict=False))
            detail = f"{detail}  [{shown}]".strip()
        table.add_row(
            escape(run.id),
            f"[{style}]{escape(run.status)}[/{style}]",
            escape(_deltas(run.deltas)) if run.deltas or run.status in ("ok", "applied") else "",
            escape(_deltas(run.expected)) if run.expected else "",
            escape(detail),
        )
    return table


def _forecast_lines(forecasts: dict[str, dict[str, Any]]) -> list[str]:
    """One line per artifact, then each hazard with the safer pattern."""
    from oneroof.rollout import forecast

    lines = []
    for artifact_id, measured in forecasts.items():
        hazards = measured.get("hazards") or []
        mark = "[yellow]![/yellow]" if hazards else "[green]✓[/green]"
        lines.append(f"  {mark} {escape(forecast.summary(artifact_id, measured))}")
        for hazard in hazards:
            lines.append(f"      [yellow]hazard:[/yellow] {escape(str(hazard.get('reason')))}")
        for safer in dict.fromkeys(str(h.get("safer")) for h in hazards):
            lines.append(f"      [yellow]safer:[/yellow] {escape(safer)}")
    return lines


def _show_forecast(
    forecasts: dict[str, dict[str, Any]], plan_level: dict[str, Any] | None, where: str
) -> None:
    if not forecasts:
        return
    facts = plan_level or {}
    policy = facts.get("policy")
    version = facts.get("server_version")
    on = f" (PostgreSQL {version}, wal_level {facts.get('wal_level')})" if version else ""
    out.print(f"forecast for production, measured {escape(where)}{escape(on)}:")
    for line in _forecast_lines(forecasts):
        out.print(line)
    hazards = facts.get("hazards") or []
    if hazards:
        verdict = "[red]refused[/red]" if policy == "refuse" else "[yellow]warned[/yellow]"
        setting = escape(f"([rollout] hazards = {json.dumps(policy)})")
        out.print(f"{len(hazards)} hazard(s), {verdict} {setting}")


# -- gates ------------------------------------------------------------------------------------


def _clone_verified(ws: Workspace) -> bool:
    """The built-in `clone_verified`: the clone module's verification of the configured clone."""
    from oneroof.errors import OneroofError

    try:
        from oneroof import clone

        return bool(clone.verify(ws, ws.clone_name()).ok)
    except (ImportError, OneroofError):
        return False


@app.command("gates")
def gates_command(as_json: JsonOption = False) -> Result | None:
    """Evaluate the gate of every GO/NO-GO target on production now (exit 1 if any is closed)."""
    from oneroof import gates

    ws = open_workspace()
    parsed = gates.target_gates(ws.cfg)
    builtins: dict[str, Any] = {}
    if any("clone_verified" in gate.names for _, gate in parsed):
        builtins["clone_verified"] = _clone_verified(ws)
    if any("approved" in gate.names for _, gate in parsed):
        from oneroof import approvals

        builtins["approved"] = approvals.targets_approved(ws)
    names = {name for _, gate in parsed for name in gate.names}
    with ws.production() as session:
        values = gates.read_values(session, ws.cfg, names, builtins=builtins)
    results = gates.evaluate_targets(parsed, values)
    closed = [r for _, r in results if not r.holds]
    if as_json:
        print_json(
            {
                "gates": [
                    {"target": t.name, "scope": t.scope, "blocker": t.blocker, **r.to_dict()}
                    for t, r in results
                ],
                "open": len(results) - len(closed),
                "closed": len(closed),
            }
        )
    else:
        if not results:
            out.print("no [[target]] gates in oneroof.toml")
        for target, result in results:
            out.print(_gate_line(target.name, result))
            if not result.holds and target.blocker:
                out.print(f"         [dim]blocker: {escape(target.blocker)}[/dim]")
    return Outcome(not closed)


# -- rollout plan -----------------------------------------------------------------------------


@rollout_app.command("plan")
def plan_command(plan_dir: PlanArgument, as_json: JsonOption = False) -> Result | None:
    """Parse and lint every artifact; show order, checksums, auto set and gates on production."""
    from oneroof import rollout

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    report = rollout.describe(ws, plan)
    if as_json:
        print_json(report.to_dict())
        return None
    table = Table(title=escape(f"rollout plan {plan.name} ({plan.path})"), show_header=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("artifact / file", overflow="fold")
    table.add_column("sha256", no_wrap=True)
    for column in ("auto", "requires", "expect-delta", "stop"):
        table.add_column(column, overflow="fold")
    for number, artifact in enumerate(plan.artifacts, start=1):
        applied = " [dim](applied)[/dim]" if artifact.id in report.applied else ""
        table.add_row(
            str(number),
            f"{escape(artifact.id)}{applied}\n[dim]{escape(artifact.file.name)}[/dim]",
            artifact.checksum[:12],
            "yes" if artifact.auto else "no",
            escape(", ".join(artifact.requires)),
            escape(", ".join(d.text for d in artifact.deltas)),
            escape("; ".join(s.text for s in artifact.stops)),
        )
    out.print(table)
    out.print(
        f"auto-executable set: {escape(' → '.join(plan.auto_set) or 'none')}"
        + (f"; then verify: {escape(', '.join(plan.verify_set))}" if plan.verify_set else "")
    )
    out.print("gates on production now:")
    for line in _grouped(report.gates):
        out.print(line)
    if report.forecasts:
        _show_forecast(
            report.forecasts,
            report.forecast,
            f"by rehearsal #{report.forecast_record} on the clone",
        )
    elif report.forecast_note:
        out.print(f"forecast: none yet — {escape(report.forecast_note)}")
    if report.lint_note:
        out.print(f"[yellow]lint:[/yellow] {escape(report.lint_note)}")
    elif not report.findings:
        out.print("lint (squawk): no findings")
    else:
        out.print(f"lint (squawk): {len(report.findings)} warning(s)")
        for finding in report.findings:
            where = f"{Path(finding.file).name}:{finding.line}" if finding.line else finding.file
            out.print(
                f"  [yellow]{escape(finding.rule)}[/yellow] {escape(where)}: "
                f"{escape(finding.message)}"
            )
    return None


# -- rehearse ---------------------------------------------------------------------------------


@rollout_app.command("rehearse")
def rehearse_command(
    plan_dir: PlanArgument,
    name: Annotated[str | None, typer.Option("--name", help="Clone name")] = None,
    as_json: JsonOption = False,
) -> Result | None:
    """Run the plan on the clone in one transaction, always rolled back; check deltas, stops."""
    from oneroof import rollout

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    result = rollout.rehearse(ws, plan, clone_name=name, say=_say)
    if as_json:
        print_json(result.to_dict())
        return result
    out.print(_runs_table(f"rehearsal of {plan.name} on {result.clone}", result.artifacts))
    gate_results = [(run.id, gate) for run in result.artifacts for gate in run.gates]
    if gate_results:
        out.print("gates on the clone (reported, not blocking):")
        for line in _grouped(gate_results):
            out.print(line)
    residue = "residue-free" if result.residue_free else "RESIDUE: " + "; ".join(result.residue)
    restored = (
        f"; sequences restored: {', '.join(result.sequences_restored)}"
        if result.sequences_restored
        else ""
    )
    _show_forecast(
        {a: f.to_dict() for a, f in result.forecasts.items()},
        result.forecast,
        f"on {result.clone}",
    )
    done = (
        "rolled back" if result.mode == rollout.rehearsal.ROLLED_BACK else "reset from golden copy"
    )
    out.print(f"{done}; {escape(residue)}{escape(restored)}")
    verdict = "[green]rehearsal OK[/green]" if result.ok else "[red]rehearsal FAILED[/red]"
    out.print(f"{verdict} (evidence #{result.record})")
    return result


# -- apply / watch ----------------------------------------------------------------------------


def _show_apply(result: rollout.ApplyResult, as_json: bool) -> Result | None:
    if as_json:
        print_json(result.to_dict())
        return result
    for check in result.checks:
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        out.print(f"{mark} {escape(check.name)}: {escape(check.detail)}")
    if result.gates:
        out.print("gates:")
        for line in _grouped(result.gates):
            out.print(line)
    if result.artifacts:
        title = f"rollout apply {result.plan}" + ("" if result.execute else " (dry run)")
        out.print(_runs_table(title, result.artifacts))
    if result.forecasts:
        from oneroof.rollout import forecast

        out.print("forecast against actual:")
        for artifact_id, pair in result.forecasts.items():
            observed = pair.get("observed") or {}
            text = forecast.actual_text(
                pair.get("forecast"), observed.get("ms"), observed.get("wal_bytes")
            )
            out.print(f"  {escape(artifact_id)}: {escape(text)}")
    style = "green" if result.ok else "red"
    said = result.message
    if said.startswith(f"{result.status} "):  # "applied: applied F_01" says it twice
        said = said[len(result.status) + 1 :]
    out.print(f"[{style}]{escape(result.status)}[/{style}]: {escape(said)}")
    return result


@rollout_app.command("apply")
def apply_command(
    plan_dir: PlanArgument,
    execute: Annotated[
        bool, typer.Option("--execute", help="Write to production (without it: a dry run)")
    ] = False,
    only_auto: Annotated[
        bool, typer.Option("--only-auto", help="Only the post-gate auto-executable set")
    ] = False,
    as_json: JsonOption = False,
) -> Result | None:
    """Apply the pending artifacts to production once rehearsal, drift and gates all hold."""
    from oneroof import rollout

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    result = rollout.apply(ws, plan, execute=execute, only_auto=only_auto, say=_say)
    return _show_apply(result, as_json)


@rollout_app.command("watch")
def watch_command(
    plan_dir: PlanArgument,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls")] = 30.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up after seconds")] = 3600.0,
    as_json: JsonOption = False,
) -> Result | None:
    """Poll the gates; when they open, apply the auto-executable set, then verify."""
    from oneroof import rollout

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    result = rollout.watch(ws, plan, interval=interval, timeout=timeout, say=_say)
    return _show_apply(result, as_json)


# -- status -----------------------------------------------------------------------------------


@rollout_app.command("status")
def status_command(plan_dir: PlanArgument, as_json: JsonOption = False) -> Result | None:
    """The ledger on production, the latest rehearsal and the gates of a plan."""
    from oneroof import rollout

    ws = open_workspace()
    plan = _plan(ws.cfg, plan_dir)
    result = rollout.status(ws, plan)
    if as_json:
        print_json(result.to_dict())
        return None
    if not result.ledger:
        out.print(f"ledger: none of {plan.name} applied")
    else:
        table = Table(title=escape(f"ledger of {plan.name}"), show_header=True)
        for column in ("artifact", "sha256", "applied at", "by", "deltas", "forecast / actual"):
            table.add_column(column, overflow="fold")
        for row in result.ledger:
            table.add_row(
                escape(row.artifact),
                row.checksum[:16],
                escape(row.applied_at),
                escape(row.applied_by),
                escape(_deltas(row.deltas)),
                escape(row.forecast_text()),
            )
        out.print(table)
        approved: dict[str, list[str]] = {}  # digest → the artifacts applied under it
        for row in result.ledger:
            if row.digest:
                approved.setdefault(row.digest, []).append(row.artifact)
        for digest, artifacts in approved.items():
            row = next(r for r in result.ledger if r.digest == digest)
            who = ", ".join(
                f"{s.get('signer')} ({s.get('level')}, {s.get('signed_at')})" for s in row.signers
            )
            out.print(
                f"approved digest {digest[:12]}… by {escape(who or 'nobody')}: "
                f"{escape(', '.join(artifacts))}"
            )
    if result.conflicts:
        out.print(f"[red]edited after apply:[/red] {escape(', '.join(result.conflicts))}")
    out.print(f"pending: {escape(', '.join(result.pending) or 'none')}")
    if result.rehearsal is None:
        out.print("rehearsal: none")
    else:
        r = result.rehearsal
        state = "[green]OK[/green]" if r.get("ok") else "[red]FAILED[/red]"
        matches = "" if result.rehearsal_matches else " [yellow](artifacts changed since)[/yellow]"
        out.print(
            f"latest rehearsal: {state} evidence #{r.get('record')} at {escape(str(r.get('at')))}"
            f" on {escape(str(r.get('clone')))}{matches}"
        )
    if result.rehearsal is not None:
        _show_forecast(
            result.forecasts,
            result.forecast,
            f"by rehearsal #{result.rehearsal.get('record')} on {result.rehearsal.get('clone')}",
        )
    approval = result.approval
    if result.pending and approval is not None and (approval.required or approval.signatures):
        out.print(f"approval: {escape(approval.summary())}")
    out.print("gates on production now:")
    for line in _grouped(result.gates):
        out.print(line)
    return None
