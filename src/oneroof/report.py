"""The GO / NO-GO report: a data model filled from measurements, rendered as md, json, html, pdf.

Nothing here measures anything: the campaign hands over verdicts, the matrix, the blockers
and the compliance figures it computed from the databases and the evidence store, and this
module only arranges and renders them, in one order for every form (file, CLI, dashboard,
API). Rendering is a pure function of the `Report`; a figure carries the numbers of the
evidence records it came from (`evidence`), which `oneroof report verify` recomputes from.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from oneroof.sqltext import value_text

PASS = "PASS"
FAIL = "FAIL"
GO = "GO"
NO_GO = "NO-GO"
SHORT = 8  # hex digits of a fingerprint in the body; the appendix gives them in full


@dataclass
class Verdict:
    """One row of the per-objective table."""

    objective: str
    status: str
    headline: str
    qualifier: str | None = None
    reasons: list[str] = field(default_factory=list)
    evidence: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.status} ({self.qualifier})" if self.qualifier else self.status


@dataclass
class MatrixRow:
    """One target of the GO / NO-GO matrix with its gate and the values it was judged on."""

    target: str
    status: str
    gate: str
    values: dict[str, Any]
    scope: str = "production"
    blocker: str = ""
    next: str = ""
    after: list[str] = field(default_factory=list)
    evidence: list[int] = field(default_factory=list)


@dataclass
class Blocker:
    """A root blocker: a closed gate that waits on no other closed gate, and what waits on it."""

    target: str
    blocker: str  # what holds the gate closed (the target's `blocker`, else its gate)
    gate: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # closed targets downstream of it
    change: str = ""  # since the previous report: "unchanged", or what changed ("" : none)
    evidence: list[int] = field(default_factory=list)

    def text(self) -> str:
        return f"{self.target}: {self.blocker}"


@dataclass
class ComplianceLine:
    """One forbidden action that did not happen (or did), and how that was measured."""

    name: str  # a stable key: writes, data, schema, sequences, group:NAME, sessions, …
    title: str  # what must not happen, e.g. "No production schema change"
    ok: bool
    measured: str  # the figures and where they were read
    evidence: list[int] = field(default_factory=list)


@dataclass
class Compliance:
    """Forbidden-action accounting from the audit log, the fingerprints and the clone."""

    statements_sent: int
    forbidden_attempted: int
    forbidden_refused: int
    forbidden_executed: int
    writes_outside_apply: int
    applied_statements: int
    production_unchanged: bool
    clone_residue_free: bool
    transactions: int = 0  # production transactions of oneroof outside gated applies
    transactions_with_xid: int = 0  # of them, those assigned a transaction id: a write
    transactions_unproven: int = 0  # ended by an error: rolled back, the id unreadable
    lines: list[ComplianceLine] = field(default_factory=list)  # each category, measured

    @property
    def percent(self) -> int:
        """The share of forbidden-action categories that hold (100 only when all do)."""
        if self.lines:
            held = sum(1 for line in self.lines if line.ok)
            if held == len(self.lines):
                return 100
            return min(99, round(100 * held / len(self.lines)))
        ok = (
            self.forbidden_executed == 0
            and self.writes_outside_apply == 0
            and self.transactions_with_xid == 0
            and self.clone_residue_free
        )
        if ok:
            return 100
        # the share of forbidden actions that did not happen: each executed one counts once,
        # and residue left on the clone counts as one more
        bad = max(self.forbidden_executed, self.writes_outside_apply) + self.transactions_with_xid
        bad += 0 if self.clone_residue_free else 1
        total = self.forbidden_attempted + self.transactions_with_xid
        total = max(1, total + (0 if self.clone_residue_free else 1))
        return min(99, max(0, round(100 * (1 - bad / total))))


@dataclass
class CounterRow:
    """One counter as the report's glossary shows it: value now, and what it means."""

    name: str
    value: Any
    description: str = ""
    evidence: list[int] = field(default_factory=list)


@dataclass
class Since:
    """What changed since the previous report of the workspace."""

    report: str  # the previous report's id (or its campaign record)
    generated_at: str
    final_status: str
    counters: list[list[Any]] = field(default_factory=list)  # [name, before, after]
    unchanged_counters: list[str] = field(default_factory=list)
    # the values gates read that are no counter (approved, clone_verified): [name, before, after]
    gate_values: list[list[Any]] = field(default_factory=list)
    unchanged_gate_values: list[str] = field(default_factory=list)
    targets: list[list[str]] = field(default_factory=list)  # [target, before, after]
    unchanged_targets: int = 0
    applied: list[str] = field(default_factory=list)  # ledger entries applied since
    blockers_opened: list[str] = field(default_factory=list)
    blockers_closed: list[str] = field(default_factory=list)
    blockers_unchanged: list[str] = field(default_factory=list)
    evidence: list[int] = field(default_factory=list)

    def counter(self, name: str) -> tuple[Any, Any] | None:
        """(before, after) of a counter that changed, else None."""
        for changed, before, after in self.counters:
            if changed == name:
                return before, after
        return None


@dataclass
class Report:
    """Everything a decision maker signs, as data."""

    title: str
    generated_at: str
    final_status: str
    headline: str
    verdicts: list[Verdict]
    matrix: list[MatrixRow]
    blockers: list[Blocker]
    next_macros: list[str]
    compliance: Compliance
    facts: dict[str, Any] = field(default_factory=dict)  # in the order they are shown
    notes: list[str] = field(default_factory=list)
    id: str = ""  # the report id, from the evidence record of its measurements
    warnings: list[str] = field(default_factory=list)  # what to read first
    counters: list[CounterRow] = field(default_factory=list)
    since: Since | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)  # label → full id (appendix)
    fact_evidence: dict[str, list[int]] = field(default_factory=dict)
    ledger: list[str] | None = None  # plan/artifact of every ledger entry of the plans
    evidence: list[int] = field(default_factory=list)  # the record of its measurements

    def counter(self, name: str) -> Any:
        """The value of a counter at entry (KeyError if the report has none of that name)."""
        for row in self.counters:
            if row.name == name:
                return row.value
        raise KeyError(name)

    @property
    def production_targets(self) -> list[MatrixRow]:
        return [row for row in self.matrix if row.scope == "production"]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data; lists keep the one order of the report in every form."""
        data = asdict(self)
        data["compliance"]["percent"] = self.compliance.percent
        for verdict, row in zip(data["verdicts"], self.verdicts, strict=True):
            verdict["label"] = row.label
        data["facts"] = [
            {"name": k, "value": v, "evidence": self.fact_evidence.get(k, [])}
            for k, v in self.facts.items()
        ]
        del data["fact_evidence"]
        data["fingerprints"] = [{"label": k, "id": v} for k, v in self.fingerprints.items()]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report from `to_dict` data, also of the forms older versions stored."""
        compliance = {k: v for k, v in data["compliance"].items() if k != "percent"}
        compliance["lines"] = [ComplianceLine(**line) for line in compliance.get("lines") or []]
        raw_facts = data.get("facts") or {}
        facts: dict[str, Any] = {}
        fact_evidence: dict[str, list[int]] = {}
        if isinstance(raw_facts, Mapping):
            facts = dict(raw_facts)
        else:
            for fact in raw_facts:
                facts[fact["name"]] = fact["value"]
                if fact.get("evidence"):
                    fact_evidence[fact["name"]] = list(fact["evidence"])
        prints = data.get("fingerprints") or []
        since = data.get("since")
        return cls(
            title=data["title"],
            generated_at=data["generated_at"],
            final_status=data["final_status"],
            headline=data["headline"],
            verdicts=[
                Verdict(**{k: v for k, v in row.items() if k != "label"})
                for row in data["verdicts"]
            ],
            matrix=[MatrixRow(**row) for row in data["matrix"]],
            blockers=[
                Blocker(**b) if isinstance(b, Mapping) else _old_blocker(str(b))
                for b in data["blockers"]
            ],
            next_macros=list(data["next_macros"]),
            compliance=Compliance(**compliance),
            facts=facts,
            notes=list(data.get("notes") or []),
            id=str(data.get("id") or ""),
            warnings=list(data.get("warnings") or []),
            counters=[CounterRow(**row) for row in data.get("counters") or []],
            since=Since(**since) if since else None,
            fingerprints=(
                dict(prints)
                if isinstance(prints, Mapping)
                else {p["label"]: p["id"] for p in prints}
            ),
            fact_evidence=fact_evidence,
            ledger=list(data["ledger"]) if data.get("ledger") is not None else None,
            evidence=list(data.get("evidence") or []),
        )

    def digest(self) -> str:
        """SHA-256 of the report's canonical JSON: what the campaign record chains."""
        body = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return hashlib.sha256(body.encode()).hexdigest()


def _old_blocker(text: str) -> Blocker:
    target, _, blocker = text.partition(": ")
    return Blocker(target, blocker or target)


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={value_text(v)}" for k, v in sorted(values.items())) or "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def seq_ranges(seqs: Iterable[int], *, max_runs: int = 6) -> str:
    """Record numbers as short runs (`#12–15, #40`); many runs as their count and span."""
    ordered = sorted(set(seqs))
    runs: list[list[int]] = []
    for seq in ordered:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    if len(runs) > max_runs:
        return f"{len(ordered)} records from #{ordered[0]} to #{ordered[-1]}"
    return ", ".join(f"#{a}" if a == b else f"#{a}–{b}" for a, b in runs)


def short(fingerprint_id: Any) -> str:
    """A fingerprint id as the body shows it; the appendix gives it in full."""
    text = value_text(fingerprint_id)
    return text[:SHORT] + "…" if len(text) > SHORT + 1 else text


def transactions_line(c: Compliance) -> str:
    """The write proof of the run, as one sentence."""
    if c.transactions_with_xid:
        return (
            f"{c.transactions_with_xid} of {c.transactions} production transactions of oneroof "
            "were assigned a transaction id: they prepared a write (refused, rolled back)."
        )
    unproven = (
        f" ({c.transactions_unproven} ended by an error: rolled back by PostgreSQL)"
        if c.transactions_unproven
        else ""
    )
    return (
        f"{c.transactions} production transactions of oneroof, none assigned a transaction "
        f"id{unproven}: oneroof wrote nothing outside a gated apply."
    )


def compliance_lines(c: Compliance) -> list[str]:
    """The compliance section as sentences, each a measured fact."""
    if c.lines:
        return [
            f"{'' if line.ok else 'VIOLATED — '}{line.title}: {line.measured}" for line in c.lines
        ]
    return [
        transactions_line(c),
        f"Statements sent to production: {c.statements_sent}; forbidden statements attempted: "
        f"{c.forbidden_attempted}, refused by the guard: {c.forbidden_refused}, executed: "
        f"{c.forbidden_executed}.",
        f"Writes to production outside a gated apply: {c.writes_outside_apply}; statements "
        f"of gated applies: {c.applied_statements}.",
        "Production fingerprint at exit "
        + ("equals" if c.production_unchanged else "differs from")
        + " the entry fingerprint"
        + ("." if c.production_unchanged else " (see the attribution in the safety verdict)."),
        "Rollback-only work on the clone left "
        + ("no residue." if c.clone_residue_free else "RESIDUE (see the verdicts)."),
    ]


def how_to_read(report: Report) -> list[str]:
    """Why the final status and the matrix say what they say, for the signer."""
    production = report.production_targets
    closed = [row for row in production if row.status == NO_GO]
    lines = [
        "PASS or FAIL (the final status, and each objective) says whether the campaign's "
        "evidence holds: production unchanged by oneroof, no forbidden action, the clone "
        "isolated, every suite and rehearsal as expected. It does not say that a change may go "
        "to production.",
        "GO or NO-GO (the matrix) says whether a target's gate is open, measured on "
        "production during this campaign. NO-GO means the gate is closed and the change "
        "waits for it; it is not a failure.",
    ]
    if report.final_status == PASS and closed:
        roots = ", ".join(b.target for b in report.blockers) or "—"
        lines.append(
            f"Here the final status is PASS while {len(closed)} of {len(production)} "
            f"production target(s) are NO-GO: the evidence holds, and those gates are still "
            f"closed. The remaining blocker(s) below ({roots}) open the rest."
        )
    elif report.final_status != PASS:
        lines.append(
            "Here the final status is FAIL: some evidence does not hold (the reasons are in "
            "the verdicts); no GO of this report should be acted on until it passes again."
        )
    lines.append(
        "#N is the number of the evidence record a figure comes from (.oneroof/evidence."
        "sqlite): `oneroof report verify` recomputes the report from those records, "
        "`oneroof serve` shows each."
    )
    return lines


def since_lines(since: Since) -> list[str]:
    """The changes since the previous report, as sentences."""
    counters = "; ".join(
        f"{name} {value_text(before)} → {value_text(after)}"
        for name, before, after in since.counters
    )
    lines = [
        "Counters: "
        + (counters or "none changed")
        + (
            f"; unchanged: {', '.join(since.unchanged_counters)}"
            if since.unchanged_counters
            else ""
        )
        + "."
    ]
    if since.gate_values or since.unchanged_gate_values:
        moved = "; ".join(
            f"{name} {value_text(before)} → {value_text(after)}"
            for name, before, after in since.gate_values
        )
        lines.append(
            "Gate values: "
            + (moved or "none changed")
            + (
                f"; unchanged: {', '.join(since.unchanged_gate_values)}"
                if since.unchanged_gate_values
                else ""
            )
            + "."
        )
    turned_go = [t for t, before, after in since.targets if after == GO]
    turned_no_go = [t for t, before, after in since.targets if after == NO_GO]
    lines.append(
        f"Targets turned GO: {', '.join(turned_go) or 'none'}; turned NO-GO: "
        f"{', '.join(turned_no_go) or 'none'}; {since.unchanged_targets} unchanged."
    )
    lines.append(
        f"Ledger entries applied since: {', '.join(since.applied)} ({len(since.applied)})."
        if since.applied
        else "Ledger entries applied since: none."
    )
    lines.append(
        # a root can only be cleared or become one: "opened" would read as its gate opening
        f"Root blockers cleared: {', '.join(since.blockers_closed) or 'none'}; now blocking: "
        f"{', '.join(since.blockers_opened) or 'none'}; unchanged: "
        f"{', '.join(since.blockers_unchanged) or 'none'}."
    )
    return lines


def blocker_heading(report: Report) -> str:
    if not report.blockers:
        return "The remaining blocker"
    return "The remaining blocker" + ("s" if len(report.blockers) > 1 else "")


def blocker_line(b: Blocker) -> str:
    change = f" ({b.change})" if b.change else ""
    waiting = (
        f" Waiting behind it: {', '.join(b.waiting)}." if b.waiting else " Nothing waits on it."
    )
    return f"{b.target}{change}: {b.blocker} — gate `{b.gate}` ({_values(b.values)}).{waiting}"


def _ev(seqs: Iterable[int]) -> str:
    shown = seq_ranges(seqs)
    return shown or "—"


def to_markdown(report: Report) -> str:
    """The report as Markdown, in the structure of the seed report and one order."""
    lines = [f"# {report.title}", ""]
    lines += [f"Report id: {report.id or '—'} · generated {report.generated_at}", ""]
    if report.warnings:
        lines += ["## Read first", ""]
        lines += [f"- ⚠ {w}" for w in report.warnings]
        lines += [""]
    lines += [f"Final status: **{report.final_status}**", "", report.headline, ""]
    lines += ["## How to read this report", ""]
    lines += [f"- {line}" for line in how_to_read(report)]
    if report.since is not None:
        s = report.since
        lines += [
            "",
            f"## Since the previous report ({s.report}, {s.generated_at}, {s.final_status})",
            "",
        ]
        lines += [f"- {line}" for line in since_lines(s)]
        lines += [f"- Evidence: {_ev(s.evidence)}"]
    lines += [
        "",
        "## Per-objective verdicts",
        "",
        "| Obj | Verdict | Headline | Evidence |",
        "|---|---|---|---|",
    ]
    for verdict in report.verdicts:
        headline = verdict.headline
        if verdict.reasons:
            headline += " — " + "; ".join(verdict.reasons)
        lines.append(
            f"| {_cell(verdict.objective)} | {verdict.label} | {_cell(headline)} "
            f"| {_ev(verdict.evidence)} |"
        )
    lines += [
        "",
        "## GO / NO-GO matrix",
        "",
        "| target | status | gate | values | evidence |",
        "|---|---|---|---|---|",
    ]
    for row in report.matrix:
        lines.append(
            f"| {_cell(row.target)} | {row.status} | `{_cell(row.gate)}` | {_values(row.values)} "
            f"| {_ev(row.evidence)} |"
        )
    lines += ["", f"## {blocker_heading(report)}", ""]
    lines += [f"- {blocker_line(b)}" for b in report.blockers] or ["- none: every gate holds"]
    lines += ["", "## Next macros", ""]
    lines += [f"- {m}" for m in report.next_macros] or ["- none"]
    lines += ["", f"## Forbidden-action compliance: {report.compliance.percent}%", ""]
    if report.compliance.lines:
        lines += ["| | what did not happen | how it was measured | evidence |", "|---|---|---|---|"]
        for line in report.compliance.lines:
            lines.append(
                f"| {'held' if line.ok else 'VIOLATED'} | {_cell(line.title)} "
                f"| {_cell(line.measured)} | {_ev(line.evidence)} |"
            )
    else:
        lines += [f"- {line}" for line in compliance_lines(report.compliance)]
    production = report.production_targets
    if production:
        lines += ["", "## Sign-off", ""]
        lines += [
            "Each production target, as measured, for the person who decides on it.",
            "",
            "| target | measured | decision | name | role | date | signature |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in production:
            lines.append(f"| {_cell(row.target)} | {row.status} | ☐ GO ☐ NO-GO | | | | |")
    if report.counters:
        lines += ["", "## Counters", "", "| counter | value | meaning | evidence |"]
        lines += ["|---|---|---|---|"]
        for counter in report.counters:
            lines.append(
                f"| {counter.name} | {value_text(counter.value)} "
                f"| {_cell(counter.description or '—')} | {_ev(counter.evidence)} |"
            )
    if report.facts:
        lines += ["", "## Measurements", ""]
        for key, value in report.facts.items():
            evidence = report.fact_evidence.get(key)
            lines.append(
                f"- {key}: {value_text(value)}" + (f" ({_ev(evidence)})" if evidence else "")
            )
    if report.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in report.notes]
    if report.fingerprints or report.evidence:
        lines += ["", "## Appendix: fingerprints and evidence", ""]
        lines += [f"- {label}: `{fid}`" for label, fid in report.fingerprints.items()]
        if report.evidence:
            lines.append(f"- the measurements of this report: {_ev(report.evidence)}")
    lines += ["", f"_Generated {report.generated_at} by oneroof from measurements._", ""]
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) + "\n"


_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def _evidence_html(link: str | None) -> Callable[[Iterable[int]], Markup]:
    def anchor(seq: int) -> Markup:
        if link is None:
            return Markup("#{}").format(seq)
        return Markup('<a class="ev" href="{}">#{}</a>').format(link.format(seq=seq), seq)

    def render(seqs: Iterable[int]) -> Markup:
        ordered = sorted(set(seqs))
        if not ordered:
            return Markup("—")
        if len(ordered) > 8:
            return Markup('<span class="ev">{} records from {} to {}</span>').format(
                len(ordered), anchor(ordered[0]), anchor(ordered[-1])
            )
        return Markup('<span class="ev">{}</span>').format(
            Markup(", ").join(anchor(seq) for seq in ordered)
        )

    return render


EVIDENCE_LINK = "/evidence/{seq}"  # the dashboard's view of one record (`oneroof serve`)


def to_html(report: Report, *, evidence_link: str | None = EVIDENCE_LINK) -> str:
    """A standalone HTML page that reads well in a browser and prints cleanly.

    Each evidence record number links into the dashboard's evidence view
    (`oneroof serve`): the same page in the file, the dashboard and the PDF.
    """
    source = resources.files("oneroof").joinpath("templates/report.html.j2").read_text("utf-8")
    template = _ENV.from_string(source)
    return template.render(
        r=report,
        values=_values,
        plain=value_text,
        ev=_evidence_html(evidence_link),
        compliance=compliance_lines(report.compliance),
        read=how_to_read(report),
        since=since_lines(report.since) if report.since else [],
        blocker_heading=blocker_heading(report),
        css_text=_css_string,
    )


def _css_string(text: Any) -> Markup:
    """A CSS string literal inside <style>, where HTML escapes do not apply: CSS escapes."""
    escaped = "".join(
        ch if ch.isalnum() or ch in " .,:;·—–-_()/#@+=" else f"\\{ord(ch):x} " for ch in str(text)
    )
    return Markup(f'"{escaped}"')


RENDERERS = {"md": to_markdown, "json": to_json, "html": to_html}
FORMATS = ("md", "json", "html", "pdf")


def render(report: Report, fmt: str) -> str:
    """The report in `fmt` (md, json or html; a PDF is written by `write_pdf`)."""
    try:
        return RENDERERS[fmt](report)
    except KeyError:
        from oneroof.errors import BadInput

        raise BadInput(f"unknown report format {fmt!r}; use md, json, html or pdf") from None


def write_all(report: Report, directory: Path) -> dict[str, Path]:
    """Write report.md, report.json and report.html into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in RENDERERS:
        path = directory / f"report.{fmt}"
        path.write_text(render(report, fmt), encoding="utf-8")
        written[fmt] = path
    return written


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The headless browser that prints PDFs: $ONEROOF_CHROMIUM, else one on the PATH."""
    explicit = os.environ.get("ONEROOF_CHROMIUM")
    if explicit:
        return explicit
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def write_pdf(report: Report, path: Path, *, timeout: float = 120.0) -> Path:
    """Print the HTML report to `path` with headless Chromium (page numbers, report id)."""
    from oneroof.errors import BadInput, OneroofError

    browser = chromium()
    if browser is None:
        raise BadInput(
            "a PDF needs headless Chromium, which is not installed (apt-get install chromium, "
            "or set ONEROOF_CHROMIUM); or print report.html from any browser"
        )
    with tempfile.TemporaryDirectory(prefix="oneroof-pdf-") as work:
        page = Path(work) / "report.html"
        page.write_text(to_html(report), encoding="utf-8")
        target = path.resolve()
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={Path(work) / 'profile'}",
            f"--print-to-pdf={target}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OneroofError(f"Chromium could not print the PDF: {exc}") from None
    if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OneroofError(f"Chromium could not print the PDF ({browser}): {last}")
    return target


def summary(report: Report) -> str:
    """A few plain lines for the terminal, in the report's order."""
    lines = []
    if report.id:
        lines.append(f"Report {report.id}")
    lines += [f"  ! {w}" for w in report.warnings]
    lines.append(f"Final status: {report.final_status} — {report.headline}")
    if report.since is not None:
        lines.append(f"  since {report.since.report}:")
        lines += [f"    {line}" for line in since_lines(report.since)]
    for verdict in report.verdicts:
        lines.append(f"  {verdict.label:<18} {verdict.objective}: {verdict.headline}")
        lines += [f"{'':<20}! {reason}" for reason in verdict.reasons]
    for row in report.matrix:
        lines.append(f"  {row.status:<6} {row.target}  [{row.gate}; {_values(row.values)}]")
    for blocker in report.blockers:
        lines.append(f"  {blocker_heading(report)}: {blocker_line(blocker)}")
    lines.append(f"  Forbidden-action compliance: {report.compliance.percent}%")
    lines += [
        f"    VIOLATED — {line.title}: {line.measured}"
        for line in report.compliance.lines
        if not line.ok
    ]
    return html.unescape("\n".join(lines))
