"""The read-only HTTP API, in process: JSON over the evidence store, one error shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fix_report import sample
from oneroof import api, config
from oneroof.evidence import Evidence


@pytest.fixture
def client(tmp_path: Path) -> tuple[TestClient, Evidence]:
    (tmp_path / "oneroof.toml").write_text('[production]\ndsn = "env:UNSET_FOR_API"\n')
    cfg = config.load(tmp_path)
    evidence = Evidence(cfg.evidence_path)
    return TestClient(api.create_app(cfg)), evidence


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


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_writes_are_refused(client, method: str) -> None:
    http, _ = client
    response = getattr(http, method)("/api/report")
    assert response.status_code == 405
    assert response.json()["error"]["status"] == 405


def test_bad_limit_and_unknown_path(client) -> None:
    http, _ = client
    assert http.get("/api/audit?limit=abc").json()["error"]["status"] == 400
    assert http.get("/api/audit?limit=0").status_code == 400
    assert http.get("/nothing").json() == {
        "error": {"status": 404, "message": "no such resource: /nothing"}
    }


def test_a_get_never_creates_the_evidence_store(tmp_path: Path) -> None:
    (tmp_path / "oneroof.toml").write_text('[production]\ndsn = "env:UNSET_FOR_API"\n')
    http = TestClient(api.create_app(config.load(tmp_path)))
    for path in ("/api/report", "/api/audit", "/api/audit/verify", "/"):
        assert http.get(path).status_code == 404
    assert not (tmp_path / ".oneroof").exists()


def test_a_corrupt_evidence_store_is_a_json_error(tmp_path: Path) -> None:
    (tmp_path / "oneroof.toml").write_text('[production]\ndsn = "env:UNSET_FOR_API"\n')
    (tmp_path / ".oneroof").mkdir()
    (tmp_path / ".oneroof" / "evidence.sqlite").write_bytes(b"not sqlite at all" * 100)
    http = TestClient(api.create_app(config.load(tmp_path)))
    response = http.get("/api/audit")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert "not a usable evidence store" in response.json()["error"]["message"]


def test_a_write_to_an_unknown_path_is_404(client) -> None:
    http, _ = client
    assert http.post("/nothing").json()["error"]["status"] == 404
