"""Apply and watch: the only path by which oneroof writes a plan to production."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql as pgsql

from oneroof import approvals, fingerprint, gates, guard
from oneroof.approvals import Verification
from oneroof.config import Config
from oneroof.connect import Session
from oneroof.errors import BadInput, ForbiddenAction
from oneroof.evidence import Evidence, Record, canonical_json
from oneroof.gates import GateResult
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
from oneroof.rollout.ledger import (
    LEDGER_TABLE,
    LOCK_NOT_AVAILABLE,
    LedgerRow,
    _ensure_columns,
    _ensure_ledger,
    _lock_key,
    _take_lock,
    lock_retry,
    read_ledger,
    recheck,
)
from oneroof.rollout.rehearsal import Say, _quiet, find_rehearsal
from oneroof.workspace import Workspace

APPLY_KIND = "rollout-apply"
ARTIFACT_KIND = "rollout-artifact"


@dataclass(frozen=True)
class Check:
    """One precondition of an apply."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class _Precheck:
    checks: list[Check]
    ledger: dict[str, LedgerRow]
    selected: list[Artifact]
    left: list[Artifact]
    gates: list[tuple[str, GateResult]]
    rehearsal: Record | None
    drift: list[str]
    approval: Verification | None = None

    @property
    def refusals(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def closed(self) -> list[tuple[str, GateResult]]:
        return [(a, g) for a, g in self.gates if not g.holds]


def _select(
    plan: Plan, ledger: Mapping[str, LedgerRow], mode: str, session: Session
) -> tuple[list[Artifact], list[Artifact]]:
    """The pending artifacts to run now, and those left for a human."""
    pending = [a for a in plan.artifacts if a.id not in ledger]
    if mode == "all":
        return pending, []
    verify = set(plan.verify_set) if mode == "watch" else set()
    chosen: list[Artifact] = []
    for index, artifact in enumerate(pending):
        runnable = artifact.auto or (artifact.id in verify and _read_only(artifact, session))
        if not runnable:
            return chosen, pending[index:]
        chosen.append(artifact)
    return chosen, []


def _read_only(artifact: Artifact, session: Session) -> bool:
    """True when every statement is a plain read by the production guard (a verify artifact)."""
    return all(guard.classify(s.sql, session.catalog).allowed for s in artifact.statements)


def _precheck(
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    session: Session,
    mode: str,
    *,
    drift: bool = True,
) -> _Precheck:
    """Ledger, rehearsal, drift and gates, read from one snapshot of production."""
    checks: list[Check] = []
    with session.transaction():
        require_tables(session, plan.artifacts)
        ledger = read_ledger(session, plan.name, schema=cfg.rollout.ledger_schema)
        conflicts = [
            f"{a.id} (ledger {ledger[a.id].checksum[:12]}…, file {a.checksum[:12]}…)"
            for a in plan.artifacts
            if a.id in ledger and ledger[a.id].checksum != a.checksum
        ]
        checks.append(
            Check(
                "ledger",
                not conflicts,
                "refused: applied artifacts were edited since: " + ", ".join(conflicts)
                if conflicts
                else f"{len(ledger)} of {len(plan.artifacts)} artifact(s) already applied",
            )
        )
        selected, left = _select(plan, ledger, mode, session)
        record: Record | None = None
        drifted: list[str] = []
        approval: Verification | None = None
        if selected:
            record, why = find_rehearsal(evidence, plan)
            checks.append(_rehearsal_check(record, why, selected))
            if drift and record is not None and record.payload.get("ok"):
                check, drifted = _drift_check(
                    cfg, session, evidence, plan, record, ledger, selected
                )
                checks.append(check)
            if record is not None and record.payload.get("ok"):
                # the forecast's hazards, judged by the policy in force now
                ok, detail = forecast.hazard_check(cfg.rollout.hazards, record.payload)
                checks.append(Check("hazards", ok, detail))
            if record is not None and record.payload.get("ok"):
                # signatures over the digest of this plan as rehearsed in `record`
                approval = approvals.evaluate(cfg, evidence, plan, record=record)
                checks.append(_approval_check(approval))
        names = {n for a in selected for n in a.gate_names}
        values = gates.read_values(session, cfg, names)
        results = [(a.id, gates.evaluate(g, values)) for a in selected for g in a.gates]
    return _Precheck(checks, ledger, selected, left, results, record, drifted, approval)


def _approval_check(approval: Verification) -> Check:
    """The quorum over the plan's current digest: a refusal while it is required and short."""
    if approval.met:
        prefix = "" if approval.required else "not required; "
        return Check("approval", True, prefix + approval.summary())
    if not approval.required:
        return Check(
            "approval",
            True,
            "not required (no [[approver]] in oneroof.toml, or [rollout.approval] required = "
            f"false); digest {approval.digest[:12] if approval.digest else '?'}…",
        )
    return Check(
        "approval",
        False,
        f"refused: {approval.summary()}; sign it with `oneroof approve PLAN --key KEY` "
        "(`oneroof approvals verify PLAN` lists every signature)",
    )


def _rehearsal_check(record: Record | None, why: str, selected: list[Artifact]) -> Check:
    if record is None:
        return Check("rehearsal", False, f"refused: {why}; run `oneroof rollout rehearse`")
    payload = record.payload
    if not payload.get("ok"):
        failed = [
            f"{a.get('id')}: {a.get('reason') or a.get('status')}"
            for a in payload.get("artifacts", [])
            if not a.get("ok")
        ]
        if not payload.get("residue_free"):
            failed.append("the clone was not residue-free afterwards")
        return Check(
            "rehearsal",
            False,
            f"refused: the latest rehearsal of these artifacts (evidence #{record.seq}) failed: "
            + "; ".join(failed[:3]),
        )
    rehearsed = {a.get("id") for a in payload.get("artifacts", []) if a.get("status") == "ok"}
    unrehearsed = [a.id for a in selected if a.id not in rehearsed]
    if unrehearsed:
        return Check(
            "rehearsal",
            False,
            f"refused: not rehearsed (the clone's ledger already had them): "
            f"{', '.join(unrehearsed)}; rehearse on a clone of the current production",
        )
    return Check(
        "rehearsal",
        True,
        f"passing rehearsal of these checksums: evidence #{record.seq} at {record.at[:19]} "
        f"on clone {payload.get('clone')}",
    )


def _drift_check(
    cfg: Config,
    session: Session,
    evidence: Evidence,
    plan: Plan,
    record: Record,
    ledger: Mapping[str, LedgerRow],
    selected: list[Artifact],
) -> tuple[Check, list[str]]:
    payload = record.payload
    source_id = payload.get("source_fingerprint")
    if not source_id:
        return Check(
            "drift", False, "refused: the rehearsal's clone carries no source fingerprint"
        ), []
    source = fingerprint.find(evidence, str(source_id))
    if source is None:
        return Check(
            "drift",
            False,
            f"refused: the clone's source fingerprint {str(source_id)[:12]}… is not in the "
            "evidence store",
        ), []
    tables = set(payload.get("touched_tables") or []) | {t for a in selected for t in a.tables}
    # Tables this plan itself changed on production since the clone was taken cannot equal
    # the clone's source any more; gates, deltas and stops guard them from here on.
    before_clone = set(payload.get("already_applied") or [])
    own = {
        table
        for artifact_id, row in ledger.items()
        if artifact_id not in before_clone
        for table in row.deltas
    }
    compare = sorted(tables - own)
    if not compare:
        return Check("drift", True, "no table to compare (every one was changed by this plan)"), []
    production = fingerprint.take(
        session, mode="full", tables=compare, content_hash=source.content_hash
    )
    # the objects an artifact touches must be the ones rehearsed: schema drift is refused
    rehearsed = fingerprint.objects_of(source.sections.get("schema", {}), compare)
    now = fingerprint.objects_of(production.sections.get("schema", {}), compare)
    reshaped = sorted(
        key
        for key in set(rehearsed) | set(now)
        if canonical_json(rehearsed.get(key)) != canonical_json(now.get(key))
    )
    if reshaped:
        shown = ", ".join(reshaped[:6]) + (" …" if len(reshaped) > 6 else "")
        return Check(
            "drift",
            False,
            "refused: the schema of a table the plan touches changed since the clone was taken "
            f"({shown}); re-clone and re-rehearse",
        ), reshaped
    drifted = []
    for table in compare:
        expected = source.table_content(table)
        actual = production.table_content(table)
        if expected is not None and expected == actual:
            continue
        if expected is None and actual is None:
            continue  # no rows of its own (a partitioned parent): its partitions are compared
        before_count = source.sections.get("counts", {}).get(table)
        now_count = production.sections.get("counts", {}).get(table)
        if actual is None:
            return Check("drift", False, f"refused: {table} is gone from production; re-clone"), [
                table
            ]
        drifted.append(f"{table} (rows {before_count} → {now_count}, content changed)")
    skipped = (
        f"; not compared (changed by this plan): {', '.join(sorted(own & tables))}"
        if (own & tables)
        else ""
    )
    if drifted and (cfg.production.expect_unchanged or cfg.rollout.refuse_data_drift):
        why = (
            "[production] expect_unchanged"
            if cfg.production.expect_unchanged
            else "[rollout] refuse_data_drift"
        )
        return Check(
            "drift",
            False,
            "refused: production's rows drifted since the clone was taken: "
            + ", ".join(drifted)
            + f" ({why}); re-clone and re-rehearse",
        ), drifted
    if drifted:
        return Check(
            "drift",
            True,
            "schema as rehearsed; rows changed since the clone was taken (a live production): "
            + ", ".join(drifted)
            + " — each artifact's gates, exact deltas and stops decide, inside its own "
            "transaction" + skipped,
        ), []
    return Check(
        "drift",
        True,
        f"{len(compare)} table(s) equal to the clone's source {str(source_id)[:8]}: "
        + ", ".join(compare)
        + skipped,
    ), []


def _closed(closed: list[tuple[str, GateResult]]) -> str:
    """The closed gates, each once, with the artifacts that carry it."""
    groups: dict[str, list[str]] = {}
    for artifact_id, result in closed:
        groups.setdefault(result.describe(), []).append(artifact_id)
    return "; ".join(f"{text} [{', '.join(ids)}]" for text, ids in groups.items())


@dataclass
class ApplyResult:
    """What an apply (or watch) did; `ok` False is NO-GO (exit 1)."""

    plan: str
    execute: bool
    mode: str
    status: str = "nothing to do"
    ok: bool = True
    artifacts: list[ArtifactRun] = field(default_factory=list)
    gates: list[tuple[str, GateResult]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    rehearsal: int | None = None
    message: str = ""
    seconds: float = 0.0
    approval: Verification | None = None
    # per applied artifact: the rehearsal's forecast and what the apply observed
    forecasts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def applied(self) -> list[str]:
        return [a.id for a in self.artifacts if a.status == "applied"]

    @property
    def closed_gates(self) -> list[tuple[str, GateResult]]:
        return [(a, g) for a, g in self.gates if not g.holds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "execute": self.execute,
            "mode": self.mode,
            "status": self.status,
            "ok": self.ok,
            "message": self.message,
            "applied": self.applied,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "gates": [{"artifact": a, **g.to_dict()} for a, g in self.gates],
            "checks": [c.to_dict() for c in self.checks],
            "rehearsal": self.rehearsal,
            "seconds": round(self.seconds, 3),
            "approval": _approval_record(self.approval),
            "forecast": self.forecasts,
        }


def _approval_record(approval: Verification | None) -> dict[str, Any] | None:
    """Who approved which digest, and when: what the apply's evidence keeps."""
    if approval is None:
        return None
    return {
        "required": approval.required,
        "met": approval.met,
        "digest": approval.digest,
        "quorum": approval.quorum,
        "missing": approval.missing,
        "signers": approval.signers,
    }


def apply(
    ws: Workspace,
    plan: Plan,
    *,
    execute: bool,
    only_auto: bool = False,
    say: Say | None = None,
) -> ApplyResult:
    """Apply the plan's pending artifacts to production (a dry run unless `execute`)."""
    return _apply(ws, plan, execute=execute, mode="auto" if only_auto else "all", say=say)


def _refuse(evidence: Evidence, result: ApplyResult, refusals: list[Check]) -> ForbiddenAction:
    result.status, result.ok = "refused", False
    result.message = "; ".join(c.detail for c in refusals)
    evidence.append(APPLY_KIND, result.to_dict())
    return ForbiddenAction(result.message, reason=refusals[0].name)


def _apply(ws: Workspace, plan: Plan, *, execute: bool, mode: str, say: Say | None) -> ApplyResult:
    cfg, evidence = ws.cfg, ws.evidence
    say = say or _quiet
    started = time.monotonic()
    result = ApplyResult(plan.name, execute, mode)
    with ws.production() as session:
        pre = _precheck(cfg, evidence, plan, session, mode)
        reader = session.privileges.user if session.privileges else None
    result.checks, result.gates = pre.checks, pre.gates
    result.rehearsal = pre.rehearsal.seq if pre.rehearsal else None
    result.approval = pre.approval
    for artifact in plan.artifacts:
        if artifact.id in pre.ledger:
            result.artifacts.append(ArtifactRun.of(artifact, "already applied"))
    left = [ArtifactRun.of(a, "left for a human") for a in pre.left]

    def finish(status: str, ok: bool, message: str) -> ApplyResult:
        result.status, result.ok, result.message = status, ok, message
        result.artifacts += left
        result.seconds = time.monotonic() - started
        if execute:
            evidence.append(APPLY_KIND, result.to_dict())
        return result

    if pre.refusals:
        if execute:
            result.artifacts += left + [ArtifactRun.of(a, "not run") for a in pre.selected]
            raise _refuse(evidence, result, pre.refusals)
        result.artifacts += [ArtifactRun.of(a, "not run") for a in pre.selected]
        return finish("would refuse", False, "; ".join(c.detail for c in pre.refusals))
    if not pre.selected:
        if pre.left:
            waiting = ", ".join(a.id for a in pre.left)
            return finish(
                "nothing to do", True, f"nothing unattended is pending; for a human: {waiting}"
            )
        return finish("nothing to do", True, "every artifact is already applied")
    if pre.closed:
        result.artifacts += [ArtifactRun.of(a, "not run") for a in pre.selected]
        return finish("gate closed", False, f"NO-GO, nothing written: {_closed(pre.closed)}")
    if not execute:
        result.artifacts += [ArtifactRun.of(a, "would apply") for a in pre.selected]
        return finish(
            "dry run", True, f"would apply {', '.join(a.id for a in pre.selected)} (--execute)"
        )

    record_hash = pre.rehearsal.hash if pre.rehearsal else None
    with ws.open_writer() as writer:
        _ensure_ledger(writer, cfg, reader)
        _ensure_columns(writer, cfg.rollout.ledger_schema)
        predicted = forecast.forecasts_of(pre.rehearsal.payload) if pre.rehearsal else {}
        for index, artifact in enumerate(pre.selected):
            say(f"apply {artifact.id}")
            expected = predicted.get(artifact.id)
            run, observed = _apply_one(
                writer, cfg, evidence, plan, artifact, record_hash, say, pre.approval, expected
            )
            if run.status == "applied":
                result.forecasts[artifact.id] = {"forecast": expected, "observed": observed}
            result.artifacts.append(run)
            evidence.append(ARTIFACT_KIND, {"plan": plan.name, **run.to_dict()})
            if not run.ok:
                result.artifacts += [ArtifactRun.of(a) for a in pre.selected[index + 1 :]]
                return finish(
                    "halted", False, f"{artifact.id} rolled back, plan halted: {run.reason}"
                )
    applied = [a.id for a in pre.selected if a.id in result.applied]
    return finish("applied", True, f"applied {', '.join(applied) or 'nothing new'}")


def _apply_one(
    writer: Session,
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    artifact: Artifact,
    rehearsal: str | None,
    say: Say,
    approval: Verification | None,
    expected: dict[str, Any] | None,
) -> tuple[ArtifactRun, dict[str, Any]]:
    """One artifact in its own transaction, or (`transaction: none`) statement by statement;
    and the duration and WAL observed. A lock waited `[rollout] lock_timeout` for is retried
    with backoff up to `[rollout] lock_retries` times, each attempt audited, then it halts."""
    if not artifact.transactional:

        def write_ledger(session: Session, done: ArtifactRun, seen: dict[str, Any]) -> None:
            _insert_ledger(session, cfg, plan, artifact, done, rehearsal, approval, expected, seen)

        run, seen = standalone.apply_standalone(
            writer, cfg, evidence, plan, artifact, write_ledger, say
        )
        return run, seen or {}
    attempt = 1
    while True:
        observed: dict[str, Any] = {}
        run = _apply_artifact(writer, cfg, plan, artifact, rehearsal, approval, expected, observed)
        if run.sqlstate != LOCK_NOT_AVAILABLE:
            return run, observed
        if not lock_retry(evidence, cfg, plan.name, artifact.id, attempt, run.reason, say):
            run.reason = (
                f"a lock stayed unavailable: {attempt} attempt(s) of {cfg.rollout.lock_timeout} "
                f"each ({run.reason})"
            )
            return run, observed
        attempt += 1


def _apply_artifact(
    writer: Session,
    cfg: Config,
    plan: Plan,
    artifact: Artifact,
    rehearsal: str | None,
    approval: Verification | None,
    expected: dict[str, Any] | None,
    observed: dict[str, Any],
) -> ArtifactRun:
    """One transactional artifact; `observed` gets the duration and WAL of its body."""
    run = ArtifactRun.of(artifact, "running")
    tag = {"plan": plan.name, "artifact": artifact.id}
    with settled(run, "halted"):
        with writer.write_transaction():
            _take_lock(writer, cfg, _lock_key(plan.name), **tag)
            if recheck(writer, cfg, plan.name, artifact, run):
                return run
            values = gates.read_values(writer, cfg, artifact.gate_names | artifact.delta_names)
            run.gates = gates.evaluate_all(artifact.gates, values)
            if not run.gates_hold:
                closed = "; ".join(g.describe() for g in run.gates if not g.holds)
                raise _Halt(f"gate closed inside the transaction: {closed}")
            run.expected, problems = artifact.expected(values)
            if problems:
                raise _Halt("; ".join(problems))
            meter = DeltaMeter(
                writer, artifact, run.expected, ledger_schema=cfg.rollout.ledger_schema
            )
            body = forecast.observe_start(writer)
            for statement in artifact.statements:
                columns, rows = writer.apply(statement.sql, line=statement.line, **tag)
                _keep_rows(run, columns, rows)
            observed.update(forecast.observe_end(writer, body))
            run.deltas, run.mismatches = meter.finish(run.expected)
            run.stops = gates.evaluate_all(
                artifact.stops, gates.read_values(writer, cfg, artifact.stop_names)
            )
            reason = _verdict(run)
            if reason:
                raise _Halt(reason)
            _insert_ledger(
                writer, cfg, plan, artifact, run, rehearsal, approval, expected, observed
            )
        run.status = "applied"
    return run


def watch(
    ws: Workspace,
    plan: Plan,
    *,
    interval: float,
    timeout: float,
    say: Say | None = None,
) -> ApplyResult:
    """Poll the gates until they open (then apply the auto set and verify) or `timeout` passes."""
    cfg, evidence = ws.cfg, ws.evidence
    say = say or _quiet
    if interval <= 0 or timeout < 0:
        raise BadInput("watch needs --interval > 0 and --timeout >= 0")
    deadline = time.monotonic() + timeout
    first = True
    while True:
        with ws.production() as session:
            pre = _precheck(cfg, evidence, plan, session, "watch", drift=first)
        if pre.refusals:
            result = ApplyResult(plan.name, True, "watch", checks=pre.checks, gates=pre.gates)
            raise _refuse(evidence, result, pre.refusals)
        first = False
        if not pre.selected or not pre.closed:
            say("gates open: applying the auto-executable set, then verify")
            return _apply(ws, plan, execute=True, mode="watch", say=say)
        shown = _closed(pre.closed)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result = ApplyResult(plan.name, True, "watch", gates=pre.gates, checks=pre.checks)
            result.status, result.ok = "timeout", False
            result.message = f"gates still closed after {timeout:g}s: {shown}"
            result.artifacts = [ArtifactRun.of(a, "not run") for a in pre.selected]
            evidence.append(APPLY_KIND, result.to_dict())
            return result
        say(f"waiting: {shown}")
        time.sleep(min(interval, remaining))


def _insert_ledger(
    writer: Session,
    cfg: Config,
    plan: Plan,
    artifact: Artifact,
    run: ArtifactRun,
    rehearsal: str | None,
    approval: Verification | None = None,
    expected: dict[str, Any] | None = None,
    observed: dict[str, Any] | None = None,
) -> None:
    signers = approval.signers if approval is not None else []
    seen = observed or {}
    statement = pgsql.SQL(
        "insert into {} (plan, artifact, checksum, file, deltas, gates, stops, rehearsal,"
        " digest, signers, forecast, duration_ms, wal_bytes)"
        " values ({}, {}, {}, {}, {}::jsonb, {}::jsonb, {}::jsonb, {}, {}, {}::jsonb,"
        " {}::jsonb, {}, {})"
    ).format(
        pgsql.Identifier(cfg.rollout.ledger_schema, LEDGER_TABLE),
        pgsql.Literal(plan.name),
        pgsql.Literal(artifact.id),
        pgsql.Literal(artifact.checksum),
        pgsql.Literal(artifact.file.name),
        pgsql.Literal(json.dumps(run.deltas, sort_keys=True)),
        pgsql.Literal(json.dumps([g.to_dict() for g in run.gates], sort_keys=True, default=str)),
        pgsql.Literal(json.dumps([s.to_dict() for s in run.stops], sort_keys=True, default=str)),
        pgsql.Literal(rehearsal),
        pgsql.Literal(approval.digest if approval is not None else None),
        pgsql.Literal(json.dumps(signers, sort_keys=True)),
        pgsql.Literal(json.dumps(expected, sort_keys=True) if expected is not None else None),
        pgsql.Literal(seen.get("ms")),
        pgsql.Literal(seen.get("wal_bytes")),
    )
    writer.apply(statement.as_string(None), step="ledger", plan=plan.name, artifact=artifact.id)
