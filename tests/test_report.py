"""The report renderers: the same data in md, json, html and pdf, escaped, in one order."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fix_report import sample
from oneroof import report
from oneroof.evidence import canonical_json


def stored(original: report.Report) -> report.Report:
    """The report as the evidence store gives it back (canonical JSON, sorted keys)."""
    return report.Report.from_dict(json.loads(canonical_json(original.to_dict())))


def test_markdown_has_the_seed_structure_and_what_a_signer_needs() -> None:
    text = report.to_markdown(sample())
    headings = [
        "Final status: **PASS**",
        "## How to read this report",
        "## Per-objective verdicts",
        "## GO / NO-GO matrix",
        "## The remaining blocker",
        "## Next macros",
        "## Forbidden-action compliance: 100%",
        "## Sign-off",
        "## Counters",
        "## Measurements",
        "## Appendix: fingerprints and evidence",
    ]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)  # the order of the seed, then the signer's parts
    assert "Report id: OR-7-0123abcd" in text
    assert "| B axis/topic | PASS (prototype) | 7/7 | — |" in text
    assert "| Production safety | PASS | entry==exit fingerprint 69c674c3… | #3 |" in text
    assert "| Production ownership seed | NO-GO | `ospa >= 1` | ospa=0 | — |" in text
    assert "emit: failed \\| x" in text  # pipes escaped inside a table cell
    # only production targets are signed for; the clone's target is not
    assert "| Production ownership seed | NO-GO | ☐ GO ☐ NO-GO | | | | |" in text
    assert "| Clone suite | GO | ☐" not in text
    assert "| ospa | 0 | approvals recorded | #3 |" in text
    assert "- entry: `69c674c3" + "0" * 56 + "`" in text  # in full in the appendix only
    assert text.count("0" * 56) == 1
    assert "1 of 1 production target(s) are NO-GO" in text


def test_how_to_read_explains_pass_beside_no_go_and_fail() -> None:
    lines = report.how_to_read(sample())
    assert any(line.startswith("PASS or FAIL") for line in lines)
    assert any("NO-GO means the gate is closed" in line for line in lines)
    assert any("PASS while 1 of 1 production target(s) are NO-GO" in line for line in lines)
    failed = report.how_to_read(sample(report.FAIL))
    assert any("Here the final status is FAIL" in line for line in failed)


def test_warnings_come_first() -> None:
    warned = dataclasses.replace(sample(), warnings=["The clone is out of date (x)."])
    text = report.to_markdown(warned)
    assert text.index("## Read first") < text.index("Final status:")
    assert "- ⚠ The clone is out of date (x)." in text
    page = report.to_html(warned)
    assert page.index('class="warnings"') < page.index("Final status:")


def test_html_is_escaped_printable_and_links_evidence() -> None:
    page = report.to_html(sample(report.FAIL))
    assert "C &lt;events&gt;" in page
    assert "<events>" not in page
    assert "@media print" in page
    assert 'class="status FAIL"' in page
    assert '<a class="ev" href="/evidence/3">#3</a>' in page  # the dashboard's evidence view
    # page numbers and the report id on every printed page
    assert 'counter(page) " of " counter(pages)' in page
    assert "@bottom-left" in page and "OR-7-0123abcd" in page
    assert page.count('<div class="sign">') == 1


def test_a_title_cannot_escape_the_stylesheet() -> None:
    hostile = dataclasses.replace(sample(), title='x" } </style><script>alert(1)</script>')
    page = report.to_html(hostile)
    style = page[page.index("<style>") : page.index("</style>")]
    assert "<script>" not in style and '" }' not in style
    assert "<script>" not in page


def test_json_round_trips_in_one_order() -> None:
    original = sample()
    data = json.loads(report.to_json(original))
    assert data["compliance"]["percent"] == 100
    assert data["verdicts"][1]["label"] == "PASS (prototype)"
    assert data["verdicts"][0]["evidence"] == [3]
    assert [f["name"] for f in data["facts"]] == ["started", "entry fingerprint", "clone"]
    again = report.Report.from_dict(data)
    assert report.to_markdown(again) == report.to_markdown(original)
    # the evidence store sorts keys: the report it gives back reads the same everywhere
    for fmt in ("md", "json", "html"):
        assert report.render(stored(original), fmt) == report.render(original, fmt)


@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1),
        unique=True,
        max_size=12,
    )
)
def test_facts_keep_their_order_through_the_store(names: list[str]) -> None:
    original = dataclasses.replace(sample(), facts={name: i for i, name in enumerate(names)})
    assert list(stored(original).facts) == names


def test_a_report_of_an_older_version_still_reads() -> None:
    data = sample().to_dict()
    data["blockers"] = ["Production ownership seed: L2/L4 human ratification"]
    data["facts"] = {"counter gap": 210, "entry fingerprint": "69c674c3"}
    for key in ("id", "warnings", "counters", "since", "fingerprints", "ledger", "evidence"):
        del data[key]
    older = report.Report.from_dict(data)
    assert older.blockers[0].target == "Production ownership seed"
    assert older.blockers[0].blocker == "L2/L4 human ratification"
    assert older.facts["counter gap"] == 210 and older.ledger is None
    assert "## The remaining blocker" in report.to_markdown(older)


def test_compliance_counts_its_categories() -> None:
    compliance = report.Compliance(10, 2, 1, 1, 1, 0, False, True)
    assert compliance.percent == 50  # without categories: one of two attempts was executed
    assert report.Compliance(10, 4, 3, 1, 1, 0, False, True).percent == 75
    assert report.Compliance(10, 1, 1, 0, 0, 0, True, True).percent == 100
    lines = [report.ComplianceLine(f"c{i}", f"No c{i}", i != 0, "measured") for i in range(8)]
    assert dataclasses.replace(compliance, lines=lines).percent == 88  # 7 of 8 held
    assert dataclasses.replace(compliance, lines=lines[1:]).percent == 100
    shown = report.compliance_lines(dataclasses.replace(compliance, lines=lines))
    assert shown[0] == "VIOLATED — No c0: measured" and shown[1] == "No c1: measured"


def test_the_digest_changes_with_any_figure() -> None:
    original = sample()
    assert original.digest() == stored(original).digest()
    edited = stored(original)
    edited.matrix[0].status = report.GO
    assert edited.digest() != original.digest()


def test_the_remaining_blocker_and_the_changes_since() -> None:
    since = report.Since(
        "OR-1-aaaaaaaa",
        "2026-11-23T00:00:00+00:00",
        report.PASS,
        counters=[["gap", 210, 0], ["ospa", 0, 3]],
        unchanged_counters=["objects"],
        targets=[["Production ownership seed", report.NO_GO, report.GO]],
        unchanged_targets=4,
        applied=["F/F_01"],
        blockers_closed=["Production ownership seed"],
        blockers_opened=["Axis"],
        evidence=[1],
    )
    blocker = report.Blocker("Axis", "ratification", "axis >= 1", {"axis": 0}, ["Emit", "DOT"])
    blocker.change = "now the root: Production ownership seed, which it waited on, opened"
    later = dataclasses.replace(sample(), since=since, blockers=[blocker])
    text = report.to_markdown(later)
    assert "## Since the previous report (OR-1-aaaaaaaa" in text
    assert "Counters: gap 210 → 0; ospa 0 → 3; unchanged: objects." in text
    assert "Targets turned GO: Production ownership seed; turned NO-GO: none; 4 unchanged" in text
    assert "Ledger entries applied since: F/F_01 (1)." in text
    assert (
        "Root blockers cleared: Production ownership seed; now blocking: Axis; unchanged: none."
        in text
    )
    assert (
        "- Axis (now the root: Production ownership seed, which it waited on, opened): "
        "ratification — gate `axis >= 1` (axis=0). Waiting behind it: Emit, DOT." in text
    )
    assert since.counter("gap") == (210, 0) and since.counter("objects") is None


@pytest.mark.parametrize(
    ("seqs", "shown"),
    [
        ([], ""),
        ([5], "#5"),
        ([3, 1, 2, 7, 9, 10], "#1–3, #7, #9–10"),
        (list(range(1, 40, 2)), "20 records from #1 to #39"),
    ],
)
def test_record_numbers_as_runs(seqs: list[int], shown: str) -> None:
    assert report.seq_ranges(seqs) == shown


@given(st.sets(st.integers(min_value=1, max_value=60), max_size=12))
def test_runs_name_every_record_and_no_other(seqs: set[int]) -> None:
    text = report.seq_ranges(seqs, max_runs=100)
    named: set[int] = set()
    for first, last in re.findall(r"#(\d+)(?:–(\d+))?", text):
        named.update(range(int(first), int(last or first) + 1))
    assert named == seqs


def test_a_pdf_needs_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ONEROOF_CHROMIUM", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    from oneroof.errors import BadInput

    with pytest.raises(BadInput, match="needs headless Chromium"):
        report.write_pdf(sample(), tmp_path / "r.pdf")


@pytest.mark.skipif(
    report.chromium() is None,
    reason="no Chromium here (`make test-browser` installs Debian's chromium and runs this)",
)
def test_the_pdf_has_page_numbers_and_the_report_id(tmp_path: Path) -> None:
    many = dataclasses.replace(
        sample(), notes=[f"note {i}: " + "a long line of text " * 8 for i in range(120)]
    )
    written = report.write_pdf(many, tmp_path / "report.pdf")
    data = written.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 3
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: the PDF's text is not read")
    text = subprocess.run(
        ["pdftotext", "-layout", str(written), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert f"page 1 of {pages}" in text and f"page {pages} of {pages}" in text
    assert text.count("Report OR-7-0123abcd") >= pages  # the id in every page's footer
    assert "Sign-off" in text
