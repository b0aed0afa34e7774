"""Apply on real servers: gates, exact deltas, stops, the ledger, refusals, exactly once."""

from __future__ import annotations

import json

import pytest

from fix_rollout import ARTIFACTS, Env, write_plan
from oneroof import rollout
from oneroof.errors import ForbiddenAction
from oneroof.workspace import Workspace as Ws


def rehearse(env: Env) -> rollout.Rehearsal:
    evidence = env.evidence()
    try:
        result = rollout.rehearse(Ws(env.cfg, evidence), env.plan())
    finally:
        evidence.close()
    assert result.ok, result.to_dict()
    return result


def apply(env: Env, *, execute: bool = True, only_auto: bool = False) -> rollout.ApplyResult:
    evidence = env.evidence()
    try:
        return rollout.apply(
            Ws(env.cfg, evidence), env.plan(), execute=execute, only_auto=only_auto
        )
    finally:
        evidence.close()


def test_closed_gate_writes_nothing_and_prints_the_gate_and_its_values(env: Env) -> None:
    env.make_clone()
    rehearse(env)
    done = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "go >= 1" in done.stdout
    assert "go=0" in done.stdout
    assert "gate closed" in done.stdout
    assert env.ledger() == []
    assert env.prod("select to_regclass('oneroof.rollout_ledger')")[0][0] is None
    assert env.items() == {"open": 2}

    as_json = env.cli("rollout", "apply", str(env.plan_dir), "--execute", "--json")
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["status"] == "gate closed"
    assert {g["expression"] for g in document["gates"]} == {"go >= 1"}
    assert all(g["values"] == {"go": 0} and not g["holds"] for g in document["gates"])


def test_dry_run_then_apply_then_reapply_skips_everything(env: Env) -> None:
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")  # not a table the plan touches

    dry = env.cli("rollout", "apply", str(env.plan_dir))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would apply" in dry.stdout
    assert env.ledger() == [] and env.items() == {"open": 2}

    result = apply(env)
    assert result.ok and result.status == "applied", result.to_dict()
    assert result.applied == ["T_01_add", "T_02_close", "T_03_verify"]
    runs = {run.id: run for run in result.artifacts}
    assert runs["T_01_add"].deltas == {"app.items": {"inserted": 3, "updated": 0, "deleted": 0}}
    assert runs["T_02_close"].deltas == {"app.items": {"inserted": 0, "updated": 5, "deleted": 0}}
    assert runs["T_03_verify"].deltas == {}
    assert runs["T_03_verify"].rows == [[5]]
    assert env.items() == {"done": 5}
    plan = env.plan()
    assert env.ledger() == [(a.id, a.checksum) for a in plan.artifacts]

    again = env.cli("rollout", "apply", str(env.plan_dir), "--execute", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    document = json.loads(again.stdout)
    assert document["status"] == "nothing to do"
    assert [a["status"] for a in document["artifacts"]] == ["already applied"] * 3
    assert len(env.ledger()) == 3 and env.items() == {"done": 5}

    # every statement of the artifacts went through the audited write path
    evidence = env.evidence()
    applied = [r for r in evidence.records("audit") if r.outcome == "apply"]
    evidence.close()
    bodies = [r.sql for r in applied if r.payload.get("artifact") and not r.payload.get("step")]
    assert any(s and s.startswith("insert into app.items") for s in bodies)
    assert any(s and s.startswith("update app.items") for s in bodies)
    ledger_rows = env.prod(
        "select artifact, deltas, applied_by, application from oneroof.rollout_ledger order by id"
    )
    assert ledger_rows[0][1] == {"app.items": {"inserted": 3, "updated": 0, "deleted": 0}}
    assert ledger_rows[0][2] == "postgres" and ledger_rows[0][3] == "oneroof-apply"


def test_delta_mismatch_rolls_back_and_halts_then_the_fix_applies_only_the_rest(
    env: Env,
) -> None:
    excluding = (
        ARTIFACTS["02_close.sql"]
        .replace("-- expect-delta: app.items ~open_items", "-- expect-delta: app.items ~5")
        .replace(
            "{extra}update app.items set status = 'done' where status = 'open';",
            (
                "update app.items set status = 'done' where status = 'open'\n"
                "          and name not in (select name from app.exclude);"
            ),
        )
    )
    write_plan(env.plan_dir, overrides={"02_close.sql": excluding})
    env.make_clone()
    rehearse(env)
    # production holds data the clone does not, in a table the plan only reads
    env.prod("insert into app.exclude values ('b')")
    env.prod("update app.flags set value = 1 where name = 'go'")

    done = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "delta mismatch" in done.stdout
    assert "4 updated, expected 5" in done.stdout
    plan = env.plan()
    assert env.ledger() == [("T_01_add", plan.artifacts[0].checksum)]
    assert env.items() == {"open": 5}  # 01 stayed applied; 02 was rolled back

    # the fix: the artifact no longer excludes anything; an edited artifact needs a rehearsal
    write_plan(env.plan_dir)
    refused = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "T_02_close" in refused.stderr and "checksum" in refused.stderr
    rehearse(env)
    result = apply(env)
    assert result.ok, result.to_dict()
    assert result.applied == ["T_02_close", "T_03_verify"]
    drift = next(c for c in result.checks if c.name == "drift")
    assert "changed by this plan" in drift.detail
    assert [a for a, _ in env.ledger()] == ["T_01_add", "T_02_close", "T_03_verify"]
    assert env.items() == {"done": 5}


def test_stop_rolls_back_and_halts_then_rerun_after_the_fix_applies_only_the_rest(
    env: Env,
) -> None:
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name in ('go', 'halt')")

    result = apply(env)
    assert not result.ok and result.status == "halted"
    runs = {run.id: run for run in result.artifacts}
    assert runs["T_01_add"].status == "applied"
    assert runs["T_02_close"].status == "halted"
    assert "stop: open_items != 0 or halt == 1" in (runs["T_02_close"].reason or "")
    assert runs["T_02_close"].deltas["app.items"]["updated"] == 5  # measured, then rolled back
    assert runs["T_03_verify"].status == "not reached"
    assert [a for a, _ in env.ledger()] == ["T_01_add"]
    assert env.items() == {"open": 5}

    env.prod("update app.flags set value = 0 where name = 'halt'")
    result = apply(env)
    assert result.ok, result.to_dict()
    assert result.applied == ["T_02_close", "T_03_verify"]
    assert [a for a, _ in env.ledger()] == ["T_01_add", "T_02_close", "T_03_verify"]
    assert env.items() == {"done": 5}


def test_rows_drifted_on_a_touched_table_are_reported_and_the_artifacts_decide(
    env: Env,
) -> None:
    """A live production: rows of a touched table changed since the clone was taken. The
    apply reports it and goes on; exact deltas, read inside each artifact's transaction,
    follow the database as it is now."""
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    env.prod("insert into app.items (name) values ('late')")

    result = apply(env)
    assert result.ok, result.to_dict()
    drift = next(c for c in result.checks if c.name == "drift")
    assert drift.ok and "rows changed since the clone was taken" in drift.detail
    assert "app.items (rows 2 → 3, content changed)" in drift.detail
    runs = {run.id: run for run in result.artifacts}
    assert runs["T_01_add"].deltas["app.items"]["inserted"] == 3
    assert runs["T_02_close"].deltas["app.items"]["updated"] == 6  # 'late' included
    assert env.items() == {"done": 6}


def test_refuse_data_drift_keeps_the_strict_rule(env: Env) -> None:
    toml = env.workspace / "oneroof.toml"
    toml.write_text(toml.read_text() + "[rollout]\nrefuse_data_drift = true\n")
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    env.prod("insert into app.items (name) values ('late')")

    done = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "drifted" in done.stderr and "app.items" in done.stderr
    assert "refuse_data_drift" in done.stderr
    assert env.ledger() == [] and env.items() == {"open": 3}
    dry = env.cli("rollout", "apply", str(env.plan_dir))
    assert dry.returncode == 1 and "would refuse" in dry.stdout

    rehearse(env)  # the same stale clone: still drifted
    with pytest.raises(ForbiddenAction, match="drifted"):
        apply(env)

    env.make_clone()
    rehearse(env)
    result = apply(env)
    assert result.ok, result.to_dict()
    assert env.items() == {"done": 6}


def test_schema_drift_of_a_touched_table_is_refused(env: Env) -> None:
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    env.prod("alter table app.items add column note text")

    done = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the schema of a table the plan touches changed" in done.stderr
    assert "column app.items.note" in done.stderr
    assert env.ledger() == []


def test_an_artifact_edited_after_rehearsal_is_refused(env: Env) -> None:
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    first = env.plan_dir / "01_add.sql"
    first.write_text(first.read_text() + "-- an innocent comment\n")

    done = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "T_01_add" in done.stderr and "checksum" in done.stderr
    assert env.ledger() == []
    with pytest.raises(ForbiddenAction, match="no rehearsal of these exact artifacts"):
        apply(env)


def test_an_applied_artifact_edited_afterwards_refuses_the_plan(env: Env) -> None:
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    assert apply(env).ok
    first = env.plan_dir / "01_add.sql"
    first.write_text(first.read_text().replace("'e'", "'f'"))

    done = env.cli("rollout", "apply", str(env.plan_dir), "--execute")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "edited" in done.stderr and "T_01_add" in done.stderr
    status = env.cli("rollout", "status", str(env.plan_dir), "--json")
    assert json.loads(status.stdout)["conflicts"] == ["T_01_add"]


def test_only_auto_stops_before_the_manual_artifact(env: Env) -> None:
    env.make_clone()
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    result = apply(env, only_auto=True)
    assert result.ok
    assert result.applied == ["T_01_add", "T_02_close"]
    assert [r.status for r in result.artifacts if r.id == "T_03_verify"] == ["left for a human"]
    assert [a for a, _ in env.ledger()] == ["T_01_add", "T_02_close"]


def test_status_shows_ledger_rehearsal_and_gates(env: Env) -> None:
    env.make_clone()
    before = env.cli("rollout", "status", str(env.plan_dir))
    assert before.returncode == 0, before.stdout + before.stderr
    assert "none of T_plan applied" in before.stdout
    assert "rehearsal: none" in before.stdout
    rehearse(env)
    env.prod("update app.flags set value = 1 where name = 'go'")
    assert apply(env).ok
    after = env.cli("rollout", "status", str(env.plan_dir), "--json")
    document = json.loads(after.stdout)
    assert [row["artifact"] for row in document["ledger"]] == [
        "T_01_add",
        "T_02_close",
        "T_03_verify",
    ]
    assert document["pending"] == []
    assert document["rehearsal"]["ok"] is True
    assert document["rehearsal_matches_checksums"] is True
    assert all(g["holds"] for g in document["gates"])
