"""Reading check and scenario files into checks, steps and assertions with their expectations."""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pglast
import psycopg.errors
from pglast import ast, enums

from oneroof import sqltext
from oneroof.errors import BadInput
from oneroof.sqltext import Statement, duration_ms, strip_comment
from oneroof.suite.values import _count, _rows_text, _value_matches, _value_text

CHECKS = "checks"
SCENARIO = "scenario"
CHECK, STEP, ASSERT = "check", "step", "assert"
TIMEOUT_SQLSTATE = "57014"  # query_canceled: what a statement timeout raises


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


_DIRECTIVE = re.compile(
    r"^[ \t]*--[ \t]*(check|expect|timeout|scenario|step|assert)[ \t]*:(.*)$", re.IGNORECASE
)
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")
_DIRECTIVES = ("check", "expect", "timeout", "scenario", "step", "assert")
_COMMENT_WORD = re.compile(r"^[ \t]*--[ \t]*([A-Za-z][A-Za-z0-9_-]*)[ \t]*:")


def misspelled_directive(line: str) -> str | None:
    """The directive a `-- word:` comment line most likely meant, when it is a near miss.

    Only a lower-case word counts, and not a plural (`-- checks: …` is prose): a comment may
    say anything, so only a likely typo is named, and only where a directive is missing.
    """
    match = _COMMENT_WORD.match(line)
    if match is None:
        return None
    word = match.group(1)
    if word != word.lower() or word in _DIRECTIVES or word.rstrip("s") in _DIRECTIVES:
        return None
    close = difflib.get_close_matches(word, _DIRECTIVES, n=1, cutoff=0.75)
    return close[0] if close else None


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
        name = strip_comment(value) if keyword == SCENARIO else value
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
            block.expect = parse_expectation(strip_comment(value))
        except ValueError as exc:
            raise self.fail(str(exc), number) from None
        block.expect_line = number

    def _timeout(self, value: str, number: int) -> None:
        try:
            milliseconds = duration_ms(strip_comment(value))
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
            for offset, text in enumerate(block.lines, start=1):
                if misspelled_directive(text) == "expect":
                    word = text.split(":", 1)[0].strip()
                    raise self.fail(
                        f"{label} has no -- expect: line; `{word}:` is not a directive "
                        "(did you mean `-- expect:`?)",
                        block.line + offset,
                    )
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
