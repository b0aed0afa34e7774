"""Rehearsal of a plan on the clone (always rolled back), and finding the one an apply needs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from oneroof import connect, gates
from oneroof.config import Config
from oneroof.connect import CloneSession, Session
from oneroof.errors import ForbiddenAction
from oneroof.evidence import Evidence, Record
from oneroof.residue import Bracket
from oneroof.rollout.artifact import Artifact, Plan
from oneroof.rollout.deltas import (
    ArtifactRun,
    DeltaMeter,
    _Halt,
    _keep_rows,
    _psycopg_reason,
    _verdict,
    require_tables,
)
from oneroof.rollout.ledger import LedgerRow, read_ledger
from oneroof.workspace import Workspace

REHEARSAL_KIND = "rehearsal"

Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


@dataclass
class Rehearsal:
    """The outcome of rehearsing a plan on the clone (always rolled back)."""

    plan: str
    path: str
    clone: str
    source_fingerprint: str | None
    artifacts: list[ArtifactRun]
    already_applied: list[str]
    touched_tables: list[str]
    residue_free: bool
    residue: list[str]
    sequences_restored: list[str]
    ok: bool
    seconds: float
    marker_state: str | None = None
    record: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "path": self.path,
            "clone": self.clone,
            "source_fingerprint": self.source_fingerprint,
            "marker_state": self.marker_state,
            "checksums": [[a.id, a.checksum] for a in self.artifacts],
            "artifacts": [a.to_dict() for a in self.artifacts],
            "already_applied": self.already_applied,
            "touched_tables": self.touched_tables,
            "residue_free": self.residue_free,
            "residue": self.residue,
            "sequences_restored": self.sequences_restored,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "record": self.record,
        }


def rehearse(
    ws: Workspace,
    plan: Plan,
    *,
    clone_name: str | None = None,
    session: CloneSession | None = None,
    say: Say | None = None,
) -> Rehearsal:
    """Run the plan on the clone in one always-rolled-back transaction; store the evidence."""
    if session is not None:
        if not isinstance(session, CloneSession):  # the types say so; a caller may not listen
            raise ForbiddenAction("refused: a rehearsal runs on the clone only")
        return _rehearse(ws.cfg, ws.evidence, plan, session, say or _quiet)
    with ws.clone(clone_name, ready_only=True) as active:
        return _rehearse(ws.cfg, ws.evidence, plan, active, say or _quiet)


def _rehearse(
    cfg: Config, evidence: Evidence, plan: Plan, session: CloneSession, say: Say
) -> Rehearsal:
    started = time.monotonic()
    marker = connect.read_marker(session) or {}
    source = marker.get("source_fingerprint")
    require_tables(session, plan.artifacts)
    say(f"rehearse {plan.name} on {session.identity.database}: fingerprint before")
    bracket = Bracket.open(session)
    clone_ledger = read_ledger(session, plan.name, schema=cfg.rollout.ledger_schema)
    runs: list[ArtifactRun] = []
    already: list[str] = []
    try:
        _rehearse_all(session, cfg, plan, clone_ledger, runs, already, say)
    finally:
        say("fingerprint after (residue proof)")
        proof = bracket.close()
    residue, residue_free, restored = proof.differences, proof.free, proof.sequences_restored
    touched = sorted({table for run in runs for table in run.deltas})
    result = Rehearsal(
        plan=plan.name,
        path=str(plan.path),
        clone=session.identity.database,
        source_fingerprint=str(source) if source else None,
        artifacts=runs,
        already_applied=already,
        touched_tables=touched,
        residue_free=residue_free,
        residue=residue,
        sequences_restored=restored,
        ok=residue_free and all(run.ok for run in runs),
        seconds=time.monotonic() - started,
        marker_state=str(marker.get("state")) if marker.get("state") else None,
    )
    record = evidence.append(REHEARSAL_KIND, result.to_dict())
    result.record = record.seq
    return result


def _rehearse_all(
    session: Session,
    cfg: Config,
    plan: Plan,
    clone_ledger: Mapping[str, LedgerRow],
    runs: list[ArtifactRun],
    already: list[str],
    say: Say,
) -> None:
    """Every artifact in order, one savepoint each, in one transaction that is rolled back."""
    halted = False
    with session.transaction():  # always rolled back
        for artifact in plan.artifacts:
            if halted:
                runs.append(ArtifactRun.of(artifact))
                continue
            row = clone_ledger.get(artifact.id)
            if row is not None:
                run = ArtifactRun.of(artifact, "skipped")
                if row.checksum == artifact.checksum:
                    run.reason = "already applied on production when the clone was taken"
                    already.append(artifact.id)
                else:
                    run.status = "failed"
                    run.reason = (
                        f"the ledger holds {artifact.id} with checksum {row.checksum[:12]}…, "
                        f"not {artifact.checksum[:12]}…: the applied artifact was edited"
                    )
                    halted = True
                runs.append(run)
                continue
            say(f"  {artifact.id}")
            run = _rehearse_artifact(session, cfg, artifact)
            runs.append(run)
            halted = not run.ok


def _rehearse_artifact(session: Session, cfg: Config, artifact: Artifact) -> ArtifactRun:
    run = ArtifactRun.of(artifact, "running")
    started = time.monotonic()
    try:
        with session.savepoint():
            values = gates.read_values(session, cfg, artifact.gate_names | artifact.delta_names)
            run.gates = gates.evaluate_all(artifact.gates, values)  # reported, never blocking
            run.expected, problems = artifact.expected(values)
            meter = DeltaMeter(
                session, artifact, run.expected, ledger_schema=cfg.rollout.ledger_schema
            )
            for statement in artifact.statements:
                columns, rows = session.query(statement.sql)
                _keep_rows(run, columns, rows)
            run.deltas, mismatches = meter.finish(run.expected)
            run.mismatches = problems + mismatches
            stop_values = gates.read_values(session, cfg, artifact.stop_names)
            run.stops = gates.evaluate_all(artifact.stops, stop_values)
            reason = _verdict(run)
            if reason:
                raise _Halt(reason)
        run.status = "ok"
    except _Halt as halt:
        run.status, run.reason = "failed", halt.reason
    except psycopg.Error as exc:
        run.status, run.reason, run.sqlstate = "failed", _psycopg_reason(exc), exc.sqlstate
    run.seconds = time.monotonic() - started
    return run


def find_rehearsal(evidence: Evidence, plan: Plan) -> tuple[Record | None, str]:
    """The newest rehearsal of exactly these checksums, and why none fits when none does."""
    latest_of_plan: Record | None = None
    for record in reversed(evidence.records(REHEARSAL_KIND)):
        if record.payload.get("plan") != plan.name:
            continue
        latest_of_plan = latest_of_plan or record
        if record.payload.get("checksums") == plan.checksums:
            return record, ""
    if latest_of_plan is None:
        return None, f"no rehearsal of plan {plan.name} in the evidence store"
    rehearsed = {a: c for a, c in latest_of_plan.payload.get("checksums") or []}
    changed = [a.id for a in plan.artifacts if rehearsed.get(a.id) != a.checksum]
    removed = [a for a in rehearsed if a not in {x.id for x in plan.artifacts}]
    parts = []
    if changed:
        parts.append(f"changed since the last rehearsal (checksum): {', '.join(changed)}")
    if removed:
        parts.append(f"removed: {', '.join(removed)}")
    return None, "no rehearsal of these exact artifacts — " + "; ".join(parts or ["order changed"])
