"""`oneroof demo` end to end on two embedded servers: every figure follows the database."""

from __future__ import annotations

import psycopg
import pytest

from oneroof import campaign, config, demo, report
from oneroof.evidence import Evidence
from oneroof.workspace import Workspace as Ws


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # the demo points ONEROOF_PROD_DSN / ONEROOF_NONPROD_DSN at its servers
    monkeypatch.setenv("ONEROOF_PROD_DSN", "unset")
    monkeypatch.setenv("ONEROOF_NONPROD_DSN", "unset")


def verdict(result: report.Report, prefix: str) -> report.Verdict:
    return next(v for v in result.verdicts if v.objective.startswith(prefix))


def row(result: report.Report, target: str) -> report.MatrixRow:
    return next(r for r in result.matrix if r.target == target)


def test_demo_with_defaults_reproduces_the_seed(server_dir) -> None:
    result = demo.run(directory=server_dir / "demo")
    assert result.ok
    final = result.reports[0].report
    assert final.final_status == report.PASS
    assert verdict(final, "Production safety").status == report.PASS
    assert verdict(final, "Clone isolation").status == report.PASS
    for prefix, figure in (("A ", "26/26"), ("B ", "7/7"), ("C ", "9/9"), ("D ", "3/3")):
        assert verdict(final, prefix).headline.startswith(figure)
    assert verdict(final, "E ").headline.startswith("8/8")
    assert "production acceptance test (26/26 on production)" in verdict(final, "A ").headline
    assert verdict(final, "B ").label == "PASS (prototype)"
    assert "gap of 210 exactly" in verdict(final, "B ").headline
    rollout_headline = verdict(final, "F ").headline
    assert rollout_headline.startswith("4 gated SQL artifacts")
    assert "core.ownership +210" in rollout_headline and "core.ownership ~210" in rollout_headline
    seed = row(final, "Production ownership seed")
    assert seed.status == report.NO_GO and seed.values == {"ospa": 0, "approved": False}
    assert row(final, "Clone regression suite (re-run anytime)").status == report.GO
    assert final.compliance.percent == 100
    assert final.compliance.forbidden_executed == 0
    assert final.facts["entry fingerprint"] == final.facts["exit fingerprint"]
    for fmt in ("md", "json", "html"):
        assert result.reports[0].files[fmt].exists()


def test_other_parameters_and_ratification(server_dir) -> None:
    result = demo.run(directory=server_dir / "demo", objects=500, gap=37, seed=7, ratify=True)
    assert result.ok, [r.report.final_status for r in result.reports]
    before, after = (r.report for r in result.reports)
    assert before.facts["counter gap"] == 37 and before.facts["counter objects"] == 500
    assert "gap of 37 exactly" in verdict(before, "B ").headline
    assert "core.ownership +37" in verdict(before, "F ").headline
    assert "210" not in report.to_markdown(before)
    assert row(before, "Production ownership seed").status == report.NO_GO
    # the humans signed, the gate opened, the auto-executable set ran unattended
    assert result.applied is not None and result.applied.ok
    assert row(after, "Production ownership seed").status == report.GO
    assert row(after, "Production ownership seed").values == {"ospa": 3, "approved": True}
    # the humans signed with their own keys: one approval file each (2 L2, the L4 President)
    assert len(list((result.workspace / "rollout").glob("*/approvals/*.json"))) == 3
    assert "approved digest" in verdict(after, "F ").headline
    assert after.facts["counter gap"] == 0
    assert after.facts["counter owned"] == 500
    assert "applied on production 4/4 (ledger)" in verdict(after, "F ").headline
    assert after.final_status == report.PASS


def test_a_broken_clone_turns_the_verdicts_to_fail(server_dir) -> None:
    directory = server_dir / "demo"
    result = demo.run(directory=directory, objects=200, gap=20, keep=True)
    try:
        assert result.ok
        _, nonprod = demo.servers(directory)
        with psycopg.connect(nonprod.dsn("one_roof_clone"), autocommit=True) as conn:
            conn.execute(
                "insert into ops.job_leases(job, holder, expires_at)"
                " values ('scanner', 'worker-7', now() + interval '1 hour')"
            )
        # production moves on after the clone was taken: the report must say so
        production, _ = demo.servers(directory)
        with psycopg.connect(production.dsn("one_roof"), autocommit=True) as conn:
            conn.execute("update core.objects set name = name || ' (renamed)' where id = 1")
        # a failing check, too
        check = result.workspace / "checks" / "A_regression" / "99_broken.sql"
        check.write_text("-- check: always_fails\n-- expect: value=2\nselect 1;\n")
        cfg = config.load(result.workspace)
        again = campaign.run(Ws(cfg, Evidence(cfg.evidence_path))).report
        assert again.final_status == report.FAIL
        isolation = verdict(again, "Clone isolation")
        assert isolation.status == report.FAIL
        assert any("lease" in reason for reason in isolation.reasons), isolation.reasons
        regression = verdict(again, "A ")
        assert regression.status == report.FAIL
        assert any("always_fails" in reason for reason in regression.reasons)
        assert "always_fails" in report.to_markdown(again)
        stale = [n for n in again.notes if n.startswith("Since the clone's source")]
        assert stale and "core.objects (rows changed)" in stale[0], again.notes
    finally:
        demo.stop(directory)
