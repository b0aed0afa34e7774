"""A report traced to its evidence: stored, judged from the records, sealed, verified.

A campaign stores its measurements as one evidence record that names the records behind
them (`measurements.to_record`), judges the report from that record alone, writes the
files and appends the campaign record with the report, its digest and each file's digest —
all in the hash chain. `verify` does it again later: it recomputes the report from the
records, and names what differs from the report file, from the report the campaign
recorded, and any break in the chain.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oneroof import config, fingerprint, measurements, report, verdicts
from oneroof.errors import BadInput, NotFound
from oneroof.evidence import Evidence, Record, canonical_json
from oneroof.measurements import Applied, Measurements
from oneroof.rollout import LedgerRow

CAMPAIGN = "campaign"
_ID = re.compile(r"\bOR-\d+-[0-9a-f]{8}\b")


def report_id(record: Record) -> str:
    """The id of the report judged from a `measurements` record: its number and hash."""
    return f"OR-{record.seq}-{record.hash[:8]}"


def digest(data: dict[str, Any]) -> str:
    """SHA-256 of a report's canonical JSON (what the campaign record chains)."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def newest(evidence: Evidence, kind: str, since: int, **match: Any) -> int | None:
    """The newest record of `kind` after `since` whose payload has every `match` value."""
    found = [
        r.seq
        for r in evidence.records(kind, since=since)
        if all(r.payload.get(k) == v for k, v in match.items())
    ]
    return found[-1] if found else None


def applied_runs(evidence: Evidence, plan: str, ledger: list[LedgerRow]) -> list[Applied]:
    """The apply records of the ledger's entries: what each artifact read on production."""
    wanted = {(row.artifact, row.checksum) for row in ledger}
    latest: dict[str, Applied] = {}
    for record in evidence.records("rollout-artifact"):
        data = record.payload
        if data.get("plan") != plan or data.get("status") != "applied":
            continue
        if (data.get("id"), data.get("checksum")) in wanted:
            latest[str(data["id"])] = Applied(record.seq, measurements.artifact_run(data))
    return [latest[row.artifact] for row in ledger if row.artifact in latest]


def store(evidence: Evidence, cfg: config.Config, m: Measurements) -> Record:
    """Append the measurements as one `measurements` record."""
    return evidence.append(measurements.KIND, m.to_record(cfg.text, str(cfg.file)))


def load(evidence: Evidence, record: Record) -> tuple[config.Config, Measurements]:
    """The config and the measurements a `measurements` record holds, from the records."""
    stored = record.payload["config"]
    cfg = config.parse(stored["text"], Path(stored["file"]))

    def audit_range(first: int, last: int) -> list[Record]:
        return [
            r
            for r in evidence.records("audit", since=first)
            if r.seq <= last and r.role == "production"
        ]

    return cfg, measurements.from_record(record, evidence.record, audit_range)


def judged(evidence: Evidence, record: Record) -> report.Report:
    """The report of a `measurements` record, judged from the evidence records alone.

    It goes through its JSON form, so that the files, the campaign record, `oneroof
    report`, the dashboard and the API hold one report in one order.
    """
    return _judged(*load(evidence, record), record)


def _judged(cfg: config.Config, m: Measurements, record: Record) -> report.Report:
    judged_report = verdicts.judge(cfg, m)
    judged_report.id = report_id(record)
    return report.Report.from_dict(json.loads(canonical_json(judged_report.to_dict())))


def fingerprint_problems(m: Measurements) -> list[str]:
    """The fingerprints behind the measurements whose content no longer matches their
    digests and id: an edited record that may not change a figure of the report."""
    named = {"entry": (m.refs.entry, m.entry), "exit": (m.refs.exit, m.exit)}
    if m.clone_source is not None:
        named["clone source"] = (m.refs.clone_source, m.clone_source)
    problems = []
    for label, (seq, taken) in named.items():
        wrong = fingerprint.inconsistent(taken)
        if wrong:
            where = f"record {seq}" if seq is not None else "inline"
            parts = [name if name == "id" else f"{name} digest" for name in wrong]
            problems.append(
                f"{label} fingerprint ({where}) was edited: what it holds no longer gives its "
                + ", ".join(parts)
            )
    return problems


def seal(
    evidence: Evidence,
    result: report.Report,
    directory: Path,
    files: dict[str, Path],
    record: Record,
) -> Record:
    """Append the campaign record: the report, its digest, the files' digests."""
    data = result.to_dict()
    return evidence.append(
        CAMPAIGN,
        {
            "directory": str(directory),
            "report": data,
            "digest": digest(data),
            "files": {fmt: report.file_digest(path) for fmt, path in files.items()},
            "measurements": record.seq,
        },
    )


# -- verification ---------------------------------------------------------------------------


@dataclass
class ReportCheck:
    """What `oneroof report verify` found: each difference, named."""

    report_id: str
    campaign: int | None
    files: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "report_id": self.report_id,
            "campaign": self.campaign,
            "files": self.files,
            "checked": self.checked,
            "problems": self.problems,
        }


def _campaign(evidence: Evidence, wanted: str | None) -> Record:
    campaigns = evidence.records(CAMPAIGN)
    if not campaigns:
        raise NotFound("no campaign has run in this workspace yet: run `oneroof run` first")
    if wanted is None:
        return campaigns[-1]
    for record in reversed(campaigns):
        if (record.payload.get("report") or {}).get("id") == wanted:
            return record
    raise NotFound(f"no campaign record of this workspace holds report {wanted}")


def _id_of(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the report: {exc}", file=path) from None
    if path.suffix == ".json":
        try:
            found = json.loads(text).get("id")
        except (json.JSONDecodeError, AttributeError):
            found = None
        if isinstance(found, str) and found:
            return found
    match = _ID.search(text)
    if match is None:
        raise BadInput(
            "names no report id (OR-…): not a report of this version of oneroof", file=path
        )
    return match.group(0)


def _files(path: Path | None, record: Record, reports: Path | None) -> list[Path]:
    if path is not None and path.is_file():
        return [path]
    directory = path if path is not None else Path(str(record.payload.get("directory", "")))
    if path is None and reports is not None and (reports / directory.name).is_dir():
        directory = reports / directory.name  # the workspace's own copy (it may have moved)
    return [
        directory / f"report.{fmt}"
        for fmt in report.RENDERERS
        if (directory / f"report.{fmt}").exists()
    ]


def differences(recorded: Any, now: Any, where: str = "report") -> list[str]:
    """Every place two report documents differ, named by its path (e.g. verdicts[A …])."""
    if isinstance(recorded, dict) and isinstance(now, dict):
        found = []
        for key in sorted(set(recorded) | set(now), key=str):
            if key not in now:
                found.append(f"{where}.{key}: recorded, no longer computed")
            elif key not in recorded:
                found.append(f"{where}.{key}: computed now, not recorded")
            else:
                found += differences(recorded[key], now[key], f"{where}.{key}")
        return found
    if isinstance(recorded, list) and isinstance(now, list):
        if len(recorded) != len(now):
            return [f"{where}: {len(recorded)} recorded, {len(now)} computed from the evidence"]
        found = []
        for index, (a, b) in enumerate(zip(recorded, now, strict=True)):
            label = index
            if isinstance(a, dict):
                label = a.get("objective") or a.get("target") or a.get("name") or index
            found += differences(a, b, f"{where}[{label}]")
        return found
    if recorded != now:
        return [f"{where}: recorded {_shown(recorded)}, the evidence gives {_shown(now)}"]
    return []


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 160 else text[:159] + "…"


def _first_difference(text: str, expected: str) -> str:
    have, want = text.splitlines(), expected.splitlines()
    for number, (a, b) in enumerate(zip(have, want, strict=False), start=1):
        if a != b:
            return (
                f"line {number} reads {_shown(a.strip())}, the evidence gives {_shown(b.strip())}"
            )
    if len(have) != len(want):
        return f"{len(have)} lines, the evidence gives {len(want)}"
    return "the bytes differ (line endings or encoding)"


def verify(
    evidence: Evidence, path: Path | None = None, *, reports: Path | None = None
) -> ReportCheck:
    """Recompute a report from its evidence records and check its files, digest and chain.

    `path`: a report file (md, json, html) or a report directory; by default the newest
    campaign's report and its files (in `reports`, the workspace's report folder, when the
    workspace was moved or copied).
    """
    wanted = _id_of(path) if path is not None and path.is_file() else None
    record = _campaign(evidence, wanted)
    payload = record.payload
    recorded = payload.get("report") or {}
    check = ReportCheck(str(recorded.get("id") or ""), record.seq)
    chain = evidence.verify()
    check.checked.append(f"hash chain of {evidence.last_seq()} records")
    check.problems += [f"evidence chain: {problem}" for problem in chain]
    if "measurements" not in payload or "digest" not in payload:
        check.problems.append(
            f"campaign record #{record.seq} predates report digests: it cannot be recomputed"
        )
        return check
    if digest(recorded) != payload["digest"]:
        check.problems.append(
            f"campaign record #{record.seq}: its report no longer matches the digest it "
            "recorded (the record was edited)"
        )
    check.checked.append(f"report digest of campaign record #{record.seq}")
    source = evidence.record(int(payload["measurements"]))
    if source is None or source.kind != measurements.KIND:
        check.problems.append(
            f"measurements record #{payload['measurements']} of campaign record #{record.seq} "
            "is missing"
        )
        return check
    try:
        cfg, m = load(evidence, source)
        recomputed = _judged(cfg, m, source)
    except BadInput as exc:
        check.problems.append(f"the report cannot be recomputed from its evidence: {exc}")
        return check
    check.problems += [f"evidence: {problem}" for problem in fingerprint_problems(m)]
    check.checked.append(
        f"recomputed from measurements record #{source.seq} and the records it names"
    )
    again = recomputed.to_dict()
    check.problems += [
        f"recomputed from the evidence records: {d}" for d in differences(recorded, again)
    ][:20]
    digests = payload.get("files") or {}
    for file in _files(path, record, reports):
        fmt = file.suffix.lstrip(".")
        if fmt not in report.RENDERERS:
            raise BadInput(
                "verify a report's md, json or html file, or its directory (a PDF is printed "
                "from report.html)",
                file=file,
            )
        check.files.append(str(file))
        text = file.read_text(encoding="utf-8", errors="replace")
        if fmt in digests:
            if report.file_digest(file) != digests[fmt]:
                written = report.render(report.Report.from_dict(recorded), fmt)
                check.problems.append(
                    f"{file}: edited since the campaign wrote it (its digest differs from the "
                    f"one campaign record #{record.seq} holds): " + _first_difference(text, written)
                )
        elif text != report.render(recomputed, fmt):
            check.problems.append(
                f"{file}: differs from the report recomputed from the evidence: "
                + _first_difference(text, report.render(recomputed, fmt))
            )
    return check
