"""Check suites and rehearsal scenarios: parse `*.sql` files, run them rollback-only, prove it.

A *check file* holds many checks; each is one statement with an expectation and runs in its
own transaction, always rolled back. A *scenario file* holds one scenario: steps that may
write and assertions with an expectation, all in one transaction, always rolled back; every
step and assertion runs in its own savepoint, so later steps see earlier ones and an expected
error does not end the scenario. The formats:

    -- check: no_orphans                 -- scenario: promote
    -- expect: empty                     -- step: add an axis
    -- timeout: 5s                       insert into core.axes(code) values ('topic');
    select … ;                           -- assert: one axis more
                                         -- expect: value=2
                                         select count(*) from core.axes;

Expectations: `empty`, `rows=N`, `value=X`, `true`, `error` and `error=SQLSTATE` (the
statement must fail, with that SQLSTATE or condition name). A directive is a line that is
only a `-- keyword: value` comment; any other comment is left to the SQL.

Every file of a run is parsed before any SQL is sent; a file that does not parse raises
`BadInput` naming file and line. On production every statement goes through the guard: a
check that writes is refused (and audited) and a scenario with any statement that is not a
plain read is reported as not applicable before anything is sent. On the clone the run is
bracketed by two full fingerprints and sequences — which do not roll back — are put back
with `setval`, so the result can say "residue-free" or name what is left.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

import pglast
import psycopg
import psycopg.errors
from pglast import ast, enums
from psycopg import sql as pgsql

from oneroof import connect, fingerprint, guard, sqltext
from oneroof.config import Config
from oneroof.connect import CLONE, PRODUCTION, Session
from oneroof.errors import BadInput, ForbiddenAction
from oneroof.evidence import Evidence
from oneroof.sqltext import Statement, duration_ms

TARGETS = (CLONE, PRODUCTION)
CHECKS = "checks"
SCENARIO = "scenario"
CHECK, STEP, ASSERT = "check", "step", "assert"
RESIDUE_SECTIONS = ("counts", "content", "sequences")
TIMEOUT_SQLSTATE = "57014"  # query_canceled: what a statement timeout raises
EVIDENCE_KIND = "check-run"


class Status(StrEnum):
    """What became of one check, step or assertion."""

    PASSED = "passed"
    FAILED = "failed"  # ran, and the expectation did not hold
    ERROR = "error"  # the server reported an error nobody expected
    TIMEOUT = "timeout"  # the statement timeout cancelled it (SQLSTATE 57014)
    REFUSED = "refused"  # the guard refused it on production: nothing was sent
    NOT_REACHED = "not reached"  # an earlier step of its scenario failed
    NOT_APPLICABLE = "not applicable"  # a writing scenario, on production


FAILING = frozenset({Status.FAILED, Status.ERROR, Status.TIMEOUT, Status.REFUSED})
SKIPPED = frozenset({Status.NOT_REACHED, Status.NOT_APPLICABLE})


# -- the parsed form ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What a check or an assertion expects of its statement."""

    kind: str  # empty | rows | value | true | error
    text: str
    rows: int | None = None
    value: str | None = None
    sqlstate: str | None = None

    def judge(self, rows: Sequence[Sequence[Any]]) -> str | None:
        """None when `rows` meet the expectation, else a description of what came back."""
        if self.kind == "empty":
            return None if not rows else f"{_count(len(rows))}, first: {_rows_text(rows)}"
        if self.kind == "rows":
            return None if len(rows) == self.rows else _count(len(rows))
        if self.kind == "error":
            return f"no error ({_count(len(rows))})"
        if len(rows) != 1 or len(rows[0]) != 1:
            width = len(rows[0]) if rows else 0
            return _count(len(rows)) if len(rows) != 1 else f"1 row of {width} columns"
        value = rows[0][0]
        if self.kind == "true":
            return None if value is True else _value_text(value)
        assert self.value is not None
        return None if _value_matches(value, self.value) else _value_text(value)

    def matches_error(self, sqlstate: str | None) -> bool:
        """True when an error with `sqlstate` is the failure this expectation asks for.

        A bare `error` accepts any error the server reports except a statement timeout,
        which says nothing about the refusal being tested.
        """
        if self.kind != "error" or sqlstate is None:
            return False
        if self.sqlstate is None:
            return sqlstate != TIMEOUT_SQLSTATE
        return sqlstate == self.sqlstate


class _Named:
    """What checks, steps and assertions and their results share: a kind and a name."""

    kind: str
    name: str

    @property
    def counted(self) -> bool:
        """Checks and assertions make the `passed/total` figure; steps only prepare them."""
        return self.kind != STEP

    @property
    def title(self) -> str:
        return self.name if self.kind == CHECK else f"{self.kind}: {self.name}"


@dataclass(frozen=True)
class Item(_Named):
    """A check, a scenario step or a scenario assertion."""

    kind: str  # check | step | assert
    name: str
    line: int
    statements: tuple[Statement, ...]
    expect: Expectation | None = None
    timeout_ms: int | None = None


@dataclass(frozen=True)
class SuiteFile:
    """One parsed check or scenario file and the checksum of its exact bytes."""

    path: str
    sha256: str
    kind: str  # checks | scenario
    items: tuple[Item, ...]
    scenario: str | None = None
    scenario_line: int | None = None
    timeout_ms: int | None = None  # a scenario's default, from a timeout before its blocks

    @property
    def counted(self) -> int:
        return sum(1 for item in self.items if item.counted)


# -- parsing ------------------------------------------------------------------------------------

_DIRECTIVE = re.compile(
    r"^[ \t]*--[ \t]*(check|expect|timeout|scenario|step|assert)[ \t]*:(.*)$", re.IGNORECASE
)
_TRAILING_COMMENT = re.compile(r"\s+--.*$")
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")


def parse_expectation(text: str) -> Expectation:
    """An `-- expect:` value; ValueError naming the accepted forms when it is none of them."""
    value = text.strip()
    lowered = value.lower()
    if lowered in ("empty", "true"):
        return Expectation(lowered, value)
    if lowered == "error":
        return Expectation("error", value)
    key, sep, rest = value.partition("=")
    key = key.strip().lower()
    rest = rest.strip()
    if sep and key == "rows":
        if not rest.isdigit():
            raise ValueError(f"rows= needs a whole number, not {rest!r}")
        return Expectation("rows", value, rows=int(rest))
    if sep and key == "value":
        if not rest:
            raise ValueError("value= needs a value (write value='' for an empty string)")
        if len(rest) >= 2 and rest[0] == rest[-1] == "'":
            rest = rest[1:-1].replace("''", "'")
        return Expectation("value", value, value=rest)
    if sep and key == "error":
        return Expectation("error", value, sqlstate=_sqlstate(rest))
    raise ValueError(
        f"unknown expectation {value!r}; use empty, rows=N, value=X, true, error or error=SQLSTATE"
    )


def _sqlstate(text: str) -> str:
    if _SQLSTATE.match(text.upper()):
        return text.upper()
    try:
        found = psycopg.errors.lookup(text)
    except KeyError:
        raise ValueError(
            f"error= needs a SQLSTATE (like 23505) or a condition name (like unique_violation), "
            f"not {text!r}"
        ) from None
    return str(found.sqlstate)


@dataclass
class _Block:
    kind: str
    name: str
    line: int
    lines: list[str] = field(default_factory=list)
    expect: Expectation | None = None
    expect_line: int | None = None
    timeout_ms: int | None = None
    timeout_line: int | None = None


def parse(data: bytes, path: Path | str) -> SuiteFile:
    """Parse the bytes of one check or scenario file; `BadInput(file=path, line=n)` if it fails."""
    name = str(path)
    checksum = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInput(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})", file=name, line=line
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise BadInput("the file contains a NUL byte", file=name, line=line)
    return _Parser(name, checksum).parse(text)


class _Parser:
    def __init__(self, path: str, checksum: str) -> None:
        self.path = path
        self.checksum = checksum
        self.kind: str | None = None
        self.scenario: str | None = None
        self.scenario_line: int | None = None
        self.scenario_timeout: int | None = None
        self.block: _Block | None = None
        self.loose: list[str] = []  # text outside any block: only comments may be there
        self.loose_start = 1
        self.items: list[Item] = []
        self.names: dict[str, int] = {}

    def fail(self, message: str, line: int | None) -> BadInput:
        return BadInput(message, file=self.path, line=line)

    def parse(self, text: str) -> SuiteFile:
        lines = text.split("\n")
        for number, raw in enumerate(lines, start=1):
            match = _DIRECTIVE.match(raw)
            if match is None:
                self._text(raw)
                continue
            keyword = match.group(1).lower()
            value = match.group(2).strip()
            if keyword in (CHECK, SCENARIO, STEP, ASSERT):
                self._open(keyword, value, number)
                continue
            if keyword == "expect":
                self._expect(value, number)
            else:
                self._timeout(value, number)
            self._text("")  # keeps the line numbers of the SQL text the parser sees
        self._close()
        if not self.items:
            if self.kind == SCENARIO:
                raise self.fail(
                    f"scenario {self.scenario!r} has no -- step: or -- assert:", self.scenario_line
                )
            raise self.fail("no -- check: or -- scenario: in the file", 1)
        return SuiteFile(
            path=self.path,
            sha256=self.checksum,
            kind=self.kind or CHECKS,
            items=tuple(self.items),
            scenario=self.scenario,
            scenario_line=self.scenario_line,
            timeout_ms=self.scenario_timeout,
        )

    def _text(self, raw: str) -> None:
        if self.block is not None:
            self.block.lines.append(raw)
        else:
            self.loose.append(raw)

    def _open(self, keyword: str, value: str, number: int) -> None:
        name = _strip_comment(value) if keyword == SCENARIO else value
        if not name:
            raise self.fail(f"-- {keyword}: needs a name", number)
        if keyword == CHECK and self.kind == SCENARIO:
            raise self.fail(
                "a check in a scenario file: a file holds checks or one scenario, not both", number
            )
        if keyword == SCENARIO:
            if self.kind == CHECKS:
                raise self.fail(
                    "a scenario in a check file: a file holds checks or one scenario, not both",
                    number,
                )
            if self.scenario is not None:
                raise self.fail(
                    f"a second -- scenario: (the first is at line {self.scenario_line}); "
                    "one scenario per file",
                    number,
                )
        if keyword in (STEP, ASSERT) and self.scenario is None:
            raise self.fail(f"-- {keyword}: before any -- scenario: header", number)
        self._close()
        self._check_loose(keyword, number)
        if keyword == SCENARIO:
            self.kind = SCENARIO
            self.scenario = name
            self.scenario_line = number
            self.loose = []
            self.loose_start = number + 1
            return
        if keyword == CHECK:
            self.kind = CHECKS
            if name in self.names:
                raise self.fail(
                    f"a second check named {name!r} (the first is at line {self.names[name]})",
                    number,
                )
            self.names[name] = number
        self.block = _Block(keyword, name, number)

    def _check_loose(self, keyword: str, number: int) -> None:
        """Text outside any block may hold comments, never SQL."""
        if self.block is not None or not self.loose:
            return
        statements = self._split("\n".join(self.loose), self.loose_start)
        if statements:
            where = (
                "-- step: or -- assert:" if self.kind == SCENARIO else "-- check: or -- scenario:"
            )
            raise self.fail(f"SQL before the first {where}", statements[0].line)
        self.loose = []

    def _expect(self, value: str, number: int) -> None:
        block = self.block
        if block is None:
            raise self.fail("-- expect: outside a check or an assertion", number)
        if block.kind == STEP:
            raise self.fail(
                f"-- expect: in step {block.name!r}: steps have no expectation; "
                "put it under an -- assert:",
                number,
            )
        if block.expect is not None:
            raise self.fail(
                f"a second -- expect: for {block.kind} {block.name!r} "
                f"(the first is at line {block.expect_line})",
                number,
            )
        try:
            block.expect = parse_expectation(_strip_comment(value))
        except ValueError as exc:
            raise self.fail(str(exc), number) from None
        block.expect_line = number

    def _timeout(self, value: str, number: int) -> None:
        try:
            milliseconds = duration_ms(_strip_comment(value))
        except ValueError as exc:
            raise self.fail(f"-- timeout: {exc}", number) from None
        block = self.block
        if block is None:
            if self.kind == SCENARIO and not self.items:
                if self.scenario_timeout is not None:
                    raise self.fail("a second -- timeout: for the scenario", number)
                self.scenario_timeout = milliseconds
                return
            raise self.fail("-- timeout: outside a check, step or assertion", number)
        if block.timeout_ms is not None:
            raise self.fail(
                f"a second -- timeout: for {block.kind} {block.name!r} "
                f"(the first is at line {block.timeout_line})",
                number,
            )
        block.timeout_ms = milliseconds
        block.timeout_line = number

    def _close(self) -> None:
        block = self.block
        if block is None:
            return
        self.block = None
        statements = self._split("\n".join(block.lines), block.line + 1)
        label = f"{block.kind} {block.name!r}"
        if not statements:
            raise self.fail(f"{label} has no SQL", block.line)
        if block.kind != STEP and len(statements) > 1:
            raise self.fail(
                f"{label} holds {len(statements)} statements; "
                f"a{'n' if block.kind == ASSERT else ''} {block.kind} is one statement",
                statements[1].line,
            )
        if block.kind != STEP and block.expect is None:
            raise self.fail(f"{label} has no -- expect: line", block.line)
        for statement in statements:
            refusal = _transaction_control(statement.sql)
            if refusal is not None:
                raise self.fail(f"{label}: {refusal}", statement.line)
        self.items.append(
            Item(
                block.kind,
                block.name,
                block.line,
                tuple(statements),
                block.expect,
                block.timeout_ms,
            )
        )

    def _split(self, body: str, first_line: int) -> list[Statement]:
        try:
            return sqltext.split(body, first_line)
        except sqltext.SqlSyntaxError as exc:
            raise self.fail(f"SQL does not parse: {exc.message}", exc.line) from None


_SAVEPOINT_KINDS = frozenset(
    {
        enums.TransactionStmtKind.TRANS_STMT_SAVEPOINT,
        enums.TransactionStmtKind.TRANS_STMT_RELEASE,
        enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_TO,
    }
)


def _transaction_control(statement: str) -> str | None:
    """Why a statement would break the rollback-only transaction oneroof runs it in, if so.

    A step may use savepoints of its own (they stay inside the transaction); BEGIN, COMMIT,
    ROLLBACK, PREPARE TRANSACTION and oneroof's own savepoint names are refused.
    """
    try:
        node = pglast.parse_sql(statement)[0].stmt
    except Exception:  # split() parsed it already; nothing else to judge here
        return None
    if not isinstance(node, ast.TransactionStmt):
        return None
    if node.kind in _SAVEPOINT_KINDS:
        if (node.savepoint_name or "").lower().startswith("oneroof_sp"):
            return "savepoint names starting with oneroof_sp belong to oneroof"
        return None
    return (
        "transaction control (BEGIN, COMMIT, ROLLBACK) belongs to oneroof, which rolls every "
        "check and scenario back; savepoints of your own are fine"
    )


def _strip_comment(value: str) -> str:
    return _TRAILING_COMMENT.sub("", value).strip()


def _sql_files(folder: Path) -> list[Path]:
    found = []
    for file in folder.rglob("*.sql"):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        found.append((relative.parts, file))
    return [file for _, file in sorted(found)]


def load(paths: Sequence[Path]) -> list[SuiteFile]:
    """Parse every file named, and every `*.sql` inside every folder named (recursively, in
    name order), before anything runs; `BadInput` for the first one that does not parse."""
    if not paths:
        raise BadInput("no check or scenario file given")
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            inside = _sql_files(path)
            if not inside:
                raise BadInput("no *.sql file in the folder", file=path)
        elif path.exists():
            inside = [path]
        else:
            raise BadInput("no such file or folder", file=path)
        for file in inside:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    parsed = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read: {exc.strerror or exc}", file=file) from None
        parsed.append(parse(data, file))
    return parsed


# -- results ------------------------------------------------------------------------------------


@dataclass
class ItemResult(_Named):
    """The outcome of one check, step or assertion."""

    file: str
    kind: str
    name: str
    line: int
    status: Status
    ms: float = 0.0
    expected: str | None = None
    got: str | None = None
    sqlstate: str | None = None
    message: str | None = None

    def detail(self) -> str:
        """One line saying why it did not pass (empty when it passed)."""
        if self.status == Status.PASSED:
            return ""
        if self.status == Status.FAILED:
            return f"expected {self.expected}, got {self.got}"
        if self.status in (Status.ERROR, Status.TIMEOUT):
            state = f"SQLSTATE {self.sqlstate}: " if self.sqlstate else ""
            return f"{state}{self.message or ''}".strip()
        return self.message or ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "name": self.name,
            "line": self.line,
            "status": str(self.status),
            "ms": round(self.ms, 3),
            "expected": self.expected,
            "got": self.got,
            "sqlstate": self.sqlstate,
            "message": self.message,
        }


@dataclass
class FileResult:
    """The outcomes of one file, in file order."""

    path: str
    sha256: str
    kind: str
    scenario: str | None
    items: list[ItemResult]
    ms: float = 0.0
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "kind": self.kind,
            "scenario": self.scenario,
            "ms": round(self.ms, 3),
            "note": self.note,
            "items": [item.to_dict() for item in self.items],
        }


@dataclass
class Residue:
    """The residue proof of a clone run: fingerprints before and after, and what differs."""

    free: bool
    differences: list[str]
    residue: list[str]  # the tables and sequences that differ
    sequences_restored: list[str]
    before: str | None
    after: str | None
    sections: tuple[str, ...] = RESIDUE_SECTIONS
    ms: float = 0.0

    def describe(self) -> str:
        if self.free:
            return "residue-free"
        return "residue: " + (", ".join(self.residue) or "; ".join(self.differences))

    def to_dict(self) -> dict[str, Any]:
        return {
            "free": self.free,
            "verdict": self.describe(),
            "differences": self.differences,
            "residue": self.residue,
            "sequences_restored": self.sequences_restored,
            "fingerprint_before": self.before,
            "fingerprint_after": self.after,
            "sections": list(self.sections),
            "ms": round(self.ms, 3),
        }


@dataclass
class RunResult:
    """One run of check and scenario files on a target: the data behind every output."""

    target: str
    objective: str | None
    database: str
    files: list[FileResult]
    residue: Residue | None
    started_at: str
    ms: float = 0.0
    evidence_seq: int | None = None

    @property
    def items(self) -> list[ItemResult]:
        return [item for file in self.files for item in file.items]

    @property
    def passed(self) -> int:
        """Checks and assertions that passed."""
        return sum(1 for i in self.items if i.counted and i.status == Status.PASSED)

    @property
    def total(self) -> int:
        """Checks and assertions that apply to the target (not-applicable ones are left out)."""
        return sum(1 for i in self.items if i.counted and i.status != Status.NOT_APPLICABLE)

    @property
    def not_applicable(self) -> int:
        return sum(1 for i in self.items if i.counted and i.status == Status.NOT_APPLICABLE)

    def counts(self) -> dict[str, int]:
        """How many checks and assertions ended in each status (steps not included)."""
        found = {str(status): 0 for status in Status}
        for item in self.items:
            if item.counted:
                found[str(item.status)] += 1
        return found

    @property
    def residue_free(self) -> bool | None:
        """True or False after a clone run with the proof; None when no proof was taken."""
        return None if self.residue is None else self.residue.free

    @property
    def ok(self) -> bool:
        """All checks and assertions that apply passed, no step failed, no residue is left.

        Not-applicable items neither pass nor fail the run; they are shown and counted apart.
        """
        for item in self.items:
            if item.status in FAILING:
                return False
            if item.counted and item.status == Status.NOT_REACHED:
                return False
        return self.residue_free is not False

    @property
    def verdict(self) -> str:
        return "passed" if self.ok else "failed"

    def summary(self) -> str:
        """One line, e.g. `26/26 passed, residue-free, rollback-only`."""
        parts = [f"{self.passed}/{self.total} passed"]
        if self.not_applicable:
            parts.append(f"{self.not_applicable} not applicable to production")
        failed_steps = sum(1 for i in self.items if not i.counted and i.status in FAILING)
        if failed_steps:
            parts.append(f"{failed_steps} step{'s' if failed_steps > 1 else ''} failed")
        if self.residue is not None:
            parts.append(self.residue.describe())
        parts.append("rollback-only")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "objective": self.objective,
            "database": self.database,
            "started_at": self.started_at,
            "ms": round(self.ms, 3),
            "ok": self.ok,
            "verdict": self.verdict,
            "summary": self.summary(),
            "passed": self.passed,
            "total": self.total,
            "counts": self.counts(),
            "residue_free": self.residue_free,
            "residue": self.residue.to_dict() if self.residue is not None else None,
            "files": [file.to_dict() for file in self.files],
            "evidence_seq": self.evidence_seq,
        }


# -- running ------------------------------------------------------------------------------------


class _Undo(Exception):
    """Raised inside an assertion's savepoint so that it is always rolled back to."""


def run(
    cfg: Config,
    evidence: Evidence,
    files: Sequence[SuiteFile],
    *,
    target: str,
    objective: str | None = None,
    clone_name: str | None = None,
    session: Session | None = None,
    residue: bool = True,
    progress: Callable[[ItemResult], None] | None = None,
) -> RunResult:
    """Run parsed files on `target` (clone or production), store the run, return its result.

    Opens its own guarded session unless one is given (and closes only its own). On the
    clone, `residue=True` brackets the run with full fingerprints and restores sequences.
    """
    if target not in TARGETS:
        raise BadInput(f"target must be clone or production, not {target!r}")
    if session is not None and session.role != target:
        raise BadInput(f"the session given is a {session.role} session, not a {target} one")
    default_ms = connect.statement_timeout_ms(cfg)
    own = session is None
    if session is None:
        if target == CLONE:
            session = connect.open_clone(cfg, evidence, clone_name, ready_only=True)
        else:
            session = connect.open_production(cfg, evidence)
    try:
        result = _Runner(session, target, default_ms, progress).run(
            files, objective, residue and target == CLONE
        )
    finally:
        if own:
            session.close()
    payload = result.to_dict()
    payload.pop("evidence_seq")
    record = evidence.append(EVIDENCE_KIND, payload, role=target, outcome=result.verdict)
    result.evidence_seq = record.seq
    return result


class _Runner:
    def __init__(
        self,
        session: Session,
        target: str,
        default_ms: int,
        progress: Callable[[ItemResult], None] | None,
    ) -> None:
        self.session = session
        self.target = target
        self.default_ms = default_ms
        self.progress = progress

    def run(self, files: Sequence[SuiteFile], objective: str | None, prove: bool) -> RunResult:
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        began = time.perf_counter()
        before: fingerprint.Fingerprint | None = None
        sequences: dict[str, _SequenceState] = {}
        proof_ms = 0.0
        if prove:
            clock = time.perf_counter()
            sequences = read_sequences(self.session)
            before = fingerprint.take(self.session, mode="full")
            proof_ms = _elapsed(clock)
        results = []
        for file in files:
            clock = time.perf_counter()
            if file.kind == SCENARIO:
                file_result = self._scenario(file)
            else:
                file_result = FileResult(
                    file.path,
                    file.sha256,
                    file.kind,
                    None,
                    [self._check(file, i) for i in file.items],
                )
            file_result.ms = (time.perf_counter() - clock) * 1000
            results.append(file_result)
        proof: Residue | None = None
        if prove:
            clock = time.perf_counter()
            proof = self._prove(before, sequences)
            proof.ms = _elapsed(clock) + proof_ms
        return RunResult(
            target=self.target,
            objective=objective,
            database=self.session.identity.database,
            files=results,
            residue=proof,
            started_at=started_at,
            ms=(time.perf_counter() - began) * 1000,
        )

    def _emit(self, result: ItemResult) -> ItemResult:
        if self.progress is not None:
            self.progress(result)
        return result

    def _lost(self, file: SuiteFile, item: Item) -> ItemResult | None:
        if not self.session.closed:
            return None
        return self._emit(
            _result(
                file,
                item,
                Status.NOT_REACHED,
                message="the connection to the database was lost before it ran",
            )
        )

    # -- checks: one transaction each, rolled back

    def _check(self, file: SuiteFile, item: Item) -> ItemResult:
        lost = self._lost(file, item)
        if lost is not None:
            return lost
        clock = time.perf_counter()
        rows: list[tuple[Any, ...]] = []
        try:
            with self.session.transaction():
                self.session.set_statement_timeout(item.timeout_ms or self.default_ms)
                rows = self.session.query(item.statements[0].sql)[1]
        except ForbiddenAction as exc:
            return self._emit(_refused(file, item, exc, clock))
        except psycopg.Error as exc:
            return self._emit(_from_error(file, item, exc, clock))
        return self._emit(_judged(file, item, rows, clock))

    # -- scenarios: one transaction, a savepoint per block, rolled back

    def _scenario(self, file: SuiteFile) -> FileResult:
        result = FileResult(file.path, file.sha256, file.kind, file.scenario, [])
        if self.target == PRODUCTION:
            reason = self._writes(file)
            if reason is not None:
                result.note = f"not applicable to production: {reason}"
                for item in file.items:
                    result.items.append(
                        self._emit(_result(file, item, Status.NOT_APPLICABLE, message=reason))
                    )
                return result
        if self.session.closed:
            for item in file.items:
                lost = self._lost(file, item)
                assert lost is not None
                result.items.append(lost)
            return result
        stopped: str | None = None
        try:
            with self.session.transaction():
                for item in file.items:
                    if stopped is not None:
                        outcome = _result(file, item, Status.NOT_REACHED, message=stopped)
                        result.items.append(self._emit(outcome))
                        continue
                    lost = self._lost(file, item)
                    if lost is not None:
                        result.items.append(lost)
                        continue
                    timeout = item.timeout_ms or file.timeout_ms or self.default_ms
                    outcome = (
                        self._step(file, item, timeout)
                        if item.kind == STEP
                        else (self._assert(file, item, timeout))
                    )
                    result.items.append(self._emit(outcome))
                    if item.kind == STEP and outcome.status != Status.PASSED:
                        stopped = f"step {item.name!r} (line {item.line}) ended in {outcome.status}"
        except psycopg.Error as exc:
            # The transaction itself failed (BEGIN, or the connection went): what did not run
            # is not reached, never passed.
            done = len(result.items)
            message = f"the scenario's transaction failed: {_error_text(exc)}"
            for item in file.items[done:]:
                result.items.append(
                    self._emit(_result(file, item, Status.NOT_REACHED, message=message))
                )
        return result

    def _writes(self, file: SuiteFile) -> str | None:
        """Why the scenario cannot run on production, judged locally before anything is sent."""
        for item in file.items:
            for statement in item.statements:
                verdict = guard.classify(statement.sql, self.session.catalog)
                if not verdict.allowed:
                    return f"{item.kind} {item.name!r} (line {statement.line}): {verdict.reason}"
        return None

    def _step(self, file: SuiteFile, item: Item, timeout_ms: int) -> ItemResult:
        clock = time.perf_counter()
        current = item.statements[0]
        try:
            with self.session.savepoint():
                self.session.set_statement_timeout(timeout_ms)
                for current in item.statements:
                    self.session.execute(current.sql)
        except ForbiddenAction as exc:
            return _refused(file, item, exc, clock)
        except psycopg.Error as exc:
            outcome = _from_error(file, item, exc, clock)
            if len(item.statements) > 1:
                outcome.message = f"{outcome.message} (statement at line {current.line})"
            return outcome
        count = len(item.statements)
        return _result(
            file,
            item,
            Status.PASSED,
            clock=clock,
            got=f"{count} statement{'s' if count > 1 else ''}",
        )

    def _assert(self, file: SuiteFile, item: Item, timeout_ms: int) -> ItemResult:
        clock = time.perf_counter()
        rows: list[tuple[Any, ...]] = []
        try:
            with self.session.savepoint():
                self.session.set_statement_timeout(timeout_ms)
                rows = self.session.query(item.statements[0].sql)[1]
                raise _Undo  # an assertion observes; whatever it did is rolled back
        except _Undo:
            pass
        except ForbiddenAction as exc:
            return _refused(file, item, exc, clock)
        except psycopg.Error as exc:
            return _from_error(file, item, exc, clock)
        return _judged(file, item, rows, clock)

    # -- the residue proof

    def _prove(
        self, before: fingerprint.Fingerprint | None, sequences: dict[str, _SequenceState]
    ) -> Residue:
        if before is None or self.session.closed:
            return Residue(
                False,
                ["the residue proof could not be completed: the connection was lost"],
                [],
                [],
                before.id if before else None,
                None,
            )
        restored = restore_sequences(self.session, sequences)
        after = fingerprint.take(self.session, mode="full")
        differences = fingerprint.diff(before, after, RESIDUE_SECTIONS)
        keys = sorted({d.key for d in differences})
        return Residue(
            not differences,
            [d.describe() for d in differences],
            keys,
            restored,
            before.id,
            after.id,
        )


def _elapsed(clock: float | None) -> float:
    return (time.perf_counter() - clock) * 1000 if clock is not None else 0.0


def _result(
    file: SuiteFile,
    item: Item,
    status: Status,
    *,
    clock: float | None = None,
    got: str | None = None,
    sqlstate: str | None = None,
    message: str | None = None,
) -> ItemResult:
    return ItemResult(
        file=file.path,
        kind=item.kind,
        name=item.name,
        line=item.line,
        status=status,
        ms=_elapsed(clock),
        expected=item.expect.text if item.expect else None,
        got=got,
        sqlstate=sqlstate,
        message=message,
    )


def _judged(file: SuiteFile, item: Item, rows: list[tuple[Any, ...]], clock: float) -> ItemResult:
    assert item.expect is not None
    got = item.expect.judge(rows)
    if got is None:
        return _result(file, item, Status.PASSED, clock=clock, got=_count(len(rows)))
    return _result(file, item, Status.FAILED, clock=clock, got=got)


def _refused(file: SuiteFile, item: Item, exc: ForbiddenAction, clock: float) -> ItemResult:
    return _result(file, item, Status.REFUSED, clock=clock, message=str(exc))


def _error_text(exc: psycopg.Error) -> str:
    diag = exc.diag
    primary = diag.message_primary if diag is not None else None
    if not primary:
        text = str(exc).strip()
        primary = text.splitlines()[0] if text else type(exc).__name__
    return primary


def _from_error(file: SuiteFile, item: Item, exc: psycopg.Error, clock: float) -> ItemResult:
    sqlstate = exc.sqlstate
    message = _error_text(exc)
    diag = exc.diag
    if diag is not None and diag.message_detail:
        message = f"{message} ({diag.message_detail})"
    got = f"error {sqlstate}: {message}" if sqlstate else f"error: {message}"
    if item.expect is not None and item.expect.kind == "error":
        if item.expect.matches_error(sqlstate):
            return _result(file, item, Status.PASSED, clock=clock, got=got, sqlstate=sqlstate)
        if sqlstate != TIMEOUT_SQLSTATE:
            return _result(
                file, item, Status.FAILED, clock=clock, got=got, sqlstate=sqlstate, message=message
            )
    status = Status.TIMEOUT if sqlstate == TIMEOUT_SQLSTATE else Status.ERROR
    return _result(file, item, status, clock=clock, got=got, sqlstate=sqlstate, message=message)


# -- sequences: they do not roll back, so they are recorded and put back --------------------------

_SEQUENCES = """
    select c.oid::bigint, n.nspname::text, c.relname::text
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'S'
      and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
      and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'
    order by 2, 3
"""
_SEQUENCE_BATCH = 200


@dataclass(frozen=True)
class _SequenceState:
    oid: int
    last_value: int
    is_called: bool


def read_sequences(session: Session) -> dict[str, _SequenceState]:
    """`last_value` and `is_called` of every sequence of the database, keyed `schema.name`."""
    found = session.execute(_SEQUENCES)
    states: dict[str, _SequenceState] = {}
    for start in range(0, len(found), _SEQUENCE_BATCH):
        batch = found[start : start + _SEQUENCE_BATCH]
        query = pgsql.SQL(" union all ").join(
            pgsql.SQL("select {}::int, last_value, is_called from {}").format(
                pgsql.Literal(index), pgsql.Identifier(schema, name)
            )
            for index, (_, schema, name) in enumerate(batch)
        )
        for index, last_value, is_called in session.execute(query.as_string(None)):
            oid, schema, name = batch[index]
            states[f"{schema}.{name}"] = _SequenceState(int(oid), int(last_value), bool(is_called))
    return states


def restore_sequences(session: Session, before: dict[str, _SequenceState]) -> list[str]:
    """Put back every sequence that moved since `before` (clone only); the names restored."""
    if session.role == PRODUCTION:
        raise ForbiddenAction("refused: sequences are restored on a clone, never on production")
    now = read_sequences(session)
    restored = []
    for key, state in sorted(before.items()):
        current = now.get(key)
        if current is None or current.oid != state.oid:
            continue  # gone or replaced: the fingerprint names it as residue
        if (current.last_value, current.is_called) != (state.last_value, state.is_called):
            session.execute(
                "select pg_catalog.setval(%s::oid::regclass, %s, %s)",
                (state.oid, state.last_value, state.is_called),
            )
            restored.append(key)
    return restored


# -- comparing values ---------------------------------------------------------------------------


def _count(rows: int) -> str:
    return f"{rows} row{'' if rows == 1 else 's'}"


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def _value_text(value: Any) -> str:
    return f"value {_text(value)}"


def _rows_text(rows: Sequence[Sequence[Any]], limit: int = 3) -> str:
    shown = "; ".join("(" + ", ".join(_text(v) for v in row) + ")" for row in rows[:limit])
    if len(rows) > limit:
        shown += "; …"
    return shown if len(shown) <= 300 else shown[:299] + "…"


def _value_matches(value: Any, expected: str) -> bool:
    """`value=X` compares like PostgreSQL's text form: numbers by value, booleans as t/true."""
    if value is None:
        return expected.lower() == "null"
    if isinstance(value, bool):
        return expected.lower() in (("true", "t") if value else ("false", "f"))
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(expected) == Decimal(str(value))
        except InvalidOperation:
            return False
    return _text(value) == expected


# -- outputs: JUnit XML and TAP -----------------------------------------------------------------


def to_junit(result: RunResult) -> str:
    """JUnit XML: one testsuite per file, one testcase per check, step or assertion."""
    root = ET.Element(
        "testsuites",
        name=f"oneroof check ({result.target})",
        tests=str(len(result.items)),
        failures=str(sum(1 for i in result.items if i.status == Status.FAILED)),
        errors=str(sum(1 for i in result.items if i.status in FAILING - {Status.FAILED})),
        skipped=str(sum(1 for i in result.items if i.status in SKIPPED)),
        time=_seconds(result.ms),
    )
    for file in result.files:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file.path,
            tests=str(len(file.items)),
            failures=str(sum(1 for i in file.items if i.status == Status.FAILED)),
            errors=str(sum(1 for i in file.items if i.status in FAILING - {Status.FAILED})),
            skipped=str(sum(1 for i in file.items if i.status in SKIPPED)),
            time=_seconds(file.ms),
        )
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="sha256", value=file.sha256)
        ET.SubElement(properties, "property", name="target", value=result.target)
        classname = file.scenario or Path(file.path).stem
        for item in file.items:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=classname,
                name=item.title,
                file=file.path,
                line=str(item.line),
                time=_seconds(item.ms),
            )
            if item.status == Status.FAILED:
                ET.SubElement(case, "failure", type=str(item.status), message=item.detail())
            elif item.status in FAILING:
                ET.SubElement(case, "error", type=str(item.status), message=item.detail())
            elif item.status in SKIPPED:
                reason = item.detail()
                ET.SubElement(case, "skipped", type=str(item.status), message=str(item.status))
                if reason:
                    case[-1].text = reason
    if result.residue is not None and not result.residue.free:
        residue = ET.SubElement(root, "testsuite", name="residue proof", tests="1", failures="1")
        case = ET.SubElement(residue, "testcase", classname="residue", name="residue-free")
        ET.SubElement(case, "failure", type="residue", message=result.residue.describe())
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:.6f}"


def to_tap(result: RunResult) -> str:
    """TAP version 13 as `pg_prove` writes it: a plan, one line per item, YAML diagnostics."""
    items = result.items
    extra = 1 if result.residue is not None else 0
    lines = ["TAP version 13", f"1..{len(items) + extra}"]
    for number, item in enumerate(items, start=1):
        description = _tap_escape(f"{item.file}: {item.title}")
        if item.status == Status.PASSED:
            lines.append(f"ok {number} - {description}")
        elif item.status in SKIPPED:
            reason = _tap_escape(str(item.status) + (f": {item.detail()}" if item.detail() else ""))
            lines.append(f"ok {number} - {description} # SKIP {reason}")
        else:
            lines.append(f"not ok {number} - {description}")
            lines.extend(_tap_yaml(item))
    if result.residue is not None:
        number = len(items) + 1
        verdict = _tap_escape(result.residue.describe())
        lines.append(f"{'ok' if result.residue.free else 'not ok'} {number} - {verdict}")
    lines.append(f"# {result.summary()}")
    return "\n".join(lines) + "\n"


def _tap_escape(text: str) -> str:
    return " ".join(text.split()).replace("\\", "\\\\").replace("#", "\\#")


def _tap_yaml(item: ItemResult) -> Iterator[str]:
    yield "  ---"
    fields = {
        "status": str(item.status),
        "message": item.detail(),
        "expected": item.expected,
        "got": item.got,
        "sqlstate": item.sqlstate,
        "file": item.file,
        "line": item.line,
        "ms": round(item.ms, 3),
    }
    for key, value in fields.items():
        if value is not None and value != "":
            yield f"  {key}: {json.dumps(value, ensure_ascii=False)}"
    yield "  ..."
