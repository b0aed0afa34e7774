"""Squawk lint of a plan's artifacts: warnings to show, never a failure.

Squawk guesses from the SQL text; the rehearsal's forecast (`oneroof.rollout.forecast`)
measures the same hazards on the clone. Both are shown by `rollout plan`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneroof.rollout.artifact import Plan

# Squawk rules oneroof satisfies itself: every production session has both timeouts set.
SQUAWK_EXCLUDED = ("require-statement-timeout", "require-lock-timeout")


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
        # a `transaction: none` artifact runs outside any: squawk must not assume one
        inside = ["--assume-in-transaction"] if artifact.transactional else []
        command = [
            str(binary),
            "--reporter",
            "json",
            *inside,
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
