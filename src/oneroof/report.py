"""The GO / NO-GO report: a data model filled from measurements, rendered as md, json, html.

Nothing here measures anything: the campaign hands over verdicts, the matrix and the
compliance figures it computed from the databases and the audit log, and this module only
arranges and renders them. Rendering is a pure function of the `Report`.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from oneroof.sqltext import value_text

PASS = "PASS"
FAIL = "FAIL"
GO = "GO"
NO_GO = "NO-GO"


@dataclass
class Verdict:
    """One row of the per-objective table."""

    objective: str
    status: str
    headline: str
    qualifier: str | None = None
    reasons: list[str] = field(default_factory=list)

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


@dataclass
class Compliance:
    """Forbidden-action accounting from the audit log and the fingerprints of the run."""

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

    @property
    def percent(self) -> int:
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
class Report:
    """Everything a decision maker signs, as data."""

    title: str
    generated_at: str
    final_status: str
    headline: str
    verdicts: list[Verdict]
    matrix: list[MatrixRow]
    blockers: list[str]
    next_macros: list[str]
    compliance: Compliance
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compliance"]["percent"] = self.compliance.percent
        for verdict, row in zip(data["verdicts"], self.verdicts, strict=True):
            verdict["label"] = row.label
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        compliance = {k: v for k, v in data["compliance"].items() if k != "percent"}
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
            blockers=list(data["blockers"]),
            next_macros=list(data["next_macros"]),
            compliance=Compliance(**compliance),
            facts=dict(data.get("facts") or {}),
            notes=list(data.get("notes") or []),
        )


def _values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={value_text(v)}" for k, v in sorted(values.items())) or "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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


def to_markdown(report: Report) -> str:
    """The report as Markdown, in the structure of the seed report."""
    lines = [
        f"# {report.title}",
        "",
        f"Final status: **{report.final_status}**",
        "",
        report.headline,
        "",
        "## Per-objective verdicts",
        "",
        "| Obj | Verdict | Headline |",
        "|---|---|---|",
    ]
    for verdict in report.verdicts:
        headline = verdict.headline
        if verdict.reasons:
            headline += " — " + "; ".join(verdict.reasons)
        lines.append(f"| {_cell(verdict.objective)} | {verdict.label} | {_cell(headline)} |")
    lines += [
        "",
        "## GO / NO-GO matrix",
        "",
        "| target | status | gate | values |",
        "|---|---|---|---|",
    ]
    for row in report.matrix:
        lines.append(
            f"| {_cell(row.target)} | {row.status} | `{_cell(row.gate)}` | {_values(row.values)} |"
        )
    lines += ["", "## Remaining blockers", ""]
    lines += [f"- {b}" for b in report.blockers] or ["- none: every gate holds"]
    lines += ["", "## Next macros", ""]
    lines += [f"- {m}" for m in report.next_macros] or ["- none"]
    lines += ["", f"## Forbidden-action compliance: {report.compliance.percent}%", ""]
    lines += [f"- {line}" for line in compliance_lines(report.compliance)]
    if report.facts:
        lines += ["", "## Measurements", ""]
        lines += [f"- {k}: {value_text(v)}" for k, v in report.facts.items()]
    if report.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in report.notes]
    lines += ["", f"_Generated {report.generated_at} by oneroof from measurements._", ""]
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) + "\n"


_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def to_html(report: Report) -> str:
    """A standalone HTML page that reads well in a browser and prints cleanly."""
    source = resources.files("oneroof").joinpath("templates/report.html.j2").read_text("utf-8")
    template = _ENV.from_string(source)
    return template.render(
        r=report, values=_values, plain=value_text, compliance=compliance_lines(report.compliance)
    )


RENDERERS = {"md": to_markdown, "json": to_json, "html": to_html}


def render(report: Report, fmt: str) -> str:
    """The report in `fmt` (md, json or html)."""
    try:
        return RENDERERS[fmt](report)
    except KeyError:
        from oneroof.errors import BadInput

        raise BadInput(f"unknown report format {fmt!r}; use md, json or html") from None


def write_all(report: Report, directory: Path) -> dict[str, Path]:
    """Write report.md, report.json and report.html into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in RENDERERS:
        path = directory / f"report.{fmt}"
        path.write_text(render(report, fmt), encoding="utf-8")
        written[fmt] = path
    return written


def summary(report: Report) -> str:
    """A few plain lines for the terminal."""
    lines = [f"Final status: {report.final_status} — {report.headline}"]
    for verdict in report.verdicts:
        lines.append(f"  {verdict.label:<18} {verdict.objective}: {verdict.headline}")
        lines += [f"{'':<20}! {reason}" for reason in verdict.reasons]
    for row in report.matrix:
        lines.append(f"  {row.status:<6} {row.target}  [{row.gate}; {_values(row.values)}]")
    lines.append(f"  Forbidden-action compliance: {report.compliance.percent}%")
    return html.unescape("\n".join(lines))
