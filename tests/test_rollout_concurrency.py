"""Exactly once under failure and competition: a killed client, two appliers, and watch."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from fix_rollout import Env, write_plan
from oneroof import rollout
from oneroof.workspace import Workspace as Ws


def prepare(env: Env, extra: str = "", overrides: dict[str, str] | None = None) -> None:
    write_plan(env.plan_dir, extra=extra, overrides=overrides)
    env.make_clone()
    evidence = env.evidence()
    try:
        assert rollout.rehearse(Ws(env.cfg, evidence), env.plan()).ok
    finally:
        evidence.close()
    env.prod("update app.flags set value = 1 where name = 'go'")


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def sleeping(env: Env) -> bool:
    rows = env.prod(
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and state = 'active' and query like 'select pg_sleep%'"
    )
    return bool(rows[0][0])


def test_a_client_killed_mid_artifact_leaves_it_unapplied_and_the_rerun_completes_it_once(
    env: Env,
) -> None:
    prepare(env, extra="select pg_sleep(1.5);\n")
    process = env.popen("rollout", "apply", str(env.plan_dir), "--execute")
    try:
        wait_for(lambda: sleeping(env))
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL

    plan = env.plan()
    assert env.ledger() == [("T_01_add", plan.artifacts[0].checksum)]
    assert env.items() == {"open": 5}  # 02 not applied: its transaction died with the client

    rerun = env.cli("rollout", "apply", str(env.plan_dir), "--execute", "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    document = json.loads(rerun.stdout)
    assert document["applied"] == ["T_02_close", "T_03_verify"]
    assert env.ledger() == [(a.id, a.checksum) for a in plan.artifacts]
    assert env.items() == {"done": 5}


def test_two_concurrent_appliers_apply_every_artifact_exactly_once(env: Env) -> None:
    prepare(env, extra="select pg_sleep(0.3);\n")
    first = env.popen("rollout", "apply", str(env.plan_dir), "--execute", "--json")
    second = env.popen("rollout", "apply", str(env.plan_dir), "--execute", "--json")
    outputs = [first.communicate(timeout=120), second.communicate(timeout=120)]
    assert first.returncode == 0, outputs[0]
    assert second.returncode == 0, outputs[1]

    plan = env.plan()
    assert env.ledger() == [(a.id, a.checksum) for a in plan.artifacts]
    assert env.items() == {"done": 5}  # 01 inserted three rows once, not six
    applied = [json.loads(out)["applied"] for out, _ in outputs]
    assert sorted(applied[0] + applied[1]) == sorted(a.id for a in plan.artifacts)
    statuses = [{a["id"]: a["status"] for a in json.loads(out)["artifacts"]} for out, _ in outputs]
    for artifact in plan.artifacts:
        pair = sorted(s[artifact.id] for s in statuses)
        assert pair in (["applied", "skipped"], ["already applied", "applied"]), pair


def test_watch_times_out_while_the_gate_stays_closed(env: Env) -> None:
    prepare(env)
    env.prod("update app.flags set value = 0 where name = 'go'")
    done = env.cli("rollout", "watch", str(env.plan_dir), "--interval", "0.2", "--timeout", "0.5")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timeout" in done.stdout and "go=0" in done.stdout
    assert env.ledger() == []


def test_watch_applies_the_auto_set_and_verify_when_the_gate_opens(env: Env) -> None:
    prepare(env)
    env.prod("update app.flags set value = 0 where name = 'go'")
    opener = threading.Timer(
        0.6, env.prod, args=("update app.flags set value = 1 where name = 'go'",)
    )
    opener.start()
    evidence = env.evidence()
    try:
        result = rollout.watch(Ws(env.cfg, evidence), env.plan(), interval=0.2, timeout=20)
    finally:
        opener.join()
        evidence.close()
    assert result.ok, result.to_dict()
    assert result.applied == ["T_01_add", "T_02_close", "T_03_verify"]
    assert env.items() == {"done": 5}


def test_watch_leaves_a_writing_manual_artifact_for_a_human(env: Env) -> None:
    manual = """\
        -- artifact: T_03_verify
        -- gate: go >= 1
        -- expect-delta: app.other +1
        -- auto: false
        insert into app.other values (1);
        """
    prepare(env, overrides={"03_verify.sql": manual})
    evidence = env.evidence()
    try:
        result = rollout.watch(Ws(env.cfg, evidence), env.plan(), interval=0.2, timeout=5)
    finally:
        evidence.close()
    assert result.ok
    assert result.applied == ["T_01_add", "T_02_close"]
    assert [r.status for r in result.artifacts if r.id == "T_03_verify"] == ["left for a human"]
    assert env.prod("select count(*) from app.other")[0][0] == 0
