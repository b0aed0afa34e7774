"""Verdicts: the report a campaign's measurements support, decided by a pure function.

`judge(cfg, measurements)` never talks to a database nor reads a file: every figure it
states was measured by `campaign.run`; it only decides PASS or FAIL per objective, GO or
NO-GO per target, the compliance figures and the wording.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
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
    Blocker,
    Compliance,
    ComplianceLine,
    CounterRow,
    MatrixRow,
    Report,
    Since,
    Verdict,
    short,
    transactions_line,
)
from oneroof.sqltext import value_text

if TYPE_CHECKING:
    from oneroof.clone import CloneVerification
    from oneroof.measurements import Measurements
    from oneroof.rollout import ArtifactRun, LedgerRow, Rehearsal
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
    refs = m.refs
    here = [refs.measurements] if refs.measurements is not None else []
    prints = [s for s in (refs.entry, refs.exit) if s is not None]
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
            after=list(target.after),
            evidence=here,
        )
        for target, result in results
    ]
    changes = attribution(m.entry, m.exit, m.activity_entry, m.activity_exit)
    compliance = compliance_of(m.audit, m.entry, m.exit, m.suites, m.rehearsals)
    compliance.lines = compliance_lines(cfg, m, others=changes.text())
    verdicts = [
        safety_verdict(m.entry, m.exit, compliance, matrix, changes, m.expect_unchanged),
        isolation_verdict(m.isolation_before, m.isolation_after, m.isolation_facts, m.clone_name),
    ]
    verdicts[0].evidence = sorted(set(prints + compliance.lines[0].evidence))
    verdicts[1].evidence = here + refs.verifications
    violations(verdicts[0], verdicts[1], compliance.lines)
    measured = dict(m.entry.sections.get("counters", {}))
    for objective in cfg.objectives:
        rehearsal = m.rehearsals.get(objective.id)
        applied = m.applied.get(objective.id, [])
        verdict = objective_verdict(
            objective,
            m.suites.get(objective.id, []),
            m.production_suites.get(objective.id, []),
            rehearsal,
            {**measured, **artifact_values(m)},
            m.ledgers.get(objective.id, []),
        )
        verdict.evidence = sorted(
            {
                *(r.evidence_seq for r in m.suites.get(objective.id, []) if r.evidence_seq),
                *(
                    r.evidence_seq
                    for r in m.production_suites.get(objective.id, [])
                    if r.evidence_seq
                ),
                *([rehearsal.record] if rehearsal is not None and rehearsal.record else []),
                *(a.seq for a in applied),
                *(here if m.ledgers.get(objective.id) else []),
                *(prints[:1] if objective.headline else []),
            }
        )
        verdicts.append(verdict)
    lifecycle = lifecycle_verdict(m.golden, m.clone_created, m.isolation_after.ok)
    lifecycle.evidence = here + refs.verifications[-1:]
    verdicts.append(lifecycle)
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
    previous = m.previous.report if m.previous is not None else None
    blockers = blocker_graph(matrix, previous)
    for blocker in blockers:
        blocker.evidence = here
    closed = {row.target: row for row in matrix if row.status == NO_GO}
    order = [b.target for b in blockers] + [
        name for b in blockers for name in b.waiting if name not in {x.target for x in blockers}
    ]
    order += [name for name in closed if name not in order]
    values = {**measured, **artifact_values(m)}
    next_macros = [
        f"On gate open ({closed[name].gate}) — {format_headline(closed[name].next, values)}"
        for name in dict.fromkeys(order)
        if closed[name].next
    ]

    warnings: list[str] = []
    notes: list[str] = []
    if changes.tables or changes.schema:
        warnings.append("Production changed during the run, by other sessions: " + changes.text())
    role_fact, role_note = role_facts(m.role_user, m.role_excess, m.privileged_allowed)
    if role_note:
        warnings.append(role_note)
    if m.trusted:
        warnings.append("Trusted by [guard] beyond the built-ins: " + "; ".join(m.trusted) + ".")
    if m.isolation_facts.get("major_mismatch"):
        warnings.append(str(m.isolation_facts["major_mismatch"]).capitalize() + ".")
    warnings += list(m.entry.notes) + [n for n in m.exit.notes if n not in m.entry.notes]
    refreshed = m.clone_refresh.note()
    if refreshed:
        (notes if m.clone_refresh.remade else warnings).append(refreshed)
    freshness_text = freshness_note(m.clone_source, m.clone_source_error, m.entry)
    if freshness_text:
        warnings.append(freshness_text)
    failing = [line.title for line in compliance.lines if not line.ok]
    if failing:
        warnings.insert(0, "Forbidden-action compliance does not hold: " + "; ".join(failing))
    notes.append(EVIDENCE_NOTE)

    counters = [
        CounterRow(name, value, cfg.counter_descriptions.get(name, ""), prints[:1])
        for name, value in sorted(measured.items())
    ]
    facts: dict[str, Any] = {
        "started": m.started,
        "entry fingerprint": short(m.entry.id),
        "exit fingerprint": short(m.exit.id),
        "entry WAL": m.entry.wal,
        "exit WAL": m.exit.wal,
        "clone": m.clone_name,
        "production role": role_fact,
        "production sessions": f"{m.production_sessions} guarded"
        + (f" + {m.dump_sessions} of pg_dump" if m.dump_sessions else ""),
        "production": f"{m.entry.identity.get('database')} on "
        f"{m.entry.identity.get('host')}:{m.entry.identity.get('port')}",
        **reads_facts(m.audit, m.entry, m.exit, cfg.production.max_snapshot_seconds),
        **(
            {"clone copy": str(m.isolation_facts["clone_copy"])}
            if m.isolation_facts.get("clone_copy")
            else {}
        ),
    }
    fact_evidence = {
        "entry fingerprint": prints[:1],
        "exit fingerprint": prints[1:],
        "entry WAL": prints[:1],
        "exit WAL": prints[1:],
    }
    fingerprints = {"entry": m.entry.id, "exit": m.exit.id}
    if m.clone_source is not None:
        fingerprints["clone source"] = m.clone_source.id
    ledger = [f"{row.plan}/{row.artifact}" for rows in m.ledgers.values() for row in rows]
    report = Report(
        title=cfg.report.title or f"{cfg.workspace.resolve().name} — Final GO/NO-GO",
        generated_at=m.finished,
        final_status=final,
        headline=headline,
        verdicts=verdicts,
        matrix=matrix,
        blockers=blockers,
        next_macros=next_macros,
        compliance=compliance,
        facts=facts,
        notes=notes,
        warnings=warnings,
        counters=counters,
        fingerprints=fingerprints,
        fact_evidence={k: v for k, v in fact_evidence.items() if v},
        ledger=ledger,
        evidence=here,
    )
    if m.previous is not None:
        report.since = since(report, m.previous.report, m.previous.seq, m.ledgers)
    return report


def compliance_lines(cfg: Config, m: Measurements, *, others: str = "") -> list[ComplianceLine]:
    """Every forbidden-action category, measured (oneroof.compliance)."""
    from oneroof import compliance

    return compliance.lines(cfg, m, others=others)


def violations(safety: Verdict, isolation: Verdict, lines: Sequence[ComplianceLine]) -> None:
    """A category that does not hold fails the verdict it belongs to: the clone's
    categories Clone isolation, the others Production safety. A forbidden action (or one
    not measured) never leaves the final status PASS."""
    from oneroof.compliance import ON_CLONE

    for line in lines:
        if not line.ok:
            verdict = isolation if line.name in ON_CLONE else safety
            verdict.status = FAIL
            verdict.reasons.append(f"forbidden-action compliance: {line.title}: {line.measured}")
            verdict.evidence = sorted({*verdict.evidence, *line.evidence})


def artifact_values(m: Measurements) -> dict[str, Any]:
    """`name@ARTIFACT` → the value that artifact read: its apply on production, else its
    rehearsal on the clone (its gates, its result's first row, its stops, in that order)."""
    values: dict[str, Any] = {}

    def take(run: ArtifactRun) -> None:
        read: dict[str, Any] = {}
        for gate in run.gates:
            read.update(gate.values)
        if run.columns and run.rows:
            read.update(zip(run.columns, run.rows[0], strict=False))
        for stop in run.stops:
            read.update(stop.values)
        values.update({f"{name}@{run.id}": value for name, value in read.items()})

    for rehearsal in m.rehearsals.values():
        for run in rehearsal.artifacts:
            take(run)
    for runs in m.applied.values():
        for applied in runs:
            take(applied.run)
    return values


def blocker_graph(matrix: Sequence[MatrixRow], previous: Report | None = None) -> list[Blocker]:
    """The root blockers: closed gates not downstream (through `after`) of another closed
    gate, each with the closed targets waiting behind it and what changed since `previous`.

    Pure; `previous` is judged with this matrix's `after` relations.
    """
    after = {row.target: list(row.after) for row in matrix}

    def upstream(name: str) -> set[str]:
        found: set[str] = set()
        stack = list(after.get(name, []))
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(after.get(current, []))
        return found

    def roots(statuses: dict[str, str]) -> list[str]:
        closed = [name for name, status in statuses.items() if status == NO_GO]
        return [n for n in closed if not any(statuses.get(u) == NO_GO for u in upstream(n))]

    now = {row.target: row.status for row in matrix}
    before = {row.target: row.status for row in previous.matrix} if previous else {}
    before_values = {row.target: row.values for row in previous.matrix} if previous else {}
    before_roots = roots(before) if previous else []
    rows = {row.target: row for row in matrix}
    result = []
    for name in roots(now):
        row = rows[name]
        waiting = [n for n in rows if now[n] == NO_GO and name in upstream(n)]
        change = ""
        if previous is not None:
            if name not in before:
                change = "new target since the previous report"
            elif name in before_roots:
                moved = [
                    f"{k} {value_text(before_values[name].get(k))} → {value_text(v)}"
                    for k, v in sorted(row.values.items())
                    if before_values[name].get(k) != v
                ]
                change = "unchanged" if not moved else "still closed; " + ", ".join(moved)
            elif before[name] == NO_GO:
                opened = [u for u in upstream(name) if before.get(u) == NO_GO]
                change = f"now the root: {', '.join(opened)}, which it waited on, opened"
            else:
                change = "new: its gate closed since the previous report"
        result.append(
            Blocker(
                target=name,
                blocker=row.blocker or row.gate,
                gate=row.gate,
                values=dict(row.values),
                waiting=waiting,
                change=change,
            )
        )
    return result


def since(report: Report, previous: Report, seq: int, ledgers: dict[str, list[LedgerRow]]) -> Since:
    """What changed between the previous report and this one (pure)."""
    before: dict[str, Any] = {}
    if previous.counters:
        before = {row.name: row.value for row in previous.counters}
    else:  # a report of an older version: its counters were facts
        before = {
            k.removeprefix("counter "): v
            for k, v in previous.facts.items()
            if k.startswith("counter ")
        }
    changed, unchanged = _compared(before, {row.name: row.value for row in report.counters})
    counted = {row.name for row in report.counters}
    gates_changed, gates_unchanged = _compared(
        {k: v for row in previous.matrix for k, v in row.values.items()},
        {k: v for row in report.matrix for k, v in row.values.items() if k not in counted},
    )
    statuses = {row.target: row.status for row in previous.matrix}
    targets = [
        [row.target, statuses[row.target], row.status]
        for row in report.matrix
        if row.target in statuses and statuses[row.target] != row.status
    ]
    if previous.ledger is not None:
        applied = [entry for entry in report.ledger or [] if entry not in previous.ledger]
    else:  # an older report did not list its ledger: entries applied after it was made
        applied = [
            f"{row.plan}/{row.artifact}"
            for rows in ledgers.values()
            for row in rows
            if row.applied_at > previous.generated_at
        ]
    then = [dataclasses.replace(row, status=statuses.get(row.target, GO)) for row in report.matrix]
    before_roots = {b.target for b in blocker_graph(then)}
    now_roots = {b.target for b in report.blockers}
    return Since(
        report=previous.id or f"campaign record #{seq}",
        generated_at=previous.generated_at,
        final_status=previous.final_status,
        counters=changed,
        unchanged_counters=unchanged,
        gate_values=gates_changed,
        unchanged_gate_values=gates_unchanged,
        targets=targets,
        unchanged_targets=sum(1 for row in report.matrix if statuses.get(row.target) == row.status),
        applied=applied,
        blockers_opened=sorted(now_roots - before_roots),
        blockers_closed=sorted(before_roots - now_roots),
        blockers_unchanged=sorted(now_roots & before_roots),
        evidence=[seq],
    )


def _compared(before: dict[str, Any], now: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    """([name, before, now] of what changed, names of what did not), over the names both
    sides measured, in the order of `now`."""
    common = [name for name in now if name in before]
    changed = [[name, before[name], now[name]] for name in common if before[name] != now[name]]
    return changed, [name for name in common if before[name] == now[name]]


def reads_facts(
    audit: Sequence[Record],
    entry: fingerprint.Fingerprint,
    exit_fp: fingerprint.Fingerprint,
    max_snapshot_seconds: float | None,
) -> dict[str, str]:
    """What the report states of oneroof's reads of production — pure, from the audit log.

    The longest snapshot one of its production transactions held (the dump's lasts as long
    as pg_dump), the longest its ACCESS SHARE locks were held (from the first read of a
    transaction to its end), and, when it read a hot standby, where and at which positions.
    """
    ends = [r for r in audit if r.payload.get("proof") and "seconds" in r.payload]
    facts: dict[str, str] = {}
    if ends:
        longest = max(ends, key=lambda r: float(r.payload["seconds"]))
        where = " on the standby" if longest.payload.get("server") == "standby" else ""
        limit = (
            f" (max_snapshot_seconds = {max_snapshot_seconds:g})" if max_snapshot_seconds else ""
        )
        facts["longest production snapshot"] = (
            f"{float(longest.payload['seconds']):.2f} s{where}{limit}"
        )
        lock = max(float(r.payload.get("lock_seconds") or 0) for r in ends)
        facts["longest production lock"] = f"ACCESS SHARE for {lock:.2f} s"
    if entry.standby or exit_fp.standby:
        connects = sum(
            1 for r in audit if r.sql == "-- connect" and r.payload.get("server") == "standby"
        )
        dumps = sum(
            int(r.payload.get("jobs", 1)) + 1
            for r in audit
            if r.payload.get("program") == "pg_dump" and r.payload.get("server") == "standby"
        )
        standby = entry.standby or exit_fp.standby

        def position(fp: fingerprint.Fingerprint) -> str:
            if not fp.standby:
                return "read on the primary"
            return (
                f"replayed {fp.standby.get('replay_lsn')} (primary {fp.standby.get('primary_lsn')})"
            )

        facts["read from standby"] = (
            f"{standby.get('host')}:{standby.get('port')}: {connects} guarded session(s)"
            + (f" + {dumps} of pg_dump" if dumps else "")
            + f"; entry {position(entry)}, exit {position(exit_fp)}"
        )
    return facts


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:@[A-Za-z0-9_.\-]+)?)\}")


def format_headline(template: str, values: dict[str, Any]) -> str:
    """Fill `{name}` and `{name@ARTIFACT}` placeholders from measured values.

    `{name}` is the counter at entry; `{name@ARTIFACT}` the value that artifact read
    (`artifact_values`). An unknown name stays visible as it was written.
    """
    return _PLACEHOLDER.sub(
        lambda m: value_text(values[m.group(1)]) if m.group(1) in values else m.group(0),
        template,
    )


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
    rehearsals: dict[str, Rehearsal],
) -> Compliance:
    """Forbidden-action accounting from the production audit records of the run."""
    records = [r for r in audit if r.role == "production"]
    sent = [r for r in records if r.outcome == "sent"]
    refused = [r for r in records if r.outcome == "refused"]
    executed = [r for r in sent if r.classification not in ("read", "internal")]
    applied = [r for r in records if r.outcome == "apply"]
    residue_free = all(
        result.residue_free is not False for runs in suites.values() for result in runs
    ) and all(r.residue_free is not False for r in rehearsals.values())
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
    rehearsal: Rehearsal | None,
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
        parts.append(rehearsal_headline(rehearsal))
        if not rehearsal.ok:
            reasons += rehearsal_reasons(rehearsal)
    if ledger:
        parts.append(ledger_headline(len(rehearsal.artifacts) if rehearsal else None, ledger))
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


def rehearsal_headline(result: Rehearsal) -> str:
    """The rehearsal of a plan (it runs, or accounts for, every artifact of the plan)."""
    auto = [a.id for a in result.artifacts if a.auto]
    deltas = [
        f"{run.id}: {text}"
        for run in result.artifacts
        for table, counts in sorted(run.deltas.items())
        for text in _delta_text(table, counts)
    ]
    text = (
        f"{len(result.artifacts)} gated SQL artifacts; gates/deltas/stops; "
        f"post-gate auto-executable set: {' → '.join(auto) or 'none'}"
    )
    if deltas:
        text += f"; rehearsed exactly: {', '.join(deltas)}"
    if result.forecasts:
        text += f"; {result.forecast_headline()}"
    verdict = "rehearsal OK" if result.ok else "rehearsal FAILED"
    residue = "residue-free" if result.residue_free else "RESIDUE"
    undone = "reset from the golden copy" if result.mode.startswith("committed") else "rolled back"
    return f"{text}; {verdict}, {undone}, {residue}"


def ledger_headline(artifacts: int | None, ledger: list[LedgerRow]) -> str:
    applied = []
    for row in ledger:
        changes = [
            text
            for table, counts in sorted(row.deltas.items())
            for text in _delta_text(table, counts)
        ]
        if row.forecast_text():
            changes.append(row.forecast_text())
        applied.append(row.artifact + (f" ({', '.join(changes)})" if changes else ""))
    total = artifacts if artifacts is not None else len(ledger)
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
