"""Running parsed files rollback-only on a clone or production and recording the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import psycopg

from oneroof import connect, guard
from oneroof.connect import CLONE, PRODUCTION, Session
from oneroof.errors import BadInput, ForbiddenAction
from oneroof.residue import Bracket
from oneroof.suite.parsing import SCENARIO, STEP, TIMEOUT_SQLSTATE, Item, Status, SuiteFile
from oneroof.suite.results import FileResult, ItemResult, RunResult
from oneroof.suite.values import _count
from oneroof.workspace import Workspace

TARGETS = (CLONE, PRODUCTION)
EVIDENCE_KIND = "check-run"


class _Undo(Exception):
    """Raised inside an assertion's savepoint so that it is always rolled back to."""


def run(
    ws: Workspace,
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

    On production it reads through the workspace's shared session; on the clone it opens
    its own unless one is given (and closes only its own). On the clone, `residue=True`
    brackets the run with full fingerprints and restores sequences.
    """
    cfg, evidence = ws.cfg, ws.evidence
    if target not in TARGETS:
        raise BadInput(f"target must be clone or production, not {target!r}")
    if session is not None and session.role != target:
        raise BadInput(f"the session given is a {session.role} session, not a {target} one")
    default_ms = connect.statement_timeout_ms(cfg)
    with ExitStack() as stack:
        if session is None:
            if target == CLONE:
                session = stack.enter_context(ws.clone(clone_name, ready_only=True))
            else:
                # a hot standby of production, when there is one ([production] replica_dsn)
                session = stack.enter_context(ws.reader())
        result = _Runner(session, target, default_ms, progress).run(
            files, objective, residue and target == CLONE
        )
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
        bracket = Bracket.open(self.session) if prove else None
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
        return RunResult(
            target=self.target,
            objective=objective,
            database=self.session.identity.database,
            files=results,
            residue=bracket.close() if bracket is not None else None,
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
