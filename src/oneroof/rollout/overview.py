"""Read-only views of a plan: its ledger, latest rehearsal and gates, its lint and forecast."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from oneroof import approvals, gates
from oneroof.approvals import Verification
from oneroof.config import Config
from oneroof.connect import Session
from oneroof.gates import GateResult
from oneroof.rollout.artifact import Artifact, Plan
from oneroof.rollout.deltas import require_tables
from oneroof.rollout.forecast import forecasts_of
from oneroof.rollout.ledger import LedgerRow, read_ledger
from oneroof.rollout.linting import LintFinding, lint
from oneroof.rollout.rehearsal import REHEARSAL_KIND, find_rehearsal
from oneroof.workspace import Workspace


@dataclass
class PlanStatus:
    """The ledger, the latest rehearsal and the gates of a plan."""

    plan: str
    ledger: list[LedgerRow]
    pending: list[str]
    conflicts: list[str]
    rehearsal: dict[str, Any] | None
    rehearsal_matches: bool
    gates: list[tuple[str, GateResult]]
    approval: Verification | None = None
    # the latest rehearsal's forecast per artifact, and its plan-level forecast
    forecasts: dict[str, dict[str, Any]] = field(default_factory=dict)
    forecast: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "forecast": {"plan": self.forecast, "artifacts": self.forecasts},
            "ledger": [row.to_dict() for row in self.ledger],
            "pending": self.pending,
            "conflicts": self.conflicts,
            "rehearsal": self.rehearsal,
            "rehearsal_matches_checksums": self.rehearsal_matches,
            "gates": [{"artifact": a, **g.to_dict()} for a, g in self.gates],
            "approval": self.approval.to_dict() if self.approval is not None else None,
        }


def _gate_values(
    cfg: Config, session: Session, artifacts: Iterable[Artifact]
) -> list[tuple[str, GateResult]]:
    chosen = list(artifacts)
    values = gates.read_values(session, cfg, {n for a in chosen for n in a.gate_names})
    return [(a.id, gates.evaluate(g, values)) for a in chosen for g in a.gates]


def status(ws: Workspace, plan: Plan) -> PlanStatus:
    """Read the ledger and the gates on production (through the guard); the latest rehearsal."""
    cfg, evidence = ws.cfg, ws.evidence
    with ws.production() as session, session.transaction():
        ledger = read_ledger(session, plan.name, schema=cfg.rollout.ledger_schema)
        results = _gate_values(cfg, session, plan.artifacts)
    latest = None
    for record in reversed(evidence.records(REHEARSAL_KIND)):
        if record.payload.get("plan") == plan.name:
            latest = record
            break
    summary = None
    if latest is not None:
        summary = {
            "record": latest.seq,
            "at": latest.at,
            "ok": latest.payload.get("ok"),
            "clone": latest.payload.get("clone"),
            "residue_free": latest.payload.get("residue_free"),
            "source_fingerprint": latest.payload.get("source_fingerprint"),
            "mode": latest.payload.get("mode"),
        }
    return PlanStatus(
        plan=plan.name,
        ledger=list(ledger.values()),
        pending=[a.id for a in plan.artifacts if a.id not in ledger],
        conflicts=[
            a.id for a in plan.artifacts if a.id in ledger and ledger[a.id].checksum != a.checksum
        ],
        rehearsal=summary,
        rehearsal_matches=bool(latest and latest.payload.get("checksums") == plan.checksums),
        gates=results,
        approval=approvals.evaluate(cfg, evidence, plan),
        forecasts=forecasts_of(latest.payload) if latest is not None else {},
        forecast=latest.payload.get("forecast") if latest is not None else None,
    )


@dataclass
class PlanReport:
    """`rollout plan`: order, checksums, lint, the auto-executable set and gates now."""

    plan: Plan
    findings: list[LintFinding]
    lint_note: str | None
    gates: list[tuple[str, GateResult]]
    applied: list[str]
    # from the newest rehearsal of exactly these checksums (none: `forecast_note` says why)
    forecasts: dict[str, dict[str, Any]] = field(default_factory=dict)
    forecast: dict[str, Any] | None = None
    forecast_record: int | None = None
    forecast_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.plan.to_dict(),
            "lint": [f.to_dict() for f in self.findings],
            "lint_note": self.lint_note,
            "gates": [{"artifact": a, **g.to_dict()} for a, g in self.gates],
            "applied": self.applied,
            "forecast": {
                "record": self.forecast_record,
                "plan": self.forecast,
                "artifacts": self.forecasts,
                "note": self.forecast_note,
            },
        }


def describe(ws: Workspace, plan: Plan) -> PlanReport:
    """Lint every artifact and read each gate's value on production now."""
    findings, note = lint(plan)
    with ws.production() as session, session.transaction():
        require_tables(session, plan.artifacts)
        applied = list(read_ledger(session, plan.name, schema=ws.cfg.rollout.ledger_schema))
        results = _gate_values(ws.cfg, session, plan.artifacts)
    report = PlanReport(plan, findings, note, results, applied)
    record, why = find_rehearsal(ws.evidence, plan)
    if record is None:
        report.forecast_note = (
            f"{why}: `oneroof rollout rehearse` measures the forecast on the clone"
        )
    else:
        report.forecasts = forecasts_of(record.payload)
        report.forecast = record.payload.get("forecast")
        report.forecast_record = record.seq
    return report
