"""A production that applications keep writing to: every claim holds meanwhile.

A real concurrent client (`oneroof.workload`, threads with their own connections) writes
to production during the campaign and during applies. The campaign passes and names
exactly what the application changed; `expect_unchanged` turns the same run into a FAIL;
the per-transaction write proof catches what the guard and READ ONLY let through; an apply
to the very table the application writes succeeds once with its exact delta; a lock held by
the application times the artifact out, retries and halts, with the application's latency
bounded; the application sees no failed transaction in any of it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fix_clone import remove_clone
from fix_pg import Server
from fix_rollout import Env, write_plan
from oneroof import campaign, config, rollout, verdicts
from oneroof.demo import load_generator
from oneroof.evidence import Evidence
from oneroof.report import PASS
from oneroof.workload import Workload
from oneroof.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "one-roof"
CLI = [sys.executable, "-c", "from oneroof.cli import main; main()"]


@pytest.fixture
def one_roof(
    tmp_path: Path,
    prod_db: str,
    prod_server: Server,
    nonprod_server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    with prod_server.admin(prod_db) as conn:
        load_generator(EXAMPLE).build(conn, objects=300, gap=40, seed=3)
    target = tmp_path / "one-roof"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".oneroof", "__pycache__"))
    clone = f"live_{prod_db.split('_')[-1]}_clone"
    toml = target / "oneroof.toml"
    toml.write_text(toml.read_text().replace('name = "one_roof_clone"', f'name = "{clone}"'))
    monkeypatch.setenv("ONEROOF_PROD_DSN", prod_server.reader_dsn(prod_db))
    monkeypatch.setenv("ONEROOF_APPLY_DSN", prod_server.dsn(prod_db))
    monkeypatch.setenv("ONEROOF_NONPROD_DSN", nonprod_server.dsn("postgres"))
    try:
        yield target
    finally:
        remove_clone(nonprod_server, clone)


def _tables(text: str) -> set[str]:
    """The tables an attribution names (sequences, listed apart, left out)."""
    text = re.sub(r"sequence \S+ moved", "", text)
    return set(re.findall(r"\b(?:core|gov|ops)\.[a-z_]+\b", text))


def test_the_campaign_passes_while_the_application_writes_and_names_its_changes(
    one_roof: Path, prod_server: Server, prod_db: str
) -> None:
    cfg = config.load(one_roof)
    with Workload(prod_server.dsn(prod_db), rate=20, clients=2) as app:
        with Workspace(cfg, Evidence(cfg.evidence_path)) as ws:
            result = campaign.run(ws)
        stats = app.stop()
    report = result.report
    assert stats.failed == 0, stats.errors
    assert stats.committed >= 10
    assert report.final_status == PASS, [v.reasons for v in report.verdicts]
    safety = report.verdicts[0]
    assert safety.status == PASS
    assert "none assigned a transaction id" in safety.headline
    assert "production changed by other sessions during the run" in safety.headline
    assert _tables(safety.headline) == {"core.objects", "ops.issues"}
    assert "byte-unchanged" not in report.headline
    assert report.compliance.transactions > 10 and report.compliance.transactions_with_xid == 0

    # the same run, with a production declared frozen: FAIL, naming the change
    toml = one_roof / "oneroof.toml"
    toml.write_text(
        toml.read_text().replace("[production]\n", "[production]\nexpect_unchanged = true\n")
    )
    cfg = config.load(one_roof)
    with Workload(prod_server.dsn(prod_db), rate=20, clients=2) as app:
        with Workspace(cfg, Evidence(cfg.evidence_path)) as ws:
            strict = campaign.run(ws).report
        assert app.stop().failed == 0
    assert strict.final_status != PASS
    assert strict.verdicts[0].status != PASS
    assert any("expect_unchanged" in r for r in strict.verdicts[0].reasons)


def test_the_clone_is_taken_from_the_entry_fingerprint_while_the_application_writes(
    one_roof: Path, prod_server: Server, prod_db: str
) -> None:
    cfg = config.load(one_roof)
    with (
        Workload(prod_server.dsn(prod_db), rate=40, clients=2),
        Workspace(cfg, Evidence(cfg.evidence_path)) as ws,
    ):
        measured = campaign.measure(ws)
    assert measured.clone_created
    assert measured.clone_source is not None and measured.clone_source.id == measured.entry.id
    committed = [p for p in measured.isolation_before.points if p.name == "committed_state"]
    assert committed and committed[0].ok, committed


def test_the_write_proof_catches_a_trusted_function_that_assigns_a_transaction_id(
    make_workspace: Any, prod_server: Server, prod_db: str, tmp_path: Path
) -> None:
    """The guard passes it (trusted) and READ ONLY runs it: only the proof sees it wrote."""
    with prod_server.admin(prod_db) as conn:
        conn.execute(
            "create function public.stamp() returns bigint stable language sql"
            " as 'select txid_current()'"
        )
    workspace = make_workspace(prod_db)
    toml = (workspace.path / "oneroof.toml").read_text()
    workspace.write(toml.replace("[guard]\n", '[guard]\nallow_functions = ["public.stamp"]\n'))
    import os

    result = subprocess.run(
        [*CLI, "--workspace", str(workspace.path), "sql", "production", "select stamp()"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "was assigned transaction id" in result.stderr and "select stamp()" in result.stderr
    assert "Traceback" not in result.stderr
    records = workspace.evidence().records("audit")
    compliance = verdicts.compliance_of(records, _fp(), _fp(), {}, {})
    assert compliance.transactions_with_xid == 1
    assert compliance.percent < 100


def _fp() -> Any:
    from oneroof.fingerprint import Fingerprint

    return Fingerprint("full", {}, {}, "x")


def _prepare(env: Env, overrides: dict[str, str] | None = None) -> None:
    write_plan(env.plan_dir, overrides=overrides)
    env.make_clone()
    with Workspace(env.cfg) as ws:
        assert rollout.rehearse(ws, env.plan()).ok
    env.prod("update app.flags set value = 1 where name = 'go'")


ITEMS_APP = ("insert into app.items (name) values ('from the app')",)


def test_an_apply_to_the_table_the_application_writes_succeeds_once_and_exactly(
    env: Env,
) -> None:
    _prepare(
        env,
        overrides={
            "02_close.sql": """\
                -- artifact: T_02_close
                -- gate: go >= 1
                -- requires: T_01_add
                -- expect-delta: app.items ~2
                -- auto: true
                update app.items set status = 'done' where name in ('c', 'd');
                """,
            "03_verify.sql": """\
                -- artifact: T_03_verify
                -- gate: go >= 1
                -- requires: T_02_close
                -- expect-delta: app.items +0
                -- auto: false
                select count(*) from app.items where status = 'done';
                """,
        },
    )
    with Workload(env.prod_dsn, statements=ITEMS_APP, rate=30, clients=2) as app:
        time.sleep(0.5)  # the application is writing before the apply starts
        with Workspace(env.cfg) as ws:
            result = rollout.apply(ws, env.plan(), execute=True)
            again = rollout.apply(ws, env.plan(), execute=True)
        stats = app.stop()
    assert result.ok, result.to_dict()
    runs = {run.id: run for run in result.artifacts}
    assert runs["T_01_add"].deltas == {"app.items": {"inserted": 3, "updated": 0, "deleted": 0}}
    assert runs["T_02_close"].deltas == {"app.items": {"inserted": 0, "updated": 2, "deleted": 0}}
    assert [a for a, _ in env.ledger()] == ["T_01_add", "T_02_close", "T_03_verify"]
    assert again.ok and again.applied == []
    assert stats.failed == 0 and stats.committed > 5, stats.errors
    assert env.prod("select count(*) from app.items where name = 'from the app'")[0][0] == (
        stats.committed
    )


def test_a_lock_held_by_the_application_times_out_retries_and_halts_with_its_latency_bounded(
    env: Env,
) -> None:
    toml = env.workspace / "oneroof.toml"
    toml.write_text(toml.read_text() + '[rollout]\nlock_timeout = "300ms"\nlock_retries = 2\n')
    _prepare(
        env,
        overrides={
            "01_add.sql": """\
                -- artifact: T_01_add
                -- gate: go >= 1
                -- expect-delta: app.items +0
                -- auto: true
                alter table app.items add column note text;
                """,
        },
    )
    holder = psycopg.connect(env.prod_dsn, autocommit=True)
    holder.execute("begin")
    holder.execute("select count(*) from app.items")  # ACCESS SHARE, held: ALTER must wait
    try:
        with Workload(env.prod_dsn, statements=ITEMS_APP, rate=30, clients=2) as app:
            time.sleep(0.3)
            started = time.monotonic()
            with Workspace(env.cfg) as ws:
                result = rollout.apply(ws, env.plan(), execute=True)
            elapsed = time.monotonic() - started
            stats = app.stop()
    finally:
        holder.execute("rollback")
        holder.close()
    assert not result.ok and result.status == "halted"
    first = result.artifacts[0]
    assert first.id == "T_01_add" and first.status == "halted"
    assert "3 attempt(s) of 300ms" in (first.reason or "")
    attempts = [
        r
        for r in Evidence(env.cfg.evidence_path).records("audit")
        if "lock timeout" in (r.sql or "")
    ]
    assert [r.outcome for r in attempts] == ["retry", "retry", "halted"]
    assert elapsed < 10
    assert env.ledger() == []
    # the application kept working: its queued inserts waited at most about one lock timeout
    assert stats.failed == 0, stats.errors
    assert stats.committed > 5
    assert stats.percentile(1.0) < 1500, stats.to_dict()


def test_the_workload_counts_what_it_committed(prod_server: Server, prod_db: str) -> None:
    with prod_server.admin(prod_db) as conn:
        conn.execute("create table hits (at timestamptz default now())")
    with Workload(prod_server.dsn(prod_db), statements=("insert into hits default values",)) as app:
        time.sleep(0.6)
        stats = app.stop()
    with prod_server.admin(prod_db) as conn:
        row = conn.execute("select count(*) from hits").fetchone()
    assert row is not None and row[0] == stats.committed > 0 and stats.ok
    threading.enumerate()  # no thread of the workload is left running
    assert not [t for t in threading.enumerate() if t.name.startswith("workload-")]
