"""Forbidden-action compliance on real servers: each category fails when its violation is staged.

One kept demo (a small One-Roof production, its clone) per module; each test stages one
violation — a LISTEN session, a dblink connection or a postgres_fdw foreign table read from
the clone, an app-role session on the clone, an enabled subscription, an emit trigger
enabled on the clone, a change committed on the clone outside oneroof, a leftover oneroof
session on production, a full content fingerprint scanning more rows than the budget
because production's statistics under-estimated them — runs the campaign and finds the
category named in the report and the final status FAIL, then undoes what it staged.
Production writes by oneroof and a session without a statement timeout cannot be staged
against real servers (the read-only transaction, the guard and the configuration refuse
them first): tests/test_verdicts.py stages them in the measurements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fix_report import demo_run
from oneroof import campaign, config, demo, report
from oneroof.evidence import Evidence
from oneroof.workspace import Workspace

pytestmark = pytest.mark.db
CLONE = "one_roof_clone"


@dataclass
class Kept:
    """A demo whose servers keep running: its workspace and its two servers' DSNs."""

    workspace: Path
    production: str  # superuser on the production database
    reader: str  # the production reader
    nonprod: str  # superuser on the non-production server

    def clone_dsn(self, user: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(self.nonprod, dbname=CLONE, user=user)

    def campaign(self) -> report.Report:
        cfg = config.load(self.workspace)
        with Workspace(cfg, Evidence(cfg.evidence_path)) as ws:
            return campaign.run(ws).report


@pytest.fixture(scope="module")
def kept() -> Iterator[Kept]:
    with (
        demo_run("oneroof-test-compliance-", objects=60, gap=6, keep=True) as result,
        pytest.MonkeyPatch.context() as patch,
    ):
        dsns = demo.dsns(result.directory)
        for name, value in dsns.items():  # the workspace reads its servers from these
            patch.setenv(name, value)
        yield Kept(
            result.workspace,
            dsns["ONEROOF_APPLY_DSN"],
            dsns["ONEROOF_PROD_DSN"],
            dsns["ONEROOF_NONPROD_DSN"],
        )


def failing(result: report.Report) -> dict[str, str]:
    failed = {line.name: line.measured for line in result.compliance.lines if not line.ok}
    # a forbidden action never leaves the final status PASS
    assert (result.final_status == report.FAIL) == bool(failed), result.final_status
    return failed


def test_a_clean_campaign_holds_every_category(kept: Kept) -> None:
    result = kept.campaign()
    assert failing(result) == {}
    assert result.compliance.percent == 100
    names = [line.name for line in result.compliance.lines]
    for group in ("approvals", "proposals", "laws", "events", "issues", "dots"):
        assert f"group:{group}" in names  # the groups oneroof.toml declares in [compliance]
    scans = next(line for line in result.compliance.lines if line.name == "scans")
    assert "statement_timeout = 30s" in scans.measured
    # the demo's chain of `after`s: one root, and nothing changed since the demo's report
    assert [(b.target, b.change) for b in result.blockers] == [
        ("Production ownership seed", "unchanged")
    ]
    assert "(unchanged)" in report.to_markdown(result)


def test_a_listening_session_on_the_clone(kept: Kept) -> None:
    with psycopg.connect(kept.clone_dsn(), autocommit=True) as listener:
        listener.execute("LISTEN oneroof_dispatch")
        failed = failing(kept.campaign())
    assert set(failed) == {"notify"}, failed
    assert "LISTEN oneroof_dispatch" in failed["notify"]


def test_a_dblink_connection_from_the_clone_to_production(kept: Kept) -> None:
    with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
        admin.execute("create extension if not exists dblink")
    try:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as outbound:
            outbound.execute("select dblink_connect('prod', %s)", (kept.reader,))
            failed = failing(kept.campaign())
        assert "outbound" in failed, failed
        assert "dblink_connect" in failed["outbound"]
        # on production it is a session of the reader's role with another name: not counted
        # as oneroof's (a person reading as that role is not), the clone's side names it
        assert "sessions" not in failed, failed
    finally:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
            admin.execute("drop extension if exists dblink")


def test_a_foreign_table_of_postgres_fdw_read_on_the_clone(kept: Kept) -> None:
    production = psycopg.conninfo.conninfo_to_dict(kept.reader)
    with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
        admin.execute("create extension postgres_fdw")
        admin.execute(
            sql.SQL(
                "create server prod_fdw foreign data wrapper postgres_fdw"
                " options (host {}, port {}, dbname {})"
            ).format(*(sql.Literal(str(production[k])) for k in ("host", "port", "dbname")))
        )
        admin.execute(
            "create user mapping for postgres server prod_fdw options (user 'oneroof_reader')"
        )
        admin.execute(
            "create foreign table public.prod_laws (code text) server prod_fdw"
            " options (schema_name 'gov', table_name 'laws')"
        )
    try:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as outbound:
            outbound.execute("select count(*) from public.prod_laws").fetchone()
            failed = failing(kept.campaign())
        assert "outbound" in failed, failed
        assert "reading a foreign table: 1" in failed["outbound"]
        mapping = "user mappings (credentials of foreign servers): 1 (prod_fdw for postgres)"
        assert mapping in failed["outbound"]
    finally:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
            admin.execute("drop extension if exists postgres_fdw cascade")


def test_an_emit_trigger_enabled_on_the_clone(kept: Kept) -> None:
    with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
        admin.execute("alter table ops.issues enable trigger emit_issue_event")
    try:
        failed = failing(kept.campaign())
    finally:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
            admin.execute("alter table ops.issues disable trigger emit_issue_event")
    assert set(failed) == {"dispatch"}, failed
    assert "emit triggers disabled on the clone: 0 of 1" in failed["dispatch"]


def test_a_change_committed_on_the_clone_outside_oneroof(kept: Kept) -> None:
    edit = "update gov.laws set body = body || %s where code = 'LAW-CHARTER' and version = 1"
    with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
        admin.execute(edit, (" (edited on the clone)",))
    try:
        failed = failing(kept.campaign())
    finally:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
            admin.execute(
                "update gov.laws set body = left(body, -length(%s))"
                " where code = 'LAW-CHARTER' and version = 1",
                (" (edited on the clone)",),
            )
    assert set(failed) == {"islands"}, failed
    assert "1 table(s) differ from the source fingerprint" in failed["islands"]
    assert "gov.laws" in failed["islands"]


def test_an_app_role_session_on_the_clone(kept: Kept) -> None:
    with psycopg.connect(kept.nonprod, autocommit=True) as admin:
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            admin.execute("create role app_rw login")
        admin.execute(
            sql.SQL("grant connect on database {} to app_rw").format(sql.Identifier(CLONE))
        )
    try:
        with psycopg.connect(kept.clone_dsn("app_rw"), autocommit=True) as app:
            app.execute("select 1")
            result = kept.campaign()
        failed = failing(result)
        assert set(failed) == {"retargeting"}, failed
        assert "sessions of app roles (app_rw, directus) on the clone: 1" in failed["retargeting"]
        assert "CONNECT still granted to app_rw" in failed["retargeting"]
    finally:
        with psycopg.connect(kept.nonprod, autocommit=True) as admin:
            admin.execute(
                sql.SQL("revoke connect on database {} from app_rw").format(sql.Identifier(CLONE))
            )


def test_an_enabled_subscription_of_the_clone(kept: Kept) -> None:
    with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
        admin.execute(
            sql.SQL(
                "create subscription oneroof_test_sub connection {} publication none_such"
                " with (connect = false)"
            ).format(sql.Literal(kept.production))
        )
        admin.execute("alter subscription oneroof_test_sub enable")
    try:
        failed = failing(kept.campaign())
        assert "subscriptions" in failed, failed
        assert (
            "enabled subscriptions of the clone: 1 of 1 (oneroof_test_sub)"
            in failed["subscriptions"]
        )
    finally:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
            admin.execute("alter subscription oneroof_test_sub disable")
            admin.execute("alter subscription oneroof_test_sub set (slot_name = none)")
            admin.execute("drop subscription oneroof_test_sub")


def test_a_full_scan_above_the_budget_the_statistics_hid(kept: Kept) -> None:
    toml = kept.workspace / "oneroof.toml"
    original = toml.read_text()
    with psycopg.connect(kept.production, autocommit=True) as admin:
        # never analysed: its estimate is 0 rows, so the fingerprint's budget check lets the
        # full content scan go ahead, and only the rows it counted tell it went too far
        admin.execute("create table ops.unanalysed as select g from generate_series(1, 5000) g")
    toml.write_text(original.replace("[production]\n", "[production]\nscan_budget_rows = 2500\n"))
    try:
        failed = failing(kept.campaign())
    finally:
        toml.write_text(original)
        with psycopg.connect(kept.production, autocommit=True) as admin:
            admin.execute("drop table ops.unanalysed")
    assert set(failed) == {"scans"}, failed
    assert "ABOVE the scan budget of 2500 rows" in failed["scans"]


def test_a_person_reading_production_as_the_reader_is_not_oneroof_s(kept: Kept) -> None:
    # a DBA in psql, a dashboard, a teammate's script: the same role, not oneroof's session
    with psycopg.connect(kept.reader, application_name="psql") as person:
        person.execute("select 1").fetchall()
        assert failing(kept.campaign()) == {}


def test_a_leftover_oneroof_session_on_production(kept: Kept) -> None:
    cfg = config.load(kept.workspace)
    with Workspace(cfg, Evidence(cfg.evidence_path)) as other:
        worker = other.open_production()  # a `--jobs` worker nobody closed
        try:
            failed = failing(kept.campaign())
        finally:
            worker.close()
    assert set(failed) == {"sessions"}, failed
    assert "named oneroof: 1 (pg_stat_activity)" in failed["sessions"]
    assert "application oneroof" not in failed["sessions"]  # named: pid (user, app)
    assert "(oneroof_reader, oneroof)" in failed["sessions"]
