"""Rehearsal of a plan on the clone, its forecast, and finding the one an apply needs.

A plan of transactional artifacts is rehearsed in one transaction that is always rolled
back, a savepoint per artifact. A plan with a `transaction: none` artifact cannot be: such
an artifact runs on its own, in no transaction. That plan is rehearsed the way apply runs
it — each transactional artifact in its own transaction (committed), each other one
statement by statement — while the clone's marker says `rehearsing`, and the clone is then
reset from its golden copy; its residue proof compares the clone after the reset with the
clone before. Either way each artifact's body is measured (`oneroof.rollout.forecast`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oneroof import connect, fingerprint, gates
from oneroof.config import Config
from oneroof.connect import CloneSession, Session
from oneroof.errors import BadInput, ForbiddenAction, OneroofError
from oneroof.evidence import Evidence, Record
from oneroof.residue import SECTIONS, Bracket
from oneroof.rollout import forecast, standalone
from oneroof.rollout.artifact import Artifact, Plan
from oneroof.rollout.deltas import (
    ArtifactRun,
    DeltaMeter,
    _Halt,
    _keep_rows,
    _verdict,
    require_tables,
    settled,
)
from oneroof.rollout.forecast import Forecast, Hazard
from oneroof.rollout.ledger import LedgerRow, read_ledger
from oneroof.sqltext import setting_ms
from oneroof.workspace import Workspace

REHEARSAL_KIND = "rehearsal"
ROLLED_BACK = "one rolled-back transaction"
COMMITTED = "committed artifact by artifact, then reset from the golden copy"
REHEARSING = "rehearsing"  # the clone marker's state while a committed rehearsal runs

Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


@dataclass
class Rehearsal:
    """The outcome of rehearsing a plan on the clone (rolled back, or reset afterwards)."""

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
    forecasts: dict[str, Forecast] = field(default_factory=dict)
    forecast: dict[str, Any] | None = None  # the plan-level forecast (policy, totals, hazards)
    mode: str = ROLLED_BACK

    @property
    def hazards(self) -> list[tuple[str, Hazard]]:
        return [(a, h) for a, f in self.forecasts.items() for h in f.hazards]

    def forecast_lines(self) -> list[str]:
        """One line per measured artifact: `F_02: ROW EXCLUSIVE on …; no hazard`."""
        return [forecast.summary(a, f.to_dict()) for a, f in self.forecasts.items()]

    def forecast_headline(self) -> str:
        """The report's forecast clause (empty when nothing was measured)."""
        return forecast.headline({a: f.to_dict() for a, f in self.forecasts.items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "path": self.path,
            "clone": self.clone,
            "source_fingerprint": self.source_fingerprint,
            "marker_state": self.marker_state,
            "checksums": [[a.id, a.checksum] for a in self.artifacts],
            "artifacts": [
                {
                    **a.to_dict(),
                    "forecast": self.forecasts[a.id].to_dict() if a.id in self.forecasts else None,
                }
                for a in self.artifacts
            ],
            "already_applied": self.already_applied,
            "touched_tables": self.touched_tables,
            "residue_free": self.residue_free,
            "residue": self.residue,
            "sequences_restored": self.sequences_restored,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "record": self.record,
            "mode": self.mode,
            "forecast": self.forecast,
        }


def rehearse(
    ws: Workspace,
    plan: Plan,
    *,
    clone_name: str | None = None,
    session: CloneSession | None = None,
    say: Say | None = None,
) -> Rehearsal:
    """Rehearse the plan on the clone, measure each artifact's forecast; store the evidence."""
    say = say or _quiet
    if session is not None and not isinstance(session, CloneSession):
        # the types say so; a caller may not listen
        raise ForbiddenAction("refused: a rehearsal runs on the clone only")
    if any(not artifact.transactional for artifact in plan.artifacts):
        if session is not None:
            raise BadInput(
                f"plan {plan.name} holds a `transaction: none` artifact: it is rehearsed on a "
                "clone that is reset afterwards, so name the clone, not a session"
            )
        return _rehearse_committed(ws, plan, ws.clone_name(clone_name), say)
    if session is not None:
        return _rehearse(ws.cfg, ws.evidence, plan, session, say)
    with ws.clone(clone_name, ready_only=True) as active:
        return _rehearse(ws.cfg, ws.evidence, plan, active, say)


def _server_facts(session: Session) -> dict[str, Any]:
    """What the forecast's figures depend on: the clone's major and WAL level."""
    return {
        "server_version": session.identity.server_version,
        "wal_level": str(session.execute("show wal_level")[0][0]),
    }


def _rehearse(
    cfg: Config, evidence: Evidence, plan: Plan, session: CloneSession, say: Say
) -> Rehearsal:
    started = time.monotonic()
    marker = connect.read_marker(session) or {}
    require_tables(session, plan.artifacts)
    say(f"rehearse {plan.name} on {session.identity.database}: fingerprint before")
    server = _server_facts(session)
    bracket = Bracket.open(session)
    clone_ledger = read_ledger(session, plan.name, schema=cfg.rollout.ledger_schema)
    runs: list[ArtifactRun] = []
    forecasts: dict[str, Forecast] = {}
    already: list[str] = []
    try:
        with session.transaction():  # always rolled back
            _rehearse_all(session, None, cfg, plan, clone_ledger, runs, forecasts, already, say)
    finally:
        say("fingerprint after (residue proof)")
        proof = bracket.close()
    result = _outcome(plan, session.identity.database, marker, runs, already, proof.differences)
    result.sequences_restored = proof.sequences_restored
    return _conclude(cfg, evidence, result, forecasts, ROLLED_BACK, server, started)


def _outcome(
    plan: Plan,
    clone: str,
    marker: Mapping[str, Any],
    runs: list[ArtifactRun],
    already: list[str],
    residue: list[str],
) -> Rehearsal:
    """The rehearsal's facts, before `_conclude` judges them."""
    source, state = marker.get("source_fingerprint"), marker.get("state")
    return Rehearsal(
        plan=plan.name,
        path=str(plan.path),
        clone=clone,
        source_fingerprint=str(source) if source else None,
        artifacts=runs,
        already_applied=already,
        touched_tables=sorted({table for run in runs for table in run.deltas}),
        residue_free=not residue,
        residue=residue,
        sequences_restored=[],
        ok=False,
        seconds=0.0,
        marker_state=str(state) if state else None,
    )


def _conclude(
    cfg: Config,
    evidence: Evidence,
    result: Rehearsal,
    forecasts: dict[str, Forecast],
    mode: str,
    server: Mapping[str, Any],
    started: float,
) -> Rehearsal:
    """Judge the hazards, refuse them when the policy says so, and store the evidence."""
    settings = cfg.rollout
    timeout_ms = setting_ms(settings.statement_timeout)
    runs = {run.id: run for run in result.artifacts}
    for artifact_id, measured in forecasts.items():
        measured.hazards = forecast.judge(
            measured, settings.hazard_rows, settings.hazard_lock_ms, timeout_ms
        )
        run = runs[artifact_id]
        if measured.hazards and settings.hazards == "refuse" and run.status == "ok":
            run.status = "refused"
            run.reason = forecast.refusal(measured.hazards)
    result.forecasts = forecasts
    result.mode = mode
    result.forecast = forecast.plan_forecast(
        forecasts,
        policy=settings.hazards,
        hazard_rows=settings.hazard_rows,
        hazard_lock_ms=settings.hazard_lock_ms,
        mode=mode,
        server=server,
    )
    result.ok = result.residue_free and all(run.ok for run in result.artifacts)
    result.seconds = time.monotonic() - started
    record = evidence.append(REHEARSAL_KIND, result.to_dict())
    result.record = record.seq
    return result


def _ledger_run(
    artifact: Artifact, clone_ledger: Mapping[str, LedgerRow], already: list[str]
) -> ArtifactRun | None:
    """An artifact the clone's ledger holds: skipped (applied before the copy) or failed."""
    row = clone_ledger.get(artifact.id)
    if row is None:
        return None
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
    return run


def _rehearse_all(
    session: CloneSession,
    watcher: CloneSession | None,
    cfg: Config,
    plan: Plan,
    clone_ledger: Mapping[str, LedgerRow],
    runs: list[ArtifactRun],
    forecasts: dict[str, Forecast],
    already: list[str],
    say: Say,
) -> None:
    """Every artifact in order; halted at the first that fails.

    Without a `watcher` the caller holds one transaction open (rolled back) and each
    artifact gets a savepoint; with one, each transactional artifact commits in its own
    transaction and the others run in none, watched by the second session.
    """
    halted = False
    for artifact in plan.artifacts:
        if halted:
            runs.append(ArtifactRun.of(artifact))
            continue
        skipped = _ledger_run(artifact, clone_ledger, already)
        if skipped is not None:
            runs.append(skipped)
            halted = not skipped.ok
            continue
        say(f"  {artifact.id}")
        if watcher is None:
            run, measured = _rehearse_artifact(session, cfg, artifact)
        elif artifact.transactional:
            with session.transaction(force_rollback=False):
                run, measured = _rehearse_artifact(session, cfg, artifact)
        else:
            run, measured = _rehearse_standalone(session, watcher, cfg, artifact)
        runs.append(run)
        if measured is not None:
            forecasts[artifact.id] = measured
        halted = not run.ok


def _rehearse_artifact(
    session: Session, cfg: Config, artifact: Artifact
) -> tuple[ArtifactRun, Forecast | None]:
    run = ArtifactRun.of(artifact, "running")
    measured: Forecast | None = None
    with settled(run, "failed"):
        with session.savepoint():
            values = gates.read_values(session, cfg, artifact.gate_names | artifact.delta_names)
            run.gates = gates.evaluate_all(artifact.gates, values)  # reported, never blocking
            run.expected, problems = artifact.expected(values)
            meter = DeltaMeter(
                session, artifact, run.expected, ledger_schema=cfg.rollout.ledger_schema
            )
            probe = forecast.Probe(session, transactional=True)
            for statement in artifact.statements:
                columns, rows = session.query(statement.sql)
                _keep_rows(run, columns, rows)
            probe.body_done()  # before anything else of ours reads or locks
            run.deltas, mismatches = meter.finish(run.expected)
            measured = probe.finish(run.deltas, truncated=meter.truncated)
            run.mismatches = problems + mismatches
            stop_values = gates.read_values(session, cfg, artifact.stop_names)
            run.stops = gates.evaluate_all(artifact.stops, stop_values)
            reason = _verdict(run)
            if reason:
                raise _Halt(reason)
        run.status = "ok"
    return run, measured


def _rehearse_standalone(
    session: CloneSession, watcher: CloneSession, cfg: Config, artifact: Artifact
) -> tuple[ArtifactRun, Forecast | None]:
    """A `transaction: none` artifact on its own: each statement in no transaction, its
    locks sampled by the watcher while it runs, then the post-check of its indexes."""
    run = ArtifactRun.of(artifact, "running")
    measured: Forecast | None = None
    with settled(run, "failed"):
        values = gates.read_values(session, cfg, artifact.gate_names)
        run.gates = gates.evaluate_all(artifact.gates, values)  # reported, never blocking
        pid = int(session.scalar("select pg_catalog.pg_backend_pid()"))
        probe = forecast.Probe(session, transactional=False)
        seen: dict[int, set[str]] = {}
        for statement in artifact.statements:
            # one sampler a statement: each is held until its locks are seen
            with forecast.LockSampler(watcher.raw_for_clone, pid, seen):
                columns, rows = session.query(statement.sql)
            _keep_rows(run, columns, rows)
        probe.body_done()
        measured = probe.finish(
            {},
            sampled=seen,
            concurrent=forecast.concurrent_indexes(s.sql for s in artifact.statements),
        )
        problems = [
            problem
            for statement in artifact.statements
            if (target := standalone.index_target(statement.sql)) is not None
            and (problem := standalone.post_check(session, target)) is not None
        ]
        if problems:
            raise _Halt("post-check: " + "; ".join(problems))
        run.status = "ok"
    return run, measured


def _mark(ws: Workspace, name: str, marker: Mapping[str, Any], **changes: Any) -> None:
    from oneroof import clone

    with ws.server() as server:
        clone._write_marker(server, name, {**marker, **changes})


def _require_golden(ws: Workspace, name: str) -> None:
    """A committed rehearsal needs the golden copy that puts the clone back: before anything."""
    from oneroof import clone

    if ws.cfg.clone.method == "command":
        return  # an external clone engine resets the clone its own way
    golden = clone.golden_name(name)
    with ws.server() as server:
        rows = server.raw_for_clone.execute(
            "select 1 from pg_catalog.pg_database where datname = %s", (golden,)
        ).fetchall()
    if not rows:
        raise BadInput(
            f"clone {name!r} has no golden copy ({golden!r}): a plan with a `transaction: none` "
            "artifact is rehearsed committed and the clone reset from it afterwards; make the "
            "clone with `oneroof clone create`"
        )


def _reset(ws: Workspace, name: str, before: fingerprint.Fingerprint, say: Say) -> list[str]:
    """Reset the clone from its golden copy; what still differs from before the rehearsal."""
    from oneroof import clone

    say(f"resetting {name} from its golden copy")
    try:
        clone.reset(ws, name, step=say)
        with ws.clone(name, ready_only=True) as again:
            after = fingerprint.take(again, mode="full")
    except OneroofError as exc:
        return [
            f"the clone could not be reset after the rehearsal ({exc}); it still holds the "
            "rehearsed changes: run `oneroof clone reset`"
        ]
    return [d.describe() for d in fingerprint.diff(before, after, SECTIONS)]


def _rehearse_committed(ws: Workspace, plan: Plan, name: str, say: Say) -> Rehearsal:
    cfg, evidence = ws.cfg, ws.evidence
    started = time.monotonic()
    _require_golden(ws, name)
    runs: list[ArtifactRun] = []
    forecasts: dict[str, Forecast] = {}
    already: list[str] = []
    marked = False
    try:
        with (
            ws.clone(name, ready_only=True) as session,
            ws.clone(name, ready_only=True) as watcher,
        ):
            marker = connect.read_marker(session) or {}
            require_tables(session, plan.artifacts)
            say(f"rehearse {plan.name} on {name} (committed, then reset): fingerprint before")
            server = _server_facts(session)
            before = fingerprint.take(session, mode="full")
            clone_ledger = read_ledger(session, plan.name, schema=cfg.rollout.ledger_schema)
            # until the reset, commands that need a ready clone refuse this one
            _mark(
                ws,
                name,
                marker,
                state=REHEARSING,
                rehearsing=plan.name,
                pid=os.getpid(),
                host=socket.gethostname(),
            )
            marked = True
            _rehearse_all(session, watcher, cfg, plan, clone_ledger, runs, forecasts, already, say)
    finally:
        # whatever happened once the clone was marked, it is put back
        differences = _reset(ws, name, before, say) if marked else []
    result = _outcome(plan, name, marker, runs, already, differences)
    return _conclude(cfg, evidence, result, forecasts, COMMITTED, server, started)


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
