"""The report renderers: the same data in md, json and html, escaped, round-tripping."""

from __future__ import annotations

import json

from fix_report import sample
from oneroof import report


def test_markdown_has_the_seed_structure() -> None:
    text = report.to_markdown(sample())
    for heading in (
        "Final status: **PASS**",
        "## Per-objective verdicts",
        "## GO / NO-GO matrix",
        "## Remaining blockers",
        "## Next macros",
        "## Forbidden-action compliance: 100%",
    ):
        assert heading in text
    assert "| B axis/topic | PASS (prototype) | 7/7 |" in text
    assert "| Production ownership seed | NO-GO | `ospa >= 1` | ospa=0 |" in text
    assert "emit: failed \\| x" in text  # pipes escaped inside a table cell


def test_html_is_escaped_and_printable() -> None:
    page = report.to_html(sample(report.FAIL))
    assert "C &lt;events&gt;" in page
    assert "<events>" not in page
    assert "@media print" in page
    assert 'class="status FAIL"' in page


def test_json_round_trips() -> None:
    original = sample()
    data = json.loads(report.to_json(original))
    assert data["compliance"]["percent"] == 100
    assert data["verdicts"][1]["label"] == "PASS (prototype)"
    again = report.Report.from_dict(data)
    assert report.to_markdown(again) == report.to_markdown(original)


def test_compliance_is_not_100_when_a_forbidden_statement_ran() -> None:
    compliance = report.Compliance(10, 2, 1, 1, 1, 0, False, True)
    assert compliance.percent == 50  # one of two forbidden attempts was executed
    assert report.Compliance(10, 4, 3, 1, 1, 0, False, True).percent == 75
    assert report.Compliance(10, 1, 1, 0, 0, 0, True, True).percent == 100
