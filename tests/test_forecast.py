"""The rehearsal's forecast: locks, time, rewrites, index builds, constraints and WAL, each
checked against what a second session sees while the rehearsal is held inside the artifact;
the hazards and `[rollout] hazards = "refuse"`; `transaction: none` artifacts rehearsed and
applied exactly once, and a rerun after a SIGKILL mid-build.

The pure decisions (hazards, the text forms, parsing) run without a database.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fix_rollout import SCHEMA, Env
from oneroof import approvals, clone, config, rollout
from oneroof.errors import BadInput, OneroofError
from oneroof.evidence import Evidence
from oneroof.rollout import forecast, standalone
from oneroof.rollout.forecast import (
    LOCK_MODES,
    ConstraintChange,
    Forecast,
    IndexBuild,
    RelationLock,
    Rewrite,
)
from oneroof.workspace import Workspace as Ws

# -- pure: the hazards, the text forms -------------------------------------------------------


def test_lock_modes_read_as_the_manual_writes_them_and_sizes_as_pg_size_pretty() -> None:
    assert forecast.mode_name("ShareRowExclusiveLock") == "SHARE ROW EXCLUSIVE"
    assert forecast.mode_name("AccessShareLock") == "ACCESS SHARE"
    assert forecast.strongest({"RowExclusiveLock", "AccessShareLock"}) == "RowExclusiveLock"
    assert forecast.size_text(312) == "312 bytes"
    assert forecast.size_text(62_464) == "61 kB"
    assert forecast.size_text(14 * 1024 * 1024) == "14 MB"


def test_the_summary_line_says_lock_time_wal_rows_and_hazards() -> None:
    measured = Forecast(
        ms=14.2,
        wal_bytes=62_464,
        locks=[
            RelationLock("core.ownership", "RowExclusiveLock", "table", 1131),
            RelationLock("core.actors", "AccessShareLock", "table", 9),
        ],
        deltas={"core.ownership": {"inserted": 0, "updated": 210, "deleted": 0}},
    )
    line = forecast.summary("F_prod_02_activate", measured.to_dict())
    # the rows it writes; the table's own size only where the artifact reads all of it
    assert line == (
        "F_prod_02_activate: ROW EXCLUSIVE on core.ownership, 14 ms, 61 kB WAL, 210 rows; no hazard"
    )
    heavy = Forecast(
        ms=1500,
        wal_bytes=3 * 1024 * 1024,
        locks=[RelationLock("s.a", "AccessExclusiveLock", "table", 20000)],
        rewrites=[Rewrite("s.a", "table", 20000)],
        indexes=[IndexBuild("s.i", "s.b", 20000, concurrently=False, valid=True)],
        constraints=[
            ConstraintChange("fk", "s.c", "foreign key", "added", True, 20000, 20000),
            ConstraintChange("ck", "s.c", "check", "added", False, 20000, 0),
        ],
    )
    assert forecast.summary("X", heavy.to_dict()) == (
        "X: ACCESS EXCLUSIVE on s.a, 1500 ms, 3072 kB WAL, 0 rows, rewrites s.a (20,000 rows),"
        " builds index s.i on s.b (20,000 rows), adds foreign key fk (validated, 20,000 rows),"
        " adds check ck (NOT VALID); no hazard"
    )
    measured.hazards = forecast.judge(measured, 100, 1000)
    assert [h.kind for h in measured.hazards] == []
    assert forecast.actual_text(measured.to_dict(), 12.0, 71_680) == (
        "forecast 14 ms, 61 kB WAL; actual 12 ms, 70 kB WAL"
    )


def test_a_stored_forecast_reads_back_as_it_was_stored() -> None:
    """The report is judged again from the evidence: the stored form must round-trip."""
    measured = Forecast(
        ms=32.123456,
        wal_bytes=1_858_000,
        locks=[RelationLock("s.a", "AccessExclusiveLock", "table", 20000, held_before=True)],
        rewrites=[Rewrite("s.a", "table", 20000)],
        indexes=[IndexBuild("s.i", "s.a", 20000, concurrently=True, valid=True, rebuilt=True)],
        constraints=[ConstraintChange("fk", "s.a", "foreign key", "added", True, 20000, 20000)],
        scanned={"s.a": 20000},
        deltas={"s.a": {"inserted": 0, "updated": 3, "deleted": 0}},
        transaction=False,
        lock_ms=32.1,
        sampled=True,
        estimated=["s.a"],
    )
    measured.hazards = forecast.judge(measured, 10, 1)
    stored = measured.to_dict()
    assert Forecast.from_dict(json.loads(json.dumps(stored))).to_dict() == stored
    assert forecast.summary("X", stored).startswith("X: at most ACCESS EXCLUSIVE on s.a, 32 ms")


MODES = st.sampled_from(LOCK_MODES)
ROWS = st.one_of(st.none(), st.integers(min_value=0, max_value=10**7))


@settings(max_examples=300, deadline=None)
@given(
    mode=MODES,
    rows=ROWS,
    lock_ms=st.floats(min_value=0, max_value=10**6),
    new=st.booleans(),
    kind=st.sampled_from(["table", "partitioned table", "view", "materialized view"]),
    limit_rows=st.integers(min_value=0, max_value=10**6),
    limit_ms=st.integers(min_value=0, max_value=10**5),
)
def test_a_lock_is_a_hazard_exactly_when_strong_on_a_large_or_long_held_existing_table(
    mode: str,
    rows: int | None,
    lock_ms: float,
    new: bool,
    kind: str,
    limit_rows: int,
    limit_ms: int,
) -> None:
    measured = Forecast(
        ms=lock_ms,
        wal_bytes=0,
        locks=[RelationLock("s.t", mode, kind, rows, new)],
        lock_ms=lock_ms,
    )
    hazards = forecast.judge(measured, limit_rows, limit_ms)
    strong = LOCK_MODES.index(mode) >= LOCK_MODES.index("ShareRowExclusiveLock")
    large = rows is not None and rows > limit_rows
    expected = strong and not new and kind != "view" and (large or lock_ms > limit_ms)
    assert [h.kind for h in hazards] == (["lock"] if expected else [])
    if expected:
        assert forecast.mode_name(mode) in hazards[0].reason and hazards[0].safer


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, limit=st.integers(min_value=0, max_value=10**6), flag=st.booleans())
def test_rewrites_constraints_and_index_builds_are_hazards_on_large_tables_only(
    rows: int | None, limit: int, flag: bool
) -> None:
    large = rows is not None and rows > limit
    rewrite = Forecast(0, 0, rewrites=[Rewrite("s.t", "table", rows, truncated=flag)])
    assert [h.kind for h in forecast.judge(rewrite, limit, 10**9)] == (
        ["rewrite"] if large and not flag else []
    )
    check = ConstraintChange("c", "s.t", "foreign key", "added", flag, rows, rows)
    assert [h.kind for h in forecast.judge(Forecast(0, 0, constraints=[check]), limit, 1)] == (
        ["constraint"] if large and flag else []
    )
    validation = ConstraintChange("c", "s.t", "check", "validated", True, rows, rows)
    assert forecast.judge(Forecast(0, 0, constraints=[validation]), limit, 1) == []
    index = IndexBuild("s.i", "s.t", rows, concurrently=flag, valid=True)
    hazards = forecast.judge(Forecast(0, 0, indexes=[index]), limit, 1)
    assert [h.kind for h in hazards] == (["index"] if large and not flag else [])
    if hazards:
        assert "CONCURRENTLY" in hazards[0].safer and "transaction: none" in hazards[0].safer


def test_the_apply_check_refuses_hazards_only_under_refuse() -> None:
    payload = {
        "artifacts": [
            {"id": "A", "forecast": {"hazards": [{"reason": "rewrite of s.t"}]}},
            {"id": "B", "forecast": {"hazards": []}},
            {"id": "C", "forecast": None},
        ]
    }
    ok, detail = forecast.hazard_check("warn", payload)
    assert ok and "1 hazard(s), warned only: A: rewrite of s.t" in detail
    ok, detail = forecast.hazard_check("refuse", payload)
    assert not ok and detail.startswith('refused ([rollout] hazards = "refuse"): A: rewrite')
    assert forecast.hazard_check("refuse", {"artifacts": []}) == (
        True,
        "the rehearsal's forecast names no hazard",
    )


# -- pure: `transaction: none` artifacts, as parsed ----------------------------------------------


@pytest.fixture
def parse_cfg(tmp_path: Path) -> config.Config:
    (tmp_path / "oneroof.toml").write_text('[production]\ndsn = "dbname=nowhere"\n')
    return config.load(tmp_path)


def artifact_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan" / "01_x.sql"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_transaction_none_artifact_parses_and_lints_without_assuming_a_transaction(
    tmp_path: Path,
) -> None:
    file = artifact_file(
        tmp_path,
        """\
        -- artifact: X_index
        -- gate: true
        -- transaction: none
        create index concurrently items_name on app.items (name);
        vacuum (analyze) app.items;
        """,
    )
    artifact = rollout.parse_artifact(file, [])
    assert not artifact.transactional and artifact.to_dict()["transaction"] == "none"
    assert [standalone.index_target(s.sql) for s in artifact.statements] == [
        standalone.IndexTarget("create", "items_name", "app", "app.items"),
        None,
    ]


@pytest.mark.parametrize(
    ("header", "body", "line", "words"),
    [
        ("", "create index concurrently i on t (a);", 3, "put it in an artifact of its own"),
        ("", "vacuum t;", 3, "`-- transaction: none`"),
        ("-- transaction: none\n", "update t set a = 1;", 4, "move this statement"),
        ("-- transaction: none\n", "create index concurrently on t (a);", 4, "name the index"),
        ("-- transaction: none\n-- expect-delta: s.t +0\n", "vacuum t;", 4, "`expect-delta:`"),
        ("-- transaction: each\n", "vacuum t;", 3, "the only value is `none`"),
    ],
)
def test_statements_in_the_wrong_kind_of_artifact_are_bad_input_with_file_and_line(
    tmp_path: Path, header: str, body: str, line: int, words: str
) -> None:
    file = artifact_file(tmp_path, f"-- artifact: X\n-- gate: true\n{header}{body}\n")
    with pytest.raises(BadInput) as caught:
        rollout.parse_artifact(file, [])
    assert caught.value.line == line, caught.value
    assert words in str(caught.value)
    assert caught.value.file == str(file)


# -- on real servers ---------------------------------------------------------------------------

SHOP = """
create schema shop;
create table shop.parents (id int primary key);
insert into shop.parents select generate_series(1, 100);
create table shop.big_a (id int primary key, n int not null);
create table shop.big_b (id int primary key, n int not null);
create table shop.big_c (id int primary key, parent int not null);
create table shop.small_d (id int primary key, n int not null);
create table shop.big_e (id int primary key, n int not null);
insert into shop.big_a select g, g from generate_series(1, 20000) g;
insert into shop.big_b select g, g from generate_series(1, 20000) g;
insert into shop.big_c select g, g % 100 + 1 from generate_series(1, 20000) g;
insert into shop.small_d select g, g from generate_series(1, 210) g;
insert into shop.big_e select g, g from generate_series(1, 20000) g;
"""

# each artifact ends by waiting on an advisory lock the test holds: the rehearsal is held
# inside the artifact, after its body, while a second session reads pg_locks
HOLD = "select pg_catalog.pg_advisory_xact_lock({key});"
CASES = {
    "01_a.sql": (
        "S_a_rewrite",
        "alter table shop.big_a add column r float8 default random();",
        "",
    ),
    "02_b.sql": ("S_b_index", "create index big_b_n on shop.big_b (n);", ""),
    "03_c.sql": (
        "S_c_foreign_key",
        "alter table shop.big_c add constraint big_c_parent foreign key (parent)"
        " references shop.parents (id);",
        "",
    ),
    "04_d.sql": (
        "S_d_update",
        "update shop.small_d set n = n + 1;",
        "-- expect-delta: shop.small_d ~210\n",
    ),
}
KEYS = {"S_a_rewrite": 7101, "S_b_index": 7102, "S_c_foreign_key": 7103, "S_d_update": 7104}
TABLES = {
    "S_a_rewrite": "shop.big_a",
    "S_b_index": "shop.big_b",
    "S_c_foreign_key": "shop.big_c",
    "S_d_update": "shop.small_d",
}


def write_cases(directory: Path, hold: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (artifact_id, body, header) in CASES.items():
        wait = ("\n" + HOLD.format(key=KEYS[artifact_id])) if hold else ""
        (directory / name).write_text(
            f"-- artifact: {artifact_id}\n-- gate: true\n{header}-- auto: true\n{body}{wait}\n"
        )
    return directory


CIC = """\
-- artifact: S_e_index
-- gate: true
-- transaction: none
-- auto: true
create index concurrently big_e_n on shop.big_e (n);
"""


@pytest.fixture
def shop(make_env: Callable[[str], Env]) -> Iterator[Env]:
    """Production with the tables of (a) to (e): large ones of 20,000 rows and a small one."""
    built = make_env(SCHEMA + SHOP)
    try:
        yield built
    finally:
        with contextlib.suppress(OneroofError):
            with_ws(built, clone.drop)  # the clone and its golden copy, when `create` made them


def set_rollout(env: Env, **values: Any) -> None:
    toml = env.workspace / "oneroof.toml"
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    text = re.sub(r"\n\[rollout\]\n(?:[^\[\n][^\n]*\n)*", "\n", toml.read_text())
    toml.write_text(text + "[rollout]\n" + lines)


def with_ws(env: Env, work: Callable[[Ws], Any]) -> Any:
    evidence = Evidence(env.cfg.evidence_path)
    try:
        return work(Ws(env.cfg, evidence))
    finally:
        evidence.close()


def rehearse(env: Env, plan_dir: Path) -> rollout.Rehearsal:
    result: rollout.Rehearsal = with_ws(
        env, lambda ws: rollout.rehearse(ws, rollout.load_plan(plan_dir, ws.cfg))
    )
    return result


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def clone_conn(env: Env) -> psycopg.Connection[Any]:
    dsn = psycopg.conninfo.make_conninfo(env.nonprod_dsn, dbname=env.clone)
    return psycopg.connect(dsn, autocommit=True)


def strongest_seen(conn: psycopg.Connection[Any], pid: int) -> dict[str, str]:
    """The second session's own reading: strongest granted mode per user relation of `pid`."""
    rows = conn.execute(
        "select n.nspname || '.' || c.relname, l.mode from pg_locks l"
        " join pg_class c on c.oid = l.relation join pg_namespace n on n.oid = c.relnamespace"
        " where l.pid = %s and l.granted and n.nspname = 'shop' and c.relkind = 'r'",
        (pid,),
    ).fetchall()
    seen: dict[str, list[str]] = {}
    for relation, mode in rows:
        seen.setdefault(relation, []).append(mode)
    return {relation: forecast.strongest(modes) for relation, modes in seen.items()}


def waiting_on(conn: psycopg.Connection[Any], key: int) -> int | None:
    """The backend waiting for the advisory lock `key` (the rehearsal, held in an artifact)."""
    row = conn.execute(
        "select pid from pg_locks where locktype = 'advisory' and objid = %s and not granted",
        (key,),
    ).fetchone()
    return int(row[0]) if row else None


class Rehearsing:
    """A rehearsal in a thread of its own, so the test can look at it from outside."""

    def __init__(self, env: Env, plan_dir: Path) -> None:
        self.box: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, args=(env, plan_dir))
        self.thread.start()

    def _run(self, env: Env, plan_dir: Path) -> None:
        try:
            self.box["result"] = rehearse(env, plan_dir)
        except BaseException as exc:  # surfaced by `result`, in the test's thread
            self.box["error"] = exc

    def join(self) -> None:
        self.thread.join(timeout=120)

    def result(self) -> rollout.Rehearsal:
        """The rehearsal's outcome, which must have passed residue-free."""
        self.join()
        assert "error" not in self.box, self.box.get("error")
        result: rollout.Rehearsal = self.box["result"]
        assert result.ok and result.residue_free, result.to_dict()
        return result


def test_each_forecast_matches_what_a_second_session_sees_inside_the_artifact(shop: Env) -> None:
    set_rollout(shop, hazard_lock_ms=600_000)  # the test's own holds are not the artifact's
    plan_dir = write_cases(shop.workspace / "rollout" / "S_plan", hold=True)
    shop.make_clone()
    observed: dict[str, dict[str, str]] = {}
    with clone_conn(shop) as holder, clone_conn(shop) as observer:
        for key in KEYS.values():
            holder.execute("select pg_advisory_lock(%s)", (key,))
        running = Rehearsing(shop, plan_dir)
        try:
            for artifact_id, key in KEYS.items():
                pid = wait_for(functools.partial(waiting_on, observer, key))
                observed[artifact_id] = strongest_seen(observer, pid)
                holder.execute("select pg_advisory_unlock(%s)", (key,))
        finally:
            holder.execute("select pg_advisory_unlock_all()")
            running.join()
    result = running.result()
    measured = {a: f.to_dict() for a, f in result.forecasts.items()}

    for artifact_id, table in TABLES.items():
        locks = {lock["relation"]: lock for lock in measured[artifact_id]["locks"]}
        # the forecast's mode on the artifact's table is the one the second session saw
        seen = observed[artifact_id][table]
        assert locks[table]["mode"] == forecast.mode_name(seen), (artifact_id, locks, seen)
        assert measured[artifact_id]["wal_bytes"] > 0
        assert measured[artifact_id]["ms"] > 0

    a, b, c, d = (measured[a] for a in TABLES)
    # (a) a volatile default rewrites the table under ACCESS EXCLUSIVE
    assert observed["S_a_rewrite"]["shop.big_a"] == "AccessExclusiveLock"
    assert a["rewrites"] == [
        {"relation": "shop.big_a", "kind": "table", "rows": 20000, "truncated": False}
    ]
    assert {h["kind"] for h in a["hazards"]} == {"lock", "rewrite"}
    # (b) an index built without CONCURRENTLY holds SHARE on its table
    assert observed["S_b_index"]["shop.big_b"] == "ShareLock"
    assert [(i["index"], i["concurrently"], i["rows"]) for i in b["indexes"]] == [
        ("shop.big_b_n", False, 20000)
    ]
    assert [h["kind"] for h in b["hazards"]] == ["index"]
    # (c) a foreign key without NOT VALID: SHARE ROW EXCLUSIVE on both tables, a full scan
    assert observed["S_c_foreign_key"]["shop.parents"] == "ShareRowExclusiveLock"
    assert {lk["relation"]: lk["mode"] for lk in c["locks"]}["shop.parents"] == (
        "SHARE ROW EXCLUSIVE"
    )
    [constraint] = c["constraints"]
    assert constraint["type"] == "foreign key" and constraint["validated"]
    assert constraint["rows"] == 20000 and constraint["scanned_rows"] >= 20000
    assert {h["kind"] for h in c["hazards"]} == {"lock", "constraint"}
    # (d) a plain UPDATE of 210 rows: ROW EXCLUSIVE, its deltas, no hazard
    assert observed["S_d_update"]["shop.small_d"] == "RowExclusiveLock"
    # the earlier artifacts' locks, still held in the one transaction, are not d's
    assert [(lk["relation"], lk["mode"]) for lk in d["locks"]] == [
        ("shop.small_d", "ROW EXCLUSIVE")
    ]
    assert d["deltas"] == {"shop.small_d": {"inserted": 0, "updated": 210, "deleted": 0}}
    assert d["hazards"] == [] and d["rewrites"] == d["indexes"] == d["constraints"] == []
    assert re.fullmatch(
        r"S_d_update: ROW EXCLUSIVE on shop\.small_d, \d+ ms, \d+ (bytes|kB) WAL, 210 rows;"
        r" no hazard",
        forecast.summary("S_d_update", d),
    ), forecast.summary("S_d_update", d)
    # a rewrite of 20,000 rows writes far more WAL than an update of 210
    assert a["wal_bytes"] > max(20000 * 20, 5 * d["wal_bytes"]), (a["wal_bytes"], d["wal_bytes"])

    # the evidence keeps it where approvals sign it
    record = with_ws(shop, lambda ws: ws.evidence.latest("rehearsal"))
    runs = {run["id"]: run for run in record.payload["artifacts"]}
    assert runs["S_d_update"]["forecast"] == d
    assert record.payload["forecast"]["policy"] == "warn"
    assert len(record.payload["forecast"]["hazards"]) == 5


def test_hazards_refuse_fails_the_rehearsal_and_apply_refuses_the_plan(shop: Env) -> None:
    plan_dir = write_cases(shop.workspace / "rollout" / "S_plan", hold=False)
    shop.make_clone()
    warned = rehearse(shop, plan_dir)
    assert warned.ok and len(warned.hazards) >= 5

    # a policy switched after the rehearsal is applied at apply: refused, nothing written
    set_rollout(shop, hazards="refuse")
    done = shop.cli("rollout", "apply", str(plan_dir), "--execute", "--json")
    assert done.returncode == 3, done.stdout + done.stderr
    assert 'hazards = "refuse"' in done.stderr + done.stdout
    assert shop.ledger() == []

    refused = rehearse(shop, plan_dir)
    assert not refused.ok
    statuses = {run.id: run.status for run in refused.artifacts}
    assert statuses == {
        "S_a_rewrite": "refused",
        "S_b_index": "refused",
        "S_c_foreign_key": "refused",
        "S_d_update": "ok",
    }
    reason = next(r.reason for r in refused.artifacts if r.id == "S_b_index") or ""
    assert "without CONCURRENTLY" in reason and "safer: CREATE INDEX CONCURRENTLY" in reason
    shown = shop.cli("rollout", "rehearse", str(plan_dir))
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "refused" in shown.stdout and "safer:" in shown.stdout


def test_a_lock_an_earlier_artifact_holds_already_is_still_the_later_ones(env: Env) -> None:
    """In the one rolled-back transaction T_01's insert holds ROW EXCLUSIVE on app.items
    before T_02 updates it: T_02's own statistics still say it takes that lock."""
    env.make_clone()
    result = rehearse(env, env.plan_dir)
    assert result.ok, result.to_dict()
    locks = {
        artifact_id: [(lk.relation, forecast.mode_name(lk.mode), lk.held_before) for lk in f.locks]
        for artifact_id, f in result.forecasts.items()
    }
    assert ("app.items", "ROW EXCLUSIVE", False) in locks["T_01_add"]
    assert ("app.items", "ROW EXCLUSIVE", False) in locks["T_02_close"]
    assert ("app.items", "ACCESS SHARE", False) in locks["T_03_verify"]
    # rows when each artifact began, inside the transaction: 2, then 2 + 3 inserted
    rows = {a: {lk.relation: lk.rows for lk in f.locks} for a, f in result.forecasts.items()}
    assert rows["T_01_add"]["app.items"] == 2 and rows["T_02_close"]["app.items"] == 5


def test_apply_records_the_observed_duration_and_wal_next_to_the_forecast(shop: Env) -> None:
    plan_dir = write_cases(shop.workspace / "rollout" / "S_plan", hold=False)
    (plan_dir / "01_a.sql").unlink()
    shop.make_clone()
    rehearsed = rehearse(shop, plan_dir)
    assert rehearsed.ok, rehearsed.to_dict()
    # approvals sign the forecast with the rest of the rehearsal
    statement, _, _ = with_ws(
        shop, lambda ws: approvals.current(ws.evidence, rollout.load_plan(plan_dir, ws.cfg))
    )
    assert statement is not None
    lines = statement.text.splitlines()
    assert sum(line.startswith("  forecast: {") for line in lines) == 3
    assert sum(line.startswith("forecast: {") for line in lines) == 1
    # a ledger made before forecasts existed is upgraded by the apply
    old = [
        re.sub(r"\n    (forecast jsonb|duration_ms double precision|wal_bytes bigint),", "", ddl)
        for ddl in rollout.ledger_ddl("oneroof")
    ]
    assert "wal_bytes" not in "".join(old)
    for ddl in old:
        shop.prod(ddl)
    done = shop.cli("rollout", "apply", str(plan_dir), "--execute", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert set(document["forecast"]) == {"S_b_index", "S_c_foreign_key", "S_d_update"}
    rows = shop.prod(
        "select artifact, forecast, duration_ms, wal_bytes from oneroof.rollout_ledger order by id"
    )
    expected = {a: f.to_dict() for a, f in rehearsed.forecasts.items()}
    for artifact_id, predicted, duration, wal in rows:
        assert predicted == expected[artifact_id]
        assert duration > 0 and wal > 0
    status = shop.cli("rollout", "status", str(plan_dir))
    assert status.returncode == 0, status.stderr
    assert "actual" in status.stdout and "forecast" in status.stdout
    as_json = json.loads(shop.cli("rollout", "status", str(plan_dir), "--json").stdout)
    assert as_json["ledger"][0]["duration_ms"] > 0
    assert set(as_json["forecast"]["artifacts"]) == set(expected)
    plan = shop.cli("rollout", "plan", str(plan_dir))
    assert "S_d_update: ROW EXCLUSIVE on shop.small_d" in plan.stdout, plan.stdout


def make_real_clone(env: Env) -> None:
    """A clone with its golden copy, made by `clone create` (a committed rehearsal resets)."""
    with_ws(env, lambda ws: clone.create(ws))


def cic_plan(env: Env) -> Path:
    """The plan of (e), `CREATE INDEX CONCURRENTLY`, and a clone with its golden copy."""
    plan_dir = env.workspace / "rollout" / "S_cic"
    plan_dir.mkdir(parents=True)
    (plan_dir / "01_index.sql").write_text(CIC)
    make_real_clone(env)
    return plan_dir


def test_create_index_concurrently_is_rehearsed_on_its_own_and_the_clone_reset(
    shop: Env,
) -> None:
    plan_dir = cic_plan(shop)
    with clone_conn(shop) as blocker, clone_conn(shop) as observer:
        # a writer's open transaction: the concurrent build must wait for it, mid-build
        blocker.execute("begin")
        blocker.execute("update shop.big_e set n = n where id = 1")
        running = Rehearsing(shop, plan_dir)
        try:
            pid = wait_for(
                lambda: observer.execute(
                    "select pid from pg_stat_activity where query like 'create index concurrently%'"
                    " and wait_event_type = 'Lock'"
                ).fetchone()
            )[0]
            seen = strongest_seen(observer, pid)
            invalid = observer.execute(
                "select indisvalid from pg_index where indexrelid = 'shop.big_e_n'::regclass"
            ).fetchone()
        finally:
            blocker.execute("rollback")
            running.join()
    result = running.result()
    assert result.mode == rollout.rehearsal.COMMITTED
    assert seen == {"shop.big_e": "ShareUpdateExclusiveLock"} and invalid == (False,)
    measured = result.forecasts["S_e_index"].to_dict()
    assert measured["transaction"] == "none" and measured["locks_sampled"]
    assert [(lk["relation"], lk["mode"]) for lk in measured["locks"]] == [
        ("shop.big_e", "SHARE UPDATE EXCLUSIVE")
    ]
    assert measured["indexes"] == [
        {
            "index": "shop.big_e_n",
            "table": "shop.big_e",
            "rows": 20000,
            "concurrently": True,
            "valid": True,
            "rebuilt": False,
            "new_table": False,
        }
    ]
    assert measured["hazards"] == [] and measured["wal_bytes"] > 0
    # the clone was reset from its golden copy: the index is gone again, the marker ready
    assert shop.clone_sql("select to_regclass('shop.big_e_n')") == [(None,)]
    marker = shop.clone_sql(
        "select shobj_description(oid, 'pg_database') from pg_database"
        f" where datname = '{shop.clone}'"
    )[0][0]
    assert json.loads(marker)["oneroof_clone"]["state"] == "ready"


def index_rows(env: Env) -> list[tuple[Any, ...]]:
    return env.prod(
        "select c.relname, i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid"
        " where c.relname like 'big_e_n%' order by 1"
    )


@pytest.mark.parametrize("killed", ["client", "backend"])
def test_create_index_concurrently_is_applied_once_and_a_rerun_after_a_kill_finishes_it(
    shop: Env, killed: str
) -> None:
    """The apply's client is SIGKILLed mid-build, or its backend terminated."""
    plan_dir = cic_plan(shop)
    rehearsed = rehearse(shop, plan_dir)
    assert rehearsed.ok, rehearsed.to_dict()
    # nothing makes this build wait but the sampler's own snapshot: its lock is still seen
    locks = rehearsed.forecasts["S_e_index"].locks
    assert [(lk.relation, lk.mode) for lk in locks] == [("shop.big_e", "ShareUpdateExclusiveLock")]

    with psycopg.connect(shop.prod_dsn) as application:
        # an application transaction the build waits for: the apply is killed mid-build
        application.execute("update shop.big_e set n = n where id = 1")
        process = shop.popen("rollout", "apply", str(plan_dir), "--execute")
        try:
            wait_for(lambda: index_rows(shop) == [("big_e_n", False)])
            if killed == "client":
                os.kill(process.pid, signal.SIGKILL)
            else:
                shop.prod(
                    "select pg_terminate_backend(pid) from pg_stat_activity"
                    " where query like 'create index concurrently%' and pid <> pg_backend_pid()"
                )
        finally:
            out, err = process.communicate(timeout=60)
        # a dead client, or a client that saw its build end and halted the plan
        assert process.returncode == (-signal.SIGKILL if killed == "client" else 1), out + err
        # the server ends the dead client's build within a second: the index stays INVALID
        wait_for(
            lambda: (
                not shop.prod(
                    "select 1 from pg_stat_activity where query like 'create index concurrently%'"
                    " and pid <> pg_backend_pid()"
                )
            )
        )
        application.rollback()
    assert index_rows(shop) == [("big_e_n", False)]
    assert shop.ledger() == []

    rerun = shop.cli("rollout", "apply", str(plan_dir), "--execute", "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    document = json.loads(rerun.stdout)
    assert document["applied"] == ["S_e_index"]
    [run] = [a for a in document["artifacts"] if a["id"] == "S_e_index"]
    assert "left INVALID by an earlier attempt" in run["reason"]
    assert index_rows(shop) == [("big_e_n", True)]
    ledger = shop.prod(
        "select artifact, duration_ms > 0, wal_bytes > 0, forecast is not null"
        " from oneroof.rollout_ledger"
    )
    assert ledger == [("S_e_index", True, True, True)]

    again = shop.cli("rollout", "apply", str(plan_dir), "--execute", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["status"] == "nothing to do"
    assert len(shop.ledger()) == 1 and index_rows(shop) == [("big_e_n", True)]


def test_two_appliers_of_create_index_concurrently_build_it_exactly_once(shop: Env) -> None:
    plan_dir = cic_plan(shop)
    assert rehearse(shop, plan_dir).ok
    apply = ("rollout", "apply", str(plan_dir), "--execute", "--json")
    with psycopg.connect(shop.prod_dsn) as application:
        # an application transaction the first build waits for, while the second applier starts
        application.execute("update shop.big_e set n = n where id = 1")
        first = shop.popen(*apply)
        wait_for(lambda: index_rows(shop) == [("big_e_n", False)])
        second = shop.popen(*apply)
        # the second tries the plan's advisory lock, which the first's session holds (a wait
        # inside a statement would hold a snapshot the first's build waits for: a deadlock)
        wait_for(
            lambda: shop.prod(
                "select 1 from pg_stat_activity"
                " where query like 'select pg_catalog.pg_try_advisory_lock(%'"
            )
        )
        application.rollback()
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    done, waited = (json.loads(out) for out, _ in outputs)
    assert done["applied"] == ["S_e_index"] and waited["applied"] == []
    [run] = [a for a in waited["artifacts"] if a["id"] == "S_e_index"]
    assert run["status"] == "skipped" and "applied meanwhile" in run["reason"]
    assert len(shop.ledger()) == 1 and index_rows(shop) == [("big_e_n", True)]


def test_a_committed_rehearsal_keeps_the_order_and_resets_the_clone_even_when_it_fails(
    shop: Env,
) -> None:
    plan_dir = shop.workspace / "rollout" / "S_mixed"
    plan_dir.mkdir(parents=True)
    (plan_dir / "01_column.sql").write_text(
        "-- artifact: S_m_column\n-- gate: true\nalter table shop.big_e add column m int;\n"
    )
    (plan_dir / "02_index.sql").write_text(
        "-- artifact: S_m_index\n-- gate: true\n-- transaction: none\n"
        "create index concurrently big_e_m on shop.big_e (m);\n"
    )
    (plan_dir / "03_broken.sql").write_text(
        "-- artifact: S_m_broken\n-- gate: true\n-- transaction: none\n"
        "create index concurrently nowhere_x on shop.nowhere (x);\n"
    )
    make_real_clone(shop)
    result = rehearse(shop, plan_dir)
    statuses = [(run.id, run.status) for run in result.artifacts]
    # the index of 02 is built on the column 01 committed before it
    assert statuses == [("S_m_column", "ok"), ("S_m_index", "ok"), ("S_m_broken", "failed")]
    assert result.artifacts[2].sqlstate == "42P01"
    assert not result.ok and result.residue_free, result.residue
    assert result.forecasts["S_m_index"].indexes[0].valid
    # reset from the golden copy: neither the column nor the index is left
    assert shop.clone_sql(
        "select count(*) from pg_attribute where attrelid = 'shop.big_e'::regclass"
        " and attname = 'm'"
    ) == [(0,)]
    marker = shop.clone_sql(
        f"select shobj_description(oid, 'pg_database') from pg_database"
        f" where datname = '{shop.clone}'"
    )[0][0]
    assert json.loads(marker)["oneroof_clone"]["state"] == "ready"


@pytest.mark.parametrize(("ms", "hazard"), [(400.0, False), (600.0, True)])
def test_a_run_over_half_the_apply_timeout_is_a_hazard(ms: float, hazard: bool) -> None:
    found = forecast.judge(Forecast(ms, 0), 10**9, 10**9, timeout_ms=1000)
    assert [h.kind for h in found] == (["timeout"] if hazard else [])
    if found:
        assert "[rollout] statement_timeout" in found[0].reason
        assert forecast.summary("X", Forecast(ms, 0, hazards=found).to_dict()).endswith(
            "1 hazard(s): timeout"
        )


SLOW = """\
-- artifact: S_slow
-- gate: true
-- expect-delta: shop.small_d ~210
-- auto: true
update shop.small_d set n = n where (select count(*) from generate_series(1, 20000000)) > 0;
"""


def test_an_artifact_runs_under_the_rollout_timeout_and_the_reads_under_production_s(
    shop: Env,
) -> None:
    toml = shop.workspace / "oneroof.toml"
    toml.write_text(
        toml.read_text().replace('statement_timeout = "20s"', 'statement_timeout = "300ms"')
    )
    plan_dir = shop.workspace / "rollout" / "S_slow"
    plan_dir.mkdir(parents=True)
    (plan_dir / "01_slow.sql").write_text(SLOW)
    shop.make_clone()
    set_rollout(shop, statement_timeout="300ms")
    rehearsed = rehearse(shop, plan_dir)
    assert rehearsed.ok, rehearsed.to_dict()
    assert [h.kind for h in rehearsed.forecasts["S_slow"].hazards] == ["timeout"]

    # production's read timeout (300ms) would cancel the update; the apply's own does not
    set_rollout(shop, statement_timeout="5min")
    done = shop.cli("rollout", "apply", str(plan_dir), "--execute", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [artifact for artifact, _ in shop.ledger()] == ["S_slow"]
    sent = [
        r.sql for r in shop.evidence().records("audit") if r.sql and "statement_timeout" in r.sql
    ]
    pair = ["SET LOCAL statement_timeout = '300000ms'", "SET LOCAL statement_timeout = '300ms'"]
    assert any(sent[i : i + 2] == pair for i in range(len(sent))), sent


@pytest.mark.parametrize(
    ("artifact", "existing", "same"),
    [
        (
            "create index concurrently if not exists big_e_n on shop.big_e (n)",
            "CREATE INDEX big_e_n ON shop.big_e USING btree (n)",
            True,
        ),
        (
            "create unique index concurrently x on t (lower(name) asc nulls last) include (a)"
            " where (n > 0)",
            "CREATE UNIQUE INDEX x ON public.t USING btree (lower(name)) INCLUDE (a) WHERE (n > 0)",
            True,
        ),
        (
            "create index concurrently x on t (n desc nulls first)",
            "CREATE INDEX x ON t (n DESC)",
            True,
        ),
        ("create index concurrently x on t (n)", "CREATE INDEX x ON t USING btree (id)", False),
        ("create index concurrently x on t (n)", "CREATE UNIQUE INDEX x ON t (n)", False),
        ("create index concurrently x on t using hash (n)", "CREATE INDEX x ON t (n)", False),
        ("create index concurrently x on t (n) where n > 0", "CREATE INDEX x ON t (n)", False),
    ],
)
def test_an_index_is_the_artifact_s_when_its_definition_is(
    artifact: str, existing: str, same: bool
) -> None:
    assert (standalone.index_shape(artifact) == standalone.index_shape(existing)) is same


def test_a_same_named_index_of_another_definition_halts_the_build(shop: Env) -> None:
    plan_dir = cic_plan(shop)
    assert rehearse(shop, plan_dir).ok
    shop.prod("create index big_e_n on shop.big_e (id)")  # not the artifact's: another column
    done = shop.cli("rollout", "apply", str(plan_dir), "--execute", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "exists with another definition" in done.stdout
    assert shop.ledger() == []
    assert shop.prod("select pg_get_indexdef('shop.big_e_n'::regclass)") == [
        ("CREATE INDEX big_e_n ON shop.big_e USING btree (id)",)
    ]
