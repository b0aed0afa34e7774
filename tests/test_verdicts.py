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
from hypothesis import given
from hypothesis import strategies as st

from oneroof import config, rollout, verdicts
from oneroof import report as report_module
from oneroof.clone import CloneVerification
from oneroof.clone.freshness import CloneRefresh, refresh_reasons
from oneroof.compliance import ON_CLONE
from oneroof.errors import ConfigError
from oneroof.evidence import Record
from oneroof.fingerprint import Fingerprint, fingerprint_id
from oneroof.gates import GateResult
from oneroof.measurements import KIND, Applied, Measurements, Previous, from_record
from oneroof.report import FAIL, GO, NO_GO, PASS, Compliance, MatrixRow, Report
from oneroof.rollout import ArtifactRun, LedgerRow, Rehearsal
from oneroof.suite import FileResult, ItemResult, Residue, RunResult, Status
from oneroof.verdicts import ISOLATION, SAFETY

TOML = """\
[production]
dsn = "env:NOT_USED"
[counters]
ospa = { sql = "select 1", description = "approvals recorded" }
gap = "select 1"
[compliance]
laws = ["gov.laws"]
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
next = "apply F; expect gap {gap} → {gap@F_01}; verify {coverage@F_01}%"
[[target]]
name = "Clone suite"
gate = "clone_verified"
scope = "clone"
"""
ARTIFACT = """\
-- artifact: F_01
-- gate: ospa >= 1
-- expect-delta: core.ownership +2
-- stop: gap != 0
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
        "counts": {"core.ownership": 7, "gov.laws": 2, **(counts or {})},
        "sequences": {"core.ownership_id_seq": [7, True]},
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
            stops=[GateResult("gap != 0", False, {"gap": 0, "coverage": 100})],
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
        rehearsals={"F": rehearsal(cfg)},
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
        compliance_production={
            "other_sessions": [],
            "statement_timeout": "30s",
            "reader": "oneroof_reader",
        },
        compliance_clone={
            "sessions": [],
            "subscriptions": [],
            "user_mappings": [],
            "foreign_tables": [],
            "extensions": [],
        },
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
    assert [b.text() for b in report.blockers] == ["Ownership seed: human ratification"]
    assert report.blockers[0].change == ""  # no previous report to compare with
    # placeholders: gap at entry, and what the artifact read in its rehearsal on the clone
    assert report.next_macros == [
        "On gate open (ospa >= 1) — apply F; expect gap 210 → 0; verify 100%"
    ]
    assert report.compliance.percent == 100
    assert all(line.ok for line in report.compliance.lines), report.compliance.lines
    assert report.counter("ospa") == 0
    assert [(c.name, c.description) for c in report.counters] == [
        ("gap", ""),
        ("ospa", "approvals recorded"),
    ]
    assert report.facts["entry fingerprint"] == report.fingerprints["entry"][:8] + "…"
    assert report.warnings == [] and report.since is None
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
        lambda cfg: {"rehearsals": {"F": rehearsal(cfg, "halted")}},
        "F_01: halted: stop gap != 0 holds",
    ),
    (
        "residue after a rehearsal",
        "F rollout",
        lambda cfg: {"rehearsals": {"F": rehearsal(cfg, residue_free=False)}},
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
    compliance = verdicts.judge(cfg, m).compliance
    failed = {line.name for line in compliance.lines if not line.ok}
    assert failed == {"writes", "data"}
    assert compliance.percent == round(100 * (len(compliance.lines) - 2) / len(compliance.lines))


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
    assert any("privileged role postgres (superuser)" in n for n in report.warnings)
    assert any("function app.f" in n for n in report.warnings)


def test_rows_applications_changed_since_the_clone_are_reported_not_refused(
    cfg: config.Config,
) -> None:
    older = dataclasses.replace(fp({"core.ownership": 3}), taken_at="2026-11-30T21:00:00+00:00")
    report = verdicts.judge(cfg, measurements(cfg, clone_source=older))
    drift = [n for n in report.warnings if "applications changed 1 table(s)" in n]
    assert drift and "core.ownership (3 → 7 rows)" in drift[0] and "3h ago" in drift[0]
    assert report.final_status == verdicts.judge(cfg, measurements(cfg)).final_status
    unreadable = measurements(cfg, clone_source=None, clone_source_error="gone")
    assert any("cannot be read (gone)" in n for n in verdicts.judge(cfg, unreadable).warnings)


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
    warnings = verdicts.judge(cfg, measurements(cfg, clone_refresh=kept)).warnings
    assert any("[clone] refresh = 'never'" in n for n in warnings)
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
    assert [line.name for line in compliance.lines if not line.ok] == ["islands"]
    assert 0 < compliance.percent < 100


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
    assert report.warnings[0].startswith("Production changed during the run, by other sessions")
    data = next(line for line in report.compliance.lines if line.name == "data")
    assert data.ok and "changed by other sessions during the run: core.ownership" in data.measured


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


# -- blockers as a graph ------------------------------------------------------------------


def row(name: str, status: str, after: list[str] | None = None, **values: Any) -> MatrixRow:
    return MatrixRow(name, status, f"{name.lower()} >= 1", values, after=after or [])


def test_a_three_target_chain_gives_one_root_blocker() -> None:
    chain = [
        row("Seed", NO_GO, ospa=0),
        row("Axis", NO_GO, ["Seed"]),
        row("Emit", NO_GO, ["Axis"]),
    ]
    roots = verdicts.blocker_graph(chain)
    assert [b.target for b in roots] == ["Seed"]
    assert roots[0].waiting == ["Axis", "Emit"]
    assert roots[0].blocker == "seed >= 1"  # no blocker text: the gate says what holds it
    # the seed opens: the next closed gate of the chain is the root, and what changed is said
    opened = [row("Seed", GO, ospa=3), chain[1], chain[2]]
    later = verdicts.blocker_graph(opened, previous=report_of(chain))
    assert [(b.target, b.waiting) for b in later] == [("Axis", ["Emit"])]
    assert later[0].change == "now the root: Seed, which it waited on, opened"


def test_independent_closed_gates_are_each_a_root_and_say_what_changed() -> None:
    before = [row("Seed", NO_GO, gap=210), row("DOT", NO_GO), row("Clone", GO)]
    now = [row("Seed", NO_GO, gap=37), row("DOT", NO_GO), row("Clone", NO_GO)]
    roots = verdicts.blocker_graph(now, previous=report_of(before))
    assert {b.target: b.change for b in roots} == {
        "Seed": "still closed; gap 210 → 37",
        "DOT": "unchanged",
        "Clone": "new: its gate closed since the previous report",
    }


def test_a_closed_gate_behind_an_open_one_waits_for_the_closed_one_above() -> None:
    # Emit waits on Axis (open), which waits on Seed (closed): Emit is downstream of Seed
    graph = [row("Seed", NO_GO), row("Axis", GO, ["Seed"]), row("Emit", NO_GO, ["Axis"])]
    roots = verdicts.blocker_graph(graph)
    assert [(b.target, b.waiting) for b in roots] == [("Seed", ["Emit"])]


@given(st.lists(st.booleans(), min_size=1, max_size=8))
def test_a_chain_has_at_most_one_root_the_first_closed_gate(closed: list[bool]) -> None:
    names = [f"T{i}" for i in range(len(closed))]
    chain = [
        row(name, NO_GO if shut else GO, [names[i - 1]] if i else [])
        for i, (name, shut) in enumerate(zip(names, closed, strict=True))
    ]
    roots = verdicts.blocker_graph(chain)
    if not any(closed):
        assert roots == []
        return
    first = closed.index(True)
    assert [b.target for b in roots] == [names[first]]
    assert roots[0].waiting == [n for n, shut in zip(names, closed, strict=True) if shut][1:]


def report_of(matrix: list[MatrixRow], **changes: Any) -> Report:
    base = Report("t", "2026-11-30T00:00:00+00:00", PASS, "h", [], matrix, [], [], compliance())
    return dataclasses.replace(base, **changes)


def compliance() -> Compliance:
    return Compliance(0, 0, 0, 0, 0, 0, True, True)


def test_config_after_names_targets_and_refuses_a_cycle(tmp_path: Path) -> None:
    base = TOML.replace('name = "Clone suite"', 'name = "Clone suite"\nafter = ["Ownership seed"]')
    (tmp_path / "oneroof.toml").write_text(base)
    assert config.load(tmp_path).targets[1].after == ["Ownership seed"]
    loop = base.replace('next = "apply F;', 'after = ["Clone suite"]\nnext = "apply F;')
    (tmp_path / "oneroof.toml").write_text(loop)
    with pytest.raises(ConfigError, match=r"waits on itself through .* → Ownership seed"):
        config.load(tmp_path)
    unknown = base.replace('after = ["Ownership seed"]', 'after = ["Ownership sede"]')
    (tmp_path / "oneroof.toml").write_text(unknown)
    with pytest.raises(ConfigError, match=r"oneroof.toml:\d+: target\[1\]\.after"):
        config.load(tmp_path)


# -- since the previous report ------------------------------------------------------------


def test_since_the_previous_report_every_counter_and_gate(cfg: config.Config) -> None:
    before = verdicts.judge(cfg, measurements(cfg))
    before.id = "OR-5-aaaaaaaa"
    after_fp = fp()
    after_fp.sections["counters"] = {"ospa": 3, "gap": 0}
    ledger = [
        LedgerRow("F", "F_01", "x", "2026-12-01T00:00:30+00:00", "applier", {}),
    ]
    now = verdicts.judge(
        cfg,
        measurements(
            cfg,
            entry=after_fp,
            exit=after_fp,
            gate_values={"ospa": 3, "clone_verified": False},
            ledgers={"F": ledger},
            previous=Previous(5, before),
        ),
    )
    since = now.since
    assert since is not None and since.report == "OR-5-aaaaaaaa"
    assert since.counters == [["gap", 210, 0], ["ospa", 0, 3]]
    assert since.counter("gap") == (210, 0)
    # a gate value that is no counter, measured by the tool
    assert since.gate_values == [["clone_verified", True, False]]
    assert since.targets == [["Ownership seed", NO_GO, GO], ["Clone suite", GO, NO_GO]]
    assert since.unchanged_targets == 0
    assert since.applied == ["F/F_01"]
    assert since.blockers_closed == ["Ownership seed"]
    assert since.blockers_opened == ["Clone suite"]
    assert since.evidence == [5]
    text = report_module.to_markdown(now)
    assert "gap 210 → 0" in text and "Gate values: clone_verified true → false." in text


def test_since_a_report_of_an_older_version(cfg: config.Config) -> None:
    older = report_of(
        [row("Ownership seed", NO_GO, ospa=0)],
        facts={"counter gap": 37, "counter ospa": 0},
        ledger=None,
        generated_at="2026-11-30T00:00:00+00:00",
    )
    ledger = [LedgerRow("F", "F_01", "x", "2026-12-01T00:00:30+00:00", "applier", {})]
    now = verdicts.judge(cfg, measurements(cfg, ledgers={"F": ledger}, previous=Previous(2, older)))
    assert now.since is not None
    assert now.since.counters == [["gap", 37, 210]]
    assert now.since.applied == ["F/F_01"]  # applied after the older report was made
    assert now.since.report == "campaign record #2"


# -- placeholders ---------------------------------------------------------------------------


def test_artifact_values_come_from_the_apply_once_applied(cfg: config.Config) -> None:
    rehearsed = verdicts.artifact_values(measurements(cfg))
    assert rehearsed["gap@F_01"] == 0 and rehearsed["coverage@F_01"] == 100
    run = ArtifactRun(
        "F_01", "x", "f", True, "applied", stops=[GateResult("gap != 0", False, {"gap": 5})]
    )
    run.columns, run.rows = ["coverage"], [[97]]
    applied = verdicts.artifact_values(measurements(cfg, applied={"F": [Applied(40, run)]}))
    assert applied["gap@F_01"] == 5 and applied["coverage@F_01"] == 97
    assert verdicts.format_headline("gap {gap} → {gap@F_01}; {nope@F_01}", {"gap": 1}) == (
        "gap 1 → {gap@F_01}; {nope@F_01}"
    )


# -- compliance, category by category ------------------------------------------------------

VIOLATIONS: list[tuple[str, dict[str, Any]]] = [
    ("writes", {"audit": [proof("77")]}),
    ("data", {"audit": [record("sent", "write", "insert into core.ownership values (1)")]}),
    ("schema", {"audit": [record("sent", "ddl", "create table core.x (a int)")]}),
    ("sequences", {"audit": [record("sent", "side-effect", "select nextval('core.s')")]}),
    ("group:laws", {"audit": [record("sent", "write", "update laws set status = 'retired'")]}),
    (
        "sessions",
        {
            "compliance_production": {
                "other_sessions": [{"pid": 9, "user": "oneroof_reader", "application": "oneroof"}],
                "statement_timeout": "30s",
            }
        },
    ),
    ("notify", {"compliance_clone": {"sessions": [{"pid": 4, "query": "LISTEN dispatch"}]}}),
    (
        "notify",
        {"compliance_clone": {"sessions": [{"pid": 4, "query": "select pg_notify('x', '1')"}]}},
    ),
    (
        "outbound",
        {"compliance_clone": {"sessions": [{"pid": 5, "query": "select dblink_connect('p')"}]}},
    ),
    ("outbound", {"compliance_clone": {"sessions": [], "user_mappings": ["prod for PUBLIC"]}}),
    (
        "subscriptions",
        {"compliance_clone": {"sessions": [], "subscriptions": [{"name": "s", "enabled": True}]}},
    ),
    (
        "retargeting",
        {"compliance_clone": {"sessions": [{"pid": 6, "user": "app_rw", "query": "select 1"}]}},
    ),
    (
        "dispatch",
        {
            "isolation_facts": {
                "app_sessions": 0,
                "triggers_disabled": 0,
                "triggers_configured": 1,
                "leases": 0,
            }
        },
    ),
    ("scans", {"compliance_production": {"other_sessions": [], "statement_timeout": "0"}}),
    (
        "scans",
        {"audit": [record("sent", "internal", "SET LOCAL statement_timeout = '999999ms'")]},
    ),
    ("islands", {"suites": {"A": [run(Status.PASSED, residue=False)]}}),
]


@pytest.mark.parametrize(("category", "change"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_each_compliance_category_fails_when_its_violation_is_staged(
    cfg: config.Config, category: str, change: dict[str, Any]
) -> None:
    cfg_app = dataclasses.replace(cfg, guard=cfg.guard.model_copy(update={"app_roles": ["app_rw"]}))
    result = verdicts.judge(cfg_app, measurements(cfg_app, **change))
    failed = [line for line in result.compliance.lines if not line.ok]
    assert category in {line.name for line in failed}, result.compliance.lines
    assert result.compliance.percent < 100
    assert any(w.startswith("Forbidden-action compliance does not hold") for w in result.warnings)
    # a forbidden action never leaves the final status PASS: the verdict it belongs to fails
    owner = ISOLATION if category in ON_CLONE else SAFETY
    verdict = next(v for v in result.verdicts if v.objective == owner)
    title = next(line.title for line in failed if line.name == category)
    assert verdict.status == FAIL and any(title in reason for reason in verdict.reasons)
    assert result.final_status == FAIL


def test_the_clone_categories_are_the_lines_measured_on_the_clone(cfg: config.Config) -> None:
    lines = verdicts.judge(cfg, measurements(cfg)).compliance.lines
    assert {line.name for line in lines if "the clone" in line.title} == ON_CLONE


def test_a_refused_write_is_counted_and_is_no_violation(cfg: config.Config) -> None:
    audit = [record("refused", "write", "delete from gov.laws"), proof()]
    result = verdicts.judge(cfg, measurements(cfg, audit=audit))
    laws = next(line for line in result.compliance.lines if line.name == "group:laws")
    assert laws.ok and "0 sent, 1 refused by the guard" in laws.measured
    assert result.compliance.percent == 100


def test_a_group_naming_a_table_production_lacks_is_not_proven(cfg: config.Config) -> None:
    missing = dataclasses.replace(cfg, compliance={"laws": ("gov.lawz",)})
    laws = next(
        line
        for line in verdicts.judge(missing, measurements(missing)).compliance.lines
        if line.name == "group:laws"
    )
    assert not laws.ok and "not in production's fingerprint: gov.lawz" in laws.measured


def test_what_a_statement_writes_is_read_with_the_parser() -> None:
    from oneroof.compliance import written

    assert written("insert into gov.laws values (1)", "write").relations == {"gov.laws"}
    assert written("truncate ops.events", "ddl").kinds == {"data"}
    assert written("alter sequence core.s restart", "ddl").kinds == {"sequences"}
    copy = written("copy gov.laws from stdin", "write")
    assert copy.kinds == {"data"} and copy.relations == {"gov.laws"}
    assert written("select setval('s', 1)", "side-effect").kinds == {"sequences"}
    assert written("not sql at all (", "unparseable").kinds == set()


# -- the measurements' evidence record ----------------------------------------------------


def test_the_measurements_record_round_trips_to_the_same_report(cfg: config.Config) -> None:
    m = measurements(cfg, previous=None)
    payload = m.to_record(cfg.text, str(cfg.file))
    stored = Record(9, "now", KIND, None, None, None, None, payload, "", "")
    again = from_record(stored, lambda seq: None, lambda first, last: [])
    first = verdicts.judge(cfg, m).to_dict()
    second = verdicts.judge(cfg, again).to_dict()
    # the record's own number is the evidence of the figures it holds
    assert second["evidence"] == [9] and first["evidence"] == []
    for data in (first, second):
        for key in ("evidence",):
            data.pop(key)
    assert strip_evidence(first) == strip_evidence(second)


def strip_evidence(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_evidence(v) for k, v in value.items() if k != "evidence"}
    if isinstance(value, list):
        return [strip_evidence(v) for v in value]
    return value


def test_counters_in_table_form_and_compliance_groups_are_checked(tmp_path: Path) -> None:
    (tmp_path / "oneroof.toml").write_text(TOML)
    cfg = config.load(tmp_path)
    assert cfg.counters == {"ospa": "select 1", "gap": "select 1"}  # SQL everywhere
    assert cfg.counter_descriptions == {"ospa": "approvals recorded"}
    assert cfg.compliance == {"laws": ("gov.laws",)}
    for written, edited in (
        ('laws = ["gov.laws"]', 'laws = ["laws"]'),
        ('ospa = { sql = "select 1", description', 'ospa = { sql = "select 1", descripton'),
    ):
        (tmp_path / "oneroof.toml").write_text(TOML.replace(written, edited))
        with pytest.raises(ConfigError, match=r"oneroof.toml:\d+: ") as raised:
            config.load(tmp_path)
        assert "schema.table" in str(raised.value) or "descripton" in str(raised.value)
