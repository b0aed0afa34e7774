"""Rehearsal on the clone, `rollout plan` and `oneroof gates` on real servers."""

from __future__ import annotations

import json

import pytest

from fix_rollout import ARTIFACTS, Env, write_plan
from oneroof import connect, rollout
from oneroof.errors import ForbiddenAction
from oneroof.workspace import Workspace as Ws


def rehearse(env: Env) -> rollout.Rehearsal:
    evidence = env.evidence()
    try:
        return rollout.rehearse(Ws(env.cfg, evidence), env.plan())
    finally:
        evidence.close()


def clone_items(env: Env) -> list[tuple[object, ...]]:
    return env.clone_sql("select id, name, status from app.items order by id")


def test_rehearsal_measures_exact_deltas_rolls_back_and_proves_residue_free(env: Env) -> None:
    source = env.make_clone()
    before = clone_items(env)
    sequence_before = env.clone_sql("select last_value, is_called from app.items_id_seq")
    result = rehearse(env)
    assert result.ok, result.to_dict()
    runs = {run.id: run for run in result.artifacts}
    assert runs["T_01_add"].deltas == {"app.items": {"inserted": 3, "updated": 0, "deleted": 0}}
    assert runs["T_02_close"].deltas == {"app.items": {"inserted": 0, "updated": 5, "deleted": 0}}
    assert runs["T_02_close"].expected == {"app.items": {"inserted": 0, "updated": 5, "deleted": 0}}
    assert runs["T_03_verify"].deltas == {}
    assert runs["T_03_verify"].rows == [[5]]
    # gates are reported, not blocking: the clone says go = 0
    assert all(not run.gates_hold for run in result.artifacts)
    assert [g.values for g in runs["T_01_add"].gates] == [{"go": 0}]
    assert result.residue_free and result.residue == []
    assert result.sequences_restored == ["app.items_id_seq"]
    assert result.touched_tables == ["app.items"]
    assert result.source_fingerprint == source
    assert clone_items(env) == before
    assert env.clone_sql("select last_value, is_called from app.items_id_seq") == sequence_before

    evidence = env.evidence()
    record = evidence.latest("rehearsal")
    evidence.close()
    assert record is not None
    payload = record.payload
    assert payload["ok"] is True and payload["plan"] == "T_plan"
    assert payload["source_fingerprint"] == source
    assert payload["checksums"] == env.plan().checksums
    assert payload["artifacts"][0]["checksum"] == env.plan().artifacts[0].checksum
    assert payload["artifacts"][1]["deltas"]["app.items"]["updated"] == 5


def test_a_delta_mismatch_fails_the_rehearsal_and_stops_it_there(env: Env) -> None:
    wrong = ARTIFACTS["02_close.sql"].replace("~open_items", "~4")
    write_plan(env.plan_dir, overrides={"02_close.sql": wrong})
    env.make_clone()
    before = clone_items(env)
    result = rehearse(env)
    assert not result.ok
    statuses = [(run.id, run.status) for run in result.artifacts]
    assert statuses == [
        ("T_01_add", "ok"),
        ("T_02_close", "failed"),
        ("T_03_verify", "not reached"),
    ]
    failed = result.artifacts[1]
    assert failed.mismatches == ["app.items ~: 5 updated, expected 4"]
    assert "delta mismatch" in (failed.reason or "")
    assert result.residue_free and clone_items(env) == before


def test_an_undeclared_table_change_is_a_mismatch(env: Env) -> None:
    sneaky = ARTIFACTS["01_add.sql"].replace(
        "insert into app.items", "insert into app.other values (7);\ninsert into app.items"
    )
    write_plan(env.plan_dir, overrides={"01_add.sql": sneaky})
    env.make_clone()
    result = rehearse(env)
    assert not result.ok
    assert result.artifacts[0].mismatches == [
        "app.other: +1 but no expect-delta declares this table"
    ]
    assert env.clone_sql("select count(*) from app.other") == [(0,)]


def test_a_stop_and_a_sql_error_fail_the_rehearsal_with_their_reason(env: Env) -> None:
    env.make_clone()
    env.clone_sql("update app.flags set value = 1 where name = 'halt'")
    result = rehearse(env)
    assert not result.ok
    assert result.artifacts[1].status == "failed"
    assert (
        result.artifacts[1].reason
        == "stop: open_items != 0 or halt == 1: open (halt=1, open_items=0)"
    )
    assert result.residue_free

    broken = ARTIFACTS["02_close.sql"].replace("set status = 'done'", "set nosuch = 'done'")
    write_plan(env.plan_dir, overrides={"02_close.sql": broken})
    result = rehearse(env)
    assert not result.ok
    failed = result.artifacts[1]
    assert failed.sqlstate == "42703"
    assert "nosuch" in (failed.reason or "")
    assert result.residue_free


def test_a_rehearsal_runs_on_the_clone_only(env: Env) -> None:
    env.make_clone()
    evidence = env.evidence()
    try:
        with (
            connect.open_production(env.cfg, evidence) as session,
            pytest.raises(ForbiddenAction, match="clone only"),
        ):
            # the types refuse it already; the check at run time is what this test shows
            rollout.rehearse(Ws(env.cfg, evidence), env.plan(), session=session)  # type: ignore[arg-type]
    finally:
        evidence.close()


def test_a_clone_of_a_partly_applied_production_rehearses_only_the_rest(env: Env) -> None:
    env.make_clone()
    assert rehearse(env).ok
    env.prod("update app.flags set value = 1 where name in ('go', 'halt')")
    evidence = env.evidence()
    try:
        halted = rollout.apply(Ws(env.cfg, evidence), env.plan(), execute=True)
    finally:
        evidence.close()
    assert halted.status == "halted" and halted.applied == ["T_01_add"]
    env.prod("update app.flags set value = 0 where name = 'halt'")

    env.make_clone()  # a fresh clone: its copy of the ledger says T_01_add is applied
    result = rehearse(env)
    assert result.ok, result.to_dict()
    assert result.already_applied == ["T_01_add"]
    assert [run.status for run in result.artifacts] == ["skipped", "ok", "ok"]
    evidence = env.evidence()
    try:
        applied = rollout.apply(Ws(env.cfg, evidence), env.plan(), execute=True)
    finally:
        evidence.close()
    assert applied.ok and applied.applied == ["T_02_close", "T_03_verify"]
    drift = next(c for c in applied.checks if c.name == "drift")
    assert drift.ok and "app.items" in drift.detail and "changed by this plan" not in drift.detail
    assert env.items() == {"done": 5}


def test_rehearse_command_exit_codes_and_json(env: Env) -> None:
    env.make_clone()
    done = env.cli("rollout", "rehearse", str(env.plan_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rehearsal OK" in done.stdout and "residue-free" in done.stdout
    write_plan(env.plan_dir, overrides={"01_add.sql": ARTIFACTS["01_add.sql"].replace("+3", "+2")})
    failed = env.cli("rollout", "rehearse", "rollout/T_plan", "--json")  # workspace-relative
    assert failed.returncode == 1, failed.stdout + failed.stderr
    document = json.loads(failed.stdout)
    assert document["ok"] is False
    assert document["artifacts"][0]["mismatches"] == ["app.items +: 3 inserted, expected 2"]


def test_plan_command_shows_order_checksums_auto_set_gates_and_lint(env: Env) -> None:
    index = """\
        -- artifact: T_04_index
        -- gate: go >= 1
        -- auto: false
        create index items_name on app.items (name);
        """
    (env.plan_dir / "04_index.sql").write_text(index.replace("        ", ""))
    done = env.cli("rollout", "plan", str(env.plan_dir), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    plan = env.plan()
    assert [a["id"] for a in document["artifacts"]] == [a.id for a in plan.artifacts]
    assert [a["checksum"] for a in document["artifacts"]] == [a.checksum for a in plan.artifacts]
    assert document["auto_set"] == ["T_01_add", "T_02_close"]
    assert document["verify_set"] == ["T_03_verify", "T_04_index"]
    assert {g["artifact"] for g in document["gates"]} == {a.id for a in plan.artifacts}
    assert all(g["values"] == {"go": 0} for g in document["gates"])
    rules = {(f["artifact"], f["rule"]) for f in document["lint"]}
    assert ("T_04_index", "require-concurrent-index-creation") in rules
    assert document["lint_note"] is None

    text = env.cli("rollout", "plan", str(env.plan_dir))
    assert text.returncode == 0
    assert "auto-executable set: T_01_add → T_02_close" in text.stdout
    assert "require-concurrent-index-creation" in text.stdout
    assert plan.artifacts[0].checksum[:12] in text.stdout


def test_plan_without_squawk_says_so(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout.linting, "squawk_path", lambda: None)
    findings, note = rollout.lint(env.plan())
    assert findings == [] and note is not None and "squawk is not installed" in note


def test_gates_command_prints_each_target_gate_with_its_values(env: Env) -> None:
    done = env.cli("gates")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "go >= 1" in done.stdout and "go=0" in done.stdout
    assert "blocker: someone must say go" in done.stdout
    env.prod("update app.flags set value = 1 where name = 'go'")
    document = json.loads(env.cli("gates", "--json").stdout)
    by_name = {g["target"]: g for g in document["gates"]}
    assert by_name["go"]["holds"] is True and by_name["go"]["values"] == {"go": 1}
    # NULL never opens a gate, not even through `not`
    assert by_name["nothing null"]["holds"] is False
    assert by_name["nothing null"]["values"] == {"nothing": None}
