"""The dashboard in headless Chromium, served by a real `oneroof serve` over a real campaign.

Each page is loaded by Debian's `chromium` (`--headless --dump-dom`); the DOM it built is
checked against the evidence store itself, read here directly: the newest report, every
campaign newest first, the audit chain's verdict, the check runs and their figures, the
evidence of one record. The pages carry no script, so no virtual time budget is needed.
Screenshots are kept in `test-artifacts/browser/` (git-ignored; `ONEROOF_TEST_ARTIFACTS`
moves it). Without Chromium these tests skip and say so; `make test-browser` installs it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fix_served import Served
from oneroof import report
from oneroof.evidence import Evidence, Record

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed: `make test-browser` installs Debian's chromium "
    "(apt-get, as root) and runs these tests",
)
ARTIFACTS = Path(
    os.environ.get("ONEROOF_TEST_ARTIFACTS") or Path(__file__).parents[1] / "test-artifacts"
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
    | {"track", "wbr"}
)


@dataclass
class Node:
    """One element of the DOM Chromium serialised."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return " ".join("".join(parts).split())

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Every element below (and including) this one with `tag` and these attributes."""
        found = []
        if (tag is None or self.tag == tag) and all(
            self.attrs.get(k.rstrip("_")) == v for k, v in attrs.items()
        ):
            found.append(self)
        for child in self.children:
            if isinstance(child, Node):
                found += child.all(tag, **attrs)
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}> elements, not one"
        return found[0]


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(node)
        if tag not in _VOID:
            self.open.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(document: str) -> Node:
    tree = _Tree()
    tree.feed(document)
    tree.close()
    return tree.root


@dataclass
class Browser:
    """Headless Chromium with a profile of its own, one process per page."""

    binary: str
    profile: Path
    base: str

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [
                self.binary,
                "--headless",
                "--no-sandbox",  # as root, Chromium refuses to start sandboxed
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={self.profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    def dom(self, path: str) -> Node:
        """The DOM of a page after Chromium loaded it."""
        done = self._run("--dump-dom", self.base + path.lstrip("/"))
        assert "<html" in done.stdout, done.stderr[-2000:]
        return parse(done.stdout)

    def screenshot(self, path: str, file: Path, width: int, height: int) -> Path:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.unlink(missing_ok=True)
        self._run(
            f"--screenshot={file}", f"--window-size={width},{height}", self.base + path.lstrip("/")
        )
        return file


@pytest.fixture(scope="module")
def browser(served_campaign: Served, tmp_path_factory: pytest.TempPathFactory) -> Browser:
    assert CHROMIUM is not None
    return Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"), served_campaign.url)


@pytest.fixture(scope="module")
def store(campaign_workspace: Path) -> Iterator[Evidence]:
    evidence = Evidence(campaign_workspace / ".oneroof" / "evidence.sqlite", read_only=True)
    yield evidence
    evidence.close()


def newest(store: Evidence) -> Record:
    found = store.record(store.last_seq())
    assert found is not None
    return found


def stored_report(record: Record) -> report.Report:
    return report.Report.from_dict(record.payload["report"])


def rows(page: Node) -> list[Node]:
    return [row for row in page.one("table", id="records").all("tr") if "data-seq" in row.attrs]


def seqs(page: Node) -> list[int]:
    return [int(row.attrs["data-seq"]) for row in rows(page)]


def check_as_of(page: Node, store: Evidence) -> None:
    last = newest(store)
    as_of = page.one(id="as-of")
    assert as_of.text.startswith(f"as of record {last.seq},"), as_of.text
    assert as_of.one("time").attrs["datetime"] == last.at
    assert as_of.one("a").attrs["href"] == f"/evidence/{last.seq}"


def test_the_report_page_is_the_newest_report_with_the_dashboard_around_it(
    browser: Browser, store: Evidence
) -> None:
    campaign = store.latest("campaign")
    assert campaign is not None
    expected = stored_report(campaign)
    page = browser.dom("/")
    assert page.one("h1").text == expected.title
    assert page.one("span", class_=f"status {expected.final_status}").text == expected.final_status
    body_text = page.one("body").text
    for verdict in expected.verdicts:
        assert verdict.objective in body_text
    # the measurements as the browser laid them out: the report's one order
    names = [" ".join(name.split()) for name in expected.facts]
    headers = [cell.text for cell in page.all("th")]
    first = headers.index(names[0])
    assert headers[first : first + len(names)] == names
    check_as_of(page, store)
    bar = page.one("nav", class_="or-bar")
    assert [a.attrs["href"] for a in bar.all("a") if a.text != str(store.last_seq())] == [
        "/", "/reports", "/audit", "/fingerprints", "/check-runs", "/rehearsals", "/api",
    ]  # fmt: skip
    assert bar.one("a", href="/").attrs["aria-current"] == "page"
    source = page.one("p", id="report-source")
    assert source.all("a")[0].attrs["href"] == f"/evidence/{campaign.seq}"
    # whatever records the report links its verdicts to, each one is there to open
    links = {a.attrs.get("href", "") for a in page.all("a")}
    for link in sorted(x for x in links if x.startswith("/evidence/")):
        with urllib.request.urlopen(browser.base + link.lstrip("/"), timeout=30) as answer:
            assert answer.status == 200, link


def test_report_history_lists_every_campaign_newest_first(
    browser: Browser, store: Evidence
) -> None:
    campaigns = store.records("campaign")
    page = browser.dom("/reports")
    assert seqs(page) == [r.seq for r in reversed(campaigns)]
    for row, record in zip(rows(page), reversed(campaigns), strict=True):
        assert stored_report(record).final_status in row.text
        assert row.one("a", href=f"/reports/{record.seq}").text == stored_report(record).title
    check_as_of(page, store)
    oldest = campaigns[0]
    older = browser.dom(f"/reports/{oldest.seq}")
    assert older.one("h1").text == stored_report(oldest).title
    assert older.one("p", class_="lead").text == " ".join(stored_report(oldest).headline.split())
    assert older.one("nav", class_="or-bar").one("a", href="/reports").attrs["aria-current"]
    check_as_of(older, store)


def test_the_audit_log_shows_its_hash_chain_verified_and_pages(
    browser: Browser, store: Evidence
) -> None:
    audit = [r.seq for r in reversed(store.records("audit"))]
    assert len(audit) > 100, "a ratified demo sends more statements than one page holds"
    page = browser.dom("/audit")
    chain = page.one(id="chain")
    assert chain.attrs["data-intact"] == "true"
    assert f"all {store.last_seq()} records" in chain.text
    assert seqs(page) == audit[:100]
    check_as_of(page, store)
    more = page.one("a", rel="next").attrs["href"]
    assert more == f"/audit?limit=100&order=desc&before={audit[99]}"
    assert seqs(browser.dom(more)) == audit[100:200]


def test_check_runs_carry_their_figures_and_fingerprints_their_labels(
    browser: Browser, store: Evidence
) -> None:
    runs = list(reversed(store.records("check-run")))
    page = browser.dom("/check-runs")
    assert seqs(page) == [r.seq for r in runs][:20]
    for row, run in zip(rows(page), runs, strict=False):
        cells = [cell.text for cell in row.all("td")]
        assert f"{run.payload['passed']}/{run.payload['total']}" in cells
        assert run.payload["verdict"] in cells
    check_as_of(page, store)
    fingerprints = list(reversed(store.records("fingerprint")))
    page = browser.dom("/fingerprints")
    assert seqs(page) == [r.seq for r in fingerprints][:20]
    labels = [row.all("td")[2].text for row in rows(page)]
    assert labels == [r.payload.get("label") or "" for r in fingerprints][:20]
    assert {"entry", "exit"} <= set(labels)


def test_the_evidence_of_one_record(browser: Browser, store: Evidence) -> None:
    run = store.latest("check-run")
    assert run is not None
    page = browser.dom(f"/evidence/{run.seq}")
    assert page.one(id="seq").text == str(run.seq)
    assert page.one(id="kind").text == "check-run"
    assert page.one(id="chain").attrs["data-intact"] == "true"
    items = [item for file in run.payload["files"] for item in file["items"]]
    assert len(page.one("table", id="items").all("tr")) == len(items) + 1  # with its header
    assert page.one("a", rel="prev").attrs["href"] == f"/evidence/{run.seq - 1}"
    check_as_of(page, store)
    missing = browser.dom(f"/evidence/{store.last_seq() + 1}")
    assert missing.one(id="problem").attrs["data-status"] == "404"


def test_screenshots_of_the_report_and_the_audit_log(browser: Browser) -> None:
    for path, name in (("/", "report"), ("/audit", "audit")):
        shot = browser.screenshot(path, ARTIFACTS / "browser" / f"{name}.png", 1280, 1600)
        width, height, distinct = png_facts(shot.read_bytes())
        assert (width, height) == (1280, 1600)
        assert distinct > 8, f"{shot} looks blank ({distinct} distinct byte values)"


def png_facts(data: bytes) -> tuple[int, int, int]:
    """A PNG's width and height, and how many distinct byte values its pixels hold."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pixels, at = b"", 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            pixels += data[at + 8 : at + 8 + length]
        at += 12 + length
    return width, height, len(set(zlib.decompress(pixels)))
