"""What one campaign measured: the only input of `verdicts.judge`, and its evidence record.

`to_record` writes the measurements as one evidence record (kind `measurements`) that
refers to the records the campaign already stored — fingerprints, suite runs, rehearsals,
applies, the audit log — by their sequence numbers, and holds the rest (gate values, the
ledger, the clone's verification, compliance facts) itself. `from_record` rebuilds the
`Measurements` from those records alone: the report is judged from what the evidence store
holds, so `oneroof report verify` can recompute it, and an edited record shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from oneroof.clone import CloneVerification, Point
from oneroof.clone.freshness import CloneRefresh
from oneroof.errors import BadInput
from oneroof.evidence import Record
from oneroof.fingerprint import Fingerprint
from oneroof.gates import GateResult
from oneroof.report import Report
from oneroof.residue import Residue
from oneroof.rollout import ArtifactRun, LedgerRow, Rehearsal
from oneroof.rollout.forecast import Forecast
from oneroof.rollout.rehearsal import ROLLED_BACK
from oneroof.suite import FileResult, ItemResult, RunResult, Status

KIND = "measurements"


@dataclass
class Applied:
    """An artifact applied on production, as the evidence record of its apply holds it."""

    seq: int
    run: ArtifactRun


@dataclass
class Previous:
    """The workspace's previous campaign: its record and its report."""

    seq: int
    report: Report


@dataclass
class EvidenceRefs:
    """Where the measurements' evidence is: record numbers in the evidence store."""

    measurements: int | None = None  # the record of these measurements, once stored
    entry: int | None = None
    exit: int | None = None
    clone_source: int | None = None
    verifications: list[int] = field(default_factory=list)  # `clone verify` journal records
    audit: list[int] = field(default_factory=lambda: [0, 0])  # the run's audit: (first, last]
    previous: int | None = None  # the previous campaign's record


@dataclass
class Measurements:
    """Everything one campaign measured, for `verdicts.judge` to decide on."""

    started: str
    finished: str
    clone_name: str
    entry: Fingerprint
    exit: Fingerprint
    role_user: str
    role_excess: list[str]
    privileged_allowed: bool
    trusted: list[str]
    clone_created: bool
    isolation_before: CloneVerification
    isolation_after: CloneVerification
    isolation_facts: dict[str, Any]
    golden: str | None
    suites: dict[str, list[RunResult]]
    production_suites: dict[str, list[RunResult]]
    rehearsals: dict[str, Rehearsal]  # objective → its plan's rehearsal on the clone
    ledgers: dict[str, list[LedgerRow]]
    gate_values: dict[str, Any]
    clone_source: Fingerprint | None
    clone_source_error: str | None
    clone_refresh: CloneRefresh  # whether the clone was out of date, and re-made
    audit: list[Record]
    activity_entry: dict[str, list[int]]  # table → rows inserted, updated, deleted (all sessions)
    activity_exit: dict[str, list[int]]
    expect_unchanged: bool
    production_sessions: int  # guarded sessions oneroof opened on production
    dump_sessions: int  # connections of the pg_dump runs (one more than its jobs)
    applied: dict[str, list[Applied]] = field(default_factory=dict)  # objective → applies
    compliance_production: dict[str, Any] = field(default_factory=dict)  # compliance facts
    compliance_clone: dict[str, Any] = field(default_factory=dict)
    previous: Previous | None = None
    refs: EvidenceRefs = field(default_factory=EvidenceRefs)

    def to_record(self, config_text: str, config_file: str) -> dict[str, Any]:
        """The payload of the `measurements` record: references, and the rest as values."""
        refs = self.refs
        return {
            "config": {"text": config_text, "file": config_file},
            "refs": {
                "entry": _ref(refs.entry, self.entry.to_dict()),
                "exit": _ref(refs.exit, self.exit.to_dict()),
                "clone_source": (
                    _ref(refs.clone_source, self.clone_source.to_dict())
                    if self.clone_source is not None
                    else None
                ),
                "verifications": refs.verifications,
                "audit": list(refs.audit),
                "audit_inline": [] if refs.audit[1] else [r.as_dict() for r in self.audit],
                "previous": refs.previous,
            },
            "suites": _runs(self.suites),
            "production_suites": _runs(self.production_suites),
            "rehearsals": {k: _ref(r.record, r.to_dict()) for k, r in self.rehearsals.items()},
            "applied": {k: [a.seq for a in runs] for k, runs in self.applied.items()},
            "values": {
                "started": self.started,
                "finished": self.finished,
                "clone_name": self.clone_name,
                "role_user": self.role_user,
                "role_excess": self.role_excess,
                "privileged_allowed": self.privileged_allowed,
                "trusted": self.trusted,
                "clone_created": self.clone_created,
                "isolation_before": self.isolation_before.to_dict(),
                "isolation_after": self.isolation_after.to_dict(),
                "isolation_facts": self.isolation_facts,
                "golden": self.golden,
                "ledgers": {k: [row.to_dict() for row in rows] for k, rows in self.ledgers.items()},
                "gate_values": {k: _encode(v) for k, v in self.gate_values.items()},
                "clone_source_error": self.clone_source_error,
                "clone_refresh": self.clone_refresh.to_dict(),
                "activity_entry": self.activity_entry,
                "activity_exit": self.activity_exit,
                "expect_unchanged": self.expect_unchanged,
                "production_sessions": self.production_sessions,
                "dump_sessions": self.dump_sessions,
                "compliance_production": self.compliance_production,
                "compliance_clone": self.compliance_clone,
            },
        }


Fetch = Callable[[int], Record | None]
AuditRange = Callable[[int, int], list[Record]]


def from_record(record: Record, fetch: Fetch, audit_range: AuditRange) -> Measurements:
    """The measurements of a `measurements` record, rebuilt from the records it names.

    `fetch(seq)` reads one record, `audit_range(first, last)` the production audit records
    with first < seq <= last. `BadInput` names a record that is missing or of another kind.
    """
    payload = record.payload
    refs, values = payload["refs"], payload["values"]

    def load(ref: Any, kind: str) -> tuple[int | None, dict[str, Any]]:
        if isinstance(ref, Mapping):
            return None, dict(ref["inline"])
        found = fetch(int(ref))
        if found is None or found.kind != kind:
            what = "missing" if found is None else f"a {found.kind} record"
            raise BadInput(
                f"evidence record {ref} should be the {kind} record these measurements name "
                f"(record {record.seq}), but it is {what}"
            )
        return found.seq, found.payload

    def print_of(ref: Any) -> tuple[int | None, Fingerprint]:
        seq, data = load(ref, "fingerprint")
        return seq, Fingerprint.from_dict(data)

    entry_seq, entry = print_of(refs["entry"])
    exit_seq, exit_fp = print_of(refs["exit"])
    source_seq, source = (
        (None, None) if refs["clone_source"] is None else print_of(refs["clone_source"])
    )

    def runs(table: Mapping[str, list[Any]]) -> dict[str, list[RunResult]]:
        result = {}
        for objective, entries in table.items():
            decoded = []
            for ref in entries:
                seq, data = load(ref, "check-run")
                decoded.append(run_result(data, seq))
            result[objective] = decoded
        return result

    rehearsals = {}
    for objective, ref in payload["rehearsals"].items():
        seq, data = load(ref, "rehearsal")
        rehearsals[objective] = rehearsal(data, seq)
    applied: dict[str, list[Applied]] = {}
    for objective, seqs in payload["applied"].items():
        applied[objective] = []
        for ref in seqs:
            seq, data = load(ref, "rollout-artifact")
            applied[objective].append(Applied(int(seq or 0), artifact_run(data)))
    first, last = (int(x) for x in refs["audit"])
    audit = (
        audit_range(first, last)
        if last
        else [Record(**row) for row in refs.get("audit_inline") or []]
    )
    previous = None
    if refs.get("previous") is not None:
        seq, data = load(refs["previous"], "campaign")
        previous = Previous(int(refs["previous"]), Report.from_dict(data["report"]))
    ledgers = {k: [LedgerRow(**row) for row in rows] for k, rows in values["ledgers"].items()}
    return Measurements(
        started=values["started"],
        finished=values["finished"],
        clone_name=values["clone_name"],
        entry=entry,
        exit=exit_fp,
        role_user=values["role_user"],
        role_excess=list(values["role_excess"]),
        privileged_allowed=bool(values["privileged_allowed"]),
        trusted=list(values["trusted"]),
        clone_created=bool(values["clone_created"]),
        isolation_before=verification(values["isolation_before"]),
        isolation_after=verification(values["isolation_after"]),
        isolation_facts=dict(values["isolation_facts"]),
        golden=values["golden"],
        suites=runs(payload["suites"]),
        production_suites=runs(payload["production_suites"]),
        rehearsals=rehearsals,
        ledgers=ledgers,
        gate_values={k: _decode(v) for k, v in values["gate_values"].items()},
        clone_source=source,
        clone_source_error=values["clone_source_error"],
        clone_refresh=CloneRefresh(**values["clone_refresh"]),
        audit=audit,
        activity_entry=dict(values["activity_entry"]),
        activity_exit=dict(values["activity_exit"]),
        expect_unchanged=bool(values["expect_unchanged"]),
        production_sessions=int(values["production_sessions"]),
        dump_sessions=int(values["dump_sessions"]),
        applied=applied,
        compliance_production=dict(values.get("compliance_production") or {}),
        compliance_clone=dict(values.get("compliance_clone") or {}),
        previous=previous,
        refs=EvidenceRefs(
            measurements=record.seq,
            entry=entry_seq,
            exit=exit_seq,
            clone_source=source_seq,
            verifications=[int(s) for s in refs.get("verifications") or []],
            audit=[first, last],
            previous=refs.get("previous"),
        ),
    )


def _ref(seq: int | None, inline: dict[str, Any]) -> Any:
    """A record number, or the payload itself where it was never stored (pure tests)."""
    return seq if seq is not None else {"inline": inline}


def _runs(table: Mapping[str, list[RunResult]]) -> dict[str, list[Any]]:
    return {k: [_ref(r.evidence_seq, r.to_dict()) for r in runs] for k, runs in table.items()}


def _encode(value: Any) -> Any:
    # a non-integral numeric keeps its exact value (gates compare it as a number)
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"decimal"}:
        return Decimal(str(value["decimal"]))
    return value


# -- the records' payloads back into their types ------------------------------------------


def run_result(data: Mapping[str, Any], seq: int | None) -> RunResult:
    """A suite run from its `check-run` record."""
    residue = data.get("residue")
    return RunResult(
        target=data["target"],
        objective=data.get("objective"),
        database=data["database"],
        files=[
            FileResult(
                path=f["path"],
                sha256=f["sha256"],
                kind=f["kind"],
                scenario=f.get("scenario"),
                items=[
                    ItemResult(
                        file=i["file"],
                        kind=i["kind"],
                        name=i["name"],
                        line=int(i["line"]),
                        status=Status(i["status"]),
                        ms=float(i.get("ms") or 0.0),
                        expected=i.get("expected"),
                        got=i.get("got"),
                        sqlstate=i.get("sqlstate"),
                        message=i.get("message"),
                    )
                    for i in f["items"]
                ],
                ms=float(f.get("ms") or 0.0),
                note=f.get("note"),
            )
            for f in data["files"]
        ],
        residue=None
        if residue is None
        else Residue(
            free=bool(residue["free"]),
            differences=list(residue["differences"]),
            residue=list(residue["residue"]),
            sequences_restored=list(residue["sequences_restored"]),
            before=residue.get("fingerprint_before"),
            after=residue.get("fingerprint_after"),
            sections=tuple(residue.get("sections") or ()),
            ms=float(residue.get("ms") or 0.0),
        ),
        started_at=data["started_at"],
        ms=float(data.get("ms") or 0.0),
        evidence_seq=seq,
    )


def gate_result(data: Mapping[str, Any]) -> GateResult:
    return GateResult(data["expression"], bool(data["holds"]), dict(data["values"]))


def artifact_run(data: Mapping[str, Any]) -> ArtifactRun:
    """One artifact's run, from a rehearsal's or an apply's record."""
    return ArtifactRun(
        id=data["id"],
        checksum=data["checksum"],
        file=data["file"],
        auto=bool(data["auto"]),
        status=data["status"],
        gates=[gate_result(g) for g in data.get("gates") or []],
        deltas=dict(data.get("deltas") or {}),
        expected=dict(data.get("expected") or {}),
        mismatches=list(data.get("mismatches") or []),
        stops=[gate_result(g) for g in data.get("stops") or []],
        reason=data.get("reason"),
        sqlstate=data.get("sqlstate"),
        columns=list(data.get("columns") or []),
        rows=[list(row) for row in data.get("rows") or []],
        seconds=float(data.get("seconds") or 0.0),
    )


def rehearsal(data: Mapping[str, Any], seq: int | None) -> Rehearsal:
    """A plan's rehearsal, from its `rehearsal` record."""
    return Rehearsal(
        plan=data["plan"],
        path=data["path"],
        clone=data["clone"],
        source_fingerprint=data.get("source_fingerprint"),
        artifacts=[artifact_run(a) for a in data["artifacts"]],
        already_applied=list(data.get("already_applied") or []),
        touched_tables=list(data.get("touched_tables") or []),
        residue_free=bool(data["residue_free"]),
        residue=list(data.get("residue") or []),
        sequences_restored=list(data.get("sequences_restored") or []),
        ok=bool(data["ok"]),
        seconds=float(data.get("seconds") or 0.0),
        marker_state=data.get("marker_state"),
        record=seq,
        forecasts={
            a["id"]: Forecast.from_dict(a["forecast"])
            for a in data["artifacts"]
            if a.get("forecast")
        },
        forecast=data.get("forecast"),
        mode=data.get("mode") or ROLLED_BACK,
    )


def verification(data: Mapping[str, Any]) -> CloneVerification:
    """A clone verification from its dictionary form."""
    return CloneVerification(
        name=data["name"],
        points=[
            Point(p["name"], bool(p["ok"]), p["detail"], dict(p.get("data") or {}))
            for p in data["points"]
        ],
        marker=data.get("marker"),
        source_fingerprint=data.get("source_fingerprint"),
        clone_fingerprint=data.get("clone_fingerprint"),
        seconds=float(data.get("seconds") or 0.0),
    )
