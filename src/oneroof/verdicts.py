"""Verdicts: the report a campaign's measurements support, decided by a pure function.

`judge(cfg, measurements)` never talks to a database nor reads a file: every figure it
states was measured by `campaign.run`; it only decides PASS or FAIL per objective, GO or
NO-GO per target, the compliance figures and the wording.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneroof import fingerprint, gates
from oneroof.clone import freshness
from oneroof.config import Config, Objective
from oneroof.evidence import Record
from oneroof.report import (
    FAIL,
    GO,
    NO_GO,
    PASS,
    Compliance,
    MatrixRow,
    Report,
    Verdict,
    transactions_line,
)
from oneroof.sqltext import value_text

if TYPE_CHECKING:
    from oneroof.clone import CloneVerification
    from oneroof.measurements import Measurements
    from oneroof.rollout import LedgerRow, Plan, Rehearsal
    from oneroof.suite import RunResult

EVIDENCE_NOTE = (
    "A result on the clone is evidence, not authorisation: production changes only through "
    "a gated apply once its gate opens."
)
SAFETY = "Production safety"
ISOLATION = "Clone isolation"
LIFECYCLE = "G clone lifecycle"
SIGNS = {"+": "inserted", "~": "updated", "-": "deleted"}


def judge(cfg: Config, m: Measurements) -> Report:
    """The report of one campaign, from its measurements alone."""
    results = gates.evaluate_targets(gates.target_gates(cfg), m.gate_values)
    matrix = [
        MatrixRow(
            target=target.name,
            status=GO if result.holds else NO_GO,
            gate=target.gate,
            values=dict(result.values),
            scope=target.scope,
            blocker=target.blocker,
            next=target.next,
        )
        for target, result in results
    ]
    compliance = compliance_of(m.audit, m.entry, m.exit, m.suites, m.rehearsals)
    changes = attribution(m.entry, m.exit, m.activity_entry, m.activity_exit)
    verdicts = [
        safety_verdict(m.entry, m.exit, compliance, matrix, changes, m.expect_unchanged),
        isolation_verdict(m.isolation_before, m.isolation_after, m.isolation_facts, m.clone_name),
    ]
    measured = dict(m.entry.sections.get("counters", {}))
    for objective in cfg.objectives:
        verdicts.append(
            objective_verdict(
                objective,
                m.suites.get(objective.id, []),
                m.production_suites.get(objective.id, []),
                m.rehearsals.get(objective.id),
                measured,
                m.ledgers.get(objective.id, []),
            )
        )
    verdicts.append(lifecycle_verdict(m.golden, m.clone_created, m.isolation_after.ok))
    if changes.schema:
        # the clone and its evidence have the old schema: what they prove is about it
        shown = "; ".join(changes.schema[:3]) + (" …" if len(changes.schema) > 3 else "")
        for v in verdicts[2:-1]:
            v.status = FAIL
            v.reasons.append(
                f"production's schema changed during the run ({shown}): this evidence was "
                "taken on the old schema; run again"
            )

    final = PASS if all(v.status == PASS for v in verdicts) else FAIL
    advanced = sum(1 for v in verdicts[2:] if v.status == PASS)
    if final == PASS:
        byte = "byte-" if m.entry.mode == "full" else ""
        proven = (
            f"production proven {byte}unchanged"
            if m.entry.id == m.exit.id
            else f"oneroof wrote nothing to production ({compliance.transactions} "
            "transactions, none assigned a transaction id) while other sessions wrote to it"
        )
        where = (
            "a clone on production's own cluster"
            if m.isolation_facts.get("production_cluster")
            else "an isolated clone"
        )
        headline = (
            f"{advanced} objective{'s' if advanced != 1 else ''} advanced on {where}; "
            f"{proven}; no forbidden action occurred."
        )
    else:
        failed = [v.objective for v in verdicts if v.status != PASS]
        headline = f"FAILED: {', '.join(failed)}. See the reasons in the verdict table."
    closed = [row for row in matrix if row.status == NO_GO]
    notes = [EVIDENCE_NOTE]
    if changes.tables or changes.schema:
        notes.insert(0, "Production changed during the run, by other sessions: " + changes.text())
    role_fact, role_note = role_facts(m.role_user, m.role_excess, m.privileged_allowed)
    if role_note:
        notes.append(role_note)
    if m.trusted:
        notes.append("Trusted by [guard] beyond the built-ins: " + "; ".join(m.trusted) + ".")
    if m.isolation_facts.get("major_mismatch"):
        notes.append(str(m.isolation_facts["major_mismatch"]).capitalize() + ".")
    notes += list(m.entry.notes)
    refreshed = m.clone_refresh.note()
    if refreshed:
        notes.append(refreshed)
    freshness = freshness_note(m.clone_source, m.clone_source_error, m.entry)
    if freshness:
        notes.append(freshness)
    return Report(
        title=cfg.report.title or f"{cfg.workspace.resolve().name} — Final GO/NO-GO",
        generated_at=m.finished,
        final_status=final,
        headline=headline,
        verdicts=verdicts,
        matrix=matrix,
        blockers=[f"{row.target}: {row.blocker or row.gate}" for row in closed],
        next_macros=[f"On gate open ({row.gate}) — {row.next}" for row in closed if row.next],
        compliance=compliance,
        facts={
            "started": m.started,
            "entry fingerprint": m.entry.id,
            "exit fingerprint": m.exit.id,
            "entry WAL": m.entry.wal,
            "exit WAL": m.exit.wal,
            "clone": m.clone_name,
            "production role": role_fact,
            "production sessions": f"{m.production_sessions} guarded"
            + (f" + {m.dump_sessions} of pg_dump" if m.dump_sessions else ""),
            "production": f"{m.entry.identity.get('database')} on "
            f"{m.entry.identity.get('host')}:{m.entry.identity.get('port')}",
            **{f"counter {k}": v for k, v in sorted(measured.items())},
        },
        notes=notes,
    )


def format_headline(template: str, values: dict[str, Any]) -> str:
    """Fill `{name}` placeholders from measured values; unknown names stay visible."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    safe = {name: values.get(name, f"{{{name}}}") for name in fields}
    return template.format(**safe)


def role_facts(user: str, excess: Sequence[str], allowed: bool) -> tuple[str, str | None]:
    """The production reader as the report states it, and a warning when it is privileged."""
    if not allowed:
        return f"{user} (least privilege)", None
    return (
        f"{user} (PRIVILEGED, allowed by [guard] allow_privileged_role)",
        f"Production was read by the privileged role {user} ({'; '.join(excess)}), accepted "
        "by [guard] allow_privileged_role = true: only the guard and the read-only "
        "transaction stood between oneroof and production.",
    )


def freshness_note(
    source: fingerprint.Fingerprint | None, error: str | None, entry: fingerprint.Fingerprint
) -> str | None:
    """A note when the clone was copied from another state of production than today's.

    Rows applications changed since are expected on a live production and said as such;
    a changed schema is the clone refresh's to report (`CloneRefresh.note`).
    """
    if source is None:
        if error is None:
            return None
        return f"The clone's source fingerprint cannot be read ({error}); its age is unknown."
    age = None
    with contextlib.suppress(ValueError):
        age = freshness.source_age(source, datetime.fromisoformat(entry.taken_at))
    return freshness.data_drift(source, entry, age)


def compliance_of(
    audit: Sequence[Record],
    entry: fingerprint.Fingerprint,
    exit_fp: fingerprint.Fingerprint,
    suites: dict[str, list[RunResult]],
    rehearsals: dict[str, tuple[Plan, Rehearsal]],
) -> Compliance:
    """Forbidden-action accounting from the production audit records of the run."""
    records = [r for r in audit if r.role == "production"]
    sent = [r for r in records if r.outcome == "sent"]
    refused = [r for r in records if r.outcome == "refused"]
    executed = [r for r in sent if r.classification not in ("read", "internal")]
    applied = [r for r in records if r.outcome == "apply"]
    residue_free = all(
        result.residue_free is not False for runs in suites.values() for result in runs
    ) and all(r.residue_free is not False for _, r in rehearsals.values())
    proofs = [r for r in records if r.payload.get("proof") and not r.payload.get("apply")]
    return Compliance(
        statements_sent=len(sent),
        forbidden_attempted=len(refused) + len(executed),
        forbidden_refused=len(refused),
        forbidden_executed=len(executed),
        writes_outside_apply=len(executed),
        applied_statements=len(applied),
        production_unchanged=entry.id == exit_fp.id,
        clone_residue_free=residue_free,
        transactions=len(proofs),
        transactions_with_xid=sum(1 for r in proofs if r.payload.get("xid") is not None),
        transactions_unproven=sum(1 for r in proofs if not r.payload.get("proven")),
    )


def safety_verdict(
    entry: fingerprint.Fingerprint,
    exit_fp: fingerprint.Fingerprint,
    compliance: Compliance,
    matrix: list[MatrixRow],
    changes: Attribution | None = None,
    expect_unchanged: bool = False,
) -> Verdict:
    """PASS when oneroof wrote nothing and the guard let nothing through.

    Other sessions may write to a live production meanwhile: their changes are named, and
    they fail the verdict only under `expect_unchanged` (a frozen production).
    """
    changes = changes or Attribution([], [])
    reasons = []
    unchanged = entry.id == exit_fp.id
    if not unchanged and expect_unchanged:
        changed = fingerprint.diff(entry, exit_fp)
        reasons.append(
            "production changed during the run, and [production] expect_unchanged says it "
            "must not: "
            + "; ".join(d.describe() for d in changed[:5])
            + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
        )
    if compliance.forbidden_executed:
        reasons.append(f"{compliance.forbidden_executed} forbidden statement(s) executed")
    if compliance.transactions_with_xid:
        reasons.append(transactions_line(compliance))
    parts = []
    if unchanged:
        parts.append(f"entry==exit fingerprint {entry.short}…")
        counts = entry.sections.get("counts")
        if counts is not None:
            parts.append(f"all {len(counts)} table counts identical")
    parts.append(
        f"{compliance.transactions} production transactions, none assigned a transaction id"
        if not compliance.transactions_with_xid
        else transactions_line(compliance)
    )
    if not unchanged:
        parts.append(
            "production changed by other sessions during the run: "
            + (changes.text() or "see the fingerprint difference")
        )
    closed = [row for row in matrix if row.status == NO_GO and row.scope == "production"]
    if closed:
        values = {k: v for row in closed for k, v in row.values.items()}
        shown = ", ".join(f"{k}={value_text(v)}" for k, v in sorted(values.items()))
        parts.append(f"{shown} → {len(closed)} production gate(s) closed")
    return Verdict(SAFETY, PASS if not reasons else FAIL, "; ".join(parts), reasons=reasons)


@dataclass
class Attribution:
    """What other sessions changed on production during a run, per table, and in its schema."""

    tables: list[str]
    schema: list[str]

    def text(self) -> str:
        shown = self.tables[:8] + (
            [f"(+{len(self.tables) - 8} more)"] if len(self.tables) > 8 else []
        )
        return ", ".join(shown + ([f"schema: {'; '.join(self.schema[:3])}"] if self.schema else []))


def attribution(
    entry: fingerprint.Fingerprint,
    exit_fp: fingerprint.Fingerprint,
    activity_entry: dict[str, list[int]],
    activity_exit: dict[str, list[int]],
) -> Attribution:
    """Per table, the rows others inserted, updated and deleted (the statistics' counters
    between entry and exit) and what the fingerprints tell apart; the schema changes."""
    if entry.id == exit_fp.id:
        return Attribution([], [])
    differences = fingerprint.diff(entry, exit_fp)
    changed = {d.key for d in differences if d.section in ("counts", "content")}
    sequences = sorted(d.key for d in differences if d.section == "sequences")
    schema = [d.describe() for d in differences if d.section == "schema"]
    tables = []
    for table in sorted(changed | set(activity_exit)):
        before = activity_entry.get(table, [0, 0, 0])
        after = activity_exit.get(table, before)
        inserted, updated, deleted = (max(0, b - a) for a, b in zip(before, after, strict=True))
        words = []
        if inserted or deleted:
            rows = "/".join(
                p
                for p in (f"+{inserted}" if inserted else "", f"−{deleted}" if deleted else "")
                if p
            )
            words.append(f"{rows} rows")
        if updated:
            words.append(f"{updated} update{'s' if updated != 1 else ''}")
        if not words and table in changed:
            words.append("content changed")
        if words:
            tables.append(f"{table} {', '.join(words)}")
    tables += [f"sequence {name} moved" for name in sequences]
    return Attribution(tables, schema)


def isolation_verdict(
    before: CloneVerification, after: CloneVerification, facts: dict[str, Any], name: str
) -> Verdict:
    """The clone's isolation, worded from what the workspace configures."""
    reasons = [
        f"{point.name}: {point.detail}"
        for result in (before, after)
        for point in result.points
        if not point.ok
    ]
    reasons = list(dict.fromkeys(reasons))
    parts = [f"name-guarded ({name})"]
    if facts.get("app_roles", True):
        parts.append(f"{facts['app_sessions']} app conns")
    if facts.get("trigger_patterns", True):
        parts.append(
            f"no dispatch ({facts['triggers_disabled']}/{facts['triggers_configured']} "
            "emit triggers disabled)"
        )
    if facts.get("leases") is not None:
        parts.append(f"{facts['leases']} leases")
    parts.append("committed state intact" if after.ok else "committed state NOT intact")
    masked = next((p for p in after.points if p.name == "masking"), None)
    if masked is not None:  # [masking]: the clone's own proof, from `clone verify`
        present = masked.data.get("present", "?") if masked.ok else "some"
        proven = "" if masked.data.get("proven", True) else " (not all checked)"
        parts.append(
            f"{masked.data.get('masked', '?')} columns masked, {present} production values "
            f"present{proven}"
        )
    qualifier = None
    if facts.get("production_cluster"):
        # allowed by [clone] allow_production_cluster: a caveat, never "isolated"
        parts.insert(0, "NOT isolated from production's cluster (the clone lives on it)")
        qualifier = "on production's cluster"
    return Verdict(
        ISOLATION,
        PASS if not reasons else FAIL,
        "; ".join(parts),
        qualifier=qualifier,
        reasons=reasons,
    )


def objective_verdict(
    objective: Objective,
    clone_runs: list[RunResult],
    production_runs: list[RunResult],
    rehearsal: tuple[Plan, Rehearsal] | None,
    measured: dict[str, Any],
    ledger: list[LedgerRow],
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
            reasons += run_reasons(run_result)
        if not residue:
            reasons.append("residue on the clone after rollback-only work")
    if production_runs:
        passed = sum(r.passed for r in production_runs)
        total = sum(r.total for r in production_runs)
        parts.append(f"= production acceptance test ({passed}/{total} on production)")
        for run_result in production_runs:
            reasons += [f"production: {reason}" for reason in run_reasons(run_result)]
    if rehearsal is not None:
        plan, result = rehearsal
        parts.append(rehearsal_headline(plan, result))
        if not result.ok:
            reasons += rehearsal_reasons(result)
    if ledger:
        parts.append(ledger_headline(rehearsal[0] if rehearsal else None, ledger))
    if objective.headline:
        parts.append(format_headline(objective.headline, measured))
    if not clone_runs and rehearsal is None:
        reasons.append("no suite or rollout measured this objective")
    return Verdict(
        label,
        PASS if not reasons else FAIL,
        "; ".join(parts),
        qualifier=objective.qualifier,
        reasons=reasons,
    )


def run_reasons(result: RunResult) -> list[str]:
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


def _delta_text(table: str, counts: dict[str, int]) -> list[str]:
    return [f"{table} {sign}{counts[kind]}" for sign, kind in SIGNS.items() if counts.get(kind)]


def rehearsal_headline(plan: Plan, result: Rehearsal) -> str:
    auto = [a.id for a in plan.artifacts if a.auto]
    deltas = [
        f"{run.id}: {text}"
        for run in result.artifacts
        for table, counts in sorted(run.deltas.items())
        for text in _delta_text(table, counts)
    ]
    text = (
        f"{len(plan.artifacts)} gated SQL artifacts; gates/deltas/stops; "
        f"post-gate auto-executable set: {' → '.join(auto) or 'none'}"
    )
    if deltas:
        text += f"; rehearsed exactly: {', '.join(deltas)}"
    verdict = "rehearsal OK" if result.ok else "rehearsal FAILED"
    residue = "residue-free" if result.residue_free else "RESIDUE"
    return f"{text}; {verdict}, rolled back, {residue}"


def ledger_headline(plan: Plan | None, ledger: list[LedgerRow]) -> str:
    applied = []
    for row in ledger:
        changes = [
            text
            for table, counts in sorted(row.deltas.items())
            for text in _delta_text(table, counts)
        ]
        applied.append(row.artifact + (f" ({', '.join(changes)})" if changes else ""))
    total = len(plan.artifacts) if plan is not None else len(ledger)
    text = f"applied on production {len(ledger)}/{total} (ledger): " + " → ".join(applied)
    # who approved which digest, and when: the signers each ledger row recorded
    approved: dict[str, list[str]] = {}
    for row in ledger:
        if row.digest and row.signers:
            approved.setdefault(row.digest, [])
            for s in row.signers:
                who = f"{s.get('signer')} ({s.get('level')}, {s.get('signed_at')})"
                if who not in approved[row.digest]:
                    approved[row.digest].append(who)
    for digest, signers in approved.items():
        text += f"; approved digest {digest[:12]}… by {', '.join(signers)}"
    return text


def rehearsal_reasons(result: Rehearsal) -> list[str]:
    reasons = [
        f"{run.id}: {run.status}: {run.reason or '; '.join(run.mismatches) or 'failed'}"
        for run in result.artifacts
        if not run.ok
    ]
    if not result.residue_free:
        reasons.append("residue after the rehearsal: " + ", ".join(result.residue))
    return reasons or ["rehearsal failed"]


def lifecycle_verdict(golden: str | None, created: bool, verified: bool) -> Verdict:
    reasons = [] if verified else ["the clone does not verify"]
    if not golden:
        reasons.append("no golden copy: a reset would need production again")
    headline = (
        f"RETAIN as regression harness ({'created' if created else 'reused'} this run); "
        f"reset from golden copy {golden or '—'} without touching production; "
        "drop/reset/re-clone: oneroof clone drop | reset | create"
    )
    return Verdict(LIFECYCLE, PASS if not reasons else FAIL, headline, reasons=reasons)
