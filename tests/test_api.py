"""The read-only HTTP API and dashboard in process, and `oneroof serve` as a real command.

The store here is built by hand, record by record, so that each test controls exactly what
is in it; tests/test_openapi.py and tests/test_browser.py run over a real campaign's store.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fix_report import sample
from fix_served import CLI, serve
from oneroof import api, config, report
from oneroof.evidence import Evidence
from oneroof.suite.parsing import Status
from oneroof.suite.results import FileResult, ItemResult, RunResult

TOML = '[production]\ndsn = "env:UNSET_FOR_API"\n'
PAGES = ["/", "/reports", "/audit", "/fingerprints", "/check-runs", "/rehearsals"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "oneroof.toml").write_text(TOML)
    return tmp_path


@pytest.fixture
def client(workspace: Path) -> tuple[TestClient, Evidence]:
    cfg = config.load(workspace)
    evidence = Evidence(cfg.evidence_path)
    return TestClient(api.create_app(cfg)), evidence


def check_run(passed: int, failed: int, not_applicable: int = 0) -> dict[str, object]:
    """The payload `oneroof check` stores, from a real `RunResult`."""
    statuses = (
        [Status.PASSED] * passed
        + [Status.FAILED] * failed
        + [Status.NOT_APPLICABLE] * not_applicable
    )
    items = [
        ItemResult("c.sql", "check", f"check_{n}", n + 1, status, expected="empty", got="1 row")
        for n, status in enumerate(statuses)
    ]
    run = RunResult("production", "A", "app", [FileResult("c.sql", "0" * 64, "check", None, items)],
                    None, "2026-11-24T00:00:00+00:00")  # fmt: skip
    payload = run.to_dict()
    payload.pop("evidence_seq")
    return payload


def test_no_campaign_yet_is_404_in_the_error_shape(client) -> None:
    http, _ = client
    response = http.get("/api/report")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"status": 404, "message": "no campaign has run in this workspace yet"}
    }


def test_report_audit_and_dashboard(client) -> None:
    http, evidence = client
    evidence.audit("production", "read", "select 1", "sent")
    evidence.append("campaign", {"directory": "x", "report": sample().to_dict()})
    assert http.get("/api/report").json()["final_status"] == "PASS"
    assert http.get("/api/reports").json()[0]["headline"] == "7 objectives advanced"
    assert http.get("/api/audit?limit=5").json()[0]["sql"] == "select 1"
    assert http.get("/api/audit/verify").json()["intact"] is True
    page = http.get("/")
    assert page.status_code == 200 and "GO / NO-GO matrix" in page.text


def test_the_index_lists_every_endpoint_and_the_evidence_url(client) -> None:
    http, evidence = client
    assert http.get("/api").json()["as_of"] is None  # a store with nothing in it yet
    newest = evidence.audit("production", "read", "select 1", "sent")
    index = http.get("/api").json()
    assert index["as_of"] == {"seq": newest.seq, "at": newest.at}
    documented = http.get("/api/openapi.json").json()["paths"]
    listed = [e["path"] for e in index["endpoints"]] + [p["path"] for p in index["pages"]]
    assert sorted(listed) == sorted(documented)
    assert "/api/check-runs" in listed and "/api/evidence/{seq}" in listed
    assert index["evidence_url"] == "/evidence/{seq}" and "/evidence/{seq}" in listed
    assert index["endpoints"][0]["path"] == "/api"
    assert set(index["error"]["shape"]) == {"error"}


def test_every_list_is_newest_first_and_pages_by_sequence_number(client) -> None:
    http, evidence = client
    seqs = []
    for n in range(7):
        seqs.append(evidence.audit("production", "read", f"select {n}", "sent").seq)
        evidence.append("fingerprint", {"id": f"{n:064x}", "label": "entry"})
    newest_first = [row["seq"] for row in http.get("/api/audit").json()]
    assert newest_first == sorted(seqs, reverse=True)
    assert [row["seq"] for row in http.get("/api/audit?order=asc").json()] == seqs
    assert [row["seq"] for row in http.get("/api/fingerprints?limit=2").json()] == [
        seqs[-1] + 1,
        seqs[-2] + 1,
    ]
    # walking pages of 3 by their last seq gives every record once, in order, either way
    for order, key in (("desc", "before"), ("asc", "after")):
        walked: list[int] = []
        query = f"/api/audit?limit=3&order={order}"
        while True:
            page = http.get(query).json()
            walked += [row["seq"] for row in page]
            if len(page) < 3:
                break
            query = f"/api/audit?limit=3&order={order}&{key}={page[-1]['seq']}"
        assert walked == (sorted(seqs, reverse=True) if order == "desc" else seqs)
    row = http.get("/api/audit?limit=1").json()[0]
    assert row["url"] == f"/evidence/{row['seq']}"


def test_check_runs_carry_their_totals(client) -> None:
    http, evidence = client
    evidence.append("check-run", check_run(passed=5, failed=2, not_applicable=1))
    (row,) = http.get("/api/check-runs").json()
    assert row["totals"]["passed"] == 5 and row["totals"]["total"] == 7
    assert row["totals"]["by_status"]["failed"] == 2
    assert row["totals"]["by_status"]["not applicable"] == 1
    assert row["verdict"] == "failed" and row["summary"].startswith("5/7 passed")
    page = http.get("/check-runs").text
    assert "5/7" in page


def documented_paths() -> list[str]:
    return [e.path.replace("{seq}", "1") for e in api.ENDPOINTS]


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch", "options"])
def test_writes_are_refused_on_every_known_path(client, method: str) -> None:
    http, _ = client
    for path in documented_paths():
        response = http.request(method.upper(), path)
        assert response.status_code == 405, path
        assert response.headers["allow"] == "GET, HEAD"
        assert response.json()["error"] == {
            "status": 405,
            "message": f"{method.upper()} is not allowed on {path}: this API is read-only "
            "(GET and HEAD only)",
        }


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/nothing", "/api/nothing", "/api/report/x", "/evidence"])
def test_an_unknown_path_is_404_whatever_the_method(client, method: str, path: str) -> None:
    http, _ = client
    response = http.request(method, path)
    assert response.status_code == 404
    if method != "HEAD":
        assert response.json() == {
            "error": {"status": 404, "message": f"no such resource: {path} (GET /api lists them)"}
        }


def test_bad_parameters_are_400_naming_the_parameter(client) -> None:
    http, evidence = client
    evidence.audit("production", "read", "select 1", "sent")
    cases = {
        "/api/audit?limit=abc": "limit must be an integer from 1 to 1000, not 'abc'",
        "/api/audit?limit=0": "limit must be an integer from 1 to 1000, not '0'",
        "/api/audit?limit=%2B5": "limit must be an integer from 1 to 1000, not '+5'",
        "/api/audit?order=newest": "order must be desc or asc, not 'newest'",
        "/api/audit?limt=3": "/api/audit has no query parameter 'limt': "
        "use limit, order, before, after",
        "/api/report?limit=3": "/api/report has no query parameter 'limit': it takes none",
        "/api/audit?limit=2&limit=3": "limit is given 2 times: give it once",
        "/api/evidence/abc": "seq must be an integer from 1 to 9223372036854775807, not 'abc'",
        "/api/evidence/0": "seq must be an integer from 1 to 9223372036854775807, not '0'",
    }
    for path, message in cases.items():
        response = http.get(path)
        assert response.json() == {"error": {"status": 400, "message": message}}, path
    padded = "0" * 5000 + "2"  # more digits than int() converts, yet the number 2
    assert len(http.get(f"/api/audit?limit={padded}").json()) == 1
    page = http.get("/audit?limit=abc")
    assert page.status_code == 400 and "text/html" in page.headers["content-type"]
    assert "limit must be an integer from 1 to 1000" in page.text


def test_one_record_by_its_number(client) -> None:
    http, evidence = client
    audit = evidence.audit("production", "refused", "drop table t", "refused", reason="DDL")
    campaign = evidence.append("campaign", {"directory": "x", "report": sample().to_dict()})
    assert http.get(f"/api/evidence/{audit.seq}").json() == {
        **audit.as_dict(),
        "url": f"/evidence/{audit.seq}",
    }
    stored = report.Report.from_dict(sample().to_dict())  # what the server reads back
    assert http.get(f"/api/reports/{campaign.seq}").json() == stored.to_dict()
    assert http.get(f"/api/reports/{audit.seq}").json()["error"]["message"] == (
        f"record {audit.seq} is of kind audit, not a campaign's report "
        f"(its evidence: /api/evidence/{audit.seq})"
    )
    assert http.get("/api/evidence/99").json()["error"] == {
        "status": 404,
        "message": "no record 99: the evidence store holds records 1 to 2",
    }
    page = http.get(f"/evidence/{audit.seq}")
    assert page.status_code == 200 and "drop table t" in page.text
    assert 'id="kind">audit<' in page.text
    assert f'href="/reports/{campaign.seq}"' in http.get(f"/evidence/{campaign.seq}").text
    assert http.get("/evidence/99").status_code == 404


def test_every_page_says_as_of_the_newest_record(client) -> None:
    http, evidence = client
    evidence.append("campaign", {"directory": "x", "report": sample().to_dict()})
    newest = evidence.audit("production", "read", "select 1", "sent")
    for path in [*PAGES, "/reports/1", "/evidence/1", "/evidence/999"]:
        page = http.get(path).text
        assert f'as of record <a href="/evidence/{newest.seq}">{newest.seq}</a>' in page, path
        assert f'<time datetime="{newest.at}">' in page, path


def test_the_report_page_is_the_rendered_report_with_the_bar_on_top(client) -> None:
    http, evidence = client
    campaign = evidence.append("campaign", {"directory": "x", "report": sample().to_dict()})
    for path in ("/", f"/reports/{campaign.seq}"):
        served = http.get(path).text
        without_bar = re.sub(r"<style>\s*\.or-bar.*?</style>", "", served, count=1, flags=re.S)
        without_bar = re.sub(r"\n<nav class=\"or-bar\".*?</nav>\n<p class=\"or-source\".*?</p>\n",
                             "", without_bar, count=1, flags=re.S)  # fmt: skip
        stored = report.Report.from_dict(sample().to_dict())
        assert without_bar == report.render(stored, "html"), path
        assert served.index('<nav class="or-bar"') > served.index("<body")
        assert f'href="/evidence/{campaign.seq}"' in served


def test_a_broken_chain_shows_on_the_audit_page_and_on_the_record(client, workspace) -> None:
    http, evidence = client
    for n in range(3):
        evidence.audit("production", "read", f"select {n}", "sent")
    assert 'data-intact="true"' in http.get("/audit").text
    evidence.close()
    with sqlite3.connect(workspace / ".oneroof" / "evidence.sqlite") as db:
        db.execute("update records set sql = 'select 42' where seq = 2")
    verdict = http.get("/api/audit/verify").json()
    assert verdict["intact"] is False
    assert verdict["problems"] == ["record 2: edited (its content no longer matches its hash)"]
    page = http.get("/audit").text
    assert 'data-intact="false"' in page and "record 2: edited" in page
    assert "This record breaks the hash chain" in http.get("/evidence/2").text
    assert "broken elsewhere" in http.get("/evidence/1").text


def test_a_get_never_creates_the_evidence_store(workspace: Path) -> None:
    http = TestClient(api.create_app(config.load(workspace)))
    for path in ["/api/report", "/api/audit", "/api/audit/verify", "/api/evidence/1", *PAGES]:
        response = http.get(path)
        assert response.status_code == 404, path
    assert http.get("/api").json()["as_of"] is None
    assert not (workspace / ".oneroof").exists()


def test_a_corrupt_evidence_store_is_a_json_error(workspace: Path) -> None:
    (workspace / ".oneroof").mkdir()
    (workspace / ".oneroof" / "evidence.sqlite").write_bytes(b"not sqlite at all" * 100)
    http = TestClient(api.create_app(config.load(workspace)))
    response = http.get("/api/audit")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert "not a usable evidence store" in response.json()["error"]["message"]
    page = http.get("/audit")
    assert page.status_code == 500 and "not a usable evidence store" in page.text


def test_head_answers_without_a_body(client) -> None:
    http, evidence = client
    evidence.append("campaign", {"directory": "x", "report": sample().to_dict()})
    for path in ["/api/report", "/"]:
        response = http.head(path)
        assert response.status_code == 200 and response.content == b""


def test_pages_carry_no_script_and_say_so(client) -> None:
    http, evidence = client
    evidence.append("campaign", {"directory": "x", "report": sample().to_dict()})
    for path in PAGES:
        response = http.get(path)
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "<script" not in response.text


# --- `oneroof serve`, the real command ----------------------------------------------------


def run_serve(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--workspace", str(workspace), "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_refuses_a_port_out_of_range_in_one_line(workspace: Path, port: str) -> None:
    done = run_serve(workspace, f"--port={port}")
    assert done.returncode == 2
    assert done.stderr == (
        f"oneroof: --port {port} is not a TCP port: choose one from 1 to 65535 "
        "(0 picks a free one)\n"
    )
    assert done.stdout == ""


def test_serve_refuses_a_port_in_use_before_saying_serving(workspace: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve(workspace, "--port", str(port))
    assert done.returncode == 2
    assert done.stderr == (
        f"oneroof: port {port} on 127.0.0.1 is already in use: stop what listens there, "
        "or choose another with --port (0 picks a free one)\n"
    )


def test_serve_refuses_a_host_that_is_not_this_machine(workspace: Path) -> None:
    done = run_serve(workspace, "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: never local
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--host 192.0.2.1 is not an address" in done.stderr


def test_serve_on_a_free_port_prints_it_and_answers(workspace: Path) -> None:
    evidence = Evidence(workspace / ".oneroof" / "evidence.sqlite")
    evidence.append("campaign", {"directory": "x", "report": sample().to_dict()})
    running = serve(workspace)
    try:
        assert running.first_line == (
            f"oneroof: serving {workspace} on {running.url} (read-only; Ctrl-C stops)\n"
        )
        with urllib.request.urlopen(running.url + "api/report", timeout=30) as answer:
            assert json.load(answer)["final_status"] == "PASS"
    finally:
        running.stop()
