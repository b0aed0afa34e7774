"""`oneroof demo` end to end on two embedded servers: every figure follows the database."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from fix_clone import run_cli
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
    result = demo.run(directory=server_dir / "demo", ratify=True)
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
    # the seed's next macro, every figure from the database: production's gap, and what the
    # verify artifact read in the rehearsal on the clone
    assert any(m.endswith("expect gap 210 → 0; verify 100%") for m in final.next_macros), (
        final.next_macros
    )
    assert [b.target for b in final.blockers] == ["Production ownership seed"]  # one root
    assert len(final.blockers[0].waiting) == 4
    # after the ratification, the second report says what changed since the first
    after = result.reports[1].report
    text = report.to_markdown(after)
    assert after.since is not None and after.since.report == final.id
    assert after.since.counter("gap") == (210, 0)
    assert "gap 210 → 0" in text and "verify 100%" in text
    assert "Root blockers cleared: Production ownership seed" in text
    assert [b.target for b in after.blockers] == ["Persistent axis substrate (anywhere)"]
    assert all(line.ok for line in after.compliance.lines), after.compliance.lines


def test_other_parameters_and_ratification(server_dir) -> None:
    result = demo.run(directory=server_dir / "demo", objects=500, gap=37, seed=7, ratify=True)
    assert result.ok, [r.report.final_status for r in result.reports]
    before, after = (r.report for r in result.reports)
    assert before.counter("gap") == 37 and before.counter("objects") == 500
    assert "gap of 37 exactly" in verdict(before, "B ").headline
    assert "core.ownership +37" in verdict(before, "F ").headline
    # no figure of the default demo (record numbers aside: #210 is a record)
    assert not re.search(r"(?<![#\d–])210(?!\d)", report.to_markdown(before))
    assert any(m.endswith("expect gap 37 → 0; verify 100%") for m in before.next_macros)
    assert row(before, "Production ownership seed").status == report.NO_GO
    # the humans signed, the gate opened, the auto-executable set ran unattended
    assert result.applied is not None and result.applied.ok
    assert row(after, "Production ownership seed").status == report.GO
    assert row(after, "Production ownership seed").values == {"ospa": 3, "approved": True}
    # the humans signed with their own keys: one approval file each (2 L2, the L4 President)
    assert len(list((result.workspace / "rollout").glob("*/approvals/*.json"))) == 3
    assert "approved digest" in verdict(after, "F ").headline
    assert after.counter("gap") == 0 and after.counter("owned") == 500
    assert "gap 37 → 0" in report.to_markdown(after)
    assert "verify 100%" in verdict(after, "F ").headline
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
        stale = [n for n in again.warnings if n.startswith("Since the clone's source")]
        assert stale and "core.objects (rows changed)" in stale[0], again.warnings
        # the worker's lease on the clone is a dispatch the compliance names, and a row
        # committed on the clone outside any rollback-only bracket: a hidden island
        failed = [line.name for line in again.compliance.lines if not line.ok]
        assert failed == ["dispatch", "islands"], again.compliance.lines
    finally:
        demo.stop(directory)


def _postgres_processes(directory: Path) -> int:
    found = 0
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "postgres" in command and str(directory) in command:
            found += 1
    return found


def test_a_kept_demo_says_how_to_reach_and_stop_its_servers(
    server_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = server_dir / "kept"
    small = ["--objects", "60", "--gap", "6", "--dir", str(directory)]
    try:
        code, out, _ = run_cli(["demo", *small, "--keep"], capsys)
        assert code == 0
        assert "export ONEROOF_PROD_DSN=" in out and "ONEROOF_NONPROD_DSN=" in out
        assert f"oneroof demo stop --dir {directory}" in out
        # the printed DSN reaches the kept production, as the reader
        dsn = out.split("ONEROOF_PROD_DSN=", 1)[1].split("'")[1]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select current_user").fetchone() == ("oneroof_reader",)
        # a demo on the same folder stops the servers still running there first
        code, _, _ = run_cli(["demo", *small], capsys)
        assert code == 0 and _postgres_processes(directory) == 0
        code, _, _ = run_cli(["demo", *small, "--keep"], capsys)
        assert _postgres_processes(directory) > 0
        code, _, err = run_cli(["demo", "stop", "--dir", str(directory)], capsys)
        assert code == 0 and "stopped 2 server(s)" in err
        assert _postgres_processes(directory) == 0
    finally:
        demo.stop(directory)
