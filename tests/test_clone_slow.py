"""The clone lifecycle at a size where it takes time: a killed create, and reset against create."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fix_clone import TOML, build_one_roof, clone_name, databases, remove_clone, run_cli
from oneroof import clone
from oneroof.workspace import Workspace as Ws

pytestmark = pytest.mark.slow

ARCHIVE = """
create table ops.archive (
    id bigint primary key,
    object_id bigint not null,
    note text not null,
    at timestamptz not null
);
insert into ops.archive
select g, g % 300 + 1, md5(g::text) || md5((g * 7)::text),
       timestamptz '2024-01-01' + g * interval '1 s'
from generate_series(1, {rows}) g;
create index archive_object_idx on ops.archive (object_id);
analyze;
"""


@pytest.fixture
def big_production(prod_server: Any, prod_db: str) -> str:
    """One-Roof plus an archive large enough that pg_restore runs for some seconds."""
    with prod_server.admin(prod_db) as conn:
        build_one_roof(conn)
        conn.execute(ARCHIVE.format(rows=1_500_000))
    return prod_db


@pytest.fixture
def name(nonprod_server: Any) -> Iterator[str]:
    value = clone_name()
    try:
        yield value
    finally:
        remove_clone(nonprod_server, value)


@pytest.fixture
def workspace(make_workspace: Any, big_production: str, name: str) -> Any:
    return make_workspace(big_production, TOML.format(name=name, method="dump"))


def restore_sessions(server: Any, database: str) -> int:
    with server.admin() as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where datname = %s and application_name = 'oneroof-restore'",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_create_killed_during_restore_is_never_accepted_and_create_recovers(
    workspace: Any, name: str, nonprod_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    command = [sys.executable, "-c", "from oneroof.cli import main; main()"]
    command += ["--workspace", str(workspace.path), "clone", "create"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)
    )
    try:
        wait_for(lambda: restore_sessions(nonprod_server, name) > 0, 120, "pg_restore to start")
        time.sleep(0.3)
        assert process.poll() is None, "create finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()

    # pg_restore died with its parent; the half clone is there, marked as in progress
    wait_for(lambda: restore_sessions(nonprod_server, name) == 0, 20, "pg_restore to die")
    cfg = workspace.config()
    evidence = workspace.evidence()
    entries = {e.name: e for e in clone.list_clones(Ws(cfg))}
    assert entries[name].state == "creating"
    result = clone.verify(Ws(cfg, evidence))
    assert not result.ok
    assert [p.name for p in result.points if not p.ok] == ["marker"]
    assert "creating" in result.reasons[0]
    code, out, _ = run_cli(
        ["--workspace", str(workspace.path), "clone", "verify", "--json"], capsys
    )
    assert code == 1 and json.loads(out)["ok"] is False

    info = clone.create(Ws(cfg, evidence))
    assert info.recovered and "interrupted create" in info.recovered[0]
    verified = clone.verify(Ws(cfg, evidence))
    assert verified.ok, verified.reasons
    assert not list((cfg.state_dir / "tmp").glob(f"dump-{name}-*"))  # no dump left behind


def test_reset_restores_the_created_state_in_a_fraction_of_create(
    workspace: Any, name: str, nonprod_server: Any
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    started = time.perf_counter()
    created = clone.create(Ws(cfg, evidence))
    create_seconds = time.perf_counter() - started
    with nonprod_server.admin(name) as conn:
        conn.execute("delete from ops.archive where id % 10 = 0")
        conn.execute("alter table ops.issues enable trigger emit_issue_event")
        conn.execute("insert into ops.job_leases values ('job:late', 'w', now())")
    assert not clone.verify(Ws(cfg, evidence)).ok
    before = databases(nonprod_server)
    started = time.perf_counter()
    reset = clone.reset(Ws(cfg, evidence))
    reset_seconds = time.perf_counter() - started
    assert set(databases(nonprod_server)) == set(before)
    result = clone.verify(Ws(cfg, evidence))
    assert result.ok, result.reasons
    assert reset.marker["source_fingerprint"] == created.marker["source_fingerprint"]
    assert reset_seconds < 0.5 * create_seconds, (reset_seconds, create_seconds)
