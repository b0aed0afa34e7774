"""The campaign (`oneroof run`): every proof of the report, measured in one pass.

Entry fingerprint of production → clone create (or verify) → each objective's suites on
the clone (and on production where the objective says so) → rollout rehearsals → gates on
production → clone residue check → exit fingerprint of production → report. Every figure
in the report comes from these measurements; nothing is written into a template.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oneroof import clone, connect, fingerprint, gates, roles, rollout, suite
from oneroof.config import Config, Objective, Target
from oneroof.errors import BadInput, OneroofError
from oneroof.evidence import Evidence
from oneroof.report import FAIL, GO, NO_GO, PASS, Compliance, MatrixRow, Report, Verdict, write_all

Step = Callable[[str], None]

EVIDENCE_NOTE = (
    "A result on the clone is evidence, not authorisation: production changes only through "
    "a gated apply once its gate opens."
)


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


def _format_headline(template: str, values: dict[str, Any]) -> str:
    """Fill `{name}` placeholders from measured values; unknown names stay visible."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    safe = {name: values.get(name, f"{{{name}}}") for name in fields}
    return template.format(**safe)


def _ready_clone(cfg: Config, name: str) -> clone.CloneEntry | None:
    for entry in clone.list_clones(cfg):
        if entry.name == name and entry.role == "clone" and entry.state == "ready":
            return entry
    return None


def _isolation_facts(cfg: Config, evidence: Evidence, name: str) -> dict[str, Any]:
    """Measured on the clone: app-role sessions, disabled triggers, leases."""
    production = connect.production_identity(cfg, evidence)
    with connect.open_clone(cfg, evidence, name, production=production) as session:
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
    return {
        "app_sessions": int(app_sessions[0]) if app_sessions else 0,
        "triggers_disabled": int(disabled[0]) if disabled else 0,
        "triggers_configured": int(disabled[1]) if disabled else 0,
        "leases": leases,
    }


def run(cfg: Config, evidence: Evidence, *, step: Step | None = None) -> CampaignResult:
    """Run the whole campaign and write its report into `.oneroof/reports/<time>/`."""
    say = step or (lambda _message: None)
    started = _now()
    first_seq = evidence.last_seq()
    name = connect.clone_name(cfg)
    notes = [EVIDENCE_NOTE]
    verdicts: list[Verdict] = []

    say("entry fingerprint of production")
    with connect.open_production(cfg, evidence) as session:
        entry = fingerprint.take(
            session,
            mode="full",
            counters=cfg.counters,
            scan_budget_rows=cfg.production.scan_budget_rows,
        )
        role_fact, role_note = _role_facts(session)
    fingerprint.save(evidence, entry, label="entry")
    if role_note:
        notes.append(role_note)
    trusted = connect.trust(cfg).describe()
    if trusted:
        notes.append("Trusted by [guard] beyond the built-ins: " + "; ".join(trusted) + ".")
    notes += list(entry.notes)

    say(f"clone {name}: create or verify")
    created = False
    if _ready_clone(cfg, name) is None:
        clone.create(cfg, evidence, name, step=lambda message: say(f"  {message}"))
        created = True
    isolation_before = clone.verify(cfg, evidence, name)

    results: dict[str, list[Any]] = {}
    on_production: dict[str, list[Any]] = {}
    rehearsals: dict[str, Any] = {}
    ledgers: dict[str, list[rollout.LedgerRow]] = {}
    for objective in cfg.objectives:
        if objective.suites:
            say(f"objective {objective.id}: suites on the clone")
            suite_files = suite.load(_suite_paths(cfg, objective))
            results[objective.id] = [
                suite.run(cfg, evidence, suite_files, target="clone", objective=objective.id)
            ]
            if objective.also_on_production:
                say(f"objective {objective.id}: suites on production (acceptance test)")
                on_production[objective.id] = [
                    suite.run(
                        cfg, evidence, suite_files, target="production", objective=objective.id
                    )
                ]
        if objective.rollout:
            say(f"objective {objective.id}: rollout rehearsal on the clone")
            plan_path = Path(objective.rollout)
            if not plan_path.is_absolute():
                plan_path = cfg.workspace / plan_path
            plan = rollout.load_plan(plan_path, cfg)
            rehearsal = rollout.rehearse(cfg, evidence, plan, clone_name=name)
            rehearsals[objective.id] = (plan, rehearsal)
            ledgers[objective.id] = rollout.status(cfg, evidence, plan).ledger

    say("gates on production")
    isolation_after = clone.verify(cfg, evidence, name)
    facts_clone = _isolation_facts(cfg, evidence, name)
    matrix = _matrix(cfg, evidence, clone_verified=isolation_after.ok)

    say("exit fingerprint of production")
    with connect.open_production(cfg, evidence) as session:
        exit_fp = fingerprint.take(
            session,
            mode=entry.mode,
            counters=cfg.counters,
            scan_budget_rows=cfg.production.scan_budget_rows,
        )
    fingerprint.save(evidence, exit_fp, label="exit")

    freshness = _clone_freshness(cfg, evidence, name, entry)
    if freshness:
        notes.append(freshness)

    compliance = _compliance(evidence, first_seq, entry, exit_fp, results, rehearsals)
    verdicts.append(_safety_verdict(entry, exit_fp, compliance, matrix))
    verdicts.append(_isolation_verdict(isolation_before, isolation_after, facts_clone, name))
    measured = dict(entry.sections.get("counters", {}))
    for objective in cfg.objectives:
        verdicts.append(
            _objective_verdict(
                objective,
                results.get(objective.id, []),
                on_production.get(objective.id, []),
                rehearsals.get(objective.id),
                measured,
                ledgers.get(objective.id, []),
            )
        )
    verdicts.append(_lifecycle_verdict(cfg, name, created, isolation_after))

    final = PASS if all(v.status == PASS for v in verdicts) else FAIL
    advanced = sum(1 for v in verdicts[2:] if v.status == PASS)
    if final == PASS:
        headline = (
            f"{advanced} objectives advanced on an isolated clone; production proven "
            f"{'byte-' if entry.mode == 'full' else ''}unchanged; no forbidden action occurred."
        )
    else:
        failed = [v.objective for v in verdicts if v.status != PASS]
        headline = f"FAILED: {', '.join(failed)}. See the reasons in the verdict table."
    closed = [row for row in matrix if row.status == NO_GO]
    report = Report(
        title=cfg.report.title or f"{cfg.workspace.resolve().name} — Final GO/NO-GO",
        generated_at=_now(),
        final_status=final,
        headline=headline,
        verdicts=verdicts,
        matrix=matrix,
        blockers=[f"{row.target}: {row.blocker or row.gate}" for row in closed],
        next_macros=[f"On gate open ({row.gate}) — {row.next}" for row in closed if row.next],
        compliance=compliance,
        facts={
            "started": started,
            "entry fingerprint": entry.id,
            "exit fingerprint": exit_fp.id,
            "entry WAL": entry.wal,
            "exit WAL": exit_fp.wal,
            "clone": name,
            "production role": role_fact,
            "production": f"{entry.identity.get('database')} on "
            f"{entry.identity.get('host')}:{entry.identity.get('port')}",
            **{f"counter {k}": v for k, v in sorted(measured.items())},
        },
        notes=notes,
    )
    directory = cfg.state_dir / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    files = write_all(report, directory)
    evidence.append("campaign", {"directory": str(directory), "report": report.to_dict()})
    return CampaignResult(report, directory, files)


def _role_facts(session: connect.Session) -> tuple[str, str | None]:
    """The production reader as the report states it, and a warning when it is privileged."""
    privileges = session.privileges
    user = privileges.user if privileges else "?"
    if not session.privileged_allowed or privileges is None:
        return f"{user} (least privilege)", None
    excess = "; ".join(e.what for e in roles.excess(privileges))
    return (
        f"{user} (PRIVILEGED, allowed by [guard] allow_privileged_role)",
        f"Production was read by the privileged role {user} ({excess}), accepted by "
        "[guard] allow_privileged_role = true: only the guard and the read-only "
        "transaction stood between oneroof and production.",
    )


def _clone_freshness(
    cfg: Config, evidence: Evidence, name: str, entry: fingerprint.Fingerprint
) -> str | None:
    """A note when the clone was copied from another state of production than today's."""
    try:
        source = clone.source_fingerprint(cfg, evidence, name)
    except OneroofError as exc:
        return f"The clone's source fingerprint cannot be read ({exc}); its age is unknown."
    differences = fingerprint.diff(source, entry, sections=["counts", "content", "schema"])
    if not differences:
        return None
    tables = sorted({d.key for d in differences})
    shown = ", ".join(tables[:5]) + (f" (+{len(tables) - 5} more)" if len(tables) > 5 else "")
    return (
        f"The clone was copied from production fingerprint {source.short} "
        f"({source.taken_at}); production is now {entry.short}: {len(tables)} object(s) "
        f"differ ({shown}). Rehearsals ran against the older state: `oneroof clone drop` "
        "and run again to rehearse against production as it is now."
    )


def _matrix(cfg: Config, evidence: Evidence, *, clone_verified: bool) -> list[MatrixRow]:
    builtins = {"clone_verified": clone_verified}
    parsed: list[tuple[Target, Any]] = []
    for index, target in enumerate(cfg.targets):
        gate = gates.parse(target.gate, file=cfg.file, line=cfg.line_of("target", index, "gate"))
        parsed.append((target, gate))
    rows = []
    with connect.open_production(cfg, evidence) as session:
        for target, gate in parsed:
            values = gates.read_values(session, cfg, gate.names, builtins=builtins)
            result = gates.evaluate(gate, values)
            rows.append(
                MatrixRow(
                    target=target.name,
                    status=GO if result.holds else NO_GO,
                    gate=target.gate,
                    values=dict(result.values),
                    scope=target.scope,
                    blocker=target.blocker,
                    next=target.next,
                )
            )
    return rows


def _compliance(
    evidence: Evidence,
    first_seq: int,
    entry: fingerprint.Fingerprint,
    exit_fp: fingerprint.Fingerprint,
    results: dict[str, list[Any]],
    rehearsals: dict[str, Any],
) -> Compliance:
    records = [r for r in evidence.records("audit", since=first_seq) if r.role == "production"]
    sent = [r for r in records if r.outcome == "sent"]
    refused = [r for r in records if r.outcome == "refused"]
    executed = [r for r in sent if r.classification not in ("read", "internal")]
    applied = [r for r in records if r.outcome == "apply"]
    residue_free = all(
        result.residue_free is not False for runs in results.values() for result in runs
    ) and all(getattr(r, "residue_free", True) is not False for _, r in rehearsals.values())
    return Compliance(
        statements_sent=len(sent),
        forbidden_attempted=len(refused) + len(executed),
        forbidden_refused=len(refused),
        forbidden_executed=len(executed),
        writes_outside_apply=len(executed),
        applied_statements=len(applied),
        production_unchanged=entry.id == exit_fp.id,
        clone_residue_free=residue_free,
    )


def _safety_verdict(
    entry: fingerprint.Fingerprint,
    exit_fp: fingerprint.Fingerprint,
    compliance: Compliance,
    matrix: list[MatrixRow],
) -> Verdict:
    reasons = []
    if entry.id != exit_fp.id:
        changed = fingerprint.diff(entry, exit_fp)
        reasons.append(
            "production changed during the run: "
            + "; ".join(d.describe() for d in changed[:5])
            + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
        )
    if compliance.forbidden_executed:
        reasons.append(f"{compliance.forbidden_executed} forbidden statement(s) executed")
    parts = [f"entry==exit fingerprint {entry.short}…" if entry.id == exit_fp.id else ""]
    if "counts" in entry.sections and entry.sections.get("counts") == exit_fp.sections.get(
        "counts"
    ):
        parts.append(f"all {len(entry.sections['counts'])} table counts identical")
    if entry.wal and entry.wal == exit_fp.wal:
        parts.append(f"WAL position unchanged ({entry.wal}): the server wrote nothing")
    closed = [row for row in matrix if row.status == NO_GO and row.scope == "production"]
    if closed:
        values = {k: v for row in closed for k, v in row.values.items()}
        shown = ", ".join(f"{k}={_plain(v)}" for k, v in sorted(values.items()))
        parts.append(f"{shown} → {len(closed)} production gate(s) closed")
    return Verdict(
        "Production safety",
        PASS if not reasons else FAIL,
        "; ".join(p for p in parts if p),
        reasons=reasons,
    )


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _isolation_verdict(before: Any, after: Any, facts: dict[str, Any], name: str) -> Verdict:
    reasons = [
        f"{point.name}: {point.detail}"
        for result in (before, after)
        for point in result.points
        if not point.ok
    ]
    reasons = list(dict.fromkeys(reasons))
    parts = [
        f"name-guarded ({name})",
        f"{facts['app_sessions']} app conns",
        f"no dispatch ({facts['triggers_disabled']}/{facts['triggers_configured']} emit "
        "triggers disabled)",
    ]
    if facts.get("leases") is not None:
        parts.append(f"{facts['leases']} leases")
    parts.append("committed state intact" if after.ok else "committed state NOT intact")
    return Verdict(
        "Clone isolation", PASS if not reasons else FAIL, "; ".join(parts), reasons=reasons
    )


def _objective_verdict(
    objective: Objective,
    clone_runs: list[Any],
    production_runs: list[Any],
    rehearsal: Any,
    measured: dict[str, Any],
    ledger: list[rollout.LedgerRow],
) -> Verdict:
    label = f"{objective.id} {objective.title}"
    reasons: list[str] = []
    parts: list[str] = []
    if clone_runs:
        passed = sum(r.passed for r in clone_runs)
        total = sum(r.total for r in clone_runs)
        residue = all(r.residue_free is not False for r in clone_runs)
        parts.append(f"{passed}/{total}")
        parts.append("rollback-only, residue-free" if residue else "RESIDUE left on the clone")
        for run_result in clone_runs:
            reasons += _run_reasons(run_result)
        if not residue:
            reasons.append("residue on the clone after rollback-only work")
    if production_runs:
        passed = sum(r.passed for r in production_runs)
        total = sum(r.total for r in production_runs)
        parts.append(f"= production acceptance test ({passed}/{total} on production)")
        for run_result in production_runs:
            reasons += [f"production: {reason}" for reason in _run_reasons(run_result)]
    if rehearsal is not None:
        plan, result = rehearsal
        parts.append(_rehearsal_headline(plan, result))
        if not result.ok:
            reasons += _rehearsal_reasons(result)
    if ledger:
        parts.append(_ledger_headline(rehearsal[0] if rehearsal else None, ledger))
    if objective.headline:
        parts.append(_format_headline(objective.headline, measured))
    if not clone_runs and rehearsal is None:
        reasons.append("no suite or rollout measured this objective")
    return Verdict(
        label,
        PASS if not reasons else FAIL,
        "; ".join(parts),
        qualifier=objective.qualifier,
        reasons=reasons,
    )


def _run_reasons(result: suite.RunResult) -> list[str]:
    reasons = []
    for file_result in result.files:
        for item in file_result.items:
            status = str(item.status)
            if status in ("passed", "not applicable"):
                continue
            detail = item.message or (
                f"expected {item.expected}, got {item.got}" if status == "failed" else ""
            )
            where = Path(file_result.path).name
            reasons.append(f"{where}: {item.name}: {status} {detail}".strip())
    return reasons[:10]


def _rehearsal_headline(plan: rollout.Plan, result: rollout.Rehearsal) -> str:
    auto = [a.id for a in plan.artifacts if a.auto]
    deltas: list[str] = []
    for run in result.artifacts:
        for table, counts in sorted(run.deltas.items()):
            for sign, kind in rollout.SIGNS.items():
                if counts.get(kind):
                    deltas.append(f"{run.id}: {table} {sign}{counts[kind]}")
    text = (
        f"{len(plan.artifacts)} gated SQL artifacts; gates/deltas/stops; "
        f"post-gate auto-executable set: {' → '.join(auto) or 'none'}"
    )
    if deltas:
        text += f"; rehearsed exactly: {', '.join(deltas)}"
    verdict = "rehearsal OK" if result.ok else "rehearsal FAILED"
    residue = "residue-free" if result.residue_free else "RESIDUE"
    return f"{text}; {verdict}, rolled back, {residue}"


def _ledger_headline(plan: rollout.Plan | None, ledger: list[rollout.LedgerRow]) -> str:
    applied = []
    for row in ledger:
        changes = [
            f"{table} {sign}{counts[kind]}"
            for table, counts in sorted(row.deltas.items())
            for sign, kind in rollout.SIGNS.items()
            if counts.get(kind)
        ]
        applied.append(row.artifact + (f" ({', '.join(changes)})" if changes else ""))
    total = len(plan.artifacts) if plan is not None else len(ledger)
    return f"applied on production {len(ledger)}/{total} (ledger): " + " → ".join(applied)


def _rehearsal_reasons(result: rollout.Rehearsal) -> list[str]:
    reasons = [
        f"{run.id}: {run.status}: {run.reason or '; '.join(run.mismatches) or 'failed'}"
        for run in result.artifacts
        if not run.ok
    ]
    if not result.residue_free:
        reasons.append("residue after the rehearsal: " + ", ".join(result.residue))
    return reasons or ["rehearsal failed"]


def _lifecycle_verdict(
    cfg: Config, name: str, created: bool, verification: clone.CloneVerification
) -> Verdict:
    entry = _ready_clone(cfg, name)
    golden = entry.golden if entry is not None else None
    reasons = [] if verification.ok else ["the clone does not verify"]
    if not golden:
        reasons.append("no golden copy: a reset would need production again")
    headline = (
        f"RETAIN as regression harness ({'created' if created else 'reused'} this run); "
        f"reset from golden copy {golden or '—'} without touching production; "
        "drop/reset/re-clone: oneroof clone drop | reset | create"
    )
    return Verdict("G clone lifecycle", PASS if not reasons else FAIL, headline, reasons=reasons)


def latest_report(evidence: Evidence) -> Report:
    """The report of the newest campaign in the evidence store."""
    record = evidence.latest("campaign")
    if record is None:
        raise BadInput("no campaign has run in this workspace yet: run `oneroof run` first")
    return Report.from_dict(record.payload["report"])
