"""What a run found: the outcome of every check, step and assertion, and the residue proof."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oneroof.residue import Residue
from oneroof.suite.parsing import FAILING, Status, _Named


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
        message = self.message or ""
        if self.status == Status.REFUSED and message.startswith("refused on "):
            message = message.split(": ", 1)[-1]  # the status column already says refused
        return message

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
    def nothing_checked(self) -> bool:
        """No check or assertion applied to the target: such a run proves nothing."""
        return self.total == 0

    @property
    def ok(self) -> bool:
        """Something was checked, all that applies passed, no step failed, no residue is left.

        Not-applicable items neither pass nor fail the run; they are shown and counted apart,
        but a run in which every item was not applicable (or that had none) is not a pass.
        """
        if self.nothing_checked:
            return False
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
        if self.nothing_checked:
            parts = ["nothing was checked"]
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
            "nothing_checked": self.nothing_checked,
            "counts": self.counts(),
            "residue_free": self.residue_free,
            "residue": self.residue.to_dict() if self.residue is not None else None,
            "files": [file.to_dict() for file in self.files],
            "evidence_seq": self.evidence_seq,
        }
