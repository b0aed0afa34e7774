"""The campaign (`oneroof run`): every proof of the report, measured in one pass.

Entry fingerprint of production → clone create (or verify) → each objective's suites on
the clone (and on production where the objective says so) → rollout rehearsals → gates on
production → clone residue check → exit fingerprint of production. `measure` returns the
`Measurements`; `verdicts.judge` decides the report from them alone; `run` does both and
writes the report. Every figure comes from these measurements, never from a template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oneroof import (
    approvals,
    clone,
    compliance,
    connect,
    fingerprint,
    gates,
    provenance,
    roles,
    rollout,
    suite,
)
from oneroof.clone import freshness
from oneroof.clone.marker import major_mismatch
from oneroof.config import Config, Objective
from oneroof.errors import NotFound, OneroofError
from oneroof.evidence import Evidence
from oneroof.measurements import Applied, EvidenceRefs, Measurements, Previous
from oneroof.report import PASS, Report, write_all
from oneroof.sqltext import age_seconds
from oneroof.workspace import Workspace

Step = Callable[[str], None]


@dataclass
class CampaignResult:
    """The report and where it was written."""

    report: Report
    directory: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.report.final_status == PASS


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _suite_paths(cfg: Config, objective: Objective) -> list[Path]:
    paths = []
    for entry in objective.suites:
        path = Path(entry)
        paths.append(path if path.is_absolute() else cfg.workspace / path)
    return paths


def _ready_clone(ws: Workspace, name: str) -> clone.CloneEntry | None:
    for entry in clone.list_clones(ws):
        if entry.name == name and entry.role == "clone" and entry.state == "ready":
            return entry
    return None


def _refresh_reasons(ws: Workspace, name: str) -> list[str]:
    """Why the ready clone no longer stands for production (empty: it does).

    Reads production's catalog (not its rows) and both ledgers: an artifact production's
    ledger records and the clone's copy of it does not was applied after the copy.
    """
    cfg = ws.cfg
    try:
        source: fingerprint.Fingerprint | None = clone.source_fingerprint(ws, name)
    except OneroofError:
        source = None
    with ws.reader() as session:  # production's hot standby, when there is one
        schema_now = fingerprint.take(session, mode="catalog", **fingerprint.scope(cfg))
        on_production = rollout.applied_artifacts(session, schema=cfg.rollout.ledger_schema)
    with ws.clone(name) as session:
        on_clone = rollout.applied_artifacts(session, schema=cfg.rollout.ledger_schema)
    max_age = age_seconds(cfg.clone.max_age) if cfg.clone.max_age else None
    age = freshness.source_age(source, datetime.now(UTC)) if source is not None else None
    return freshness.refresh_reasons(source, schema_now, on_production - on_clone, age, max_age)


def _isolation_facts(ws: Workspace, name: str) -> dict[str, Any]:
    """Measured on the clone: app-role sessions, disabled triggers, leases."""
    cfg = ws.cfg
    with ws.clone(name) as session:
        # production's own running server (a physical copy elsewhere shares its identifier)
        production_cluster = session.identity.same_instance(ws.production_identity)
        other_major = major_mismatch(session.identity, ws.production_identity)
        raw = session.raw_for_clone
        app_sessions = raw.execute(
            "select count(*) from pg_catalog.pg_stat_activity"
            " where datname = current_database() and usename = any(%s)",
            (list(cfg.guard.app_roles),),
        ).fetchone()
        disabled = raw.execute(
            "select count(*) filter (where tgenabled = 'D'), count(*)"
            " from pg_catalog.pg_trigger where not tgisinternal and tgname like any(%s)",
            (list(cfg.isolation.disable_triggers) or ["-"],),
        ).fetchone()
        leases = None
        if cfg.isolation.leases_counter and cfg.isolation.leases_counter in cfg.counters:
            leases = session.scalar(cfg.counters[cfg.isolation.leases_counter])
    marker = clone.read_marker(ws, name) or {}
    copied = marker.get("copy") or marker.get("golden_copy") or {}
    return {
        # how the clone (or its golden copy) was last copied: file clone, copy, WAL_LOG
        "clone_copy": copied.get("describe"),
        "app_sessions": int(app_sessions[0]) if app_sessions else 0,
        "app_roles": list(cfg.guard.app_roles),
        "triggers_disabled": int(disabled[0]) if disabled else 0,
        "triggers_configured": int(disabled[1]) if disabled else 0,
        "trigger_patterns": list(cfg.isolation.disable_triggers),
        "leases": leases,
        "production_cluster": production_cluster,
        "major_mismatch": other_major,
    }


ACTIVITY_QUERY = (
    "select schemaname::text || '.' || relname::text, n_tup_ins, n_tup_upd, n_tup_del"
    " from pg_catalog.pg_stat_user_tables"
)


def _activity(ws: Workspace) -> dict[str, list[int]]:
    """Rows inserted, updated and deleted per table since the statistics began (all sessions)."""
    with ws.production() as session:
        rows = session.execute(ACTIVITY_QUERY)
    return {str(t): [int(i or 0), int(u or 0), int(d or 0)] for t, i, u, d in rows}


def run(ws: Workspace, *, step: Step | None = None) -> CampaignResult:
    """Run the campaign, judge it and write its report into `.oneroof/reports/<time>/`."""
    cfg, evidence = ws.cfg, ws.evidence
    measured = measure(ws, step=step)
    # the report is judged from the evidence record of the measurements, not from memory:
    # `oneroof report verify` can recompute it, and its figures carry record numbers
    record = provenance.store(evidence, cfg, measured)
    report = provenance.judged(evidence, record)
    directory = cfg.state_dir / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    files = write_all(report, directory)
    provenance.seal(evidence, report, directory, files, record)
    return CampaignResult(report, directory, files)


def measure(ws: Workspace, *, step: Step | None = None) -> Measurements:
    """Every measurement of the campaign, in one pass; nothing is judged here.

    Production is read through the workspace's one shared reader session (plus the dump's
    own sessions when the clone is made, and `--jobs` workers): the count is measured.
    """
    cfg, evidence = ws.cfg, ws.evidence
    say = step or (lambda _message: None)
    started = _now()
    first_seq = evidence.last_seq()
    name = connect.clone_name(cfg)
    before = evidence.latest("campaign")  # the previous report: "since the previous report"
    previous = Previous(before.seq, Report.from_dict(before.payload["report"])) if before else None

    activity_entry = _activity(ws)
    created = False
    refresh = freshness.CloneRefresh(cfg.clone.refresh)
    if _ready_clone(ws, name) is not None:
        refresh.reasons = _refresh_reasons(ws, name)
        if refresh.reasons and cfg.clone.refresh == "auto":
            say(f"clone {name} is out of date: {'; '.join(refresh.reasons)}: re-making it")
            clone.drop(ws, name, step=lambda message: say(f"  {message}"))
            refresh.remade = True
    if _ready_clone(ws, name) is None:
        # on a live production the clone must come from the entry fingerprint's own snapshot
        say(f"clone {name}: create from one snapshot of production (the entry fingerprint)")
        clone.create(ws, name, step=lambda message: say(f"  {message}"))
        created = True
        entry = clone.entry_fingerprint(ws, name)  # an engine's clone: production's own
    else:
        say("entry fingerprint of production")
        entry = fingerprint.of_production(ws)
    fingerprint.save(evidence, entry, label="entry")
    refs = EvidenceRefs(
        entry=provenance.newest(evidence, "fingerprint", first_seq, label="entry", id=entry.id),
        previous=before.seq if before else None,
    )
    with ws.production() as session:
        privileges = session.privileges
        privileged_allowed = session.privileged_allowed
    isolation_before = clone.verify(ws, name)

    results: dict[str, list[suite.RunResult]] = {}
    on_production: dict[str, list[suite.RunResult]] = {}
    rehearsals: dict[str, rollout.Rehearsal] = {}
    applied: dict[str, list[Applied]] = {}
    ledgers: dict[str, list[rollout.LedgerRow]] = {}
    for objective in cfg.objectives:
        if objective.suites:
            say(f"objective {objective.id}: suites on the clone")
            suite_files = suite.load(_suite_paths(cfg, objective))
            results[objective.id] = [
                suite.run(ws, suite_files, target="clone", objective=objective.id)
            ]
            if objective.also_on_production:
                say(f"objective {objective.id}: suites on production (acceptance test)")
                on_production[objective.id] = [
                    suite.run(ws, suite_files, target="production", objective=objective.id)
                ]
        if objective.rollout:
            say(f"objective {objective.id}: rollout rehearsal on the clone")
            plan_path = Path(objective.rollout)
            if not plan_path.is_absolute():
                plan_path = cfg.workspace / plan_path
            plan = rollout.load_plan(plan_path, cfg)
            rehearsal = rollout.rehearse(ws, plan, clone_name=name)
            rehearsals[objective.id] = rehearsal
            ledgers[objective.id] = rollout.status(ws, plan).ledger
            applied[objective.id] = provenance.applied_runs(
                evidence, plan.name, ledgers[objective.id]
            )

    say("gates on production")
    isolation_after = clone.verify(ws, name)
    facts_clone = _isolation_facts(ws, name)
    clone_compliance = compliance.clone_facts(ws, name)
    refs.verifications = [
        r.seq
        for r in evidence.records(clone.JOURNAL, since=first_seq)
        if r.payload.get("event") == "verified" and r.payload.get("name") == name
    ][-2:]
    gate_values = _gate_values(ws, clone_verified=isolation_after.ok)
    production_compliance = compliance.production_facts(ws)

    say("exit fingerprint of production")
    # on a standby: once it replayed what the primary wrote
    exit_fp = fingerprint.of_production(ws, mode=entry.mode)
    fingerprint.save(evidence, exit_fp, label="exit")
    refs.exit = provenance.newest(evidence, "fingerprint", first_seq, label="exit", id=exit_fp.id)
    activity_exit = _activity(ws)

    source: fingerprint.Fingerprint | None = None
    source_error: str | None = None
    try:
        source = clone.source_fingerprint(ws, name)
    except OneroofError as exc:
        source_error = str(exc)
    ready = _ready_clone(ws, name)
    if source is not None:
        label = f"clone-source:{name}"
        refs.clone_source = provenance.newest(
            evidence, "fingerprint", 0, id=source.id, label=label
        ) or provenance.newest(evidence, "fingerprint", 0, id=source.id)
    refs.audit = [first_seq, evidence.last_seq()]
    audit = [
        r
        for r in evidence.records("audit", since=first_seq)
        if r.role == "production" and r.seq <= refs.audit[1]
    ]
    return Measurements(
        started=started,
        finished=_now(),
        clone_name=name,
        entry=entry,
        exit=exit_fp,
        role_user=privileges.user if privileges else "?",
        role_excess=[e.what for e in roles.excess(privileges)] if privileges else [],
        privileged_allowed=privileged_allowed,
        trusted=connect.trust(cfg).describe(),
        clone_created=created,
        isolation_before=isolation_before,
        isolation_after=isolation_after,
        isolation_facts=facts_clone,
        golden=ready.golden if ready is not None else None,
        suites=results,
        production_suites=on_production,
        rehearsals=rehearsals,
        ledgers=ledgers,
        gate_values=gate_values,
        clone_source=source,
        clone_source_error=source_error,
        clone_refresh=refresh,
        audit=audit,
        activity_entry=activity_entry,
        activity_exit=activity_exit,
        expect_unchanged=cfg.production.expect_unchanged,
        # on the primary; a standby's sessions say `server: standby` (verdicts count them)
        production_sessions=sum(
            1 for r in audit if r.sql == "-- connect" and r.payload.get("server") != "standby"
        ),
        dump_sessions=sum(
            int(r.payload.get("jobs", 1)) + 1
            for r in audit
            if r.payload.get("program") == "pg_dump" and r.payload.get("server") != "standby"
        ),
        applied=applied,
        compliance_production=production_compliance,
        compliance_clone=clone_compliance,
        previous=previous,
        refs=refs,
    )


def _gate_values(ws: Workspace, *, clone_verified: bool) -> dict[str, Any]:
    """The values every target gate needs, read from production in one snapshot."""
    parsed = gates.target_gates(ws.cfg)
    names = {name for _, gate in parsed for name in gate.names}
    builtins = {"clone_verified": clone_verified}
    if approvals.BUILTIN in names:
        builtins[approvals.BUILTIN] = approvals.targets_approved(ws)
    with ws.production() as session:
        return gates.read_values(session, ws.cfg, names, builtins=builtins)


def latest_report(evidence: Evidence) -> Report:
    """The report of the newest campaign in the evidence store."""
    record = evidence.latest("campaign")
    if record is None:
        raise NotFound("no campaign has run in this workspace yet: run `oneroof run` first")
    return Report.from_dict(record.payload["report"])
