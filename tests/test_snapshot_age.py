"""`[production] max_snapshot_seconds`: no production snapshot of oneroof's lives longer.

A read transaction past the limit is ended at its next statement; a fingerprint instead
goes on with one snapshot per table and says so. Whether a snapshot was really renewed is
seen from a row another session commits meanwhile: one snapshot never sees it, a renewed
one does. The dump's snapshot is pg_dump's: it is held, and the clone still equals its
source.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fix_clone import clone_name, remove_clone, workspace_toml
from oneroof import campaign, clone, fingerprint
from oneroof.connect import SnapshotTooOld
from oneroof.workspace import Workspace as Ws

LIMIT = 1.0
TABLES = 300


def _build(prod_server: Any, database: str) -> None:
    with prod_server.admin(database) as conn:
        for name in ("a_first", "b_second", "c_third"):
            conn.execute(f"create table {name} as select g as id from generate_series(1, 50) g")


def _toml(name: str, limit: float | None) -> str:
    text = workspace_toml(name).replace("public.film", "public.a_first")
    if limit is not None:
        text = text.replace("[production]\n", f"[production]\nmax_snapshot_seconds = {limit}\n")
    return text


def _take_while_a_row_is_added(
    ws: Ws, prod_server: Any, database: str, jobs: int
) -> fingerprint.Fingerprint:
    """A full fingerprint during which, after its first table, the application commits a row
    into c_third and the clock passes the limit."""
    added = False

    def progress(done: int, total: int) -> None:
        nonlocal added
        if not added:
            added = True
            with prod_server.admin(database) as conn:
                conn.execute("insert into c_third values (51)")
            time.sleep(LIMIT + 0.2)

    with ws.production() as session:
        return fingerprint.take(
            session, mode="full", progress=progress, jobs=jobs, open_session=ws.open_production
        )


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_fingerprint_past_the_limit_reads_each_table_in_its_own_snapshot(
    make_workspace: Any, prod_server: Any, prod_db: str, jobs: int
) -> None:
    _build(prod_server, prod_db)
    limited = make_workspace(prod_db, _toml(clone_name(), LIMIT))
    with Ws(limited.config(), limited.evidence()) as ws:
        split = _take_while_a_row_is_added(ws, prod_server, prod_db, jobs)
        records = ws.evidence.records("audit")
    assert any("one snapshot per table after" in n for n in split.notes), split.notes
    assert "max_snapshot_seconds = 1" in " ".join(split.notes)
    # c_third is read after the first table (tables are taken in order, largest first with
    # jobs): a renewed snapshot sees the row committed meanwhile
    if jobs == 1:
        assert split.sections["counts"]["public.c_third"] == 51
    ends = [r for r in records if r.payload.get("proof")]
    assert ends and all(r.payload["xid"] is None and r.payload["proven"] for r in ends)
    assert max(float(r.payload["seconds"]) for r in ends) < LIMIT + 1.0


def test_without_a_limit_the_fingerprint_keeps_one_snapshot(
    make_workspace: Any, prod_server: Any, prod_db: str
) -> None:
    _build(prod_server, prod_db)
    plain = make_workspace(prod_db, _toml(clone_name(), None))
    with Ws(plain.config(), plain.evidence()) as ws:
        one = _take_while_a_row_is_added(ws, prod_server, prod_db, 1)
    assert not one.notes
    assert one.sections["counts"]["public.c_third"] == 50  # the row came after the snapshot


def test_a_production_transaction_past_the_limit_is_ended(
    make_workspace: Any, prod_server: Any, prod_db: str
) -> None:
    _build(prod_server, prod_db)
    workspace = make_workspace(prod_db, _toml(clone_name(), LIMIT))
    with Ws(workspace.config(), workspace.evidence()) as ws, ws.production() as session:
        with (
            pytest.raises(SnapshotTooOld, match="max_snapshot_seconds = 1") as raised,
            session.transaction(),
        ):
            assert session.scalar("select count(*) from a_first") == 50
            time.sleep(LIMIT + 0.1)
            try:
                session.scalar("select count(*) from b_second")
            except SnapshotTooOld:
                # ended: nothing more runs in it, even if the caller goes on
                with pytest.raises(SnapshotTooOld, match="was ended"):
                    session.scalar("select 1")
                raise
        assert "it was ended" in raised.value.message
        assert not session.in_transaction
        assert session.scalar("select count(*) from b_second") == 50  # the session goes on
        records = ws.evidence.records("audit")
    ended = [r for r in records if r.payload.get("proof") and r.payload["seconds"] > LIMIT]
    assert len(ended) == 1 and ended[0].payload["statements"] == ["select count(*) from a_first"]
    assert "select count(*) from b_second" not in [
        s for r in ended for s in r.payload["statements"]
    ]


def test_the_dump_holds_its_snapshot_and_the_clone_equals_its_source(
    make_workspace: Any, prod_server: Any, prod_db: str, nonprod_server: Any
) -> None:
    _build(prod_server, prod_db)
    name = clone_name()
    # a limit below what the dump and its source fingerprint take together
    workspace = make_workspace(prod_db, _toml(name, 0.05))
    try:
        with Ws(workspace.config(), workspace.evidence()) as ws:
            made = clone.create(ws)
            source = clone.source_fingerprint(ws)
            verified = clone.verify(ws)
            records = ws.evidence.records("audit")
        assert made.marker["state"] == "ready"
        assert not source.notes  # one snapshot: the dump's
        assert verified.ok, verified.reasons
        dump_end = [
            r
            for r in records
            if r.payload.get("proof")
            and any("pg_export_snapshot" in s for s in r.payload["statements"])
        ]
        assert dump_end and dump_end[0].payload["seconds"] > 0.05
    finally:
        remove_clone(nonprod_server, name)


def test_the_report_says_the_fingerprint_split_and_states_the_longest_snapshot_and_lock(
    make_workspace: Any, prod_server: Any, prod_db: str, nonprod_server: Any
) -> None:
    """A campaign on a clone made before: its entry and exit fingerprints pass the limit,
    and the report's warnings and facts say so, from the measurements' record."""
    _build(prod_server, prod_db)
    with prod_server.admin(prod_db) as conn:
        # many tables, each a few statements: the fingerprint outlasts every other
        # production transaction of the campaign, whatever the machine's speed
        for number in range(TABLES):
            conn.execute(
                f"create table t{number:03} as select g as id from generate_series(1, 5) g"
            )
    name = clone_name()
    workspace = make_workspace(prod_db, _toml(name, None))
    try:
        with Ws(workspace.config(), workspace.evidence()) as ws:
            clone.create(ws)
        workspace.write(_toml(name, 0.3))
        with Ws(workspace.config(), workspace.evidence()) as ws:
            result = campaign.run(ws)
        report = result.report
        split = [w for w in report.warnings if "one snapshot per table after" in w]
        assert split and "max_snapshot_seconds = 0.3" in split[0], (
            report.warnings,
            dict(report.facts),
        )
        assert report.facts["longest production snapshot"].endswith(
            "s (max_snapshot_seconds = 0.3)"
        )
        assert report.facts["longest production lock"].startswith("ACCESS SHARE for ")
        markdown = (result.directory / "report.md").read_text()
        assert "one snapshot per table after" in markdown
        assert "longest production snapshot" in markdown
    finally:
        remove_clone(nonprod_server, name)
