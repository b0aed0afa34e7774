"""Running suites on real servers: statuses, rollback-only, residue proof, guard, outputs."""

from __future__ import annotations

import json
import re
import textwrap
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from fix_suite import junit_statuses, tap_statuses
from oneroof import cli, connect, fingerprint, suite
from oneroof.cli._app import out
from oneroof.workspace import Workspace as Ws

CLONE_SCHEMA = """
create table t (id serial primary key, v text);
insert into t (v) values ('orig'), ('keep');
create sequence s;
select nextval('s');
create sequence untouched;
create table guarded (id int);
create function refuse() returns trigger language plpgsql as $$
begin
    raise exception 'guarded is read-only';
end $$;
create trigger guarded_refuse before insert on guarded for each row execute function refuse();
create function bump() returns int language sql as
    $$ insert into t (v) values ('bumped') returning id $$;
"""


@pytest.fixture
def clone(nonprod_server: Any) -> Iterator[str]:
    """A marked clone database on the non-production server, with a small schema."""
    name = f"t{uuid.uuid4().hex[:10]}_clone"
    marker = json.dumps({connect.MARKER_KEY: {"method": "test"}})
    with nonprod_server.admin() as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("comment on database {} is {}").format(
                sql.Identifier(name), sql.Literal(marker)
            )
        )
    with nonprod_server.admin(name) as conn:
        conn.execute(CLONE_SCHEMA)
    try:
        yield name
    finally:
        nonprod_server.drop_database(name)


@pytest.fixture
def workspace(make_workspace: Any, prod_db: str, prod_server: Any) -> Any:
    with prod_server.admin(prod_db) as conn:
        conn.execute("create table canary (id int primary key, note text)")
        conn.execute("insert into canary values (1, 'original')")
    return make_workspace(prod_db)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


STATUS_CHECKS = """\
-- check: passes
-- expect: value=1
select 1;

-- check: fails
-- expect: rows=2
select 1;

-- check: errors
-- expect: empty
select 1/0;

-- check: times out
-- expect: empty
-- timeout: 100ms
select pg_sleep(3);

-- check: advances a sequence and is refused by a trigger, as expected
-- expect: error=P0001
insert into guarded select nextval('s');
"""

STATUS_SCENARIO = """\
-- scenario: broken
-- step: create
create table x (a int);
-- assert: sees the new table
-- expect: empty
select * from x;
-- step: breaks
insert into x values (1);
insert into missing values (1);
-- assert: never runs
-- expect: value=1
select count(*) from x;
-- step: never runs either
select 1;
"""

EXPECTED_STATUSES = {
    "passes": "passed",
    "fails": "failed",
    "errors": "error",
    "times out": "timeout",
    "advances a sequence and is refused by a trigger, as expected": "passed",
    "step: create": "passed",
    "assert: sees the new table": "passed",
    "step: breaks": "error",
    "assert: never runs": "not reached",
    "step: never runs either": "not reached",
}


def by_title(result: suite.RunResult) -> dict[str, suite.ItemResult]:
    return {item.title: item for item in result.items}


def test_each_status_is_reported_as_such(workspace: Any, clone: str, tmp_path: Path) -> None:
    folder = tmp_path / "suite"
    write(folder, "1_checks.sql", STATUS_CHECKS)
    write(folder, "2_scenario.sql", STATUS_SCENARIO)
    cfg = workspace.config()
    evidence = workspace.evidence()
    files = suite.load([folder])
    result = suite.run(Ws(cfg, evidence), files, target="clone", clone_name=clone, objective="T")
    items = by_title(result)
    assert {title: str(item.status) for title, item in items.items()} == EXPECTED_STATUSES
    assert items["fails"].expected == "rows=2" and items["fails"].got == "1 row"
    assert items["errors"].sqlstate == "22012"
    assert "division by zero" in (items["errors"].message or "")
    assert items["times out"].sqlstate == "57014"
    assert items["step: breaks"].sqlstate == "42P01"
    assert items["step: breaks"].message is not None
    assert items["step: breaks"].message.endswith("(statement at line 9)")
    assert "missing" in items["step: breaks"].message
    assert "'breaks'" in (items["assert: never runs"].message or "")
    assert all(item.ms >= 0 for item in result.items)
    assert items["times out"].ms >= 90
    assert (result.passed, result.total) == (3, 7)
    assert not result.ok
    # the sequence advanced by a rolled-back check is put back: nothing is left
    assert result.residue_free is True
    assert result.residue is not None and result.residue.sequences_restored == ["public.s"]

    record = evidence.latest("check-run")
    assert record is not None and record.seq == result.evidence_seq
    payload = record.payload
    assert payload["objective"] == "T" and payload["target"] == "clone"
    assert payload["verdict"] == "failed" and (payload["passed"], payload["total"]) == (3, 7)
    assert payload["residue"]["free"] is True
    import hashlib

    for entry in payload["files"]:
        assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
    statuses = [i["status"] for f in payload["files"] for i in f["items"]]
    assert statuses == list(EXPECTED_STATUSES.values())
    assert evidence.verify() == []


CHURN = """\
-- scenario: churn
-- step: insert, update, delete, create, call, advance
insert into t (v) values ('a'), ('b');
update t set v = 'changed' where v = 'keep';
delete from t where v = 'orig';
create table extra (x int);
insert into extra values (1), (2);
select nextval('s');
select nextval('s');
select setval('untouched', 42);
select bump();
create index t_v on t (v);
alter table t add column w int default 7;
-- assert: later steps see earlier ones
-- expect: rows=4
select * from t;
-- assert: the new table is there
-- expect: value=2
select count(*) from extra;
-- assert: the trigger refuses
-- expect: error=P0001
insert into guarded values (1);
-- step: the scenario goes on after an expected refusal
insert into extra values (3);
-- assert: and sees its own writes
-- expect: value=3
select count(*) from extra;
-- assert: the column added by a step is there
-- expect: value=7
select min(w) from t;
"""


def test_a_writing_scenario_leaves_the_clone_exactly_as_it_was(
    workspace: Any, clone: str, tmp_path: Path, nonprod_server: Any
) -> None:
    cfg = workspace.config()
    evidence = workspace.evidence()
    file = write(tmp_path, "churn.sql", CHURN)
    with connect.open_clone(cfg, evidence, clone) as session:
        before = fingerprint.take(session, mode="full")
    result = suite.run(Ws(cfg, evidence), suite.load([file]), target="clone", clone_name=clone)
    assert [str(i.status) for i in result.items] == ["passed"] * 7, [
        i.detail() for i in result.items
    ]
    assert result.ok and (result.passed, result.total) == (5, 5)
    assert result.residue is not None and result.residue.free
    assert result.residue.sequences_restored == ["public.s", "public.t_id_seq", "public.untouched"]
    assert result.summary() == "5/5 passed, residue-free, rollback-only"
    with connect.open_clone(cfg, evidence, clone) as session:
        after = fingerprint.take(session, mode="full")
    assert fingerprint.diff(before, after) == []  # every section, the schema included
    with nonprod_server.admin(clone) as conn:
        assert conn.execute("select last_value, is_called from s").fetchone() == (1, True)
        assert conn.execute("select last_value, is_called from untouched").fetchone() == (
            1,
            False,
        )
        assert conn.execute("select to_regclass('extra')").fetchone() == (None,)


def test_residue_is_named(workspace: Any, clone: str, tmp_path: Path, nonprod_server: Any) -> None:
    """Something outside the run writes to the clone meanwhile: the proof names the table."""
    file = write(tmp_path, "c.sql", "-- check: a\n-- expect: true\nselect true;\n")

    def intruder(_item: suite.ItemResult) -> None:
        with nonprod_server.admin(clone) as conn:
            conn.execute("insert into guarded select 1 where false")
            conn.execute("alter table guarded disable trigger guarded_refuse")
            conn.execute("insert into guarded values (99)")

    result = suite.run(
        Ws(workspace.config(), workspace.evidence()),
        suite.load([file]),
        target="clone",
        clone_name=clone,
        progress=intruder,
    )
    assert result.items[0].status == suite.Status.PASSED
    assert result.residue_free is False and not result.ok
    # the rows, and the schema too: the proof covers the catalog as well as the data
    assert result.residue is not None
    assert result.residue.residue == ["public.guarded", "trigger public.guarded.guarded_refuse"]
    assert "residue: public.guarded" in result.summary()


def test_without_the_residue_proof(workspace: Any, clone: str, tmp_path: Path) -> None:
    file = write(tmp_path, "c.sql", "-- check: a\n-- expect: true\nselect true;\n")
    result = suite.run(
        Ws(workspace.config(), workspace.evidence()),
        suite.load([file]),
        target="clone",
        clone_name=clone,
        residue=False,
    )
    assert result.ok and result.residue is None and result.residue_free is None


def test_a_timeout_in_a_step_stops_the_scenario(workspace: Any, clone: str, tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "slow.sql",
        """\
        -- scenario: slow
        -- timeout: 150ms
        -- step: slow
        select pg_sleep(3);
        -- assert: after
        -- expect: true
        select true;
        """,
    )
    result = suite.run(
        Ws(workspace.config(), workspace.evidence()),
        suite.load([file]),
        target="clone",
        clone_name=clone,
        residue=False,
    )
    assert [str(i.status) for i in result.items] == ["timeout", "not reached"]
    assert not result.ok and "1 step failed" in result.summary()


# -- production -----------------------------------------------------------------------------------

PRODUCTION_CHECKS = """\
-- check: reads
-- expect: value=1
select count(*) from canary;
-- check: tries to write
-- expect: empty
delete from canary returning *;
-- check: tries nextval
-- expect: true
select nextval('x') > 0;
"""


def test_a_check_that_writes_on_production_is_refused(
    workspace: Any, tmp_path: Path, prod_server: Any, prod_db: str
) -> None:
    file = write(tmp_path, "prod.sql", PRODUCTION_CHECKS)
    evidence = workspace.evidence()
    result = suite.run(Ws(workspace.config(), evidence), suite.load([file]), target="production")
    assert [str(i.status) for i in result.items] == ["passed", "refused", "refused"]
    refused = result.items[1]
    assert "DELETE writes rows" in (refused.message or "")
    assert not result.ok and result.residue is None
    with prod_server.admin(prod_db) as conn:
        assert conn.execute("select * from canary").fetchall() == [(1, "original")]
    audit = [(r.classification, r.outcome, r.sql) for r in evidence.records("audit")]
    assert ("write", "refused", "delete from canary returning *") in audit
    assert ("read", "sent", "select count(*) from canary") in audit


def test_writing_scenarios_are_not_applicable_to_production(workspace: Any, tmp_path: Path) -> None:
    writing = write(
        tmp_path,
        "1_writes.sql",
        """\
        -- scenario: writes
        -- assert: before
        -- expect: value=1
        select count(*) from canary;
        -- step: write
        update canary set note = 'x';
        -- assert: after
        -- expect: value=1
        select count(*) from canary where note = 'x';
        """,
    )
    reading = write(
        tmp_path,
        "2_reads.sql",
        """\
        -- scenario: reads
        -- step: look
        select 1;
        -- assert: canary present
        -- expect: value=original
        select note from canary;
        """,
    )
    evidence = workspace.evidence()
    result = suite.run(
        Ws(workspace.config(), evidence), suite.load([writing, reading]), target="production"
    )
    assert [str(i.status) for i in result.items] == [
        "not applicable",
        "not applicable",
        "not applicable",
        "passed",
        "passed",
    ]
    assert "UPDATE writes rows" in (result.items[0].message or "")
    assert result.files[0].note is not None
    assert result.ok  # not applicable neither passes nor fails the run
    assert (result.passed, result.total, result.not_applicable) == (1, 1, 2)
    sent = [r.sql or "" for r in evidence.records("audit")]
    assert not any("canary where note" in s or "update canary" in s for s in sent)


# -- the command line ----------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def table_statuses(text: str) -> dict[str, str]:
    statuses = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if len(cells) >= 6 and cells[1].isdigit():
            statuses[cells[3]] = cells[4]
    return statuses


def test_a_production_run_of_writing_scenarios_only_exits_1_nothing_checked(
    workspace: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writing = write(
        tmp_path,
        "writes.sql",
        """\
        -- scenario: writes
        -- step: write
        update canary set note = 'x';
        -- assert: after
        -- expect: value=1
        select count(*) from canary where note = 'x';
        """,
    )
    args = ["--workspace", str(workspace.path), "check", "--target", "production", str(writing)]
    code, stdout, _ = run_cli(args, capsys)
    assert code == 1
    assert "nothing was checked" in stdout
    assert "not checked" in stdout and "writes.sql:" in stdout and "UPDATE writes rows" in stdout


def test_terminal_json_junit_and_tap_agree(
    workspace: Any,
    clone: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(out, "width", 400)
    write(tmp_path, "suite/1_checks.sql", STATUS_CHECKS)
    write(tmp_path, "suite/2_scenario.sql", STATUS_SCENARIO)
    base = ["--workspace", str(workspace.path), "check", "suite", "--target", "clone"]
    base += ["--name", clone]

    code_json, text, _ = run_cli([*base, "--json", "--junit", "out/a.xml"], capsys)
    document = json.loads(text)  # stdout holds one JSON document and nothing else
    from_json = {
        (i["name"] if i["kind"] == "check" else f"{i['kind']}: {i['name']}"): i["status"]
        for f in document["files"]
        for i in f["items"]
    }
    junit_xml = (tmp_path / "out/a.xml").read_text()
    titles = [case.get("name") for case in ET.fromstring(junit_xml).iter("testcase")]
    from_junit = dict(zip(titles, junit_statuses(junit_xml), strict=True))
    suites = [s.get("name") for s in ET.fromstring(junit_xml).iter("testsuite")]
    assert suites == ["suite/1_checks.sql", "suite/2_scenario.sql"]

    code_tap, tap, _ = run_cli([*base, "--tap"], capsys)
    assert tap.startswith("TAP version 13\n1..11\n")  # 10 items and the residue proof
    assert re.search(r"^ok 11 - residue-free$", tap, re.MULTILINE)
    tap_titles = re.findall(
        r"^(?:not )?ok \d+ - suite/\d_\w+\.sql: (.*?)(?: # SKIP .*)?$", tap, re.MULTILINE
    )
    from_tap = dict(zip(tap_titles, tap_statuses(tap), strict=True))

    code_table, table, _ = run_cli(base, capsys)
    from_table = table_statuses(table)

    assert from_json == EXPECTED_STATUSES
    assert from_junit == EXPECTED_STATUSES
    assert from_tap == EXPECTED_STATUSES
    assert from_table == EXPECTED_STATUSES
    assert code_json == code_tap == code_table == 1
    assert document["ok"] is False and document["passed"] == 3 and document["total"] == 7
    assert "3/7 passed" in table and "residue-free" in table


def test_cli_passes_with_exit_zero_and_objective_suites(
    workspace: Any, clone: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = (workspace.path / "oneroof.toml").read_text()
    toml += '\n[[objective]]\nid = "A"\ntitle = "regression"\nsuites = ["checks"]\n'
    (workspace.path / "oneroof.toml").write_text(toml)
    write(workspace.path, "checks/a.sql", "-- check: a\n-- expect: true\nselect true;\n")
    base = ["--workspace", str(workspace.path), "check", "--target", "clone", "--name", clone]
    code, text, _ = run_cli([*base, "--objective", "A", "--json"], capsys)
    assert code == 0
    document = json.loads(text)
    assert document["objective"] == "A" and document["ok"] is True
    code, _, err = run_cli([*base, "--objective", "Z"], capsys)
    assert code == 2 and "'Z' is not an objective" in err


def test_parse_errors_exit_2_before_anything_is_sent(
    workspace: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "suite/1_good.sql", "-- check: a\n-- expect: true\nselect true;\n")
    write(tmp_path, "suite/2_bad.sql", "-- check: a\n-- expect: true\n\n-- check: b\n")
    args = ["--workspace", str(workspace.path), "check", str(tmp_path / "suite")]
    code, stdout, err = run_cli([*args, "--target", "production"], capsys)
    assert code == 2
    assert stdout == ""
    assert err.strip() == f"oneroof: {tmp_path / 'suite/2_bad.sql'}:1: check 'a' has no SQL"
    evidence = workspace.evidence()
    assert evidence.records() == []  # not even a connection to production was opened
    code, _, err = run_cli([*args, "--target", "staging"], capsys)
    assert code == 2 and "clone or production" in err
    code, _, err = run_cli(
        [
            *args[:-1],
            str(tmp_path / "suite/1_good.sql"),
            "--target",
            "production",
            "--json",
            "--tap",
        ],
        capsys,
    )
    assert code == 2 and "choose one" in err
