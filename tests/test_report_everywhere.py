"""One report in one order everywhere: the written files, `oneroof report`, the dashboard, the API.

Over a real ratified campaign's store (two campaigns). The order is the one the written
files give, read from `report.json`'s lists; each other form must show the same report —
the API the same JSON, the dashboard the file's HTML with only its bar added, the command
each file byte for byte — and the measurements come in that order in every text form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from fix_clone import run_cli
from oneroof import api, config
from oneroof.evidence import Evidence, Record

FORMATS = ("md", "json", "html")
_BAR_STYLE = re.compile(r"<style>(?:(?!</style>).)*?\.or-bar\b.*?</style>", re.DOTALL)
_BAR = re.compile(
    r"\n<nav class=\"or-bar\".*?</nav>\n(?:<p class=\"or-source\".*?</p>\n)?", re.DOTALL
)


@pytest.fixture(scope="module")
def http(campaign_workspace: Path) -> Iterator[TestClient]:
    with TestClient(api.create_app(config.load(campaign_workspace))) as client:
        yield client


@pytest.fixture(scope="module")
def campaigns(campaign_workspace: Path) -> list[Record]:
    store = Evidence(config.load(campaign_workspace).evidence_path, read_only=True)
    try:
        found = store.records("campaign")
    finally:
        store.close()
    assert len(found) == 2, "a ratified demo runs two campaigns"
    return found


def written(workspace: Path, campaign: Record) -> dict[str, str]:
    """The files the campaign wrote, from the directory its record names."""
    directory = Path(campaign.payload["directory"])
    if not directory.is_absolute():
        directory = workspace / directory
    return {fmt: (directory / f"report.{fmt}").read_text(encoding="utf-8") for fmt in FORMATS}


def in_order(text: str, needles: list[str]) -> bool:
    """Whether every needle occurs in `text`, each after the one before."""
    at = 0
    for needle in needles:
        found = text.find(needle, at)
        if found < 0:
            return False
        at = found + len(needle)
    return True


def without_bar(page: str) -> str:
    """A dashboard page without the two fragments the dashboard adds: its bar and their style."""
    page, styles = _BAR_STYLE.subn("", page)
    page, bars = _BAR.subn("", page)
    assert (styles, bars) == (1, 1), "the dashboard adds one bar and one stylesheet"
    return page


def fact_names(data: dict[str, Any]) -> list[str]:
    names = [str(fact["name"]) for fact in data["facts"]]
    assert len(names) > 1, "a campaign's report has measurements"
    return names


@pytest.mark.parametrize("which", [0, 1], ids=["first", "second"])
def test_the_api_the_dashboard_and_the_cli_show_the_written_report_in_its_order(
    which: int,
    http: TestClient,
    campaigns: list[Record],
    campaign_workspace: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    campaign = campaigns[which]
    files = written(campaign_workspace, campaign)
    data = json.loads(files["json"])
    names = fact_names(data)
    # the measurements come in the same order in the file's every form
    assert in_order(files["md"], [f"- {name}: " for name in names])
    assert in_order(files["html"], [f"<th>{escape(name)}</th>" for name in names])
    answer = http.get(f"/api/reports/{campaign.seq}").json()
    assert answer == data  # lists compared item by item, in order
    pages = [f"/reports/{campaign.seq}"]
    if campaign is campaigns[-1]:  # the newest: what `oneroof report` and `/` show
        assert http.get("/api/report").json() == data
        pages.append("/")
        for fmt in FORMATS:
            code, out, _ = run_cli(
                ["--workspace", str(campaign_workspace), "report", "-f", fmt], capsys
            )
            assert (code, out) == (0, files[fmt]), fmt
    for path in pages:
        page = http.get(path)
        assert page.status_code == 200, path
        assert without_bar(page.text) == files["html"], path
