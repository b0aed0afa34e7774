"""Forbidden-action compliance on real servers: each category fails when its violation is staged.

One kept demo (a small One-Roof production, its clone) per module; each test stages one
violation — a LISTEN session or a dblink connection from the clone, an app-role session on
the clone, an enabled subscription, a leftover oneroof session on production — runs the
campaign and finds the category named in the report, then undoes what it staged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from oneroof import campaign, config, demo, report
from oneroof.evidence import Evidence
from oneroof.workspace import Workspace

CLONE = "one_roof_clone"
ENVIRONMENT = ("ONEROOF_PROD_DSN", "ONEROOF_APPLY_DSN", "ONEROOF_NONPROD_DSN")


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
    saved = {name: os.environ.get(name) for name in ENVIRONMENT}
    root = Path(tempfile.mkdtemp(prefix="oneroof-test-compliance-"))
    try:
        result = demo.run(directory=root / "demo", objects=60, gap=6, keep=True)
        assert result.ok
        dsns = demo.dsns(result.directory)
        yield Kept(
            result.workspace,
            dsns["ONEROOF_APPLY_DSN"],
            dsns["ONEROOF_PROD_DSN"],
            dsns["ONEROOF_NONPROD_DSN"],
        )
    finally:
        demo.stop(root / "demo")
        shutil.rmtree(root, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def failing(result: report.Report) -> dict[str, str]:
    return {line.name: line.measured for line in result.compliance.lines if not line.ok}


def test_a_clean_campaign_holds_every_category(kept: Kept) -> None:
    result = kept.campaign()
    assert failing(result) == {}
    assert result.compliance.percent == 100
    names = [line.name for line in result.compliance.lines]
    for group in ("approvals", "proposals", "laws", "events", "issues", "dots"):
        assert f"group:{group}" in names  # the groups oneroof.toml declares in [compliance]
    scans = next(line for line in result.compliance.lines if line.name == "scans")
    assert "statement_timeout = 30s" in scans.measured


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
        # production sees it too: a session of oneroof's reader that oneroof did not open
        assert "sessions" in failed and "oneroof_reader" in failed["sessions"]
    finally:
        with psycopg.connect(kept.clone_dsn(), autocommit=True) as admin:
            admin.execute("drop extension if exists dblink")


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


def test_a_leftover_oneroof_session_on_production(kept: Kept) -> None:
    cfg = config.load(kept.workspace)
    with Workspace(cfg, Evidence(cfg.evidence_path)) as other:
        worker = other.open_production()  # a `--jobs` worker nobody closed
        try:
            failed = failing(kept.campaign())
        finally:
            worker.close()
    assert set(failed) == {"sessions"}, failed
    assert "oneroof_reader: 1 (pg_stat_activity)" in failed["sessions"]
    assert "application oneroof" not in failed["sessions"]  # named: pid (user, app)
    assert "(oneroof_reader, oneroof)" in failed["sessions"]
