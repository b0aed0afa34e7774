"""Gated rollouts: artifacts, their rehearsal on the clone, and exactly-once apply on production.

A plan is a folder of SQL artifacts (`rollout/<plan>/NN_name.sql`, run in file order). Each
artifact opens with a header of comment lines::

    -- artifact: F_prod_02_activate            (required, unique in the plan)
    -- gate: ospa >= 1                          (one or more; all must hold)
    -- requires: F_prod_01_materialize_candidates
    -- expect-delta: core.ownership ~candidates (+N inserted, ~N updated, -N deleted; N is an
    --                                          integer or a counter read at the start of the
    --                                          artifact's own transaction)
    -- stop: gap != 0                           (after the body, before commit: true → halt)
    -- auto: true                               (part of the post-gate auto-executable set)

and its body is the rest, split into statements by the PostgreSQL parser. Its checksum is
the SHA-256 of the file's exact bytes: the text that was rehearsed is the text that runs.

Deltas are exact and measured by PostgreSQL itself (`pg_stat_xact_user_tables`, read before
and after the body inside the artifact's transaction). A declared table must match on all
three counts (an undeclared kind of a declared table must be 0), and every other table
with a non-zero delta is a mismatch: an artifact declares everything it changes.

- `rehearse` runs the whole plan on the clone in one transaction with a savepoint per
  artifact, always rolled back; gates are reported (an unratified clone has them closed),
  deltas and stops are checked; sequences are put back with `setval`, and a full
  fingerprint of the clone before and after proves it residue-free. The result goes to the
  evidence store (kind `rehearsal`).
- `apply` is the only path by which oneroof writes to production. Without `execute` it is a
  dry run. It refuses (`ForbiddenAction`, exit 3) without a passing rehearsal of exactly these
  checksums, when production drifted from the clone's source on a table the plan touches, or
  when the ledger holds an artifact under another checksum. It returns NO-GO (exit 1, nothing
  written) while a gate is closed. Each artifact then runs in its own READ WRITE transaction:
  advisory lock (one key per plan), ledger re-read (skip what another applier did), gates
  again, body, exact deltas, stops, ledger row — all committed together or not at all.
- `watch` waits for the gates, then applies the auto-executable set and the verify
  artifacts (`auto: false` after the last auto one, read-only by the guard).
- `status` shows the ledger, the latest rehearsal and the gates.

The ledger is `oneroof.rollout_ledger` on production, created by the first apply.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pglast
import psycopg
from psycopg import sql as pgsql

from oneroof import connect, fingerprint, gates, guard, sqltext, suite
from oneroof.config import Config
from oneroof.connect import Session
from oneroof.errors import BadInput, ForbiddenAction
from oneroof.evidence import Evidence, Record
from oneroof.gates import Gate, GateResult
from oneroof.sqltext import Statement

HEADER_KEYS = ("artifact", "gate", "expect-delta", "stop", "auto", "requires")
KINDS = ("inserted", "updated", "deleted")
SIGNS = {"+": "inserted", "~": "updated", "-": "deleted"}
LEDGER_SCHEMA = "oneroof"
LEDGER_TABLE = "rollout_ledger"
LEDGER = f"{LEDGER_SCHEMA}.{LEDGER_TABLE}"
REHEARSAL_KIND = "rehearsal"
APPLY_KIND = "rollout-apply"
ARTIFACT_KIND = "rollout-artifact"
SHOWN_ROWS = 10
# Squawk rules oneroof satisfies itself: every production session has both timeouts set.
SQUAWK_EXCLUDED = ("require-statement-timeout", "require-lock-timeout")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_DIRECTIVE = re.compile(r"^\s*--\s*([a-z][a-z0-9_-]*)\s*:(.*)$")
_IDENT_PART = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_DELTA = re.compile(
    rf"^(?P<table>{_IDENT_PART}\.{_IDENT_PART})\s+(?P<sign>[+~-])\s*"
    r"(?P<amount>\d+|[A-Za-z_][A-Za-z0-9_]*)$"
)
_DURATION = re.compile(r"^\d+(ms|s|min|h)?$")

Counts = dict[str, dict[str, int]]
Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


# -- artifacts and plans ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedDelta:
    """`-- expect-delta: schema.table +N`: N rows inserted (~ updated, - deleted), exactly."""

    table: str
    kind: str
    amount: int | str  # an integer literal or a counter name
    line: int

    @property
    def text(self) -> str:
        sign = next(s for s, k in SIGNS.items() if k == self.kind)
        return f"{self.table} {sign}{self.amount}"


@dataclass(frozen=True)
class Artifact:
    """One parsed artifact file."""

    id: str
    file: Path
    checksum: str
    gates: tuple[Gate, ...]
    deltas: tuple[ExpectedDelta, ...]
    stops: tuple[Gate, ...]
    auto: bool
    requires: tuple[str, ...]
    statements: tuple[Statement, ...]
    text: str = field(repr=False, default="")

    @property
    def gate_names(self) -> set[str]:
        return {name for gate in self.gates for name in gate.names}

    @property
    def stop_names(self) -> set[str]:
        return {name for gate in self.stops for name in gate.names}

    @property
    def delta_names(self) -> set[str]:
        return {d.amount for d in self.deltas if isinstance(d.amount, str)}

    @property
    def tables(self) -> list[str]:
        """The tables the artifact declares deltas for."""
        return sorted({d.table for d in self.deltas})

    def expected(self, values: Mapping[str, Any]) -> tuple[Counts, list[str]]:
        """The exact deltas declared, with counters resolved from `values`; and problems."""
        result: Counts = {}
        problems: list[str] = []
        for delta in self.deltas:
            amount: Any = delta.amount
            if isinstance(amount, str):
                value = values.get(amount)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    problems.append(
                        f"expect-delta {delta.text}: {amount} = {gates.plain(value)} is not a "
                        "row count"
                    )
                    continue
                amount = value
            result.setdefault(delta.table, dict.fromkeys(KINDS, 0))[delta.kind] = int(amount)
        return result, problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "file": str(self.file),
            "checksum": self.checksum,
            "gates": [g.text for g in self.gates],
            "expect_delta": [d.text for d in self.deltas],
            "stops": [s.text for s in self.stops],
            "auto": self.auto,
            "requires": list(self.requires),
            "statements": len(self.statements),
        }


@dataclass(frozen=True)
class Plan:
    """The artifacts of one plan folder, in file order."""

    name: str
    path: Path
    artifacts: tuple[Artifact, ...]

    @property
    def checksums(self) -> list[list[str]]:
        """[[id, checksum], …] in order: what a rehearsal must match."""
        return [[a.id, a.checksum] for a in self.artifacts]

    @property
    def auto_set(self) -> list[str]:
        """The post-gate auto-executable set, in order."""
        return [a.id for a in self.artifacts if a.auto]

    @property
    def verify_set(self) -> list[str]:
        """`auto: false` artifacts after the last auto one: run by `watch` when read-only."""
        last = max((i for i, a in enumerate(self.artifacts) if a.auto), default=None)
        if last is None:
            return []
        return [a.id for a in self.artifacts[last + 1 :] if not a.auto]

    def artifact(self, artifact_id: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.id == artifact_id:
                return artifact
        raise KeyError(artifact_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.name,
            "path": str(self.path),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "auto_set": self.auto_set,
            "verify_set": self.verify_set,
        }


def resolve_plan_dir(cfg: Config, path: str | Path) -> Path:
    """A plan folder as given, else relative to the workspace."""
    candidate = Path(path)
    if candidate.is_dir() or candidate.is_absolute():
        return candidate
    in_workspace = cfg.workspace / candidate
    return in_workspace if in_workspace.is_dir() else candidate


def load_plan(path: Path, cfg: Config) -> Plan:
    """Parse every artifact of a plan folder; `BadInput` (file and line) before anything runs."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(
            "not a plan folder (expected a directory of NN_name.sql artifacts)", file=path
        )
    name = path.resolve().name
    if not _ID.match(name):
        raise BadInput(
            f"plan folder name {name!r}: use letters, digits, '_', '.', '-' only", file=path
        )
    files = sorted(p for p in path.iterdir() if p.suffix == ".sql" and p.is_file())
    if not files:
        raise BadInput("the plan folder holds no .sql artifact", file=path)
    known = set(cfg.counters)
    artifacts: list[Artifact] = []
    seen: dict[str, Path] = {}
    for file in files:
        artifact = parse_artifact(file, known)
        if artifact.id in seen:
            raise BadInput(
                f"duplicate artifact id {artifact.id!r} (also in {seen[artifact.id].name})",
                file=file,
                line=_line_of_key(artifact.text, "artifact"),
            )
        for required in artifact.requires:
            if required not in seen:
                later = any(required == a for a in _ids_after(files, file, known))
                why = "comes later in the plan" if later else "is not an artifact of this plan"
                raise BadInput(
                    f"requires {required!r}, which {why}",
                    file=file,
                    line=_line_of_key(artifact.text, "requires"),
                )
        seen[artifact.id] = file
        artifacts.append(artifact)
    return Plan(name, path, tuple(artifacts))


def _ids_after(files: list[Path], current: Path, known: set[str]) -> Iterator[str]:
    for file in files[files.index(current) + 1 :]:
        with contextlib.suppress(BadInput):
            yield parse_artifact(file, known).id


def _line_of_key(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        match = _DIRECTIVE.match(line)
        if match and match.group(1) == key:
            return number
    return None


def _strip_comment(value: str) -> str:
    """The value of a header line without a trailing `-- comment` (outside quotes)."""
    quote: str | None = None
    for index, char in enumerate(value):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif value.startswith("--", index):
            return value[:index].strip()
    return value.strip()


def _parse_table(text: str) -> str:
    parts = re.findall(_IDENT_PART, text)
    names = [p[1:-1].replace('""', '"') if p.startswith('"') else p.lower() for p in parts]
    return ".".join(names)


def parse_artifact(file: Path, counters: Iterable[str]) -> Artifact:
    """Parse one artifact file (header and body); `BadInput` naming file and line."""
    known = set(counters)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", file=file) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start})", file=file) from None
    checksum = hashlib.sha256(raw).hexdigest()
    lines = text.splitlines()
    header_end = 0
    while header_end < len(lines):
        stripped = lines[header_end].strip()
        if stripped and not stripped.startswith("--"):
            break
        header_end += 1

    artifact_id: str | None = None
    auto: bool | None = None
    gate_list: list[Gate] = []
    stops: list[Gate] = []
    deltas: list[ExpectedDelta] = []
    requires: list[str] = []
    declared: dict[tuple[str, str], int] = {}
    for number, line in enumerate(lines[:header_end], start=1):
        match = _DIRECTIVE.match(line)
        if match is None:
            continue
        key, value = match.group(1), _strip_comment(match.group(2))
        if key not in HEADER_KEYS:
            raise BadInput(
                f"unknown header key {key!r} (known: {', '.join(HEADER_KEYS)}); a free-text "
                "comment must not start with a lower-case `word:`",
                file=file,
                line=number,
            )
        if not value:
            raise BadInput(f"header {key!r} has no value", file=file, line=number)
        if key == "artifact":
            if artifact_id is not None:
                raise BadInput("a second `artifact:` line", file=file, line=number)
            if not _ID.match(value):
                raise BadInput(
                    f"artifact id {value!r}: use letters, digits, '_', '.', '-' only",
                    file=file,
                    line=number,
                )
            artifact_id = value
        elif key == "gate":
            gate_list.append(gates.parse(value, file=file, line=number, known=known))
        elif key == "stop":
            stops.append(gates.parse(value, file=file, line=number, known=known))
        elif key == "auto":
            if auto is not None:
                raise BadInput("a second `auto:` line", file=file, line=number)
            if value.lower() not in ("true", "false"):
                raise BadInput(f"auto must be true or false, not {value!r}", file=file, line=number)
            auto = value.lower() == "true"
        elif key == "requires":
            for required in re.split(r"[\s,]+", value):
                if not _ID.match(required):
                    raise BadInput(
                        f"requires: {required!r} is not an artifact id", file=file, line=number
                    )
                requires.append(required)
        else:
            deltas.append(_parse_delta(value, known, file, number, declared))

    for number, line in enumerate(lines[header_end:], start=header_end + 1):
        match = _DIRECTIVE.match(line)
        if match and match.group(1) in HEADER_KEYS:
            raise BadInput(
                f"header `{match.group(1)}:` after the SQL began: move it to the header at the "
                "top of the file",
                file=file,
                line=number,
            )
    if artifact_id is None:
        raise BadInput("missing `-- artifact: ID` header line", file=file, line=1)
    if not gate_list:
        raise BadInput(
            "missing `-- gate: EXPR` header line (every artifact is gated; write "
            "`-- gate: true` for one that is always open)",
            file=file,
            line=1,
        )
    statements = _split(text, file)
    if not statements:
        raise BadInput("the artifact has no SQL statement", file=file, line=header_end + 1)
    for statement in statements:
        verdict = guard.classify(statement.sql)
        if verdict.kind in (guard.Kind.TRANSACTION, guard.Kind.UNPARSEABLE, guard.Kind.MULTI):
            raise BadInput(
                f"not allowed in an artifact: {verdict.reason} (oneroof runs each artifact in "
                "its own transaction)",
                file=file,
                line=statement.line,
            )
        if _session_setting(statement.sql):
            raise BadInput(
                "SET/RESET without LOCAL would outlive the artifact's transaction: write SET LOCAL",
                file=file,
                line=statement.line,
            )
    return Artifact(
        id=artifact_id,
        file=file,
        checksum=checksum,
        gates=tuple(gate_list),
        deltas=tuple(deltas),
        stops=tuple(stops),
        auto=bool(auto),
        requires=tuple(dict.fromkeys(requires)),
        statements=tuple(statements),
        text=text,
    )


def _session_setting(statement: str) -> bool:
    """True for a SET or RESET that is not LOCAL to the transaction."""
    try:
        node = pglast.parse_sql(statement)[0].stmt
    except Exception:  # unparseable statements were refused before
        return False
    return isinstance(node, pglast.ast.VariableSetStmt) and not node.is_local


def _parse_delta(
    value: str, known: set[str], file: Path, line: int, declared: dict[tuple[str, str], int]
) -> ExpectedDelta:
    match = _DELTA.match(value)
    if match is None:
        raise BadInput(
            f"expect-delta {value!r}: write `schema.table +N` (+ inserted, ~ updated, "
            "- deleted; N an integer or a counter name)",
            file=file,
            line=line,
        )
    table = _parse_table(match.group("table"))
    kind = SIGNS[match.group("sign")]
    raw_amount = match.group("amount")
    amount: int | str = int(raw_amount) if raw_amount.isdigit() else raw_amount
    if isinstance(amount, str) and amount not in known:
        choices = ", ".join(sorted(known)) or "none defined"
        raise BadInput(
            f"expect-delta {value!r}: unknown counter {amount!r} (known counters: {choices})",
            file=file,
            line=line,
        )
    if (table, kind) in declared:
        raise BadInput(
            f"expect-delta: {table} {match.group('sign')} declared twice (first on line "
            f"{declared[(table, kind)]})",
            file=file,
            line=line,
        )
    declared[(table, kind)] = line
    return ExpectedDelta(table, kind, amount, line)


def _split(text: str, file: Path, first_line: int = 1) -> list[Statement]:
    try:
        return sqltext.split(text, first_line)
    except sqltext.SqlSyntaxError as exc:
        raise BadInput(
            f"the PostgreSQL parser cannot read it: {exc.message}", file=file, line=exc.line
        ) from None


# -- lint --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintFinding:
    """One squawk finding: a warning shown in the plan, never a failure."""

    artifact: str
    file: str
    line: int | None
    rule: str
    level: str
    message: str
    help: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "level": self.level,
            "message": self.message,
            "help": self.help,
        }


def squawk_path() -> Path | None:
    """The squawk binary beside the running Python (the squawk-cli wheel), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.exists():
        return beside
    found = shutil.which("squawk")
    return Path(found) if found else None


def lint(plan: Plan) -> tuple[list[LintFinding], str | None]:
    """Squawk's findings for every artifact, and a note when squawk could not run."""
    binary = squawk_path()
    if binary is None:
        return [], "squawk is not installed (pip install squawk-cli): artifacts were not linted"
    findings: list[LintFinding] = []
    for artifact in plan.artifacts:
        command = [
            str(binary),
            "--reporter",
            "json",
            "--assume-in-transaction",
            f"--exclude={','.join(SQUAWK_EXCLUDED)}",
            str(artifact.file),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return findings, f"squawk could not run: {exc}"
        try:
            items = json.loads(done.stdout or "[]")
        except json.JSONDecodeError:
            detail = (done.stderr or done.stdout).strip().splitlines()
            return (
                findings,
                f"squawk failed on {artifact.file.name}: {detail[-1] if detail else ''}",
            )
        for item in items if isinstance(items, list) else []:
            line = item.get("line")
            findings.append(
                LintFinding(
                    artifact=artifact.id,
                    file=str(artifact.file),
                    line=int(line) + 1 if isinstance(line, int) else None,
                    rule=str(item.get("rule_name") or "squawk"),
                    level=str(item.get("level") or "Warning").lower(),
                    message=str(item.get("message") or ""),
                    help=item.get("help"),
                )
            )
    return findings, None


# -- results -----------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


@dataclass
class ArtifactRun:
    """What happened to one artifact in a rehearsal or an apply."""

    id: str
    checksum: str
    file: str
    auto: bool
    status: str = "not reached"
    gates: list[GateResult] = field(default_factory=list)
    deltas: Counts = field(default_factory=dict)
    expected: Counts = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    stops: list[GateResult] = field(default_factory=list)
    reason: str | None = None
    sqlstate: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    seconds: float = 0.0

    OK_STATES = ("ok", "applied", "skipped", "already applied", "would apply")

    @classmethod
    def of(cls, artifact: Artifact, status: str = "not reached") -> ArtifactRun:
        return cls(artifact.id, artifact.checksum, str(artifact.file), artifact.auto, status)

    @property
    def ok(self) -> bool:
        return self.status in self.OK_STATES

    @property
    def gates_hold(self) -> bool:
        return all(g.holds for g in self.gates)

    @property
    def stopped(self) -> bool:
        return any(s.holds for s in self.stops)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "checksum": self.checksum,
            "file": self.file,
            "auto": self.auto,
            "status": self.status,
            "ok": self.ok,
            "gates": [g.to_dict() for g in self.gates],
            "gates_hold": self.gates_hold,
            "deltas": self.deltas,
            "expected": self.expected,
            "mismatches": self.mismatches,
            "stops": [s.to_dict() for s in self.stops],
            "stopped": self.stopped,
            "reason": self.reason,
            "error": self.reason if self.sqlstate else None,
            "sqlstate": self.sqlstate,
            "columns": self.columns,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }


class _Halt(Exception):
    """Raised inside an artifact's transaction or savepoint: roll it back and halt the plan."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _psycopg_reason(exc: psycopg.Error) -> str:
    message = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
    first = message.splitlines()[0] if message else type(exc).__name__
    return f"PostgreSQL error: {first}" + (f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else "")


# -- measuring ---------------------------------------------------------------------------------


def _xact_stats(session: Session) -> dict[str, tuple[int, int, int]]:
    rows = session.internal(connect.XACT_TABLE_STATS)
    return {
        f"{schema}.{name}": (int(ins), int(upd), int(dele))
        for schema, name, ins, upd, dele in rows
        if schema != LEDGER_SCHEMA
    }


def measure_deltas(
    before: Mapping[str, tuple[int, int, int]], after: Mapping[str, tuple[int, int, int]]
) -> Counts:
    """The rows inserted, updated and deleted per table between two readings (non-zero only)."""
    result: Counts = {}
    for table in sorted(set(before) | set(after)):
        old = before.get(table, (0, 0, 0))
        new = after.get(table, (0, 0, 0))
        delta = {kind: new[i] - old[i] for i, kind in enumerate(KINDS)}
        if any(delta.values()):
            result[table] = delta
    return result


def compare_deltas(measured: Counts, expected: Counts) -> list[str]:
    """Every difference between measured and declared deltas (exact; undeclared must be 0)."""
    problems: list[str] = []
    zero = dict.fromkeys(KINDS, 0)
    for table in sorted(set(measured) | set(expected)):
        got = measured.get(table, zero)
        want = expected.get(table)
        if want is None:
            shown = " ".join(f"{s}{got[k]}" for s, k in SIGNS.items() if got.get(k))
            problems.append(f"{table}: {shown} but no expect-delta declares this table")
            continue
        for sign, kind in SIGNS.items():
            if got.get(kind, 0) != want.get(kind, 0):
                problems.append(
                    f"{table} {sign}: {got.get(kind, 0)} {kind}, expected {want.get(kind, 0)}"
                )
    return problems


def _keep_rows(run: ArtifactRun, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if columns:
        run.columns = list(columns)
        run.rows = [[_cell(v) for v in row] for row in rows[:SHOWN_ROWS]]


# -- the ledger --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRow:
    """One applied artifact, as the production ledger records it."""

    plan: str
    artifact: str
    checksum: str
    applied_at: str
    applied_by: str
    deltas: Counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "artifact": self.artifact,
            "checksum": self.checksum,
            "applied_at": self.applied_at,
            "applied_by": self.applied_by,
            "deltas": self.deltas,
        }


LEDGER_DDL = (
    f"create schema if not exists {LEDGER_SCHEMA}",
    f"""create table if not exists {LEDGER} (
    id bigint generated always as identity primary key,
    plan text not null,
    artifact text not null,
    checksum text not null check (checksum ~ '^[0-9a-f]{{64}}$'),
    file text not null,
    applied_at timestamptz not null default now(),
    applied_by text not null default current_user,
    application text not null default current_setting('application_name'),
    client_addr inet default inet_client_addr(),
    deltas jsonb not null,
    gates jsonb not null,
    stops jsonb not null,
    rehearsal text,
    unique (plan, artifact)
)""",
    f"comment on table {LEDGER} is 'oneroof rollout ledger: one row per artifact applied, "
    "written in the artifact''s own transaction'",
)


def _literal(value: Any) -> str:
    return pgsql.Literal(value).as_string(None)


def _ledger_exists(session: Session) -> bool:
    return bool(session.scalar(f"select to_regclass({_literal(LEDGER)}) is not null"))


def read_ledger(session: Session, plan_name: str) -> dict[str, LedgerRow]:
    """The ledger rows of a plan (empty when no apply ever created the ledger)."""
    if not _ledger_exists(session):
        return {}
    rows = session.execute(
        "select artifact, checksum, applied_at::text, applied_by, deltas::text"
        f" from {LEDGER} where plan = {_literal(plan_name)} order by id"
    )
    return {
        str(artifact): LedgerRow(
            plan_name, str(artifact), str(checksum), str(at), str(by), json.loads(deltas)
        )
        for artifact, checksum, at, by, deltas in rows
    }


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"oneroof.rollout:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _take_lock(writer: Session, cfg: Config, key: int, **audit: Any) -> None:
    """The transaction-level advisory lock; waits up to the statement timeout, not the lock one."""
    writer.apply("SET LOCAL lock_timeout = 0", step="lock", **audit)
    writer.apply(f"select pg_catalog.pg_advisory_xact_lock({int(key)})", step="lock", **audit)
    configured = cfg.production.lock_timeout.replace(" ", "")
    if _DURATION.match(configured):
        writer.apply(f"SET LOCAL lock_timeout = '{configured}'", step="lock", **audit)
    if writer.identity.server_version_num >= 140000:
        # A client that dies mid-artifact is noticed within a second, even in a long
        # statement: its transaction is rolled back and the lock freed for the rerun.
        writer.apply("SET LOCAL client_connection_check_interval = '1s'", step="lock", **audit)


def _ensure_ledger(writer: Session, cfg: Config) -> None:
    if _ledger_exists(writer):
        return
    with writer.write_transaction():
        _take_lock(writer, cfg, _lock_key(LEDGER), target="ledger")
        if _ledger_exists(writer):
            return
        for statement in LEDGER_DDL:
            writer.apply(statement, step="ledger")


# -- rehearsal ---------------------------------------------------------------------------------


@dataclass
class Rehearsal:
    """The outcome of rehearsing a plan on the clone (always rolled back)."""

    plan: str
    path: str
    clone: str
    source_fingerprint: str | None
    artifacts: list[ArtifactRun]
    already_applied: list[str]
    touched_tables: list[str]
    residue_free: bool
    residue: list[str]
    sequences_restored: list[str]
    ok: bool
    seconds: float
    marker_state: str | None = None
    record: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "path": self.path,
            "clone": self.clone,
            "source_fingerprint": self.source_fingerprint,
            "marker_state": self.marker_state,
            "checksums": [[a.id, a.checksum] for a in self.artifacts],
            "artifacts": [a.to_dict() for a in self.artifacts],
            "already_applied": self.already_applied,
            "touched_tables": self.touched_tables,
            "residue_free": self.residue_free,
            "residue": self.residue,
            "sequences_restored": self.sequences_restored,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "record": self.record,
        }


def rehearse(
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    *,
    clone_name: str | None = None,
    session: Session | None = None,
    say: Say | None = None,
) -> Rehearsal:
    """Run the plan on the clone in one always-rolled-back transaction; store the evidence."""
    if session is not None and session.role != connect.CLONE:
        raise ForbiddenAction("refused: a rehearsal runs on the clone only")
    own = session is None
    active = session or connect.open_clone(cfg, evidence, clone_name, ready_only=True)
    try:
        return _rehearse(cfg, evidence, plan, active, say or _quiet)
    finally:
        if own:
            active.close()


def _rehearse(cfg: Config, evidence: Evidence, plan: Plan, session: Session, say: Say) -> Rehearsal:
    started = time.monotonic()
    marker = connect.read_marker(session) or {}
    source = marker.get("source_fingerprint")
    say(f"rehearse {plan.name} on {session.identity.database}: fingerprint before")
    before = fingerprint.take(session, mode="full")
    sequences = suite.read_sequences(session)
    clone_ledger = read_ledger(session, plan.name)
    runs: list[ArtifactRun] = []
    already: list[str] = []
    restored: list[str] = []
    try:
        _rehearse_all(session, cfg, plan, clone_ledger, runs, already, say)
    finally:
        if not session.closed:
            restored = suite.restore_sequences(session, sequences)
    say("fingerprint after (residue proof)")
    after = fingerprint.take(session, mode="full")
    residue = [d.describe() for d in fingerprint.diff(before, after)]
    residue_free = before.id == after.id and not residue
    touched = sorted({table for run in runs for table in run.deltas})
    result = Rehearsal(
        plan=plan.name,
        path=str(plan.path),
        clone=session.identity.database,
        source_fingerprint=str(source) if source else None,
        artifacts=runs,
        already_applied=already,
        touched_tables=touched,
        residue_free=residue_free,
        residue=residue,
        sequences_restored=restored,
        ok=residue_free and all(run.ok for run in runs),
        seconds=time.monotonic() - started,
        marker_state=str(marker.get("state")) if marker.get("state") else None,
    )
    record = evidence.append(REHEARSAL_KIND, result.to_dict())
    result.record = record.seq
    return result


def _rehearse_all(
    session: Session,
    cfg: Config,
    plan: Plan,
    clone_ledger: Mapping[str, LedgerRow],
    runs: list[ArtifactRun],
    already: list[str],
    say: Say,
) -> None:
    """Every artifact in order, one savepoint each, in one transaction that is rolled back."""
    halted = False
    with session.transaction():  # always rolled back
        for artifact in plan.artifacts:
            if halted:
                runs.append(ArtifactRun.of(artifact))
                continue
            row = clone_ledger.get(artifact.id)
            if row is not None:
                run = ArtifactRun.of(artifact, "skipped")
                if row.checksum == artifact.checksum:
                    run.reason = "already applied on production when the clone was taken"
                    already.append(artifact.id)
                else:
                    run.status = "failed"
                    run.reason = (
                        f"the ledger holds {artifact.id} with checksum {row.checksum[:12]}…, "
                        f"not {artifact.checksum[:12]}…: the applied artifact was edited"
                    )
                    halted = True
                runs.append(run)
                continue
            say(f"  {artifact.id}")
            run = _rehearse_artifact(session, cfg, artifact)
            runs.append(run)
            halted = not run.ok


def _rehearse_artifact(session: Session, cfg: Config, artifact: Artifact) -> ArtifactRun:
    run = ArtifactRun.of(artifact, "running")
    started = time.monotonic()
    try:
        with session.savepoint():
            values = gates.read_values(session, cfg, artifact.gate_names | artifact.delta_names)
            run.gates = gates.evaluate_all(artifact.gates, values)  # reported, never blocking
            run.expected, problems = artifact.expected(values)
            stats_before = _xact_stats(session)
            for statement in artifact.statements:
                columns, rows = session.query(statement.sql)
                _keep_rows(run, columns, rows)
            run.deltas = measure_deltas(stats_before, _xact_stats(session))
            run.mismatches = problems + compare_deltas(run.deltas, run.expected)
            stop_values = gates.read_values(session, cfg, artifact.stop_names)
            run.stops = gates.evaluate_all(artifact.stops, stop_values)
            reason = _verdict(run)
            if reason:
                raise _Halt(reason)
        run.status = "ok"
    except _Halt as halt:
        run.status, run.reason = "failed", halt.reason
    except psycopg.Error as exc:
        run.status, run.reason, run.sqlstate = "failed", _psycopg_reason(exc), exc.sqlstate
    run.seconds = time.monotonic() - started
    return run


def _verdict(run: ArtifactRun) -> str | None:
    if run.mismatches:
        return "delta mismatch: " + "; ".join(run.mismatches)
    fired = [s.describe() for s in run.stops if s.holds]
    if fired:
        return "stop: " + "; ".join(fired)
    return None


# -- apply preconditions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One precondition of an apply."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def find_rehearsal(evidence: Evidence, plan: Plan) -> tuple[Record | None, str]:
    """The newest rehearsal of exactly these checksums, and why none fits when none does."""
    latest_of_plan: Record | None = None
    for record in reversed(evidence.records(REHEARSAL_KIND)):
        if record.payload.get("plan") != plan.name:
            continue
        latest_of_plan = latest_of_plan or record
        if record.payload.get("checksums") == plan.checksums:
            return record, ""
    if latest_of_plan is None:
        return None, f"no rehearsal of plan {plan.name} in the evidence store"
    rehearsed = {a: c for a, c in latest_of_plan.payload.get("checksums") or []}
    changed = [a.id for a in plan.artifacts if rehearsed.get(a.id) != a.checksum]
    removed = [a for a in rehearsed if a not in {x.id for x in plan.artifacts}]
    parts = []
    if changed:
        parts.append(f"changed since the last rehearsal (checksum): {', '.join(changed)}")
    if removed:
        parts.append(f"removed: {', '.join(removed)}")
    return None, "no rehearsal of these exact artifacts — " + "; ".join(parts or ["order changed"])


@dataclass
class _Precheck:
    checks: list[Check]
    ledger: dict[str, LedgerRow]
    selected: list[Artifact]
    left: list[Artifact]
    gates: list[tuple[str, GateResult]]
    rehearsal: Record | None
    drift: list[str]

    @property
    def refusals(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def closed(self) -> list[tuple[str, GateResult]]:
        return [(a, g) for a, g in self.gates if not g.holds]


def _select(
    plan: Plan, ledger: Mapping[str, LedgerRow], mode: str, session: Session
) -> tuple[list[Artifact], list[Artifact]]:
    """The pending artifacts to run now, and those left for a human."""
    pending = [a for a in plan.artifacts if a.id not in ledger]
    if mode == "all":
        return pending, []
    verify = set(plan.verify_set) if mode == "watch" else set()
    chosen: list[Artifact] = []
    for index, artifact in enumerate(pending):
        runnable = artifact.auto or (artifact.id in verify and _read_only(artifact, session))
        if not runnable:
            return chosen, pending[index:]
        chosen.append(artifact)
    return chosen, []


def _read_only(artifact: Artifact, session: Session) -> bool:
    """True when every statement is a plain read by the production guard (a verify artifact)."""
    return all(guard.classify(s.sql, session.catalog).allowed for s in artifact.statements)


def _precheck(
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    session: Session,
    mode: str,
    *,
    drift: bool = True,
) -> _Precheck:
    """Ledger, rehearsal, drift and gates, read from one snapshot of production."""
    checks: list[Check] = []
    with session.transaction():
        ledger = read_ledger(session, plan.name)
        conflicts = [
            f"{a.id} (ledger {ledger[a.id].checksum[:12]}…, file {a.checksum[:12]}…)"
            for a in plan.artifacts
            if a.id in ledger and ledger[a.id].checksum != a.checksum
        ]
        checks.append(
            Check(
                "ledger",
                not conflicts,
                "refused: applied artifacts were edited since: " + ", ".join(conflicts)
                if conflicts
                else f"{len(ledger)} of {len(plan.artifacts)} artifact(s) already applied",
            )
        )
        selected, left = _select(plan, ledger, mode, session)
        record: Record | None = None
        drifted: list[str] = []
        if selected:
            record, why = find_rehearsal(evidence, plan)
            checks.append(_rehearsal_check(record, why, selected))
            if drift and record is not None and record.payload.get("ok"):
                check, drifted = _drift_check(session, evidence, plan, record, ledger, selected)
                checks.append(check)
        names = {n for a in selected for n in a.gate_names}
        values = gates.read_values(session, cfg, names)
        results = [(a.id, gates.evaluate(g, values)) for a in selected for g in a.gates]
    return _Precheck(checks, ledger, selected, left, results, record, drifted)


def _rehearsal_check(record: Record | None, why: str, selected: list[Artifact]) -> Check:
    if record is None:
        return Check("rehearsal", False, f"refused: {why}; run `oneroof rollout rehearse`")
    payload = record.payload
    if not payload.get("ok"):
        failed = [
            f"{a.get('id')}: {a.get('reason') or a.get('status')}"
            for a in payload.get("artifacts", [])
            if not a.get("ok")
        ]
        if not payload.get("residue_free"):
            failed.append("the clone was not residue-free afterwards")
        return Check(
            "rehearsal",
            False,
            f"refused: the latest rehearsal of these artifacts (evidence #{record.seq}) failed: "
            + "; ".join(failed[:3]),
        )
    rehearsed = {a.get("id") for a in payload.get("artifacts", []) if a.get("status") == "ok"}
    unrehearsed = [a.id for a in selected if a.id not in rehearsed]
    if unrehearsed:
        return Check(
            "rehearsal",
            False,
            f"refused: not rehearsed (the clone's ledger already had them): "
            f"{', '.join(unrehearsed)}; rehearse on a clone of the current production",
        )
    return Check(
        "rehearsal",
        True,
        f"passing rehearsal of these checksums: evidence #{record.seq} at {record.at[:19]} "
        f"on clone {payload.get('clone')}",
    )


def _drift_check(
    session: Session,
    evidence: Evidence,
    plan: Plan,
    record: Record,
    ledger: Mapping[str, LedgerRow],
    selected: list[Artifact],
) -> tuple[Check, list[str]]:
    payload = record.payload
    source_id = payload.get("source_fingerprint")
    if not source_id:
        return Check(
            "drift", False, "refused: the rehearsal's clone carries no source fingerprint"
        ), []
    source = fingerprint.find(evidence, str(source_id))
    if source is None:
        return Check(
            "drift",
            False,
            f"refused: the clone's source fingerprint {str(source_id)[:12]}… is not in the "
            "evidence store",
        ), []
    tables = set(payload.get("touched_tables") or []) | {t for a in selected for t in a.tables}
    # Tables this plan itself changed on production since the clone was taken cannot equal
    # the clone's source any more; gates, deltas and stops guard them from here on.
    before_clone = set(payload.get("already_applied") or [])
    own = {
        table
        for artifact_id, row in ledger.items()
        if artifact_id not in before_clone
        for table in row.deltas
    }
    compare = sorted(tables - own)
    if not compare:
        return Check("drift", True, "no table to compare (every one was changed by this plan)"), []
    production = fingerprint.take(session, mode="full", tables=compare)
    drifted = []
    for table in compare:
        expected = source.table_content(table)
        actual = production.table_content(table)
        if expected is not None and expected == actual:
            continue
        before_count = source.sections.get("counts", {}).get(table)
        now_count = production.sections.get("counts", {}).get(table)
        if expected is None and before_count is not None:
            drifted.append(f"{table} (the clone's source fingerprint has no content hash of it)")
        elif actual is None:
            drifted.append(f"{table} (gone from production)")
        else:
            drifted.append(f"{table} (rows {before_count} → {now_count}, content changed)")
    skipped = (
        f"; not compared (changed by this plan): {', '.join(sorted(own & tables))}"
        if (own & tables)
        else ""
    )
    if drifted:
        return Check(
            "drift",
            False,
            "refused: production drifted since the clone was taken: "
            + ", ".join(drifted)
            + "; re-clone and re-rehearse",
        ), drifted
    return Check(
        "drift",
        True,
        f"{len(compare)} table(s) equal to the clone's source {str(source_id)[:8]}: "
        + ", ".join(compare)
        + skipped,
    ), []


# -- apply -------------------------------------------------------------------------------------


def _closed(closed: list[tuple[str, GateResult]]) -> str:
    """The closed gates, each once, with the artifacts that carry it."""
    groups: dict[str, list[str]] = {}
    for artifact_id, result in closed:
        groups.setdefault(result.describe(), []).append(artifact_id)
    return "; ".join(f"{text} [{', '.join(ids)}]" for text, ids in groups.items())


@dataclass
class ApplyResult:
    """What an apply (or watch) did; `ok` False is NO-GO (exit 1)."""

    plan: str
    execute: bool
    mode: str
    status: str = "nothing to do"
    ok: bool = True
    artifacts: list[ArtifactRun] = field(default_factory=list)
    gates: list[tuple[str, GateResult]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    rehearsal: int | None = None
    message: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def applied(self) -> list[str]:
        return [a.id for a in self.artifacts if a.status == "applied"]

    @property
    def closed_gates(self) -> list[tuple[str, GateResult]]:
        return [(a, g) for a, g in self.gates if not g.holds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "execute": self.execute,
            "mode": self.mode,
            "status": self.status,
            "ok": self.ok,
            "message": self.message,
            "applied": self.applied,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "gates": [{"artifact": a, **g.to_dict()} for a, g in self.gates],
            "checks": [c.to_dict() for c in self.checks],
            "rehearsal": self.rehearsal,
            "seconds": round(self.seconds, 3),
        }


def apply(
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    *,
    execute: bool,
    only_auto: bool = False,
    say: Say | None = None,
) -> ApplyResult:
    """Apply the plan's pending artifacts to production (a dry run unless `execute`)."""
    return _apply(
        cfg, evidence, plan, execute=execute, mode="auto" if only_auto else "all", say=say
    )


def _refuse(evidence: Evidence, result: ApplyResult, refusals: list[Check]) -> ForbiddenAction:
    result.status, result.ok = "refused", False
    result.message = "; ".join(c.detail for c in refusals)
    evidence.append(APPLY_KIND, result.to_dict())
    return ForbiddenAction(result.message, reason=refusals[0].name)


def _apply(
    cfg: Config, evidence: Evidence, plan: Plan, *, execute: bool, mode: str, say: Say | None
) -> ApplyResult:
    say = say or _quiet
    started = time.monotonic()
    result = ApplyResult(plan.name, execute, mode)
    with connect.open_production(cfg, evidence) as session:
        pre = _precheck(cfg, evidence, plan, session, mode)
    result.checks, result.gates = pre.checks, pre.gates
    result.rehearsal = pre.rehearsal.seq if pre.rehearsal else None
    for artifact in plan.artifacts:
        if artifact.id in pre.ledger:
            result.artifacts.append(ArtifactRun.of(artifact, "already applied"))
    left = [ArtifactRun.of(a, "left for a human") for a in pre.left]

    def finish(status: str, ok: bool, message: str) -> ApplyResult:
        result.status, result.ok, result.message = status, ok, message
        result.artifacts += left
        result.seconds = time.monotonic() - started
        if execute:
            evidence.append(APPLY_KIND, result.to_dict())
        return result

    if pre.refusals:
        if execute:
            result.artifacts += left + [ArtifactRun.of(a, "not run") for a in pre.selected]
            raise _refuse(evidence, result, pre.refusals)
        result.artifacts += [ArtifactRun.of(a, "not run") for a in pre.selected]
        return finish("would refuse", False, "; ".join(c.detail for c in pre.refusals))
    if not pre.selected:
        if pre.left:
            waiting = ", ".join(a.id for a in pre.left)
            return finish(
                "nothing to do", True, f"nothing unattended is pending; for a human: {waiting}"
            )
        return finish("nothing to do", True, "every artifact is already applied")
    if pre.closed:
        result.artifacts += [ArtifactRun.of(a, "not run") for a in pre.selected]
        return finish("gate closed", False, f"NO-GO, nothing written: {_closed(pre.closed)}")
    if not execute:
        result.artifacts += [ArtifactRun.of(a, "would apply") for a in pre.selected]
        return finish(
            "dry run", True, f"would apply {', '.join(a.id for a in pre.selected)} (--execute)"
        )

    record_hash = pre.rehearsal.hash if pre.rehearsal else None
    with connect.open_production_writer(cfg, evidence) as writer:
        _ensure_ledger(writer, cfg)
        for index, artifact in enumerate(pre.selected):
            say(f"apply {artifact.id}")
            run = _apply_artifact(writer, cfg, plan, artifact, record_hash)
            result.artifacts.append(run)
            evidence.append(ARTIFACT_KIND, {"plan": plan.name, **run.to_dict()})
            if not run.ok:
                result.artifacts += [ArtifactRun.of(a) for a in pre.selected[index + 1 :]]
                return finish(
                    "halted", False, f"{artifact.id} rolled back, plan halted: {run.reason}"
                )
    applied = [a.id for a in pre.selected if a.id in result.applied]
    return finish("applied", True, f"applied {', '.join(applied) or 'nothing new'}")


def _apply_artifact(
    writer: Session, cfg: Config, plan: Plan, artifact: Artifact, rehearsal: str | None
) -> ArtifactRun:
    run = ArtifactRun.of(artifact, "running")
    started = time.monotonic()
    tag = {"plan": plan.name, "artifact": artifact.id}
    try:
        with writer.write_transaction():
            _take_lock(writer, cfg, _lock_key(plan.name), **tag)
            # After the lock: what another applier committed meanwhile is visible now.
            ledger = read_ledger(writer, plan.name)
            row = ledger.get(artifact.id)
            if row is not None:
                if row.checksum != artifact.checksum:
                    raise ForbiddenAction(
                        f"refused: the ledger holds {artifact.id} with another checksum"
                    )
                run.status, run.reason = "skipped", f"applied meanwhile at {row.applied_at}"
                return run
            missing = [r for r in artifact.requires if r not in ledger]
            if missing:
                raise _Halt(f"requires {', '.join(missing)}, not in the ledger")
            values = gates.read_values(writer, cfg, artifact.gate_names | artifact.delta_names)
            run.gates = gates.evaluate_all(artifact.gates, values)
            if not run.gates_hold:
                closed = "; ".join(g.describe() for g in run.gates if not g.holds)
                raise _Halt(f"gate closed inside the transaction: {closed}")
            run.expected, problems = artifact.expected(values)
            if problems:
                raise _Halt("; ".join(problems))
            stats_before = _xact_stats(writer)
            for statement in artifact.statements:
                columns, rows = writer.apply(statement.sql, line=statement.line, **tag)
                _keep_rows(run, columns, rows)
            run.deltas = measure_deltas(stats_before, _xact_stats(writer))
            run.mismatches = compare_deltas(run.deltas, run.expected)
            run.stops = gates.evaluate_all(
                artifact.stops, gates.read_values(writer, cfg, artifact.stop_names)
            )
            reason = _verdict(run)
            if reason:
                raise _Halt(reason)
            _insert_ledger(writer, plan, artifact, run, rehearsal)
        run.status = "applied"
    except _Halt as halt:
        run.status, run.reason = "halted", halt.reason
    except psycopg.Error as exc:
        run.status, run.reason, run.sqlstate = "halted", _psycopg_reason(exc), exc.sqlstate
    finally:
        run.seconds = time.monotonic() - started
    return run


def _insert_ledger(
    writer: Session, plan: Plan, artifact: Artifact, run: ArtifactRun, rehearsal: str | None
) -> None:
    statement = pgsql.SQL(
        "insert into {} (plan, artifact, checksum, file, deltas, gates, stops, rehearsal)"
        " values ({}, {}, {}, {}, {}::jsonb, {}::jsonb, {}::jsonb, {})"
    ).format(
        pgsql.Identifier(LEDGER_SCHEMA, LEDGER_TABLE),
        pgsql.Literal(plan.name),
        pgsql.Literal(artifact.id),
        pgsql.Literal(artifact.checksum),
        pgsql.Literal(artifact.file.name),
        pgsql.Literal(json.dumps(run.deltas, sort_keys=True)),
        pgsql.Literal(json.dumps([g.to_dict() for g in run.gates], sort_keys=True, default=str)),
        pgsql.Literal(json.dumps([s.to_dict() for s in run.stops], sort_keys=True, default=str)),
        pgsql.Literal(rehearsal),
    )
    writer.apply(statement.as_string(None), step="ledger", plan=plan.name, artifact=artifact.id)


# -- watch -------------------------------------------------------------------------------------


def watch(
    cfg: Config,
    evidence: Evidence,
    plan: Plan,
    *,
    interval: float,
    timeout: float,
    say: Say | None = None,
) -> ApplyResult:
    """Poll the gates until they open (then apply the auto set and verify) or `timeout` passes."""
    say = say or _quiet
    if interval <= 0 or timeout < 0:
        raise BadInput("watch needs --interval > 0 and --timeout >= 0")
    deadline = time.monotonic() + timeout
    first = True
    while True:
        with connect.open_production(cfg, evidence) as session:
            pre = _precheck(cfg, evidence, plan, session, "watch", drift=first)
        if pre.refusals:
            result = ApplyResult(plan.name, True, "watch", checks=pre.checks, gates=pre.gates)
            raise _refuse(evidence, result, pre.refusals)
        first = False
        if not pre.selected or not pre.closed:
            say("gates open: applying the auto-executable set, then verify")
            return _apply(cfg, evidence, plan, execute=True, mode="watch", say=say)
        shown = _closed(pre.closed)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result = ApplyResult(plan.name, True, "watch", gates=pre.gates, checks=pre.checks)
            result.status, result.ok = "timeout", False
            result.message = f"gates still closed after {timeout:g}s: {shown}"
            result.artifacts = [ArtifactRun.of(a, "not run") for a in pre.selected]
            evidence.append(APPLY_KIND, result.to_dict())
            return result
        say(f"waiting: {shown}")
        time.sleep(min(interval, remaining))


# -- status and plan ---------------------------------------------------------------------------


@dataclass
class PlanStatus:
    """The ledger, the latest rehearsal and the gates of a plan."""

    plan: str
    ledger: list[LedgerRow]
    pending: list[str]
    conflicts: list[str]
    rehearsal: dict[str, Any] | None
    rehearsal_matches: bool
    gates: list[tuple[str, GateResult]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "ledger": [row.to_dict() for row in self.ledger],
            "pending": self.pending,
            "conflicts": self.conflicts,
            "rehearsal": self.rehearsal,
            "rehearsal_matches_checksums": self.rehearsal_matches,
            "gates": [{"artifact": a, **g.to_dict()} for a, g in self.gates],
        }


def _gate_values(
    cfg: Config, session: Session, artifacts: Iterable[Artifact]
) -> list[tuple[str, GateResult]]:
    chosen = list(artifacts)
    values = gates.read_values(session, cfg, {n for a in chosen for n in a.gate_names})
    return [(a.id, gates.evaluate(g, values)) for a in chosen for g in a.gates]


def status(cfg: Config, evidence: Evidence, plan: Plan) -> PlanStatus:
    """Read the ledger and the gates on production (through the guard); the latest rehearsal."""
    with connect.open_production(cfg, evidence) as session, session.transaction():
        ledger = read_ledger(session, plan.name)
        results = _gate_values(cfg, session, plan.artifacts)
    latest = None
    for record in reversed(evidence.records(REHEARSAL_KIND)):
        if record.payload.get("plan") == plan.name:
            latest = record
            break
    summary = None
    if latest is not None:
        summary = {
            "record": latest.seq,
            "at": latest.at,
            "ok": latest.payload.get("ok"),
            "clone": latest.payload.get("clone"),
            "residue_free": latest.payload.get("residue_free"),
            "source_fingerprint": latest.payload.get("source_fingerprint"),
        }
    return PlanStatus(
        plan=plan.name,
        ledger=list(ledger.values()),
        pending=[a.id for a in plan.artifacts if a.id not in ledger],
        conflicts=[
            a.id for a in plan.artifacts if a.id in ledger and ledger[a.id].checksum != a.checksum
        ],
        rehearsal=summary,
        rehearsal_matches=bool(latest and latest.payload.get("checksums") == plan.checksums),
        gates=results,
    )


@dataclass
class PlanReport:
    """`rollout plan`: order, checksums, lint, the auto-executable set and gates now."""

    plan: Plan
    findings: list[LintFinding]
    lint_note: str | None
    gates: list[tuple[str, GateResult]]
    applied: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.plan.to_dict(),
            "lint": [f.to_dict() for f in self.findings],
            "lint_note": self.lint_note,
            "gates": [{"artifact": a, **g.to_dict()} for a, g in self.gates],
            "applied": self.applied,
        }


def describe(cfg: Config, evidence: Evidence, plan: Plan) -> PlanReport:
    """Lint every artifact and read each gate's value on production now."""
    findings, note = lint(plan)
    with connect.open_production(cfg, evidence) as session, session.transaction():
        applied = list(read_ledger(session, plan.name))
        results = _gate_values(cfg, session, plan.artifacts)
    return PlanReport(plan, findings, note, results, applied)
