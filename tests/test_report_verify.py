"""`oneroof report verify`: a report recomputed from its evidence records, digests, chain.

The ratified demo of the test session (`campaign_workspace`; its servers are gone: verify
needs only the evidence store); each test works on its own copy of the workspace and edits
a report file, an evidence record, or the chain itself, and `report verify` must exit 1
naming what differs.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fix_clone import run_cli
from oneroof import report
from oneroof.evidence import GENESIS, _record_hash

pytestmark = pytest.mark.db


@pytest.fixture
def workspace(campaign_workspace: Path, tmp_path: Path) -> Path:
    """A copy of the ratified demo's workspace (fix_served), for this test to edit."""
    copy = tmp_path / "workspace"
    shutil.copytree(campaign_workspace, copy)
    return copy


def reports(workspace: Path) -> list[Path]:
    return sorted((workspace / ".oneroof" / "reports").iterdir())


def verify(
    workspace: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(
        ["--workspace", str(workspace), "report", "verify", *extra, "--json"], capsys
    )
    return code, json.loads(out)


def edit_record(
    workspace: Path, kind: str, change: Callable[[dict[str, Any]], None], *, rechain: bool = False
) -> int:
    """Edit the payload of the newest record of `kind` in place; with `rechain`, recompute
    every hash after it and the head file, as someone covering their tracks would."""
    path = workspace / ".oneroof" / "evidence.sqlite"
    with sqlite3.connect(path) as db:
        seq, payload = db.execute(
            "select seq, payload from records where kind = ? order by seq desc limit 1", (kind,)
        ).fetchone()
        data = json.loads(payload)
        change(data)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        db.execute("update records set payload = ? where seq = ?", (text, seq))
        if rechain:
            prev = GENESIS
            for row in db.execute("select * from records order by seq").fetchall():
                seq_, at, kind_, role, classification, outcome, sql, text_ = row[:8]
                digest = _record_hash(
                    seq_, at, kind_, role, classification, outcome, sql, text_, prev
                )
                db.execute(
                    "update records set prev_hash = ?, hash = ? where seq = ?",
                    (prev, digest, row[0]),
                )
                prev = digest
            last = db.execute("select max(seq) from records").fetchone()[0]
            path.with_suffix(".head").write_text(f"{last} {prev}\n")
    return int(seq)


def test_a_fresh_report_verifies(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = verify(workspace, capsys)
    assert code == 0, found["problems"]
    assert found["ok"] and found["report_id"].startswith("OR-")
    # md, json, html of the newest campaign, in this (copied) workspace
    assert found["files"] == [
        str(reports(workspace)[-1] / f"report.{f}") for f in ("md", "json", "html")
    ]
    first = reports(workspace)[0] / "report.md"
    code, found = verify(workspace, capsys, str(first))
    assert code == 0 and found["files"] == [str(first)]
    # the first report of the two, by its id, recomputed from its own records
    assert found["report_id"] in first.read_text()


@pytest.mark.parametrize("fmt", ["md", "json", "html"])
def test_an_edited_report_file_is_named(
    workspace: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    file = reports(workspace)[0] / f"report.{fmt}"
    text = file.read_text()
    assert "NO-GO" in text
    file.write_text(text.replace("NO-GO", "GO", 1))
    code, found = verify(workspace, capsys, str(file))
    assert code == 1
    assert len(found["problems"]) == 1
    problem = found["problems"][0]
    assert problem.startswith(f"{file}: edited since the campaign wrote it")
    assert "line " in problem and "NO-GO" in problem


def test_an_edited_evidence_record_is_named(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail_a_check(data: dict[str, Any]) -> None:
        data["files"][0]["items"][0]["status"] = "failed"

    seq = edit_record(workspace, "check-run", fail_a_check)
    code, found = verify(workspace, capsys)
    assert code == 1
    problems = found["problems"]
    assert (
        f"evidence chain: record {seq}: edited (its content no longer matches its hash)" in problems
    )
    assert any(
        p.startswith('recomputed from the evidence records: report.final_status: recorded "PASS"')
        for p in problems
    ), problems


def test_an_edited_record_is_found_even_with_a_rewritten_chain(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_longer_closed(data: dict[str, Any]) -> None:
        data["values"]["gate_values"]["axis_approvals"] = 1

    edit_record(workspace, "measurements", no_longer_closed, rechain=True)
    code, found = verify(workspace, capsys)
    assert code == 1
    assert not any(p.startswith("evidence chain") for p in found["problems"])  # covered up
    assert any(
        'matrix[Persistent axis substrate (anywhere)].status: recorded "NO-GO", the evidence '
        'gives "GO"' in p
        for p in found["problems"]
    ), found["problems"]


def test_an_edited_fingerprint_that_changes_no_figure_is_named(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def another_exit_count(data: dict[str, Any]) -> None:
        assert data["label"] == "exit"
        counts = data["sections"]["counts"]
        table = sorted(counts)[0]
        counts[table] += 1  # the report shows no exit count: only the digests tell

    seq = edit_record(workspace, "fingerprint", another_exit_count, rechain=True)
    code, found = verify(workspace, capsys)
    assert code == 1
    assert (
        f"evidence: exit fingerprint (record {seq}) was edited: what it holds no longer gives "
        "its counts digest" in found["problems"]
    ), found["problems"]


def test_an_edited_campaign_record_breaks_its_digest(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def flip(data: dict[str, Any]) -> None:
        data["report"]["final_status"] = "FAIL"

    edit_record(workspace, "campaign", flip, rechain=True)
    code, found = verify(workspace, capsys)
    assert code == 1
    assert any("no longer matches the digest it recorded" in p for p in found["problems"])


def test_one_order_in_the_file_the_cli_and_the_json(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = reports(workspace)[-1]
    for fmt in ("md", "json", "html"):
        code, out, _ = run_cli(["--workspace", str(workspace), "report", "--format", fmt], capsys)
        assert code == 0
        assert out == (newest / f"report.{fmt}").read_text(), fmt
    facts = json.loads((newest / "report.json").read_text())["facts"]
    names = [fact["name"] for fact in facts]
    assert names[:3] == ["started", "entry fingerprint", "exit fingerprint"]  # not sorted


@pytest.mark.parametrize("where", ["no folder", "a folder"])
def test_an_output_that_cannot_be_a_file_is_bad_input(
    workspace: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    target = workspace / "nowhere" / "r.md" if where == "no folder" else workspace
    code, _, err = run_cli(["--workspace", str(workspace), "report", "-o", str(target)], capsys)
    assert code == 2 and "--output" in err and "Traceback" not in err, err


def test_a_pdf_is_a_file(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--workspace", str(workspace), "report", "--format", "pdf"], capsys)
    assert code == 2 and "name it with -o" in err
    if report.chromium() is None:
        pytest.skip("no Chromium here: `make test-browser` installs it")
    target = workspace / "report.pdf"
    code, _, _ = run_cli(
        ["--workspace", str(workspace), "report", "--format", "pdf", "-o", str(target)], capsys
    )
    assert code == 0 and target.read_bytes().startswith(b"%PDF-")


def test_verify_refuses_what_is_not_a_report(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = workspace / "notes.md"
    stray.write_text("# my notes\n")
    code, _, err = run_cli(["--workspace", str(workspace), "report", "verify", str(stray)], capsys)
    assert code == 2 and "names no report id" in err
    code, _, err = run_cli(
        ["--workspace", str(workspace), "report", "verify", str(workspace / "nope.md")], capsys
    )
    assert code == 2 and "no such report file" in err
