"""Heavy reads on a hot standby of production: a real standby made by `pg_basebackup -R`.

The embedded primary plays production (it logs every connection); its standby streams from
it. The standby session goes through the same wall as the primary's (least privilege,
read-only proof, guard, audit, a write proof per transaction) and is proven a standby of
this very production. A whole campaign then reads the standby — fingerprints, the clone's
dump, checks — and the primary's log shows oneroof's one guarded session there, the one
the gates are evaluated with.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fix_clone import primary_and_standby, remove_clone, run_cli
from fix_pg import Server
from oneroof import campaign, config, connect, fingerprint, roles, verdicts
from oneroof.demo import load_generator
from oneroof.embedded import EmbeddedServer
from oneroof.errors import ConfigError, DatabaseError, ForbiddenAction
from oneroof.evidence import Evidence, Record
from oneroof.workspace import Workspace

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "one-roof"


@dataclass
class Pair:
    """A primary that logs its connections, and its hot standby."""

    primary: EmbeddedServer
    standby: EmbeddedServer
    database: str = "app"

    def log_lines(self, server: EmbeddedServer, start: int = 0) -> list[str]:
        return server.log.read_text(errors="replace")[start:].splitlines()

    def log_size(self, server: EmbeddedServer) -> int:
        return len(server.log.read_text(errors="replace"))


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    def build(conn: psycopg.Connection[Any]) -> None:
        load_generator(EXAMPLE).build(conn, objects=200, gap=30, seed=5)

    logged = {"log_connections": "on"}
    with primary_and_standby("oneroof-test-standby-", build, logged) as (primary, standby):
        yield Pair(primary, standby)


@pytest.fixture
def workspace(
    pair: Pair, tmp_path: Path, nonprod_server: Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The One-Roof workspace on the primary, its standby as replica_dsn."""
    target = tmp_path / "one-roof"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".oneroof", "__pycache__"))
    name = f"sb{tmp_path.name[-8:].lower().replace('-', '_')}_clone"
    name = re.sub(r"[^a-z0-9_]", "_", name)
    toml = target / "oneroof.toml"
    text = toml.read_text().replace('name = "one_roof_clone"', f'name = "{name}"')
    text = text.replace("[production]\n", '[production]\nreplica_dsn = "env:ONEROOF_STANDBY_DSN"\n')
    toml.write_text(text)
    monkeypatch.setenv("ONEROOF_PROD_DSN", pair.primary.dsn("app", user=roles.READER_ROLE))
    monkeypatch.setenv("ONEROOF_APPLY_DSN", pair.primary.dsn("app"))
    monkeypatch.setenv("ONEROOF_STANDBY_DSN", pair.standby.dsn("app", user=roles.READER_ROLE))
    monkeypatch.setenv("ONEROOF_NONPROD_DSN", nonprod_server.dsn("postgres"))
    try:
        yield target
    finally:
        remove_clone(nonprod_server, name)


def _ws(path: Path) -> Workspace:
    cfg = config.load(path)
    return Workspace(cfg, Evidence(cfg.evidence_path))


def test_the_standby_session_is_guarded_proven_and_audited(workspace: Path, pair: Pair) -> None:
    with _ws(workspace) as ws:
        with ws.replica() as standby:
            assert standby.standby and standby.identity.port == pair.standby.port
            assert standby.identity.system_identifier == ws.production_identity.system_identifier
            assert ws.replay is not None and ws.replay.caught_up
            assert standby.scalar("select count(*) from core.objects") == 200
            # the same wall: PostgreSQL refuses a write, the guard refuses a non-read
            assert "read-only" in connect.prove_read_only(standby)
            with pytest.raises(ForbiddenAction):
                standby.execute("update core.objects set name = name")
            taken = fingerprint.take(standby, mode="counts", primary_lsn=ws.primary_lsn)
        records = ws.evidence.records("audit")
    assert taken.standby["replay_lsn"] == taken.wal
    assert taken.standby["primary_lsn"] and taken.standby["behind_bytes"] is not None
    on_standby = [r for r in records if r.payload.get("server") == "standby"]
    assert on_standby and on_standby[0].sql == "-- connect"
    ends = [r for r in on_standby if r.payload.get("proof")]
    # every standby transaction ended with its write proof, and none was assigned an id;
    # the one PostgreSQL aborted (the read-only probe) needs none: it was rolled back whole
    assert ends and all(r.payload["xid"] is None for r in ends)
    assert len([r for r in ends if not r.payload["proven"]]) == 1
    refused = [r for r in on_standby if r.outcome == "refused"]
    assert [r.sql for r in refused] == ["update core.objects set name = name"]


def test_a_standby_whose_replay_lags_is_refused_not_read_stale(workspace: Path, pair: Pair) -> None:
    toml = workspace / "oneroof.toml"
    toml.write_text(
        toml.read_text().replace("[production]\n", '[production]\nstatement_timeout = "1s"\n', 1)
    )
    with connect.open_admin(pair.standby.dsn("app")) as standby:
        standby.execute("select pg_wal_replay_pause()")
        try:
            with connect.open_admin(pair.primary.dsn("app")) as primary:
                primary.execute("update core.objects set name = name")
            with (
                _ws(workspace) as ws,
                pytest.raises(DatabaseError, match="replayed") as refused,
                ws.replica(),
            ):
                pass
            assert "remove [production] replica_dsn" in str(refused.value)
        finally:
            standby.execute("select pg_wal_replay_resume()")
    pair.standby.wait_replayed(pair.primary)


def test_a_replica_dsn_that_is_not_a_standby_of_production_is_bad_input(
    workspace: Path, pair: Pair, prod_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = (workspace / "oneroof.toml").read_text()
    line = toml.splitlines().index('replica_dsn = "env:ONEROOF_STANDBY_DSN"') + 1
    # the primary itself: not in recovery
    monkeypatch.setenv("ONEROOF_STANDBY_DSN", pair.primary.dsn("app", user=roles.READER_ROLE))
    with (
        _ws(workspace) as ws,
        pytest.raises(ConfigError, match="not in recovery") as raised,
        ws.replica(),
    ):
        pass
    assert raised.value.line == line
    # a privileged role on the standby meets the same refusal as on the primary
    monkeypatch.setenv("ONEROOF_STANDBY_DSN", pair.standby.dsn("app"))
    with (
        _ws(workspace) as ws,
        pytest.raises(ForbiddenAction, match="may do more than read"),
        ws.replica(),
    ):
        pass
    # production is another cluster than the standby's primary
    monkeypatch.setenv("ONEROOF_STANDBY_DSN", pair.standby.dsn("app", user=roles.READER_ROLE))
    monkeypatch.setenv("ONEROOF_PROD_DSN", prod_server.reader_dsn("postgres"))
    with _ws(workspace) as ws, pytest.raises(ConfigError, match="not of production"), ws.replica():
        pass


def test_a_replica_dsn_that_is_the_primary_exits_2_naming_it(
    workspace: Path, pair: Pair, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ONEROOF_STANDBY_DSN", pair.primary.dsn("app", user=roles.READER_ROLE))
    code, _, err = run_cli(
        ["--workspace", str(workspace), "fingerprint", "production", "--mode", "counts"], capsys
    )
    assert code == 2 and "replica_dsn" in err and "Traceback" not in err


def _connections(lines: list[str]) -> list[str]:
    """Every connection a server's log shows authorized, as `user/application`: an
    application that sets no name counts too."""
    found = []
    for line in lines:
        authorized = re.search(r"connection authorized: user=(\S+)(.*)", line)
        if authorized:
            named = re.search(r"application_name=(\S+)", authorized.group(2))
            found.append(f"{authorized.group(1)}/{named.group(1) if named else '-'}")
    return found


# What a standby campaign reads on the primary besides the gates' own counters: the
# session's setup (identity, privileges, the guard's catalog, all catalog reads), the WAL
# position the standby is caught up to, the ledger a gate consults, the row activity of
# pg_stat_user_tables (a standby counts none of the primary's writes) and oneroof's own
# sessions in pg_stat_activity and its statement timeout (compliance).
PRIMARY_READS = (
    "pg_catalog.pg_current_wal_lsn()",
    "pg_catalog.pg_current_wal_insert_lsn()",
    "SHOW statement_timeout",
    "to_regclass('oneroof.rollout_ledger')",
    "from pg_catalog.pg_stat_user_tables",
    "from pg_catalog.pg_stat_activity",
)


def test_a_campaign_reads_the_standby_and_the_primary_only_for_gates(
    workspace: Path, pair: Pair, nonprod_server: Server
) -> None:
    primary_start = pair.log_size(pair.primary)
    standby_start = pair.log_size(pair.standby)
    with _ws(workspace) as ws:
        measured = campaign.measure(ws)
        records = ws.evidence.records("audit")
    assert measured.clone_created and measured.isolation_after.ok
    assert measured.entry.id == measured.exit.id  # production did not change meanwhile
    assert measured.production_suites  # checks on production: on the standby (below)
    for runs in (*measured.suites.values(), *measured.production_suites.values()):
        assert all(run.ok for run in runs), [run.verdict for run in runs]

    on_primary = _connections(pair.log_lines(pair.primary, primary_start))
    on_standby = _connections(pair.log_lines(pair.standby, standby_start))
    # the primary's log: one session in the whole campaign, the reader's guarded one
    assert on_primary == [f"{roles.READER_ROLE}/oneroof"], on_primary
    # the standby: the heavy readers, pg_dump's leader and its two workers among them
    assert on_standby.count(f"{roles.READER_ROLE}/oneroof-dump") == 3, on_standby
    assert f"{roles.READER_ROLE}/oneroof" in on_standby

    primary_sql = [r.sql or "" for r in records if r.payload.get("server") != "standby"]
    standby_sql = [r.sql or "" for r in records if r.payload.get("server") == "standby"]
    # no row of a table is hashed or dumped on the primary; the gates are read there
    assert not [s for s in primary_sql if "hashint8extended" in s or "hash_record" in s]
    assert not [s for s in primary_sql if "pg_dump" in s or "pg_export_snapshot" in s]
    assert [s for s in standby_sql if "hashint8extended" in s]
    assert [s for s in standby_sql if "pg_dump" in s and "--snapshot=" in s]
    gate_counters = set(config.load(workspace).counters.values())
    assert gate_counters & set(primary_sql)
    # and that one session read nothing but the gates and what they stand on
    reads = [
        r.sql or ""
        for r in records
        if r.payload.get("server") != "standby" and r.classification != "internal"
    ]
    assert reads
    other = [s for s in reads if s not in gate_counters and not any(p in s for p in PRIMARY_READS)]
    assert not other, other
    assert measured.production_sessions == 1 and measured.dump_sessions == 0

    facts = verdicts.reads_facts(measured.audit, measured.entry, measured.exit, None)
    assert f":{pair.standby.port}: " in facts["read from standby"]
    assert "+ 3 of pg_dump" in facts["read from standby"]
    assert float(facts["longest production snapshot"].split()[0]) > 0
    for fp in (measured.entry, measured.exit):
        assert fp.standby["replay_lsn"] == fp.wal and fp.standby["primary_lsn"]
        assert fp.standby["port"] == pair.standby.port


def _record(seq: int, sql: str, **payload: Any) -> Record:
    return Record(seq, "", "audit", "production", "internal", "sent", sql, payload, "", "")


def test_the_report_states_the_longest_snapshot_and_lock_and_the_standby() -> None:
    """`verdicts.reads_facts` over audit records alone (no database)."""
    audit = [
        _record(1, "-- connect"),
        _record(2, "-- connect", server="standby"),
        _record(3, "pg_dump …", server="standby", program="pg_dump", jobs=2),
        _record(4, "ROLLBACK", proof=True, seconds=0.4, lock_seconds=0.3),
        _record(5, "ROLLBACK", proof=True, seconds=9.5, lock_seconds=9.25, server="standby"),
        _record(6, "COMMIT", proof=True, apply=True, seconds=1.0, lock_seconds=1.0),
    ]
    standby = {"host": "/s", "port": 6432, "replay_lsn": "0/30", "primary_lsn": "0/38"}
    entry = replace(_FP, standby=standby)
    facts = verdicts.reads_facts(audit, entry, _FP, 300)
    assert facts["longest production snapshot"] == (
        "9.50 s on the standby (max_snapshot_seconds = 300)"
    )
    assert facts["longest production lock"] == "ACCESS SHARE for 9.25 s"
    assert facts["read from standby"] == (
        "/s:6432: 1 guarded session(s) + 3 of pg_dump; entry replayed 0/30 (primary 0/38),"
        " exit read on the primary"
    )
    assert verdicts.reads_facts(audit[:1], _FP, _FP, None) == {}


_FP = fingerprint.Fingerprint("full", {}, {}, "0" * 64)


def test_the_clone_made_from_the_standby_records_where_it_was_read(
    workspace: Path, pair: Pair
) -> None:
    from oneroof import clone

    with _ws(workspace) as ws:
        made = clone.create(ws)
        verified = clone.verify(ws)
    read_from: dict[str, Any] = made.marker["read_from"]
    assert read_from["standby"]["port"] == pair.standby.port
    assert read_from["replay_lsn"] and read_from["primary_lsn"]
    # the marker's source is production itself, the primary
    assert made.marker["source"]["port"] == pair.primary.port
    assert verified.ok, verified.reasons
    with psycopg.connect(pair.standby.dsn("app"), autocommit=True) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
