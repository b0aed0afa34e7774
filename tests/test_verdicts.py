"""verdicts.judge: every verdict's PASS and each FAIL reason, from measurements alone.

No database, no server: the measurements are built here, and the report is what judge
decides from them. Each case changes one measurement of an all-good campaign.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oneroof import config, rollout, verdicts
from oneroof.clone import CloneVerification
from oneroof.clone.freshness import CloneRefresh, refresh_reasons
from oneroof.evidence import Record
from oneroof.fingerprint import Fingerprint, fingerprint_id
from oneroof.measurements import Measurements
from oneroof.report import FAIL, GO, NO_GO, PASS
from oneroof.rollout import ArtifactRun, Rehearsal
from oneroof.suite import FileResult, ItemResult, Residue, RunResult, Status

TOML = """\
[production]
dsn = "env:NOT_USED"
[counters]
ospa = "select 1"
gap = "select 1"
[[objective]]
id = "A"
title = "regression suite"
suites = ["checks"]
also_on_production = true
headline = "gap is {gap}"
[[objective]]
id = "F"
title = "rollout"
rollout = "rollout/F"
[[target]]
name = "Ownership seed"
gate = "ospa >= 1"
blocker = "human ratification"
next = "apply F"
[[target]]
name = "Clone suite"
gate = "clone_verified"
scope = "clone"
"""
ARTIFACT = """\
-- artifact: F_01
-- gate: ospa >= 1
-- expect-delta: core.ownership +2
-- auto: true
insert into core.ownership values (1), (2);
"""


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> config.Config:
    root = tmp_path_factory.mktemp("verdicts")
    (root / "oneroof.toml").write_text(TOML)
    (root / "rollout" / "F").mkdir(parents=True)
    (root / "rollout" / "F" / "01_seed.sql").write_text(ARTIFACT)
    return config.load(root)


def fp(counts: dict[str, int] | None = None, wal: str = "0/1") -> Fingerprint:
    sections: dict[str, Any] = {
        "schema": {"table core.ownership": "{}"},
        "counts": counts if counts is not None else {"core.ownership": 7},
        "counters": {"ospa": 0, "gap": 210},
    }
    digests = {k: fingerprint_id({k: str(v)}) for k, v in sections.items()}
    return Fingerprint(
        mode="full",
        sections=sections,
        digests=digests,
        id=fingerprint_id(digests),
        wal=wal,
        taken_at="2026-12-01T00:00:00+00:00",
        database="app",
        identity={"database": "app", "host": "prod", "port": 5432},
    )


def schema_changed() -> Fingerprint:
    changed = fp()
    sections = {**changed.sections, "schema": {"table core.ownership": '{"x": 1}'}}
    digests = {k: fingerprint_id({k: str(v)}) for k, v in sections.items()}
    return dataclasses.replace(
        changed, sections=sections, digests=digests, id=fingerprint_id(digests)
    )


def verification(*failing: str) -> CloneVerification:
    result = CloneVerification("app_clone")
    for point in ("name_guard", "marker", "app_sessions", "committed_state"):
        result.add(point, point not in failing, f"{point} detail")
    return result


def run(*statuses: Status, residue: bool | None = True, target: str = "clone") -> RunResult:
    items = [
        ItemResult(
            "checks/a.sql",
            "check",
            f"check_{i}",
            i + 1,
            status,
            expected="empty",
            got="1 row" if status == Status.FAILED else None,
        )
        for i, status in enumerate(statuses)
    ]
    proof = None
    if residue is not None:
        proof = Residue(residue, [] if residue else ["t changed"], [], [], "a", "b")
    files = [FileResult("checks/a.sql", "x", "checks", None, items)]
    return RunResult(target, "A", "app_clone", files, proof, "2026-12-01")


def rehearsal(cfg: config.Config, status: str = "ok", residue_free: bool = True) -> Rehearsal:
    plan = rollout.load_plan(cfg.workspace / "rollout" / "F", cfg)
    runs = [
        ArtifactRun(
            a.id,
            a.checksum,
            str(a.file),
            a.auto,
            status,
            deltas={"core.ownership": {"inserted": 2, "updated": 0, "deleted": 0}},
            reason=None if status == "ok" else "stop gap != 0 holds",
        )
        for a in plan.artifacts
    ]
    return Rehearsal(
        plan.name,
        str(plan.path),
        "app_clone",
        "abc",
        runs,
        [],
        ["core.ownership"],
        residue_free,
        [] if residue_free else ["core.ownership"],
        [],
        status == "ok" and residue_free,
        0.1,
    )


def record(outcome: str, classification: str, sql: str = "select 1", **payload: Any) -> Record:
    return Record(1, "now", "audit", "production", classification, outcome, sql, payload, "", "")


def proof(xid: str | None = None, proven: bool = True, apply: bool = False) -> Record:
    """The end record of one production transaction, carrying its write proof."""
    return record("sent", "internal", "ROLLBACK", proof=True, proven=proven, xid=xid, apply=apply)


def measurements(cfg: config.Config, **changes: Any) -> Measurements:
    plan = rollout.load_plan(cfg.workspace / "rollout" / "F", cfg)
    entry = fp()
    base = Measurements(
        started="2026-12-01T00:00:00+00:00",
        finished="2026-12-01T00:01:00+00:00",
        clone_name="app_clone",
        entry=entry,
        exit=entry,
        role_user="oneroof_reader",
        role_excess=[],
        privileged_allowed=False,
        trusted=[],
        clone_created=True,
        isolation_before=verification(),
        isolation_after=verification(),
        isolation_facts={
            "app_sessions": 0,
            "triggers_disabled": 1,
            "triggers_configured": 1,
            "leases": 0,
        },
        golden="app_clone_golden",
        suites={"A": [run(Status.PASSED, Status.PASSED)]},
        production_suites={"A": [run(Status.PASSED, Status.PASSED, residue=None)]},
        rehearsals={"F": (plan, rehearsal(cfg))},
        ledgers={"F": []},
        gate_values={"ospa": 0, "clone_verified": True},
        clone_source=entry,
        clone_source_error=None,
        clone_refresh=CloneRefresh("auto"),
        audit=[
            record("sent", "read"),
            proof(),
            record("refused", "write", "delete from t"),
            proof(),
        ],
        activity_entry={"core.ownership": [7, 0, 0]},
        activity_exit={"core.ownership": [7, 0, 0]},
        expect_unchanged=False,
        production_sessions=1,
        dump_sessions=3,
    )
    return dataclasses.replace(base, **changes)


def verdict(report: Any, name: str) -> Any:
    found = [v for v in report.verdicts if v.objective.startswith(name)]
    assert found, [v.objective for v in report.verdicts]
    return found[0]


def test_an_all_good_campaign_passes_every_verdict(cfg: config.Config) -> None:
    report = verdicts.judge(cfg, measurements(cfg))
    assert report.final_status == PASS
    assert [v.status for v in report.verdicts] == [PASS] * 5
    assert report.headline.startswith("3 objectives advanced on an isolated clone")
    assert "byte-unchanged" in report.headline
    safety = verdict(report, "Production safety")
    assert "entry==exit fingerprint" in safety.headline and "ospa=0" in safety.headline
    a = verdict(report, "A regression suite")
    assert "2/2" in a.headline and "(2/2 on production)" in a.headline
    assert "gap is 210" in a.headline  # the headline placeholder, filled from the counters
    f = verdict(report, "F rollout")
    assert "F_01: core.ownership +2" in f.headline
    assert [(row.target, row.status) for row in report.matrix] == [
        ("Ownership seed", NO_GO),
        ("Clone suite", GO),
    ]
    assert report.blockers == ["Ownership seed: human ratification"]
    assert report.next_macros == ["On gate open (ospa >= 1) — apply F"]
    assert report.compliance.percent == 100
    assert report.compliance.forbidden_refused == 1 and report.compliance.statements_sent == 3
    assert report.facts["production sessions"] == "1 guarded + 3 of pg_dump"
    assert "2 production transactions, none assigned a transaction id" in safety.headline
    assert report.facts["production role"] == "oneroof_reader (least privilege)"


Change = Callable[[config.Config], dict[str, Any]]

FAILURES: list[tuple[str, str, Change, str]] = [
    (
        "production changed while it must not",
        "Production safety",
        lambda cfg: {"exit": fp({"core.ownership": 9}), "expect_unchanged": True},
        "expect_unchanged says it must not: counts: core.ownership changed: 7 → 9",
    ),
    (
        "a production transaction of oneroof was assigned a transaction id",
        "Production safety",
        lambda cfg: {"audit": [record("sent", "read"), proof("4711")]},
        "1 of 1 production transactions of oneroof were assigned a transaction id",
    ),
    (
        "production's schema changed during the run",
        "A regression suite",
        lambda cfg: {"exit": schema_changed()},
        "production's schema changed during the run",
    ),
    (
        "a forbidden statement executed",
        "Production safety",
        lambda cfg: {"audit": [record("sent", "write", "delete from t")]},
        "1 forbidden statement(s) executed",
    ),
    (
        "an app session on the clone",
        "Clone isolation",
        lambda cfg: {"isolation_after": verification("app_sessions")},
        "app_sessions: app_sessions detail",
    ),
    (
        "the committed state changed",
        "Clone isolation",
        lambda cfg: {"isolation_before": verification("committed_state")},
        "committed_state: committed_state detail",
    ),
    (
        "a failed check",
        "A regression suite",
        lambda cfg: {"suites": {"A": [run(Status.PASSED, Status.FAILED)]}},
        "a.sql: check_1: failed expected empty, got 1 row",
    ),
    (
        "residue on the clone",
        "A regression suite",
        lambda cfg: {"suites": {"A": [run(Status.PASSED, residue=False)]}},
        "residue on the clone after rollback-only work",
    ),
    (
        "a failure of the production acceptance test",
        "A regression suite",
        lambda cfg: {"production_suites": {"A": [run(Status.ERROR, residue=None)]}},
        "production: a.sql: check_0: error",
    ),
    (
        "nothing measured the objective",
        "A regression suite",
        lambda cfg: {"suites": {}, "production_suites": {}},
        "no suite or rollout measured this objective",
    ),
    (
        "a halted rehearsal",
        "F rollout",
        lambda cfg: {
            "rehearsals": {
                "F": (
                    rollout.load_plan(cfg.workspace / "rollout" / "F", cfg),
                    rehearsal(cfg, "halted"),
                )
            }
        },
        "F_01: halted: stop gap != 0 holds",
    ),
    (
        "residue after a rehearsal",
        "F rollout",
        lambda cfg: {
            "rehearsals": {
                "F": (
                    rollout.load_plan(cfg.workspace / "rollout" / "F", cfg),
                    rehearsal(cfg, residue_free=False),
                )
            }
        },
        "residue after the rehearsal: core.ownership",
    ),
    (
        "no golden copy",
        "G clone lifecycle",
        lambda cfg: {"golden": None},
        "no golden copy: a reset would need production again",
    ),
    (
        "a clone that does not verify",
        "G clone lifecycle",
        lambda cfg: {"isolation_after": verification("marker")},
        "the clone does not verify",
    ),
]


@pytest.mark.parametrize(
    ("case", "objective", "change", "reason"), FAILURES, ids=[f[0] for f in FAILURES]
)
def test_each_fail_reason(
    cfg: config.Config, case: str, objective: str, change: Change, reason: str
) -> None:
    report = verdicts.judge(cfg, measurements(cfg, **change(cfg)))
    failed = verdict(report, objective)
    assert failed.status == FAIL, case
    assert any(reason in r for r in failed.reasons), failed.reasons
    assert report.final_status == FAIL
    assert report.headline.startswith("FAILED: ") and objective in report.headline


def test_a_forbidden_write_lowers_compliance(cfg: config.Config) -> None:
    m = measurements(cfg, audit=[record("sent", "write"), record("refused", "write")])
    assert verdicts.judge(cfg, m).compliance.percent == 50


def test_an_open_gate_is_go_and_no_blocker(cfg: config.Config) -> None:
    report = verdicts.judge(cfg, measurements(cfg, gate_values={"ospa": 3, "clone_verified": True}))
    assert [row.status for row in report.matrix] == [GO, GO]
    assert report.blockers == [] and report.next_macros == []


def test_a_privileged_role_and_trust_are_stated(cfg: config.Config) -> None:
    m = measurements(
        cfg,
        privileged_allowed=True,
        role_user="postgres",
        role_excess=["superuser"],
        trusted=["function app.f"],
    )
    report = verdicts.judge(cfg, m)
    assert report.facts["production role"].startswith("postgres (PRIVILEGED")
    assert any("privileged role postgres (superuser)" in n for n in report.notes)
    assert any("function app.f" in n for n in report.notes)


def test_rows_applications_changed_since_the_clone_are_reported_not_refused(
    cfg: config.Config,
) -> None:
    older = dataclasses.replace(fp({"core.ownership": 3}), taken_at="2026-11-30T21:00:00+00:00")
    report = verdicts.judge(cfg, measurements(cfg, clone_source=older))
    drift = [n for n in report.notes if "applications changed 1 table(s)" in n]
    assert drift and "core.ownership (3 → 7 rows)" in drift[0] and "3h ago" in drift[0]
    assert report.final_status == verdicts.judge(cfg, measurements(cfg)).final_status
    unreadable = measurements(cfg, clone_source=None, clone_source_error="gone")
    assert any("cannot be read (gone)" in n for n in verdicts.judge(cfg, unreadable).notes)


@pytest.mark.parametrize(
    ("source", "applied", "age", "max_age", "expected"),
    [
        (fp(), [], 60.0, None, []),
        (fp({"core.ownership": 1}), [], 60.0, 3600.0, []),  # rows alone: never a reason
        (schema_changed(), [], 60.0, None, ["production's schema changed since its source"]),
        (fp(), ["F/F_01"], 60.0, None, ["1 gated apply(s) changed production since (F/F_01)"]),
        (fp(), [], 90000.0, 86400.0, ["its source is 25h old, older than [clone] max_age (24h)"]),
        (None, [], None, None, ["its source fingerprint is not in this workspace's evidence"]),
    ],
)
def test_what_makes_a_clone_out_of_date(
    source: Fingerprint | None,
    applied: list[str],
    age: float | None,
    max_age: float | None,
    expected: list[str],
) -> None:
    reasons = refresh_reasons(source, fp(), applied, age, max_age)
    assert len(reasons) == len(expected)
    for reason, start in zip(reasons, expected, strict=True):
        assert reason.startswith(start), reason


def test_a_remade_or_kept_stale_clone_is_said_in_the_report(cfg: config.Config) -> None:
    remade = CloneRefresh("auto", ["1 gated apply(s) changed production since (F/F_01)"], True)
    notes = verdicts.judge(cfg, measurements(cfg, clone_refresh=remade)).notes
    assert any(n.startswith("The clone was re-made from production for this run") for n in notes)
    kept = CloneRefresh("never", ["production's schema changed since its source (x)"])
    notes = verdicts.judge(cfg, measurements(cfg, clone_refresh=kept)).notes
    assert any("[clone] refresh = 'never'" in n for n in notes)
    assert not any("re-made" in n for n in verdicts.judge(cfg, measurements(cfg)).notes)


def test_judge_reads_nothing_but_its_arguments(cfg: config.Config, tmp_path: Path) -> None:
    """The same measurements give the same report, whatever the workspace holds meanwhile."""
    first = verdicts.judge(cfg, measurements(cfg))
    (cfg.workspace / "oneroof.toml").touch()
    assert verdicts.judge(cfg, measurements(cfg)).to_dict() == first.to_dict()


def test_residue_alone_lowers_compliance_below_100(cfg: config.Config) -> None:
    m = measurements(cfg, suites={"A": [run(Status.PASSED, residue=False)]})
    compliance = verdicts.judge(cfg, m).compliance
    assert compliance.clone_residue_free is False
    assert compliance.percent == 50  # one refused attempt kept, one residue


def test_other_sessions_writing_pass_the_safety_verdict_and_are_named(
    cfg: config.Config,
) -> None:
    m = measurements(
        cfg,
        exit=fp({"core.ownership": 9}),
        activity_entry={"core.ownership": [7, 0, 0], "ops.issues": [10, 4, 1]},
        activity_exit={"core.ownership": [9, 0, 0], "ops.issues": [56, 50, 1]},
    )
    report = verdicts.judge(cfg, m)
    safety = verdict(report, "Production safety")
    assert safety.status == PASS and report.final_status == PASS
    assert "2 production transactions, none assigned a transaction id" in safety.headline
    assert (
        "production changed by other sessions during the run: core.ownership +2 rows, "
        "ops.issues +46 rows, 46 updates" in safety.headline
    )
    assert "byte-unchanged" not in report.headline
    assert "oneroof wrote nothing to production" in report.headline
    assert report.notes[0].startswith("Production changed during the run, by other sessions")


def test_a_transaction_ended_by_an_error_is_counted_apart(cfg: config.Config) -> None:
    m = measurements(cfg, audit=[proof(), proof(proven=False)])
    compliance = verdicts.judge(cfg, m).compliance
    assert compliance.transactions == 2 and compliance.transactions_unproven == 1
    assert compliance.percent == 100


def test_a_gated_apply_that_writes_is_no_violation(cfg: config.Config) -> None:
    m = measurements(cfg, audit=[proof(), proof("99", apply=True)])
    report = verdicts.judge(cfg, m)
    assert report.compliance.transactions == 1 and report.compliance.transactions_with_xid == 0
    assert verdict(report, "Production safety").status == PASS
